"""facetune export --format onnx: onnxruntime gives the torch outputs, and says how to feed it."""
from __future__ import annotations

import json

import numpy as np
import pytest

import onnx  # noqa: E402

from facetune import cli  # noqa: E402
from facetune.data.loading import load_split  # noqa: E402
from facetune.predict import Predictor  # noqa: E402
from facetune.predict.onnx_export import CONTRACT_KEY, export_onnx, max_abs_difference  # noqa: E402
from predict_fixture import build_results_dir  # noqa: E402
from synthetic import make_faces  # noqa: E402

PARITY = 1e-4


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    faces = make_faces(16, seed=3)
    return build_results_dir(tmp_path_factory.mktemp("results"), faces["pixels"], faces)


def test_onnx_matches_torch_on_the_test_split(tmp_path, results_dir, prepared_data):
    predictor = Predictor.from_results(results_dir, device="cpu")
    paths = export_onnx(predictor, tmp_path / "onnx")
    assert sorted(p.name for p in paths.values()) == ["age.onnx", "ethnicity.onnx", "gender.onnx"]
    test = load_split(prepared_data, "test")
    differences = max_abs_difference(predictor, paths, test.images().numpy())
    assert set(differences) == {"age", "gender", "ethnicity"}
    assert max(differences.values()) <= PARITY, differences


def test_each_file_carries_its_preprocessing_contract(tmp_path, results_dir):
    paths = export_onnx(Predictor.from_results(results_dir, device="cpu"), tmp_path)
    meta = {p.key: p.value for p in onnx.load(str(paths["gender"])).metadata_props}
    contract = json.loads(meta[CONTRACT_KEY])
    assert contract["input"] == {"name": "faces", "shape": ["N", 1, 48, 48], "dtype": "float32", "range": [0.0, 1.0],
                                 "input_spec": {"size": 48, "channels": 1}}
    assert contract["output"]["class_names"] == ["male", "female"]
    assert any("Lanczos" in step for step in contract["preprocessing"])
    assert meta["facetune.family"] == "cnn"


def test_export_command_writes_the_files_and_reports_parity(tmp_path, results_dir, capsys):
    assert cli.main(["export", "--models", str(results_dir), "--format", "onnx", "--out", str(tmp_path / "x")]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["age.onnx", "ethnicity.onnx", "gender.onnx"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(float(line.rsplit(" ", 1)[1]) <= PARITY for line in lines)


def test_export_command_explains_a_missing_results_dir(tmp_path, capsys):
    assert cli.main(["export", "--models", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "summary.json" in capsys.readouterr().err


def test_shipped_models_export_with_flip_averaging_in_the_graph(tmp_path):
    predictor = Predictor.pretrained(device="cpu")
    paths = export_onnx(predictor, tmp_path)
    images = np.random.default_rng(0).random((16, 1, 48, 48), dtype=np.float32)
    assert max(max_abs_difference(predictor, paths, images).values()) <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(paths["age"])).metadata_props}
    contract = json.loads(meta[CONTRACT_KEY])
    assert contract["flip_averaged"] is True and contract["output"]["num_outputs"] == 117
