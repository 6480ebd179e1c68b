"""Per-group test figures of a sweep's combinations (facetune.groups' groups) from test_predictions.csv,
each with its 95% bootstrap interval (facetune.group_figures).

The groups come from the true labels of each face, whatever the task: a gender model's
accuracy is reported per ethnicity and per age band too.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from facetune.group_figures import figure_of, metric_name, per_face_scores, summary
from facetune.groups import ATTRIBUTES, MIN_GROUP_SIZE, group_labels, group_name, label_column


def _groups(predictions: pd.DataFrame, attribute: str) -> pd.Series:
    try:
        labels = group_labels(attribute, predictions[label_column(attribute)])
    except ValueError as err:
        raise ValueError(f"test_predictions.csv: {err}") from None
    return pd.Series(labels, index=predictions.index)


def per_sample_scores(predictions: pd.DataFrame, task: str) -> pd.Series:
    """Absolute error (age) or 1/0 correctness (classifiers) of each test face."""
    return pd.Series(per_face_scores(task, predictions["y_true"], predictions["y_pred"]), index=predictions.index)


def group_metrics(predictions: pd.DataFrame, task: str, attribute: str) -> pd.DataFrame:
    """One row per group of `attribute` (empty groups included): group, n, value and its 95% interval (low, high)."""
    scores, groups = per_sample_scores(predictions, task).to_numpy(), _groups(predictions, attribute)
    rows = [{"group": str(label), **figure_of(scores[(groups == label).to_numpy()])} for label in groups.cat.categories]
    return pd.DataFrame(rows, columns=["group", "n", "value", "low", "high"])


def fairness_gaps(predictions: pd.DataFrame, task: str, min_group_size: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """Per attribute: best and worst ranked group, their metric (the worst's with its interval), the gap, and unranked groups."""
    rows = []
    for attribute in ATTRIBUTES:
        result = summary(group_metrics(predictions, task, attribute), task, min_group_size)
        row = {"attribute": attribute, "metric": metric_name(task), "best_group": "", "best": np.nan, "worst_group": "",
               "worst": np.nan, "worst_low": np.nan, "worst_high": np.nan, "gap": np.nan,
               "unranked": ", ".join(f"{g} (n={n})" for g, n in result["unranked"])}
        if "worst" in result:
            worst, best = result["worst"], result["best"]
            row.update(best_group=best["group"], best=best["value"], worst_group=worst["group"], worst=worst["value"],
                       worst_low=worst["low"], worst_high=worst["high"], gap=result["gap"])
        rows.append(row)
    return pd.DataFrame(rows)


def task_summary(predictions: pd.DataFrame, task: str, min_group_size: int = MIN_GROUP_SIZE) -> dict:
    """group_figures.summary over every group of every attribute (named as on the model card)."""
    tables = [group_metrics(predictions, task, attribute).assign(group=lambda f, a=attribute: [group_name(a, g) for g in f["group"]])
              for attribute in ATTRIBUTES]
    return summary(pd.concat(tables, ignore_index=True), task, min_group_size)
