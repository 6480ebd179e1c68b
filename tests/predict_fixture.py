"""A tiny results directory for predict tests: real (untrained, seeded) models saved with
facetune.models.save_model and a summary.json laid out as the sweep writes it.

Two families per task with different validation scores, so tests can check which one
Predictor.from_results picks; test figures are computed on the given test faces with the
tasks' own metrics, as the sweep does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from facetune.models import build_model, save_model
from facetune.records import IMAGE_SIZE, MODEL_WEIGHTS_FILE, SUMMARY_FILE, SummaryEntry, combination_name, summary_to_json
from facetune.tasks import TASKS

#: Small enough to build in milliseconds; the shapes of the real families.
TINY_ARCHS = {
    "cnn": {"conv_channels": [4, 8], "dense": [16]},
    "dnn": {"dense": [16]},
}
#: Validation scores written to summary.json: cnn wins every task (lower mae, higher accuracy).
VAL_SCORES = {"cnn": {"mae": 7.0, "accuracy": 0.8}, "dnn": {"mae": 9.0, "accuracy": 0.6}}


def build_results_dir(out: Path, test_pixels: np.ndarray, test_labels: dict[str, np.ndarray], seed: int = 0) -> Path:
    """Write OUT/summary.json and OUT/<family>_<task>/model.pt for cnn and dnn on every task."""
    out.mkdir(parents=True, exist_ok=True)
    images = torch.from_numpy(test_pixels.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32) / 255.0)
    summary = []
    for index, (family, arch) in enumerate(TINY_ARCHS.items()):
        for task_name, task in TASKS.items():
            torch.manual_seed(seed + index)
            context = {"target_mean": 35.0, "target_std": 20.0} if task.kind == "regression" else {}
            model = build_model(family, arch, task_name, context).eval()
            model_dir = out / combination_name(family, task_name)
            save_model(model, model_dir, family=family, task=task_name, arch=arch, context_meta={})
            with torch.no_grad():
                test = task.metrics(test_labels[task_name], model(images))
            summary.append(SummaryEntry(
                family=family,
                task=task_name,
                best_config={"arch": arch},
                val={task.metric: VAL_SCORES[family][task.metric]},
                test=test,
                epochs=1,
                train_seconds=0.0,
                checkpoint=f"{model_dir.name}/{MODEL_WEIGHTS_FILE}",
                num_parameters=sum(p.numel() for p in model.parameters()),
            ))
    (out / SUMMARY_FILE).write_text(json.dumps(summary_to_json(summary), indent=2))
    return out
