"""int8 networks on onnxruntime: static QDQ quantisation (int8 weights per channel, uint8
activations) calibrated on train faces, for the faster CPU path (`--engine int8`).

Calibration needs faces, which an installed package does not have, so it happens once where the
data is (`facetune quantize`): the activation ranges of every tensor on train faces are kept in
the model's folder (INT8_RANGES_FILE) with the test figures of the int8 network beside float32's. At
load time the network is exported and quantised with those ranges as overrides, in about a
second, with no data; a network without ranges (or whose int8 figures were not within tolerance)
stays on float32.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from facetune.models.ensemble import input_specs
from facetune.models.onnx_engine import INPUT_NAME, OnnxRuntimeNetwork, onnx_bytes
from facetune.records import INT8_RANGES_FILE

#: Faces per calibration batch.
CALIBRATION_BATCH = 64


def _float_graph(network: nn.Module, folder: Path, example: torch.Tensor) -> Path:
    """The network as ONNX with shapes inferred (what the quantiser reads), in `folder`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    exported, prepared = folder / "float.onnx", folder / "prepared.onnx"
    was_training = network.training
    network.eval()
    try:
        exported.write_bytes(onnx_bytes(network, example[:2]))
    finally:
        network.train(was_training)
    quant_pre_process(str(exported), str(prepared))
    return prepared


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over batches of faces."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def calibration_ranges(network: nn.Module, faces: torch.Tensor) -> dict[str, list[float]]:
    """{tensor name: [lowest, highest]} of every tensor of `network`'s ONNX graph on `faces` (min-max)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        graph = _float_graph(network, Path(tmp), faces)
        calibrator = create_calibrator(str(graph), calibrate_method=CalibrationMethod.MinMax,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"))
        calibrator.collect_data(_Batches(faces[i : i + CALIBRATION_BATCH].numpy()
                                         for i in range(0, len(faces), CALIBRATION_BATCH)))
        ranges = calibrator.compute_data()
    return {name: [float(np.asarray(data.range_value[0]).min()), float(np.asarray(data.range_value[1]).max())]
            for name, data in ranges.data.items()}


def int8_bytes(network: nn.Module, ranges: dict[str, list[float]], example: torch.Tensor) -> bytes:
    """`network` quantised to int8 (QDQ) with the calibrated `ranges`; no faces needed."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    overrides = {name: [{"rmin": np.float32(low), "rmax": np.float32(high)}] for name, (low, high) in ranges.items()}
    with tempfile.TemporaryDirectory() as tmp:
        graph = _float_graph(network, Path(tmp), example)
        quantized = Path(tmp) / "int8.onnx"
        # The ranges come from the overrides; the reader's one batch only lets the calibrator run.
        quantize_static(str(graph), str(quantized), _Batches([example[:1].numpy()]), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        extra_options={"TensorQuantOverrides": overrides})
        return quantized.read_bytes()


def int8_network(network: nn.Module, ranges: dict[str, list[float]], example: torch.Tensor,
                 threads: int | None = None) -> nn.Module:
    """The int8 onnxruntime session of `network`, called like a torch module."""
    return OnnxRuntimeNetwork(int8_bytes(network, ranges, example), threads)


def input_shape(network: nn.Module) -> tuple[int, int, int]:
    """(channels, size, size) of the faces `network` takes (its input spec, an ensemble's members'); an
    ensemble whose members take different specs has no one graph input: ValueError."""
    specs = input_specs(network)
    if len(specs) != 1:
        raise ValueError(f"its members take {len(specs)} input specs")
    return specs[0].shape


def read_ranges(folder: Path) -> tuple[dict[str, list[float]] | None, str]:
    """(the int8 ranges kept in `folder`, "") when they were judged within tolerance on test; else
    (None, why not in a few words)."""
    path = Path(folder) / INT8_RANGES_FILE
    if not path.is_file():
        return None, f"no {INT8_RANGES_FILE}: run `facetune quantize`"
    record = json.loads(path.read_text())
    if not record.get("within_tolerance"):
        return None, f"its int8 test figures were outside tolerance ({path})"
    return record["ranges"], ""


def int8_twin(network: nn.Module, folder: Path, threads: int | None = None) -> tuple[nn.Module | None, str]:
    """(the int8 onnxruntime network of `network` with the ranges kept in `folder`, "") or (None, why not)."""
    ranges, reason = read_ranges(folder)
    if ranges is None:
        return None, reason
    try:
        return int8_network(network, ranges, torch.zeros(2, *input_shape(network)), threads), ""
    except Exception as error:  # a graph the quantiser cannot take: float32 instead
        return None, f"not quantisable ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
