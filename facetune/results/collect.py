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

from facetune.config_files import flatten
from facetune.models.registry import families
from facetune.records import (
    BEST_CONFIG_FILE,
    HISTORY_FILE,
    MODEL_CONFIG_FILE,
    MODEL_WEIGHTS_FILE,
    PCA_DIR,
    PCA_INFO_FILE,
    PCA_PARAMS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    TASK_NAMES,
    TEST_METRICS_FILE,
    TEST_PREDICTIONS_FILE,
    TRIALS_FILE,
    InputSpec,
    SummaryEntry,
    SweepRecord,
    combination_name,
    input_spec_from,
    is_old_prepared_dir,
    is_prepared_dir,
    split_combination_name,
    summary_from_json,
)
from facetune.tuning.best_trial import validation_metric
from facetune.tuning.ensemble_selection import ENSEMBLE_FAMILY
from facetune.tuning.final_fit import FINAL_FIT_FAMILY

#: The study's families, listed first in reports (its tables compare these three).
STUDY_FAMILIES: tuple[str, ...] = ("cnn", "dnn", "pca_dnn")


def report_families() -> tuple[str, ...]:
    """The study's families first, then every other registered family, then ensembles and final fits."""

    return (*STUDY_FAMILIES, *(f for f in families() if f not in STUDY_FAMILIES), ENSEMBLE_FAMILY, FINAL_FIT_FAMILY)


def all_combinations() -> tuple[tuple[str, str], ...]:
    """Every (family, task), in the order reports list them (task first: readers compare families per task)."""
    return tuple((f, t) for t in TASK_NAMES for f in report_families())


#: Keys of a trial config that identify the combination rather than tune it.
_IDENTITY_KEYS = ("family", "task")


@dataclass
class Combination:
    """One finished family x task combination: its summary entry and the files of its best trial."""

    family: str
    task: str
    directory: Path
    summary: SummaryEntry
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
    def metric_column(self) -> str:
        """The validation metric column its trials.csv holds (the one its best trial was chosen by)."""

        return validation_metric(self.family, self.task)

    @property
    def has_model(self) -> bool:
        return (self.directory / MODEL_CONFIG_FILE).is_file() and (self.directory / MODEL_WEIGHTS_FILE).is_file()

    @property
    def input_spec(self) -> InputSpec | None:
        """The faces' layout its model took (model_config.json; 48x48 gray when it predates specs),
        None when there is no readable model config."""
        try:
            config = json.loads((self.directory / MODEL_CONFIG_FILE).read_text())
            return input_spec_from(config.get("input_spec"), f"{self.directory / MODEL_CONFIG_FILE}: input_spec")
        except (OSError, ValueError, AttributeError):
            return None

    def tuned_hyperparameters(self) -> dict[str, Any]:
        """The best config, flattened to dotted keys, without the family/task identity keys."""
        flat = flatten(self.best_config)
        return {key: value for key, value in flat.items() if key not in _IDENTITY_KEYS}


@dataclass
class SweepResults:
    root: Path
    sweep: SweepRecord | None
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


