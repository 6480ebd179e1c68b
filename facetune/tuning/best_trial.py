"""After a combination's search: evaluate its best trial once on test and write its results folder.

Layout (docs/design.md, "Results directory"): best_config.json, history.csv, test_metrics.json,
test_predictions.csv, model.pt + model_config.json, trials.csv; returns the summary entry.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetune.config_files import flatten
from facetune.json_files import write_json
from facetune.records import (
    BEST_CONFIG_FILE,
    HISTORY_FILE,
    MODEL_WEIGHTS_FILE,
    TEST_METRICS_FILE,
    TEST_PREDICTIONS_FILE,
    TRIALS_FILE,
    SummaryEntry,
)
from facetune.tuning.trainable import SweepData, load_training_state, model_context, pixels_to_device

VAL_PREFIX = "val_"
#: What a multitask trial is selected by (its epochs keep the best of this too; facetune.training.loop).
MULTITASK_METRIC, MULTITASK_MODE = "val_error_sum", "min"


def validation_metric(family: str, task_name: str) -> str:
    """The trial metric a combination's best trial is chosen by: val_<metric>, or for a multitask
    family's view of one task, val_<task>_<metric>."""
    from facetune.models.registry import is_multitask_family
    from facetune.tasks import TASKS

    return VAL_PREFIX + (f"{task_name}_" if is_multitask_family(family) else "") + TASKS[task_name].metric


def without_replayed_epochs(history: pd.DataFrame | None) -> pd.DataFrame | None:
    """A trial's history minus the reports a resume superseded.

    Tune delivers results at least once: when a node dies after a trial's epoch-N report reached
    the driver (and result.json) but before its checkpoint was registered, the trial resumes from
    epoch N-1's checkpoint and reports epoch N again. The later report is the one its weights went
    on from, so a report whose training_iteration a later one repeats (or precedes) is dropped.
    """
    if history is None or "training_iteration" not in history:
        return history
    iterations = history["training_iteration"].to_numpy(dtype=float)
    # The smallest iteration reported after each row: a row is kept when it is below that.
    later = np.append(np.minimum.accumulate(iterations[::-1])[::-1][1:], np.inf)
    return history[iterations < later].reset_index(drop=True)


def once_per_epoch(result: Any) -> Any:
    """A copy of `result` (a ray.tune.Result) whose metrics_dataframe is `without_replayed_epochs`."""
    kept = copy.copy(result)
    kept.metrics_dataframe = without_replayed_epochs(result.metrics_dataframe)
    return kept


