"""Read a sweep's results directory (docs/design.md, "Results directory") into memory.

A sweep may be partial: still running, interrupted, or with failed combinations. Reading never
fails on a missing combination or file; it records what is missing so the report can say so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from facetune.config import flatten

def _report_families() -> tuple[str, ...]:
    """The study's three families first, then every other registered family, then ensembles and final fits."""
    from facetune.models.registry import families
    from facetune.tuning.ensemble import ENSEMBLE_FAMILY
    from facetune.tuning.final_fit import FINAL_FIT_FAMILY

    study = ("cnn", "dnn", "pca_dnn")
    return (*study, *(f for f in families() if f not in study), ENSEMBLE_FAMILY, FINAL_FIT_FAMILY)


FAMILIES: tuple[str, ...] = _report_families()
TASK_NAMES: tuple[str, ...] = ("age", "gender", "ethnicity")
#: Every combination, in the order reports list them (task first: readers compare families per task).
ALL_COMBINATIONS: tuple[tuple[str, str], ...] = tuple((f, t) for t in TASK_NAMES for f in FAMILIES)

#: Keys of a trial config that identify the combination rather than tune it.
_IDENTITY_KEYS = ("family", "task")


def combination_name(family: str, task: str) -> str:
    return f"{family}_{task}"


def split_combination_name(name: str) -> tuple[str, str]:
    """"pca_dnn_gender" -> ("pca_dnn", "gender"): the task is the last underscore-separated part."""
    family, _, task = name.rpartition("_")
    if family not in FAMILIES or task not in TASK_NAMES:
        raise ValueError(f"not a combination name: {name!r} (expected <family>_<task>, e.g. cnn_gender)")
    return family, task


@dataclass
class Combination:
    """One finished family x task combination: its summary entry and the files of its best trial."""

    family: str
    task: str
    directory: Path
    summary: dict[str, Any]
    best_config: dict[str, Any]
    history: pd.DataFrame | None
    trials: pd.DataFrame | None
    predictions: pd.DataFrame | None
    test_metrics: dict[str, float]
    problems: list[str] = field(default_factory=list)  # files missing or unreadable

    @property
    def name(self) -> str:
        return combination_name(self.family, self.task)

    @property
    def has_model(self) -> bool:
        return (self.directory / "model_config.json").is_file() and (self.directory / "model.pt").is_file()

    def tuned_hyperparameters(self) -> dict[str, Any]:
        """The best config, flattened to dotted keys, without the family/task identity keys."""
        flat = flatten(self.best_config)
        return {key: value for key, value in flat.items() if key not in _IDENTITY_KEYS}


@dataclass
class SweepResults:
    root: Path
    sweep: dict[str, Any]
    requested: list[tuple[str, str]]
    combinations: dict[str, Combination]  # name -> combination, in report order
    missing: dict[str, str]  # name -> why it is not in the report
    pca_npz: Path | None
    pca_info: dict[str, Any]
    data_dir: Path | None
    warnings: list[str] = field(default_factory=list)

    def get(self, family: str, task: str) -> Combination | None:
        return self.combinations.get(combination_name(family, task))


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        problems.append(f"{path.name} missing")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problems.append(f"{path.name} unreadable: {err}")
        return None


