"""int8 on onnxruntime: ranges calibrated once on faces, a quantised network built from them with
no faces, used only where its test figures were judged within tolerance."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facetune.models import build_model, make_context, save_model
from facetune.models.int8 import calibration_ranges, int8_network, int8_twin, read_ranges
from facetune.predict import Predictor
from facetune.records import INT8_RANGES_FILE, MULTITASK
from facetune.release.quantize import within_tolerance

TRUNK = {"trunk": "resnet", "trunk_arch": {"widths": [4, 8], "blocks": [1, 1]}}


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return torch.rand(96, 1, 48, 48, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("multitask", TRUNK, MULTITASK, make_context(MULTITASK, np.arange(1, 90), loss="dldl")).eval()


@pytest.fixture(scope="module")
def ranges(network, faces) -> dict:
    return calibration_ranges(network, faces)


def test_calibration_gives_a_range_for_the_input_and_the_outputs(ranges):
    assert "faces" in ranges and "outputs" in ranges
    low, high = ranges["faces"]
    assert 0.0 <= low < high <= 1.0


def test_the_int8_network_answers_like_float32_within_quantisation_error(network, ranges, faces):
    quantised = int8_network(network, ranges, faces[:2])
    with torch.no_grad():
        expected = network(faces)
    got = quantised(faces)
    assert got.shape == expected.shape
    spread = float(expected.max() - expected.min())
    assert float((got - expected).abs().mean()) < 0.05 * spread


def write_ranges(folder, ranges, within: bool) -> None:
    (folder / INT8_RANGES_FILE).write_text(json.dumps({"ranges": ranges, "within_tolerance": within}))


def test_ranges_are_read_only_where_they_were_judged_within_tolerance(tmp_path, ranges):
    assert read_ranges(tmp_path) == (None, f"no {INT8_RANGES_FILE}: run `facetune quantize`")
    write_ranges(tmp_path, ranges, within=False)
    found, reason = read_ranges(tmp_path)
    assert found is None and "outside tolerance" in reason
    write_ranges(tmp_path, ranges, within=True)
    assert read_ranges(tmp_path) == (ranges, "")


def test_a_network_without_ranges_has_no_int8_twin(tmp_path, network):
    twin, reason = int8_twin(network, tmp_path)
    assert twin is None and "facetune quantize" in reason


def test_the_predictor_runs_int8_where_the_folder_has_ranges_and_float32_where_not(tmp_path, network, ranges):
    for name, with_ranges in (("with", True), ("without", False)):
        folder = tmp_path / name
        save_model(network, folder, family="multitask", task=MULTITASK, arch=TRUNK)
        if with_ranges:
            write_ranges(folder, ranges, within=True)
        predictor = Predictor.from_model_dirs({MULTITASK: folder}, device="cpu")
        line = predictor.use_onnxruntime(int8=True)
        if with_ranges:
            assert predictor.engine == "onnxruntime int8" and line == "engine: onnxruntime int8"
        else:
            assert predictor.engine == "onnxruntime" and "stays float32 (no int8_ranges.json" in line


def test_tolerance_is_two_tenths_of_a_point_and_five_hundredths_of_a_year():
    base = {"age": {"mae": 5.0}, "gender": {"accuracy": 0.9200}, "ethnicity": {"accuracy": 0.8300}}
    assert within_tolerance(base, {**base, "gender": {"accuracy": 0.9181}, "age": {"mae": 5.05}})
    assert not within_tolerance(base, {**base, "gender": {"accuracy": 0.9175}})
    assert not within_tolerance(base, {**base, "age": {"mae": 5.06}})