def best_result(results: Iterable[Any], metric: str, mode: str) -> Any | None:
    """The result (ray.tune.Result) whose best epoch is best at `metric`, over every epoch it
    reported (NaN and inf ignored); None when no result with a checkpoint reported it."""
    best, best_value = None, None
    for result in results:
        frame = result.metrics_dataframe
        if result.checkpoint is None or frame is None or metric not in frame:
            continue
        values = pd.to_numeric(frame[metric], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
        if values.empty:
            continue
        value = float(values.min() if mode == "min" else values.max())
        if best_value is None or (value < best_value if mode == "min" else value > best_value):
            best, best_value = result, value
    return best


def export_best(
    results: Sequence[Any],
    family: str,
    task_name: str,
    tuned_keys: list[str],
    data: SweepData,
    test_split: Any,
    out_dir: Path,
) -> SummaryEntry | None:
    """Write the best of `results` (one combination's trials, as ray.tune.Result objects or a
    ResultGrid) to `out_dir`; None if no trial finished an epoch.

    For the multitask family, `results` are the trials of all three tasks: the trial best at
    `task_name` is chosen and its whole multitask model saved (predict shares its forward pass).
    """
    import torch

    from facetune.models import build_model, save_model
    from facetune.models.multitask import TaskView
    from facetune.models.registry import is_multitask_family
    from facetune.tasks import MULTITASK, TASKS
    from facetune.training.loop import evaluate

    # Both paths (the driver's reports, a ResultGrid read back from storage) enter here.
    results = [once_per_epoch(result) for result in results]
    task = TASKS[task_name]
    multitask = is_multitask_family(family)
    metric = validation_metric(family, task_name)
    best = best_result(results, metric, task.mode)
    if best is None:
        return None

    with best.checkpoint.as_directory() as directory:
        state = load_training_state(directory)
    model_task = MULTITASK if multitask else task_name
    train_config = best.config.get("train", {})
    model = build_model(family, best.config["arch"], model_task, model_context(model_task, family, data, train_config.get("loss")))
    model.load_state_dict(state["best_state"])
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    context_meta = {**getattr(model, "context_meta", {}), **_context_meta(model_task, family, data)}
    save_model(model, out_dir, family=family, task=model_task, arch=best.config["arch"], context_meta=context_meta)

    history = best.metrics_dataframe
    history_columns = ["epoch"] + [c for c in history.columns if c.startswith(("train_", "val_"))] + \
        [c for c in ("epoch_seconds", "images_per_second") if c in history.columns]
    history = history[history_columns]
    history.to_csv(out_dir / HISTORY_FILE, index=False)

    started = time.perf_counter()
    test_x = pixels_to_device(test_split.pixels, "cpu", data.spec)
    test_y = torch.from_numpy(np.array(test_split.labels(task_name), dtype=np.int64))  # a copy: Arrow's arrays are read-only
    task_model = TaskView(model, task_name) if multitask else model
    test_metrics, outputs = evaluate(task_model, task, test_x, test_y, tta_flip=bool(train_config.get("tta_flip", False)))
    test_seconds = time.perf_counter() - started
    write_predictions(out_dir / TEST_PREDICTIONS_FILE, task, test_split, outputs)
    write_json(out_dir / TEST_METRICS_FILE, test_metrics)
    write_json(out_dir / BEST_CONFIG_FILE, best.config)
    trials = trials_table(results, metric, task.mode, tuned_keys)
    trials.to_csv(out_dir / TRIALS_FILE, index=False)

    # The row of the epoch whose weights were kept (multitask keeps the best val_error_sum epoch).
    selection, selection_mode = (MULTITASK_METRIC, MULTITASK_MODE) if multitask else (metric, task.mode)
    best_row = history.loc[history[selection].idxmin() if selection_mode == "min" else history[selection].idxmax()]
    prefix = VAL_PREFIX + (f"{task_name}_" if multitask else "")
    val_metrics = {c[len(prefix):]: float(best_row[c]) for c in history.columns
                   if c.startswith(prefix) and c != "val_loss"}
    return SummaryEntry(
        family=family,
        task=task_name,
        best_config=best.config,
        val=val_metrics,
        test={k: float(v) for k, v in test_metrics.items()},
        epochs=int(history["epoch"].max()),
        best_epoch=int(best_row["epoch"]),
        train_seconds=float(history["epoch_seconds"].sum()) if "epoch_seconds" in history else None,
        test_seconds=test_seconds,
        checkpoint=f"{out_dir.name}/{MODEL_WEIGHTS_FILE}",
        num_parameters=int(sum(p.numel() for p in model.parameters())),
        num_trials=len(trials),
        trial_id=_trial_id(best),
    )


def trials_table(results: Iterable[Any], metric: str, mode: str, tuned_keys: list[str]) -> pd.DataFrame:
    """One row per trial: its tuned hyperparameters (flattened), best val metric, epochs and status."""
    rows = []
    for result in results:
        flat = flatten(result.config)
        frame = result.metrics_dataframe
        values = frame[metric].dropna() if frame is not None and metric in frame else pd.Series(dtype=float)
        best_value = (values.min() if mode == "min" else values.max()) if len(values) else math.nan
        row = {"trial_id": _trial_id(result)}
        row.update({key: _cell(flat.get(key)) for key in tuned_keys})
        row[metric] = best_value
        row["epochs"] = int(frame["epoch"].max()) if frame is not None and "epoch" in frame else 0
        row["status"] = "error" if result.error else "finished"
        rows.append(row)
    return pd.DataFrame(rows)


def _trial_id(result: Any) -> str:
    return str(result.metrics.get("trial_id") or Path(result.path).name)


def _cell(value: Any) -> Any:
    # Lists (layer widths) go into the CSV as JSON so they stay one readable cell.
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def _context_meta(task_name: str, family: str, data: SweepData) -> dict[str, Any]:
    from facetune.tasks import MULTITASK

    meta: dict[str, Any] = {}
    if task_name in ("age", MULTITASK):
        meta.update(data.age_stats)
    if family == "pca_dnn" and data.pca is not None:
        meta["n_components"] = int(data.pca.components.shape[0])
    return meta


def write_predictions(path: Path, task: Any, split: Any, outputs: np.ndarray) -> None:
    """test_predictions.csv: each test face's labels, the prediction and the class probabilities."""
    predicted = task.predict(outputs)
    frame = pd.DataFrame({
        "source": split.source,
        "age": split.age,
        "gender": split.gender,
        "ethnicity": split.ethnicity,
        "y_true": split.labels(task.name),
        "y_pred": np.asarray(predicted["pred"]),
    })
    probs = predicted.get("probs")
    if probs is not None:
        for index in range(np.asarray(probs).shape[1]):
            frame[f"prob_{index}"] = np.asarray(probs)[:, index]
    frame.to_csv(path, index=False)


