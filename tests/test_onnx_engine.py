"""The onnxruntime engine for batch prediction: the same outputs as torch, or torch is kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facetune.models import build_model, make_context
from facetune.models.onnx_engine import PARITY_ATOL, onnx_runtime_twin
from facetune.models.pca import fit_pca
from facetune.predict import Predictor
from facetune.predict.run import ONNXRUNTIME_MIN_IMAGES, chooses_onnxruntime
from facetune.records import IMAGE_SIZE, MULTITASK, NUM_PIXELS
from predict_fixture import build_results_dir
from synthetic import make_faces

TINY = {
    "cnn": {"conv_channels": [4, 8], "dense": [16]},
    "dnn": {"dense": [16]},
    "pca_dnn": {"dense": [16]},
    "resnet": {"widths": [4, 8], "blocks": [1, 1]},
}


def network(family: str, task: str, loss: str | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    ages = np.random.default_rng(0).integers(1, 90, 200)
    pca = fit_pca(np.random.default_rng(0).integers(0, 255, (64, NUM_PIXELS), dtype=np.uint8), 8, seed=0) \
        if family == "pca_dnn" else None
    arch = {"trunk": "resnet", "trunk_arch": TINY["resnet"]} if family == "multitask" else TINY[family]
    return build_model(family, arch, task, make_context(task, ages, pca=pca, loss=loss)).eval()


@pytest.mark.parametrize(("family", "task", "loss"), [
    ("cnn", "gender", None), ("dnn", "ethnicity", None), ("pca_dnn", "age", None),
    ("resnet", "age", "dldl"), ("multitask", MULTITASK, "dldl"),
])
def test_the_twin_of_every_family_gives_torchs_outputs(family, task, loss):
    model = network(family, task, loss)
    twin, reason = onnx_runtime_twin(model)
    assert twin is not None, reason
    faces = torch.rand(40, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((twin(faces) - model(faces)).abs().max()) <= PARITY_ATOL


class NotExportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.numpy().reshape(len(x), -1)[:, :2].copy())  # leaves the graph


def test_a_network_that_cannot_be_exported_stays_on_torch_with_the_reason():
    twin, reason = onnx_runtime_twin(NotExportable())
    assert twin is None and reason.startswith(("not exportable", "outputs differ"))


def test_a_predictor_on_onnxruntime_predicts_what_it_did_on_torch(tmp_path):
    faces = make_faces(24, seed=5)
    results = build_results_dir(tmp_path / "results", faces["pixels"], faces)
    on_torch = Predictor.from_results(results, device="cpu").predict_array(faces["pixels"])
    predictor = Predictor.from_results(results, device="cpu")
    assert predictor.use_onnxruntime() == "engine: onnxruntime" and predictor.engine == "onnxruntime"
    on_onnx = predictor.predict_array(faces["pixels"])
    assert list(on_onnx.columns) == list(on_torch.columns)
    numeric = on_torch.select_dtypes("number").columns
    assert np.allclose(on_onnx[numeric], on_torch[numeric], atol=1e-4)
    assert (on_onnx.drop(columns=numeric) == on_torch.drop(columns=numeric)).all().all()


def test_the_engine_is_onnxruntime_from_a_few_hundred_inputs_unless_told():
    assert not chooses_onnxruntime(ONNXRUNTIME_MIN_IMAGES - 1)
    assert chooses_onnxruntime(ONNXRUNTIME_MIN_IMAGES)
    assert chooses_onnxruntime(1, "onnxruntime") and not chooses_onnxruntime(10**6, "torch")
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        chooses_onnxruntime(10, "tensorrt")
