"""Export a Predictor's models to ONNX, with the preprocessing contract in each file's metadata.

One file per task (`<task>.onnx`): input `faces` (N, 1, 48, 48) float32 in [0, 1], output
`outputs` (N, num_outputs), the same raw outputs as the torch model (facetune.tasks turns them
into labels). `facetune.contract` in the metadata says how faces must be prepared.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from facetune.models.inference import forward_views
from facetune.models.onnx_engine import INPUT_NAME, OUTPUT_NAME, onnx_bytes
from facetune.predict import face_detection as faces_module
from facetune.predict.predictor import Predictor
from facetune.records import IMAGE_SIZE
from facetune.tasks import TASKS

CONTRACT_KEY = "facetune.contract"


class FlipAveraged(torch.nn.Module):
    """A model whose outputs are averaged with its mirror image's (the Predictor's tta_flip), in the graph."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_views(self.module, x, tta_flip=True)


def contract(task: str, tta_flip: bool = False, num_outputs: int | None = None) -> dict:
    """What a caller must do to a face before the model, and what comes out."""
    spec = TASKS[task]
    distribution = spec.kind == "regression" and (num_outputs or 1) > 1
    if distribution:
        meaning = "logits over ages 0..%d; the age is the expectation of their softmax" % ((num_outputs or 1) - 1)
    else:
        meaning = "age in years" if spec.kind == "regression" else "logits; softmax gives class probabilities"
    return {
        "input": {"name": "faces", "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32", "range": [0.0, 1.0]},
        "preprocessing": [
            "find the face; crop a square of side box_w / %.3f whose centre is the box centre moved "
            "(%.3f, %.3f) crop sides right/down, rotated so the eyes are level (facetune.predict.face_detection)"
            % (faces_module.BOX_PER_CROP, *faces_module.CROP_CENTRE_OFFSET),
            "to gray with PIL Image.convert('L') (ITU-R 601-2 luma)",
            f"resize to {IMAGE_SIZE}x{IMAGE_SIZE} with PIL's Lanczos filter",
            "divide the 0..255 values by 255",
        ],
        "output": {
            "name": "outputs",
            "task": task,
            "kind": spec.kind,
            "num_outputs": num_outputs or spec.num_outputs,
            "class_names": list(spec.class_names) if spec.kind != "regression" else None,
            "meaning": meaning,
        },
        # The graph already averages each face with its mirror image when this is true.
        "flip_averaged": bool(tta_flip),
    }


def export_onnx(predictor: Predictor, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write OUT/<task>.onnx for every task of `predictor`; returns task -> path."""
    import onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    for task, task_model in predictor.models.items():
        module = task_model.module.to("cpu").eval()
        # eval() on the wrapper too: the exporter restores its mode afterwards, recursively.
        exported = FlipAveraged(module).eval() if predictor.tta_flip else module
        with torch.no_grad():
            num_outputs = int(exported(example).shape[1])
        path = out / f"{task}.onnx"
        model = onnx.load_from_string(onnx_bytes(exported, example))
        meta = {CONTRACT_KEY: json.dumps(contract(task, predictor.tta_flip, num_outputs)), "facetune.family": task_model.family,
                "facetune.source": str(task_model.model_dir)}
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        written[task] = path
        module.to(predictor.device)
    return written


def onnx_outputs(path: str | os.PathLike[str], images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Run one exported model with onnxruntime on (N, 1, 48, 48) float32 faces."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size].astype(np.float32)})[0]
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def max_abs_difference(predictor: Predictor, paths: dict[str, Path], images: np.ndarray) -> dict[str, float]:
    """task -> max |onnxruntime - torch| over `images` (the parity check)."""
    reference = predictor.raw_outputs(torch.from_numpy(images))
    return {task: float(np.max(np.abs(onnx_outputs(paths[task], images) - reference[task])))
            for task in paths}
