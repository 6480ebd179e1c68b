"""What the service computes: which models answer, and faces -> JSON entries.

Predictions go through Predictor.raw_outputs and each task's own `predict` (the heads
Predictor.frame uses), so the numbers are those of `facetune predict` on the same faces.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from facetune.predict.faces import Faces
from facetune.predict.predictor import Predictor
from facetune.tasks import TASKS


def load_predictor(models: str | None, family: str | None = None, device: str | None = None,
                   pretrained: str = "ensemble") -> Predictor:
    """The sweep's best models from `models`, else the `pretrained` model shipped in the package."""
    if models:
        return Predictor.from_results(models, family=family, device=device)
    return Predictor.pretrained(device=device, which=pretrained)


def models_used(predictor: Predictor) -> dict[str, str]:
    """task -> the model answering it, as '<family> (<model dir name>)'."""
    return {task: f"{m.family} ({m.model_dir.name})" for task, m in predictor.models.items()}


def describe_models(predictor: Predictor) -> dict[str, Any]:
    """What GET /models answers: per task the model, and its validation and test figures."""
    return {
        task: {
            "family": m.family,
            "model": m.model_dir.name,
            "val": _finite(m.summary.get("val") or {}),
            "test": _finite(m.summary.get("test") or {}),
        }
        for task, m in predictor.models.items()
    }


def face_entries(predictor: Predictor, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """One JSON-ready dict per crop, (H, W) gray or (H, W, 3) RGB uint8 at any resolution (each
    model is given it converted to its own input spec): age (and age_std when the model gives
    one), gender and ethnicity each as label, its probability and every class's probability."""
    if not crops:
        return []
    outputs = predictor.raw_outputs(Faces.from_images(crops, predictor.input_specs))
    entries: list[dict[str, Any]] = [{} for _ in crops]
    for task_name, values in outputs.items():
        task = TASKS[task_name]
        predicted = task.predict(torch.as_tensor(values))
        for i, entry in enumerate(entries):
            if task.kind == "regression":
                entry[task_name] = round(float(predicted["pred"][i]), 2)
                if "std" in predicted:  # only models with an uncertainty head have a spread
                    entry[f"{task_name}_std"] = round(float(predicted["std"][i]), 2)
                continue
            probs = predicted["probs"][i]
            best = int(predicted["pred"][i])
            entry[task_name] = {
                "label": task.class_names[best],
                "probability": round(float(probs[best]), 4),
                "probabilities": {name: round(float(p), 4) for name, p in zip(task.class_names, probs)},
            }
    return entries


def _finite(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics with NaN/inf as null: JSON has no NaN, and r2 on one sample is NaN."""
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in figures.items()
    }