def _read_csv(path: Path, problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(f"{path.name} missing")
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        problems.append(f"{path.name} unreadable: {err}")
        return None
    if frame.empty:
        problems.append(f"{path.name} has no rows")
        return None
    return frame


def _requested_combinations(sweep: dict[str, Any]) -> list[tuple[str, str]]:
    """The combinations the sweep asked for, in report order; all nine when sweep.json does not say.

    Accepts the spellings a sweep may use: "all", ["cnn_gender", ...], [{"family":..,"task":..}, ...],
    [["cnn", "gender"], ...], or separate "families" / "tasks" lists.
    """
    asked = sweep.get("combinations")
    pairs: set[tuple[str, str]] = set()
    if isinstance(asked, str):  # a profile's `combinations: all` or a single "cnn_gender"
        asked = None if asked == "all" else [asked]
    if asked:
        for item in asked:
            if isinstance(item, str):
                pairs.add(split_combination_name(item))
            elif isinstance(item, dict):
                pairs.add((item["family"], item["task"]))
            else:
                family, task = item
                pairs.add((family, task))
    elif sweep.get("families") or sweep.get("tasks"):
        pairs = {(f, t) for f in sweep.get("families") or FAMILIES for t in sweep.get("tasks") or TASK_NAMES}
    else:
        pairs = set(ALL_COMBINATIONS)
    return [pair for pair in ALL_COMBINATIONS if pair in pairs]


def _resolve_data_dir(sweep: dict[str, Any], root: Path, warnings: list[str]) -> Path | None:
    recorded = sweep.get("data")
    if not recorded:
        warnings.append("sweep.json does not name the prepared data; label distributions come from test predictions")
        return None
    candidates = [Path(recorded)] if Path(recorded).is_absolute() else [Path(recorded), root / recorded]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file() or any(candidate.glob("*.parquet")):
            return candidate
    warnings.append(f"prepared data {recorded} (from sweep.json) not found here; figures that need faces are skipped")
    return None


def _read_combination(root: Path, entry: dict[str, Any]) -> Combination:
    family, task = entry["family"], entry["task"]
    directory = root / combination_name(family, task)
    problems: list[str] = []
    if not directory.is_dir():
        problems.append(f"directory {directory.name}/ missing")
    best_config = _read_json(directory / "best_config.json", problems) or entry.get("best_config") or {}
    test_metrics = _read_json(directory / "test_metrics.json", problems) or entry.get("test") or {}
    combination = Combination(
        family=family,
        task=task,
        directory=directory,
        summary=entry,
        best_config=best_config,
        history=_read_csv(directory / "history.csv", problems),
        trials=_read_csv(directory / "trials.csv", problems),
        predictions=_read_csv(directory / "test_predictions.csv", problems),
        test_metrics={k: float(v) for k, v in test_metrics.items()},
        problems=problems,
    )
    if not combination.has_model:
        problems.append("model.pt / model_config.json missing")
    return combination


def collect_results(root: str | Path) -> SweepResults:
    """Read RESULTS_DIR; raise FileNotFoundError only if it holds neither summary.json nor sweep.json."""
    root = Path(root)
    summary_path, sweep_path = root / "summary.json", root / "sweep.json"
    if not summary_path.is_file() and not sweep_path.is_file():
        raise FileNotFoundError(
            f"not a results directory: {root} has neither summary.json nor sweep.json "
            "(expected the output of jobs/tune_all.py / `facetune tune`)"
        )
    warnings: list[str] = []
    sweep = _read_json(sweep_path, warnings) or {}
    summary = _read_json(summary_path, warnings) or []
    if not isinstance(summary, list):
        raise ValueError(f"{summary_path}: expected a list of combination objects, got {type(summary).__name__}")

    requested = _requested_combinations(sweep)
    by_name: dict[str, Combination] = {}
    for entry in summary:
        if entry.get("family") not in FAMILIES or entry.get("task") not in TASK_NAMES:
            warnings.append(f"summary.json entry skipped: unknown family/task {entry.get('family')}/{entry.get('task')}")
            continue
        combination = _read_combination(root, entry)
        by_name[combination.name] = combination
    ordered = {combination_name(*pair): by_name[combination_name(*pair)] for pair in ALL_COMBINATIONS
               if combination_name(*pair) in by_name}

    missing: dict[str, str] = {}
    for family, task in requested:
        name = combination_name(family, task)
        if name in ordered:
            continue
        missing[name] = (
            "started but not finished (directory present, no summary.json entry)"
            if (root / name).is_dir()
            else "not run yet (no directory, no summary.json entry)"
        )

    pca_npz = root / "pca" / "pca.npz"
    pca_info = _read_json(root / "pca" / "pca.json", []) or {}
    return SweepResults(
        root=root,
        sweep=sweep,
        requested=requested,
        combinations=ordered,
        missing=missing,
        pca_npz=pca_npz if pca_npz.is_file() else None,
        pca_info=pca_info,
        data_dir=_resolve_data_dir(sweep, root, warnings),
        warnings=warnings,
    )


#: trials.csv columns that describe a trial rather than a tuned hyperparameter.
_TRIAL_BOOKKEEPING = {"trial_id", "epochs", "status", "training_iteration", "time_total_s", "error"}


def trial_columns(trials: pd.DataFrame, metric: str) -> tuple[str, list[str]]:
    """(validation metric column, tuned hyperparameter columns) of a trials.csv.

    The metric column is `val_<metric>` (or `<metric>`); every other non-bookkeeping column
    is a tuned hyperparameter. Raises ValueError when no metric column is present.
    """
    for candidate in (f"val_{metric}", metric, f"val.{metric}"):
        if candidate in trials:
            metric_column = candidate
            break
    else:
        raise ValueError(f"trials.csv has no validation metric column val_{metric} (columns: {list(trials.columns)})")
    hyperparameters = [
        c for c in trials.columns
        if c != metric_column and c not in _TRIAL_BOOKKEEPING and not c.startswith(("val_", "test_", "train_loss"))
    ]
    return metric_column, hyperparameters
