"""Score predictions against known labels, next to the sweep's own test figures, and per group
(facetune.groups) with 95% bootstrap intervals."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from facetune.group_figures import figure_of, format_figure, metric_name, per_face_scores
from facetune.groups import ATTRIBUTES, group_labels, group_name, label_column
from facetune.predict.predictor import Predictor
from facetune.predict.table import PredictionResult
from facetune.tasks import TASKS

#: The figures `facetune predict --evaluate` prints per task (all of task.metrics are computed).
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "age": ("mae", "rmse"),
    "gender": ("accuracy", "roc_auc"),
    "ethnicity": ("accuracy", "macro_f1"),
}


def evaluate(predictor: Predictor, result: PredictionResult, labels: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, metric): the value on these inputs and the sweep's test value.

    `labels` is aligned with the inputs (row i = input i, <NA> when unknown); only predicted
    rows with a known label count, and `n` says how many did.
    """
    rows = []
    positions = result.predictions.index.to_numpy()
    for task_name, task_model in predictor.models.items():
        known = labels[task_name].iloc[positions].notna().to_numpy()
        n = int(known.sum())
        if n == 0:
            continue
        y_true = labels[task_name].iloc[positions].to_numpy()[known].astype("int64")
        values = TASKS[task_name].metrics(y_true, result.outputs[task_name][known])
        sweep_test = dict(task_model.summary.get("test") or {})
        for metric, value in values.items():
            rows.append(
                {
                    "task": task_name,
                    "family": task_model.family,
                    "metric": metric,
                    "value": value,
                    "sweep_test": sweep_test.get(metric, math.nan),
                    "n": n,
                }
            )
    return pd.DataFrame(rows, columns=["task", "family", "metric", "value", "sweep_test", "n"])


def format_evaluation(table: pd.DataFrame, all_metrics: bool = False) -> str:
    """A plain-text table of `evaluate`'s rows (headline metrics unless all_metrics)."""
    if table.empty:
        return "no labelled predictions to evaluate"
    if not all_metrics:
        keep = [m in HEADLINE_METRICS.get(t, ()) for t, m in zip(table["task"], table["metric"])]
        table = table[keep]
    lines = [f"{'task':<10} {'family':<8} {'metric':<18} {'this run':>9} {'sweep test':>11} {'n':>7}"]
    for row in table.itertuples():
        sweep = "-" if math.isnan(row.sweep_test) else f"{row.sweep_test:.4f}"
        lines.append(f"{row.task:<10} {row.family:<8} {row.metric:<18} {row.value:>9.4f} {sweep:>11} {row.n:>7}")
    return "\n".join(lines)


def evaluate_groups(predictor: Predictor, result: PredictionResult, labels: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, group) of the faces whose task label and group label are known:
    task, group, n, value (MAE or accuracy) and its 95% interval (low, high)."""
    rows = []
    positions = result.predictions.index.to_numpy()
    for task_name in predictor.models:
        known = labels[task_name].iloc[positions].notna().to_numpy()
        if not known.any():
            continue
        y_true = labels[task_name].iloc[positions].to_numpy()[known].astype("int64")
        y_pred = TASKS[task_name].predict(result.outputs[task_name][known])["pred"]
        scores = per_face_scores(task_name, y_true, y_pred)
        for attribute in ATTRIBUTES:
            values = labels[label_column(attribute)].iloc[positions].to_numpy()[known]
            present = pd.notna(values)
            groups = group_labels(attribute, values[present].astype("int64"))
            for label in groups.categories:
                in_group = np.asarray(groups == label)
                if in_group.any():
                    rows.append({"task": task_name, "group": group_name(attribute, label),
                                 **figure_of(scores[present][in_group])})
    return pd.DataFrame(rows, columns=["task", "group", "n", "value", "low", "high"])


def format_groups(table: pd.DataFrame) -> str:
    """A plain-text table of `evaluate_groups`' rows: each figure with its 95% interval and size."""
    if table.empty:
        return ""
    lines = [f"{'task':<10} {'group':<18} {'metric':<9} {'value [95% interval]':<36} {'n':>7}"]
    for row in table.itertuples():
        lines.append(f"{row.task:<10} {row.group:<18} {metric_name(row.task):<9} "
                     f"{format_figure(row.task, row._asdict()):<36} {row.n:>7}")
    return "\n".join(lines)
