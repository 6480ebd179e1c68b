"""Per-group figures with 95% bootstrap intervals, and what a reader looks for in them.

A group's figure is the mean of a per-face score (absolute age error in years, or 1/0 for a right
or wrong class), so its interval comes from resampling that group's faces with replacement
(percentile bootstrap, seeded: the same predictions always give the same interval). Summaries rank
only groups of at least MIN_GROUP_SIZE faces; smaller ones are shown and marked.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from facetune.groups import CHILDREN, MIN_GROUP_SIZE, OVER_60, group_name
from facetune.tasks import TASKS

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
#: The columns of a per-group table.
COLUMNS: tuple[str, ...] = ("group", "n", "value", "low", "high")


def metric_name(task: str) -> str:
    """The per-group figure: MAE in years for age, accuracy for the classifiers."""
    return "mae" if TASKS[task].kind == "regression" else "accuracy"


def lower_is_better(task: str) -> bool:
    return TASKS[task].kind == "regression"


def per_face_scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Absolute error (age) or 1/0 correctness (classifiers) of each face; their mean is the figure."""
    if lower_is_better(task):
        return np.abs(np.asarray(y_pred, float) - np.asarray(y_true, float))
    return (np.asarray(y_pred).astype(int) == np.asarray(y_true).astype(int)).astype(float)


def bootstrap_interval(scores: np.ndarray, seed: int = SEED) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `scores` (nan, nan for fewer than 2)."""
    scores = np.asarray(scores, float)
    if len(scores) < 2:
        return (float("nan"), float("nan"))
    if np.all(scores == scores[0]):  # every resample gives the same mean
        return (float(scores[0]), float(scores[0]))
    result = stats.bootstrap((scores,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                             method="percentile", random_state=np.random.default_rng(seed))
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def figure_of(scores: np.ndarray) -> dict[str, float]:
    """{"n", "value", "low", "high"} of one group's per-face scores."""
    low, high = bootstrap_interval(scores)
    return {"n": int(len(scores)), "value": float(np.mean(scores)) if len(scores) else float("nan"), "low": low, "high": high}


def group_table(scores: np.ndarray, masks: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per group (COLUMNS) of the per-face `scores`."""
    return pd.DataFrame([{"group": name, **figure_of(scores[mask])} for name, mask in masks.items()], columns=list(COLUMNS))


def summary(table: pd.DataFrame, task: str, min_group_size: int = MIN_GROUP_SIZE) -> dict[str, Any]:
    """The worst and best ranked groups of a per-group table (group names as in groups.group_name),
    the gap between them, the groups too small to rank, and the task's own watched groups: female
    and male recall for gender, children's and over-60s' MAE for age."""
    lower = lower_is_better(task)
    ranked = table[table["n"] >= min_group_size].sort_values("value", ascending=lower)
    result: dict[str, Any] = {"metric": metric_name(task), "unranked": [
        (g, int(n)) for g, n in zip(table["group"], table["n"]) if 0 < n < min_group_size]}
    if len(ranked):
        best, worst = ranked.iloc[0], ranked.iloc[-1]
        result |= {"worst": _figure(worst), "best": _figure(best), "gap": abs(float(worst["value"]) - float(best["value"]))}
    watched = ({"female recall": group_name("gender", "female"), "male recall": group_name("gender", "male")}
               if task == "gender" else
               {f"MAE {CHILDREN}": group_name("age_band", CHILDREN), f"MAE {OVER_60}": group_name("age_band", OVER_60)}
               if task == "age" else {})
    rows = table.set_index("group")
    result["watched"] = {label: _figure(rows.loc[name], name) for label, name in watched.items() if name in rows.index}
    return result


def _figure(row: pd.Series, name: str | None = None) -> dict[str, Any]:
    return {"group": name or row["group"], "n": int(row["n"]), "value": float(row["value"]),
            "low": float(row["low"]), "high": float(row["high"])}


def format_value(task: str, value: float) -> str:
    if np.isnan(value):
        return "-"
    return f"{value:.2f}" if lower_is_better(task) else f"{value:.2%}"


def format_figure(task: str, figure: Mapping[str, Any], min_group_size: int = MIN_GROUP_SIZE) -> str:
    """`5.59 [5.31, 5.88]` (the figure and its 95% interval), marked `(n < 30, unranked)` when too small."""
    text = format_value(task, figure["value"])
    if not np.isnan(figure["low"]):
        text += f" [{format_value(task, figure['low'])}, {format_value(task, figure['high'])}]"
    return text + (f" (n < {min_group_size}, unranked)" if 0 < figure["n"] < min_group_size else "")


def summary_lines(task: str, result: Mapping[str, Any]) -> list[str]:
    """A summary in words, one line each: worst group, gap to the best, watched groups, unranked groups."""
    lines = []
    if "worst" in result:
        worst, best = result["worst"], result["best"]
        lines.append(f"worst group: {worst['group']} ({worst['n']} faces), {format_figure(task, worst)}; "
                     f"best: {best['group']} ({best['n']} faces), {format_figure(task, best)}; "
                     f"gap {format_value(task, result['gap']).replace('%', ' points')}")
    lines += [f"{label}: {format_figure(task, figure)} ({figure['n']} faces)" for label, figure in result["watched"].items()]
    if result["unranked"]:
        lines.append("too few faces to rank: " + ", ".join(f"{g} (n={n})" for g, n in result["unranked"]))
    return lines
