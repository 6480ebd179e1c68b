"""The release's figures: every task's metrics overall and per group, each group's headline figure
(age MAE, gender and ethnicity accuracy) with its 95% bootstrap interval."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from facetune.group_figures import bootstrap_interval, metric_name, per_face_scores
from facetune.groups import group_masks
from facetune.tasks import TASKS
from facetune.training.loop import predict_outputs

#: Beside a task's metrics, its headline figure's 95% interval, [low, high].
INTERVAL_KEY = "interval"


def group_metrics(outputs: np.ndarray, labels: dict[str, np.ndarray], split_outputs: Callable[[Any], dict]) -> dict[str, dict]:
    """group -> task -> its metrics, `n` (faces) and INTERVAL_KEY, for "overall" and every group of
    facetune.groups with at least two faces."""
    parts = split_outputs(torch.from_numpy(outputs))
    scores = {name: per_face_scores(name, labels[name], TASKS[name].predict(parts[name].numpy())["pred"]) for name in TASKS}

    def metrics_of(mask: np.ndarray) -> dict[str, dict[str, Any]]:
        subset = split_outputs(torch.from_numpy(outputs[mask]))
        return {name: TASKS[name].metrics(labels[name][mask], subset[name].numpy())
                | {"n": int(mask.sum()), INTERVAL_KEY: list(bootstrap_interval(scores[name][mask]))} for name in TASKS}

    masks = {"overall": np.ones(len(outputs), bool)} | group_masks(labels)
    return {group: metrics_of(mask) for group, mask in masks.items() if mask.sum() > 1}


def headline(group: dict[str, dict[str, Any]], task: str) -> dict[str, Any]:
    """One task's headline figure of a group_metrics entry: {"n", "value", "low", "high"}."""
    low, high = group[task].get(INTERVAL_KEY) or (float("nan"), float("nan"))
    return {"n": group[task]["n"], "value": group[task][metric_name(task)], "low": low, "high": high}


def evaluate(model: torch.nn.Module, split: Any, tta: bool) -> dict[str, dict]:
    """group_metrics of `model` on one split's faces (a facetune.data.loading split)."""
    outputs = predict_outputs(model, split.images(), tta_flip=tta)
    return group_metrics(outputs, {name: np.asarray(split.labels(name)) for name in TASKS}, model.split_outputs)


def evaluate_task_member(model: torch.nn.Module, task: str, split: Any) -> dict[str, Any]:
    """A task member alone, flip averaging, on its own task: {"task": task, **its metrics}."""
    outputs = predict_outputs(model, split.images(), tta_flip=True)
    return {"task": task, **TASKS[task].metrics(np.asarray(split.labels(task)), outputs)}
