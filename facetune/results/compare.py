"""The comparison of the nine combinations: results.csv rows and the report's comparison table."""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from facetune.records import combination_name
from facetune.results.collect import Combination, SweepResults, all_combinations, report_families, trial_columns
from facetune.results.study import Study
from facetune.tasks import TASKS


def headline(task: str) -> str:
    """The metric each task is judged on in the test split: the tasks' selection metric."""
    return TASKS[task].metric


def format_metric(task: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"MAE {value:.2f}" if headline(task) == "mae" else f"{value:.2%}"


def best_families(results: SweepResults) -> dict[str, str]:
    """task -> the family with the best *validation* selection metric among the finished combinations.

    Validation, as predict chooses: picking by test figures would leak the test split into the
    choice. Ties go to the family listed first (cnn, dnn, pca_dnn, ...).
    """
    families = report_families()
    best: dict[str, str] = {}
    for task, spec in TASKS.items():
        scored = [(float(c.summary.val.get(spec.metric, math.nan)), c.family) for c in results.combinations.values()
                  if c.task == task]
        scored = [(v, f) for v, f in scored if not math.isnan(v)]
        if scored:
            sign = 1.0 if spec.mode == "min" else -1.0
            best[task] = min(scored, key=lambda item: (sign * item[0], families.index(item[1])))[1]
    return best


def tuned_hyperparameters(combination: Combination) -> dict[str, Any]:
    """The best config restricted to the keys the search tuned (all of it when trials.csv is absent)."""
    flat = combination.tuned_hyperparameters()
    if combination.trials is None:
        return flat
    try:
        _, tuned = trial_columns(combination.trials, combination.metric_column)
    except ValueError:
        return flat
    return {key: flat[key] for key in tuned if key in flat}


def _format_hyperparameters(values: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)

    return ", ".join(f"{key}={short(value)}" for key, value in values.items())


def _trial_count(combination: Combination | None) -> int | None:
    return len(combination.trials) if combination is not None and combination.trials is not None else None


def _epochs(row: dict[str, Any]) -> str:
    """"best of trained" when the sweep recorded the best epoch, else the epochs trained."""
    if pd.isna(row["epochs"]):
        return "—"
    if pd.notna(row.get("best_epoch")):
        return f"{int(row['best_epoch'])} of {int(row['epochs'])}"
    return str(int(row["epochs"]))


def results_rows(results: SweepResults, study: Study) -> pd.DataFrame:
    """One row per requested or finished combination (results.csv): every number the report shows."""
    best = best_families(results)
    names = {combination_name(*pair) for pair in results.requested} | set(results.combinations)
    rows = []
    for family, task in all_combinations():
        name = combination_name(family, task)
        if name not in names:
            continue
        combination = results.combinations.get(name)
        target = study.targets.get(task)
        reported = study.reported.get(name, {})
        row: dict[str, Any] = {"combination": name, "family": family, "task": task,
                               "status": "finished" if combination else "missing",
                               "missing_reason": results.missing.get(name, "")}
        for metric in TASKS[task].metric_names:
            row[f"test_{metric}"] = combination.test_metrics.get(metric, math.nan) if combination else math.nan
        for metric in TASKS[task].metric_names:
            row[f"val_{metric}"] = combination.summary.val.get(metric, math.nan) if combination else math.nan
        summary = combination.summary if combination else None
        spec = combination.input_spec if combination else None
        row.update(
            input_spec=spec.describe() if spec else "",
            num_parameters=summary.num_parameters if summary else None,
            epochs=summary.epochs if summary else None,
            best_epoch=summary.best_epoch if summary else None,
            num_trials=(summary.num_trials if summary.num_trials is not None else _trial_count(combination))
            if summary else None,
            train_seconds=summary.train_seconds if summary else None,
            best_hyperparameters=json.dumps(tuned_hyperparameters(combination)) if combination else "",
            best_family_for_task=bool(combination) and best.get(task) == family,
            study_reported=reported.get("text", ""),
            study_accuracy=reported.get("accuracy", math.nan),
            study_roc_auc=reported.get("roc_auc", math.nan),
            target=f"{target.metric} {target.goal} {target.value:g}" if target else "",
        )
        value = row.get(f"test_{target.metric}", math.nan) if target else math.nan
        row["meets_target"] = (target.met_by(value) if not math.isnan(value) else None) if target else None
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(rows: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The report's table: per task the families, then the target and the best public figure."""
    display = []
    for task in TASKS:
        for row in rows[rows["task"] == task].to_dict("records"):
            hyper = json.loads(row["best_hyperparameters"]) if row["best_hyperparameters"] else {}
            display.append({
                "combination": row["combination"] + (" ★ best" if row["best_family_for_task"] else ""),
                "test": format_metric(task, row[f"test_{headline(task)}"]) if row["status"] == "finished"
                else f"missing: {row['missing_reason']}",
                "input": row.get("input_spec") or "—",  # the faces' layout the model took
                "ROC AUC": round(row.get("test_roc_auc", math.nan), 3),
                "balanced acc.": round(row.get("test_balanced_accuracy", math.nan), 3),
                "R²": round(row.get("test_r2", math.nan), 3),
                "params": f"{int(row['num_parameters']):,}" if pd.notna(row["num_parameters"]) else "—",
                "epochs": _epochs(row),
                "trials": int(row["num_trials"]) if pd.notna(row["num_trials"]) else "—",
                "train time": f"{row['train_seconds'] / 60:.1f} min" if pd.notna(row["train_seconds"]) else "—",
                "best hyperparameters": _format_hyperparameters(hyper) or "—",
                "study": row["study_reported"] or "—",
                "meets target": {True: "yes", False: "no"}.get(row["meets_target"], "—"),
            })
        target, reference = study.targets.get(task), study.reference.get(task)
        for label, goal in (("target", target), (study.reference_label, reference)):
            if goal is None:
                continue
            shown = format_metric(task, goal.value)
            display.append({"combination": f"{task}: {label}", "test": f"{goal.goal} {shown}".strip()})
    return pd.DataFrame(display)
