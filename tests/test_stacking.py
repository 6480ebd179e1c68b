"""Stacked heads: a logistic regression over an ensemble's joined trunk features, shipped as one linear layer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from facetune.models import build_model, load_model, save_model
from facetune.models.ensemble import MultiTaskEnsemble, write_ensemble_config, write_stacked_heads
from facetune.tasks import MULTITASK
from facetune.training.stacking import fit_stacked_head, joined_features

ARCH = {"trunk": "resnet", "trunk_arch": {"widths": [4, 8], "blocks": [1, 1]}}


def separable(classes: int, n: int = 300, width: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(0, 1, (n, width))
    x[:, :classes] += 3 * np.eye(classes)[y]
    return x * rng.uniform(0.1, 20, width) + rng.normal(0, 5, width), y  # columns of unequal scale and offset


@pytest.mark.parametrize("classes", [2, 5])
def test_the_folded_linear_layer_gives_the_regressions_probabilities(classes):
    x, y = separable(classes)
    head, _ = fit_stacked_head(x, y, classes, c=0.1)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(x, y)
    with torch.no_grad():
        ours = torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), dim=1).numpy()
    assert np.allclose(ours, reference.predict_proba(x), atol=1e-4)


def test_training_accuracy_is_reported():
    x, y = separable(2)
    _, accuracy = fit_stacked_head(x, y, 2, c=1.0)
    assert 0.9 < accuracy <= 1.0


def test_labels_missing_a_class_are_refused():
    x, y = separable(5)
    with pytest.raises(ValueError, match="every class 0..4"):
        fit_stacked_head(x, np.minimum(y, 3), 5, c=0.1)


def test_a_non_positive_c_is_refused():
    x, y = separable(2)
    with pytest.raises(ValueError, match="c must be positive"):
        fit_stacked_head(x, y, 2, c=0.0)


def members(count: int = 2) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [build_model("multitask", ARCH, MULTITASK, {"age_bins": 117}).eval() for _ in range(count)]


def test_joined_features_put_every_members_trunk_side_by_side():
    nets, x = members(), torch.rand(5, 1, 48, 48)
    joined = joined_features(nets, x, channels_last=False)
    with torch.no_grad():
        first = 0.5 * (nets[0].features(x) + nets[0].features(torch.flip(x, dims=[3])))
    assert joined.shape == (5, 16)
    assert np.allclose(joined[:, :8], first.numpy(), atol=1e-5)


def test_a_stacked_head_answers_its_task_and_the_rest_stay_averaged():
    nets, x = members(), torch.rand(6, 1, 48, 48)
    head = torch.nn.Linear(16, 2)
    stacked, plain = MultiTaskEnsemble(nets, [1, 1], {"gender": head}).eval(), MultiTaskEnsemble(nets, [1, 1]).eval()
    with torch.no_grad():
        out, reference = stacked(x), plain(x)
        expected = torch.log_softmax(head(torch.cat([n.features(x) for n in nets], dim=1)), dim=1)
    gender = stacked.slices["gender"]
    assert torch.allclose(out[:, gender], expected, atol=1e-5)
    keep = [s for name, s in stacked.slices.items() if name != "gender"]
    assert all(torch.allclose(out[:, s], reference[:, s], atol=1e-5) for s in keep)


def test_a_stacked_head_for_age_or_of_the_wrong_width_is_refused():
    nets = members()
    with pytest.raises(ValueError, match="only a classification task"):
        MultiTaskEnsemble(nets, [1, 1], {"age": torch.nn.Linear(16, 117)})
    with pytest.raises(ValueError, match="gives 3 outputs; the task has 2 classes"):
        MultiTaskEnsemble(nets, [1, 1], {"gender": torch.nn.Linear(16, 3)})


def saved_stacked_ensemble(tmp_path) -> tuple[torch.nn.Module, "object"]:
    nets = members()
    entries = []
    for i, net in enumerate(nets):
        save_model(net, tmp_path / f"m{i}", family="multitask", task=MULTITASK, arch=ARCH)
        entries.append({"dir": f"m{i}", "weight": 1.0})
    head = torch.nn.Linear(16, 5)
    write_stacked_heads(tmp_path, {"ethnicity": head})
    write_ensemble_config(tmp_path, MULTITASK, entries, extra={"stacked_heads": ["ethnicity"]})
    return MultiTaskEnsemble(nets, [1, 1], {"ethnicity": head}).eval(), tmp_path


def test_an_ensemble_with_a_stacked_head_round_trips_through_its_folder(tmp_path):
    original, folder = saved_stacked_ensemble(tmp_path)
    loaded, config = load_model(folder)
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(loaded(x), original(x), atol=1e-5)
    assert config["stacked_heads"] == ["ethnicity"]


def test_a_missing_stacked_heads_file_is_named(tmp_path):
    _, folder = saved_stacked_ensemble(tmp_path)
    (folder / "stacked_heads.pt").unlink()
    with pytest.raises(FileNotFoundError, match="stacked_heads.pt is missing"):
        load_model(folder)


def test_an_ensemble_with_a_stacked_head_runs_on_onnxruntime(tmp_path):
    from facetune.models.onnx_engine import PARITY_ATOL, onnx_runtime_twin

    ensemble, _ = saved_stacked_ensemble(tmp_path)
    twin, reason = onnx_runtime_twin(ensemble)
    assert twin is not None, reason
    faces = torch.rand(8, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((twin(faces) - ensemble(faces)).abs().max()) <= PARITY_ATOL
