"""Export a Predictor's models to ONNX, with the preprocessing contract in each file's metadata.

One file per task (`<task>.onnx`): input `faces` (N, C, S, S) float32 in [0, 1] in the model's own
input spec, output `outputs` (N, num_outputs), the same raw outputs as the torch model
(facetune.tasks turns them into labels). `facetune.contract` in the metadata says how faces must
be prepared (their shape and spec included); an ensemble whose members take different specs has
no single input and is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from facetune.errors import InvalidInputError
from facetune.models.ensemble import input_specs
from facetune.models.inference import forward_views
from facetune.models.onnx_engine import INPUT_NAME, OUTPUT_NAME, onnx_bytes
from facetune.predict import face_detection as faces_module
from facetune.predict.faces import Faces, spec_of_array, to_uint8
from facetune.predict.predictor import Predictor
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec
from facetune.tasks import TASKS

CONTRACT_KEY = "facetune.contract"


class FlipAveraged(torch.nn.Module):
    """A model whose outputs are averaged with its mirror image's (the Predictor's tta_flip), in the graph."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_views(self.module, x, tta_flip=True)


def model_spec(module: torch.nn.Module, name: str = "model") -> InputSpec:
    """The one input spec of `module`; an ensemble whose members take different ones is refused
    with one line naming `name` (an ONNX graph has one input)."""
    specs = input_specs(module)
    if len(specs) != 1:
        raise InvalidInputError(f"{name}: its ensemble members take different input specs "
                                f"({', '.join(s.describe() for s in specs)}); ONNX export needs one")
    return specs[0]


def contract(task: str, tta_flip: bool = False, num_outputs: int | None = None,
             input_spec: InputSpec = DEFAULT_INPUT_SPEC) -> dict:
    """What a caller must do to a face before the model (of `input_spec`), and what comes out."""
    spec = TASKS[task]
    distribution = spec.kind == "regression" and (num_outputs or 1) > 1
    if distribution:
        meaning = "logits over ages 0..%d; the age is the expectation of their softmax" % ((num_outputs or 1) - 1)
    else:
        meaning = "age in years" if spec.kind == "regression" else "logits; softmax gives class probabilities"
    return {
        "input": {"name": "faces", "shape": ["N", *input_spec.shape], "dtype": "float32", "range": [0.0, 1.0],
                  "input_spec": input_spec.to_dict()},
        "preprocessing": [
            "find the face; crop a square of side box_w / %.3f whose centre is the box centre moved "
            "(%.3f, %.3f) crop sides right/down, rotated so the eyes are level (facetune.predict.face_detection)"
            % (faces_module.BOX_PER_CROP, *faces_module.CROP_CENTRE_OFFSET),
            "to RGB with PIL Image.convert('RGB') (a gray image's channel replicated), channels first"
            if input_spec.is_color else "to gray with PIL Image.convert('L') (ITU-R 601-2 luma)",
            f"resize to {input_spec.size}x{input_spec.size} with PIL's Lanczos filter",
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
    specs = {task: model_spec(m.module, f"{task} model {m.model_dir}") for task, m in predictor.models.items()}
    for task, task_model in predictor.models.items():
        example = torch.rand(2, *specs[task].shape)  # the network's own layout
        module = task_model.module.to("cpu").eval()
        # eval() on the wrapper too: the exporter restores its mode afterwards, recursively.
        exported = FlipAveraged(module).eval() if predictor.tta_flip else module
        with torch.no_grad():
            num_outputs = int(exported(example).shape[1])
        path = out / f"{task}.onnx"
        model = onnx.load_from_string(onnx_bytes(exported, example))
        meta = {CONTRACT_KEY: json.dumps(contract(task, predictor.tta_flip, num_outputs, specs[task])),
                "facetune.family": task_model.family,
                "facetune.source": str(task_model.model_dir)}
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        written[task] = path
        module.to(predictor.device)
    return written


def exported_spec(path: str | os.PathLike[str]) -> InputSpec:
    """The input spec an exported file's contract states (48x48 gray for files written before specs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {entry.key: entry.value for entry in model.metadata_props}
    return InputSpec.from_dict(json.loads(meta[CONTRACT_KEY])["input"].get("input_spec", DEFAULT_INPUT_SPEC.to_dict()))


def onnx_outputs(path: str | os.PathLike[str], images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Run one exported model with onnxruntime on (N, C, S, S) float32 faces in its input spec."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size].astype(np.float32)})[0]
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def max_abs_difference(predictor: Predictor, paths: dict[str, Path], faces: Faces | np.ndarray) -> dict[str, float]:
    """task -> max |onnxruntime - torch| over `faces` (the parity check): Faces, or (N, C, S, S) float32
    faces in one layout; each file is given them in its own spec, as the Predictor gives its model."""
    if isinstance(faces, np.ndarray):
        images = torch.from_numpy(faces)
        reference = predictor.raw_outputs(images)
        held = Faces.from_pixels(to_uint8(images), spec_of_array(faces))

        def inputs(spec: InputSpec) -> np.ndarray:
            return faces if spec == spec_of_array(faces) else held.images(spec).numpy()
    else:
        reference = predictor.raw_outputs(faces)

        def inputs(spec: InputSpec) -> np.ndarray:
            return faces.images(spec).numpy()
    return {task: float(np.max(np.abs(onnx_outputs(paths[task], inputs(exported_spec(paths[task]))) - reference[task])))
            for task in paths}