def _requested_combinations(sweep: SweepRecord | None, order: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The combinations the sweep asked for, in report order; none known without sweep.json."""
    asked = {split_combination_name(name) for name in sweep.combinations} if sweep else set()
    return [pair for pair in order if pair in asked]


def _resolve_data_dir(sweep: SweepRecord | None, root: Path, warnings: list[str]) -> Path | None:
    if sweep is None:
        warnings.append(f"no {SWEEP_FILE}, so no prepared data; label distributions come from test predictions")
        return None
    recorded = sweep.data
    candidates = [Path(recorded)] if Path(recorded).is_absolute() else [Path(recorded), root / recorded]
    for candidate in candidates:
        if is_prepared_dir(candidate):
            return candidate
        if is_old_prepared_dir(candidate):
            warnings.append(f"prepared data {recorded} (from {SWEEP_FILE}) has an older layout; run `facetune prepare` "
                            "again for the figures that need faces")
            return None
    warnings.append(f"prepared data {recorded} (from {SWEEP_FILE}) not found here; figures that need faces are skipped")
    return None


def _read_combination(root: Path, entry: SummaryEntry) -> Combination:
    family, task = entry.family, entry.task
    directory = root / entry.name
    problems: list[str] = []
    if not directory.is_dir():
        problems.append(f"directory {directory.name}/ missing")
    best_config = _read_json(directory / BEST_CONFIG_FILE, problems) or entry.best_config or {}
    test_metrics = _read_json(directory / TEST_METRICS_FILE, problems) or entry.test
    combination = Combination(
        family=family,
        task=task,
        directory=directory,
        summary=entry,
        best_config=best_config,
        history=_read_csv(directory / HISTORY_FILE, problems),
        # Only a search has a trials table (not an ensemble or a final fit).
        trials=_read_csv(directory / TRIALS_FILE, problems) if entry.num_trials is not None else None,
        predictions=_read_csv(directory / TEST_PREDICTIONS_FILE, problems),
        test_metrics={k: float(v) for k, v in test_metrics.items()},
        problems=problems,
    )
    if not combination.has_model:
        problems.append(f"{MODEL_WEIGHTS_FILE} / {MODEL_CONFIG_FILE} missing")
    return combination


def collect_results(root: str | Path) -> SweepResults:
    """Read RESULTS_DIR; raise FileNotFoundError only if it holds neither summary.json nor sweep.json,
    RecordFormatError when either holds what a sweep never writes."""
    root = Path(root)
    summary_path, sweep_path = root / SUMMARY_FILE, root / SWEEP_FILE
    if not summary_path.is_file() and not sweep_path.is_file():
        raise FileNotFoundError(
            f"not a results directory: {root} has neither {SUMMARY_FILE} nor {SWEEP_FILE} "
            "(expected the output of jobs/tune_all.py / `facetune tune`)"
        )
    warnings: list[str] = []
    sweep_data = _read_json(sweep_path, warnings)
    sweep = SweepRecord.from_dict(sweep_data, str(sweep_path)) if sweep_data is not None else None
    summary = summary_from_json(_read_json(summary_path, warnings) or [], str(summary_path))

    order = all_combinations()
    requested = _requested_combinations(sweep, order)
    by_name: dict[str, Combination] = {}
    for entry in summary:
        if (entry.family, entry.task) not in order:
            warnings.append(f"{SUMMARY_FILE} entry skipped: {entry.family}/{entry.task} is not a registered family's task")
            continue
        combination = _read_combination(root, entry)
        by_name[combination.name] = combination
    ordered = {combination_name(*pair): by_name[combination_name(*pair)] for pair in order
               if combination_name(*pair) in by_name}

    missing: dict[str, str] = {}
    for family, task in requested:
        name = combination_name(family, task)
        if name in ordered:
            continue
        missing[name] = (
            f"started but not finished (directory present, no {SUMMARY_FILE} entry)"
            if (root / name).is_dir()
            else f"not run yet (no directory, no {SUMMARY_FILE} entry)"
        )

    pca_npz = root / PCA_DIR / PCA_PARAMS_FILE
    pca_info = _read_json(root / PCA_DIR / PCA_INFO_FILE, []) or {}
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


def trial_columns(trials: pd.DataFrame, metric_column: str) -> tuple[str, list[str]]:
    """(validation metric column, tuned hyperparameter columns) of a trials.csv.

    `metric_column` is the column the sweep writes (Combination.metric_column); every other
    non-bookkeeping column is a tuned hyperparameter. Raises ValueError when it is absent.
    """
    if metric_column not in trials:
        raise ValueError(f"{TRIALS_FILE} has no validation metric column {metric_column} (columns: {list(trials.columns)})")
    hyperparameters = [
        c for c in trials.columns
        if c != metric_column and c not in _TRIAL_BOOKKEEPING and not c.startswith(("val_", "test_", "train_loss"))
    ]
    return metric_column, hyperparameters
