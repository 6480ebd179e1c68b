"""What Ray Tune recorded about a sweep's trials, read from its experiment storage (RESULTS/tune).

Two views from plain JSON written by Tune (nothing unpickled):
- every report a trial made (`<experiment>/<trial dir>/result.json`, one JSON object a line):
  which epoch, on which node (the `node_id` metric facetune's trainable reports), in which process;
- each trial's final state (`<experiment>/experiment_state-*.json`): status and failure count;
and one through Tune's own reader (ExperimentAnalysis, as `--resume` uses it): the checkpoint each
unfinished trial would be resumed from.
Each trial is named by its combination ("cnn_age", from its config), whether the sweep ran all
combinations in one experiment (the pool of slots) or one experiment each.
Used by the failure drill (tests/drill.py) and the tests that kill or lose part of a sweep, to show
where trials ran and what was retried.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facetune.tuning.space import combination_of


@dataclass(frozen=True)
class TrialReport:
    experiment: str        # the trial's combination, e.g. "cnn_age"
    trial_id: str
    epoch: int             # Tune's training_iteration: 1 for the first epoch
    node_id: str | None    # the Ray node the trial ran on when it reported
    pid: int | None        # the trial's worker process
    done: bool


@dataclass(frozen=True)
class TrialState:
    experiment: str
    trial_id: str
    status: str            # TERMINATED, ERROR, RUNNING, PENDING, PAUSED
    num_failures: int      # how often Tune restarted the trial after a failure


class TrialLogError(ValueError):
    """A Tune file that should be JSON is not (other than a line still being written)."""


def read_trial_reports(storage: str | Path, *, live: bool = False) -> list[TrialReport]:
    """Every report of every trial under `storage`, in file order per trial.

    `live=True` is for reading while the sweep runs: a last line that is still being written
    is left for the next read. Any other undecodable line raises TrialLogError.
    """
    reports = []
    for result_file in sorted(Path(storage).glob("*/*/result.json")):
        lines = result_file.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if live and number == len(lines):
                    break
                raise TrialLogError(f"{result_file}:{number} is not JSON: {error}") from error
            reports.append(TrialReport(
                experiment=combination_of(record["config"]), trial_id=str(record["trial_id"]), epoch=int(record["training_iteration"]),
                node_id=record.get("node_id"), pid=record.get("pid"), done=bool(record.get("done", False)),
            ))
    return reports


def read_trial_states(storage: str | Path) -> list[TrialState]:
    """Each trial's last saved state, from the newest experiment_state file of every experiment."""
    states = []
    for experiment_dir in sorted(path for path in Path(storage).iterdir() if path.is_dir()):
        snapshots = sorted(experiment_dir.glob("experiment_state-*.json"))
        if not snapshots:
            continue
        try:
            saved = json.loads(snapshots[-1].read_text())
            for trial_json, run_metadata_json in saved["trial_data"]:
                trial, run_metadata = json.loads(trial_json), json.loads(run_metadata_json)
                states.append(TrialState(
                    experiment=combination_of(trial["config"]), trial_id=trial["trial_id"], status=trial["status"],
                    num_failures=int(run_metadata.get("num_failures", 0)),
                ))
        except (json.JSONDecodeError, KeyError, ValueError) as error:
            raise TrialLogError(f"{snapshots[-1]} is not a Tune experiment state: {error}") from error
    return states


def resume_checkpoints(storage: str | Path) -> list[Path]:
    """The checkpoints that the newest saved experiment state of each experiment would resume its
    unfinished trials from (whether or not they are still there)."""
    from facetune.tuning.retention import resumable_checkpoints

    return [Path(checkpoint.path)
            for experiment_dir in sorted(path for path in Path(storage).iterdir() if path.is_dir())
            if any(experiment_dir.glob("experiment_state-*.json"))
            for checkpoint in resumable_checkpoints(str(experiment_dir))]


def epochs_by_trial(reports: list[TrialReport]) -> dict[tuple[str, str], list[int]]:
    """(experiment, trial_id) -> the epochs it reported, in order; a redone epoch shows up twice."""
    epochs: dict[tuple[str, str], list[int]] = {}
    for report in reports:
        epochs.setdefault((report.experiment, report.trial_id), []).append(report.epoch)
    return epochs
