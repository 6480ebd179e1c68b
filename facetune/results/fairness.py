"""Per-group test metrics (by ethnicity, gender and age band) from test_predictions.csv.

The groups come from the true labels of each face, whatever the task: a gender model's
accuracy is reported per ethnicity and per age band too.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from facetune.tasks import TASKS

ATTRIBUTES: tuple[str, ...] = ("ethnicity", "gender", "age_band")
AGE_BAND_WIDTH = 10
#: Ages from here on share one band: UTKFace has few faces over 90.
OLDEST_BAND_START = 90
#: Groups with fewer test faces are shown but not ranked as best or worst: their metric is noise.
MIN_GROUP_SIZE = 10


def age_band_labels() -> list[str]:
    starts = range(0, OLDEST_BAND_START, AGE_BAND_WIDTH)
    return [f"{s}-{s + AGE_BAND_WIDTH - 1}" for s in starts] + [f"{OLDEST_BAND_START}+"]


def age_bands(ages: np.ndarray | pd.Series) -> pd.Categorical:
    """Ages in years -> ordered band labels "0-9", "10-19", ..., "90+"."""
    labels = age_band_labels()
    index = np.minimum(np.asarray(ages, dtype=float) // AGE_BAND_WIDTH, len(labels) - 1).astype(int)
    return pd.Categorical.from_codes(index, categories=labels, ordered=True)


def metric_name(task: str) -> str:
    """The per-group metric: MAE in years for age, accuracy for the classifiers."""
    return "mae" if TASKS[task].kind == "regression" else "accuracy"


def lower_is_better(task: str) -> bool:
    return TASKS[task].kind == "regression"


def _groups(predictions: pd.DataFrame, attribute: str) -> pd.Series:
    if attribute == "age_band":
        return pd.Series(age_bands(predictions["age"]), index=predictions.index)
    names = TASKS[attribute].class_names
    codes = predictions[attribute].astype(int)
    unknown = sorted(set(codes) - set(range(len(names))))
    if unknown:
        raise ValueError(f"test_predictions.csv: {attribute} codes {unknown} outside 0..{len(names) - 1}")
    return pd.Series(pd.Categorical.from_codes(codes, categories=list(names)), index=predictions.index)


def per_sample_scores(predictions: pd.DataFrame, task: str) -> pd.Series:
    """Absolute error (age) or 1/0 correctness (classifiers) of each test face."""
    if lower_is_better(task):
        return (predictions["y_pred"].astype(float) - predictions["y_true"].astype(float)).abs()
    return (predictions["y_pred"].astype(int) == predictions["y_true"].astype(int)).astype(float)


def group_metrics(predictions: pd.DataFrame, task: str, attribute: str) -> pd.DataFrame:
    """One row per group of `attribute` (empty groups included): group, n, value."""
    scores = per_sample_scores(predictions, task)
    grouped = scores.groupby(_groups(predictions, attribute), observed=False)
    frame = pd.DataFrame({"n": grouped.size(), "value": grouped.mean()})
    frame.index.name = "group"
    return frame.reset_index().assign(group=lambda f: f["group"].astype(str))


def fairness_gaps(predictions: pd.DataFrame, task: str, min_group_size: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """Per attribute: best and worst ranked group, their metric, the gap, and unranked groups."""
    rows = []
    lower = lower_is_better(task)
    for attribute in ATTRIBUTES:
        groups = group_metrics(predictions, task, attribute)
        ranked = groups[groups["n"] >= min_group_size].sort_values("value", ascending=lower)
        too_small = groups[(groups["n"] > 0) & (groups["n"] < min_group_size)]
        row = {"attribute": attribute, "metric": metric_name(task), "best_group": "", "best": np.nan,
               "worst_group": "", "worst": np.nan, "gap": np.nan,
               "unranked": ", ".join(f"{g} (n={n})" for g, n in zip(too_small["group"], too_small["n"]))}
        if len(ranked) >= 1:
            best, worst = ranked.iloc[0], ranked.iloc[-1]
            row.update(best_group=best["group"], best=best["value"], worst_group=worst["group"],
                       worst=worst["value"], gap=abs(worst["value"] - best["value"]))
        rows.append(row)
    return pd.DataFrame(rows)
