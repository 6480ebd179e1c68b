"""int8 for a shipped model: calibrate its activation ranges on train faces, judge the int8
network on test against float32, and keep the ranges (and the verdict) in the model's folder,
where `--engine int8` finds them (facetune.models.int8)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime
import torch

from facetune.json_files import write_json
from facetune.models import load_model
from facetune.models.int8 import calibration_ranges, input_shape, int8_network
from facetune.models.onnx_engine import OPSET
from facetune.records import INT8_RANGES_FILE
from facetune.release.card import figures_line, rewrite_model_card
from facetune.release.evaluation import group_metrics
from facetune.release.paths import PRETRAINED_DIR, pretrained_folder
from facetune.release.train import release_splits
from facetune.tasks import TASKS
from facetune.training.loop import predict_outputs

#: Train faces the ranges are calibrated on (a seeded draw).
CALIBRATION_FACES = 512
#: The int8 network is used where its test figures stay this close to float32's: accuracy points, MAE years.
TOLERANCE = {"accuracy_points": 0.2, "age_mae_years": 0.05}


def within_tolerance(float32: dict[str, dict], int8: dict[str, dict]) -> bool:
    """Whether int8's overall test figures are within TOLERANCE of float32's."""
    points = max(abs(int8[t]["accuracy"] - float32[t]["accuracy"]) * 100 for t in ("gender", "ethnicity"))
    return points <= TOLERANCE["accuracy_points"] and abs(int8["age"]["mae"] - float32["age"]["mae"]) <= TOLERANCE["age_mae_years"]


def quantize_shipped(which: str, data: str | os.PathLike[str] | None, work: str | os.PathLike[str],
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Calibrate the shipped `which` model (PRETRAINED_CHOICES) on train faces, judge it on test and
    write its INT8_RANGES_FILE; the model card is written again to list it."""
    folder = pretrained_folder(which)
    model, _ = load_model(folder)
    splits, data_record = release_splits(data, Path(work), None)
    faces = splits["train"].images()
    chosen = np.sort(np.random.default_rng(0).choice(len(faces), size=min(CALIBRATION_FACES, len(faces)), replace=False))
    started = time.time()
    ranges = calibration_ranges(model, faces[torch.from_numpy(chosen)])
    quantised = int8_network(model, ranges, torch.zeros(2, *input_shape(model)))
    tta = which == "ensemble"  # each model as it answers by default
    test = splits["test"]
    labels = {name: np.asarray(test.labels(name)) for name in TASKS}
    figures = {engine: group_metrics(predict_outputs(network, test.images(), tta_flip=tta), labels, model.split_outputs)["overall"]
               for engine, network in (("float32", model), ("int8", quantised))}
    record = {
        "ranges": ranges,
        "calibration": {"split": "train", "faces": len(chosen), "seed": 0, "method": "min-max"},
        "data": data_record,
        "quantisation": "static QDQ: int8 weights per channel, uint8 activations",
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
        "tta_flip": tta,
        "test": figures,
        "tolerance": TOLERANCE,
        "within_tolerance": within_tolerance(figures["float32"], figures["int8"]),
    }
    write_json(folder / INT8_RANGES_FILE, record, sort_keys=True)
    rewrite_model_card(PRETRAINED_DIR)
    log(f"[quantize] {which}: test float32 {figures_line(figures['float32'])}; int8 {figures_line(figures['int8'])}: "
        f"{'within' if record['within_tolerance'] else 'outside'} tolerance ({time.time() - started:.0f} s); wrote {folder / INT8_RANGES_FILE}")
    return record
