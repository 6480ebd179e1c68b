"""Which trial checkpoints a sweep deletes, so that a driver killed at any moment can be resumed.

Tune's own retention (`CheckpointConfig(num_to_keep=1)`) deletes a trial's previous checkpoint the
moment a newer one is registered. The experiment state that `--resume` restores from is saved
every few seconds, and then copied to storage in the background. A driver killed between the two
leaves a saved state that names a deleted checkpoint. Tune then fails that trial on every restore
attempt ("does not exist on storage anymore") and ends it ERROR. So the sweep turns Tune's
deletion off and deletes here only the checkpoints that the state saved on storage can no longer
restore:
- a trial the saved state calls TERMINATED is never restored: all but its newest checkpoint go;
- any other trial resumes from the checkpoint of its last saved result, or the one before it (Tune
  registers a checkpoint one step after the result that carries it): older ones go.
This runs each time Tune saves the experiment state (`get_state`, every ten seconds or more), and
once more when the experiment has ended (`keep_latest_checkpoints`).
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow.fs as pafs
from ray import tune

from facetune.storage import filesystem_and_path

#: Tune's names: its saved experiment states and a trial's checkpoint folders ("checkpoint_000012").
EXPERIMENT_STATE_PATTERN = "experiment_state-*.json"
CHECKPOINT_PREFIX = "checkpoint_"
TERMINATED = "TERMINATED"


@dataclass(frozen=True)
class SavedTrial:
    """What the newest experiment state on storage says about one trial."""

    status: str
    last_checkpoint: str | None  # the checkpoint folder of its last saved result


def checkpoint_index(name: str) -> int:
    """The number in a checkpoint folder's name: "checkpoint_000012" -> 12."""
    return int(name.rsplit("/", 1)[-1].removeprefix(CHECKPOINT_PREFIX))


def saved_trials(experiment: str) -> dict[str, SavedTrial] | None:
    """Trial id -> SavedTrial from the newest experiment state under `experiment` (a path or URI):
    {} when none is saved yet, None when it cannot be read now (a copy in progress)."""
    filesystem, base = filesystem_and_path(experiment)
    try:
        names = [info.base_name for info in filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))]
        newest = max(fnmatch.filter(names, EXPERIMENT_STATE_PATTERN), default=None)
        if newest is None:
            return {}
        with filesystem.open_input_stream(f"{base}/{newest}") as stream:
            saved = json.loads(stream.read())
        trials = {}
        for trial_json, run_metadata_json in saved["trial_data"]:
            trial, run_metadata = json.loads(trial_json), json.loads(run_metadata_json)
            last_result = run_metadata.get("last_result") or {}
            trials[str(trial["trial_id"])] = SavedTrial(str(trial["status"]), last_result.get("checkpoint_dir_name"))
        return trials
    except (OSError, ValueError, KeyError, TypeError):
        return None


def superseded(checkpoints: Iterable[str], saved: SavedTrial | None) -> list[str]:
    """The checkpoint folder names of one trial (any order) that `saved` can no longer restore."""
    names = sorted(checkpoints, key=checkpoint_index)
    if saved is None:
        return []
    if saved.status == TERMINATED:
        return names[:-1]
    if saved.last_checkpoint is None:
        return []
    keep_from = checkpoint_index(saved.last_checkpoint) - 1
    return [name for name in names if checkpoint_index(name) < keep_from]


def _delete(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as error:  # a full or read-only store: the sweep goes on, the folder stays
        print(f"[facetune] could not delete the superseded checkpoint {path}: {error}", flush=True)


class CheckpointRetention(tune.Callback):
    """Deletes the checkpoints of this experiment's trials that its saved state no longer names.

    Use it with `CheckpointConfig(num_to_keep=None)`, so that Tune deletes nothing itself.
    """

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self._checkpoints: dict[str, dict[str, tune.Checkpoint]] = {}  # trial id -> folder name -> checkpoint

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: tune.Checkpoint, **info: Any) -> None:
        self._checkpoints.setdefault(trial.trial_id, {})[checkpoint.path.rstrip("/").rsplit("/", 1)[-1]] = checkpoint

    def get_state(self) -> None:
        # Tune calls this each time it saves the experiment state; nothing of ours needs saving.
        self.delete_superseded()
        return None

    def delete_superseded(self) -> None:
        saved = saved_trials(self.experiment)
        if not saved:
            return
        for trial_id, checkpoints in self._checkpoints.items():
            for name in superseded(checkpoints, saved.get(trial_id)):
                checkpoint = checkpoints.pop(name)
                _delete(checkpoint.filesystem, checkpoint.path)


def keep_latest_checkpoints(results: Iterable[Any]) -> int:
    """After an experiment has ended: delete every checkpoint folder of each trial but the one
    Tune restores or exports it from (`result.checkpoint`); returns how many were deleted."""
    deleted = 0
    for result in results:
        if result.checkpoint is None:
            continue
        filesystem, keep = result.checkpoint.filesystem, result.checkpoint.path.rstrip("/")
        trial_dir = keep.rsplit("/", 1)[0]
        for info in filesystem.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX) \
                    and info.path.rstrip("/") != keep:
                _delete(filesystem, info.path)
                deleted += 1
    return deleted
