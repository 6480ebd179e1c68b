"""Keeps every checkpoint that a killed sweep driver's saved state may resume from.

Tune keeps one checkpoint per trial (`CheckpointConfig(num_to_keep=1)`). It deletes the previous
one as soon as the next is registered. The experiment state that `--resume` restores from is
saved and copied to storage a step later, in the background. A driver killed in between leaves a
saved state that names a deleted checkpoint, and Tune then fails that trial on every restore
("does not exist on storage anymore"). Tune's keep-one setting also makes it copy the state to
storage after every checkpoint. Its trial logs rely on that when a trial restarts, so the setting
stays. Instead, `CheckpointKeeper` keeps a hard-linked copy of each new checkpoint
(`<trial dir>/.resume/checkpoint_N`, a copy on object stores). It drops the copy once the state
saved on storage can no longer name that checkpoint:
- a trial the saved state calls TERMINATED is never restored: all but its newest copy go;
- any other trial resumes from the checkpoint of its last saved result, or the one before (Tune
  registers a checkpoint one step after the result that carries it): older copies go.
Before a sweep is resumed, `restore_kept_checkpoints` puts back each checkpoint the saved state
names that Tune had deleted; `keep_latest_checkpoints` tidies up after an experiment has ended.
"""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow.fs as pafs
from ray import tune

from facetune.storage import filesystem_and_path

#: Tune's names: its saved experiment states and a trial's checkpoint folders ("checkpoint_000012").
EXPERIMENT_STATE_PATTERN = "experiment_state-*.json"
CHECKPOINT_PREFIX = "checkpoint_"
TERMINATED = "TERMINATED"
#: Inside each trial folder: the kept copies of its checkpoints, under their own names.
KEPT_DIR = ".resume"


@dataclass(frozen=True)
class SavedTrial:
    """What the newest experiment state on storage says about one trial."""

    status: str
    last_checkpoint: str | None  # the checkpoint folder of its last saved result


def checkpoint_index(name: str) -> int:
    """The number in a checkpoint folder's name: "checkpoint_000012" -> 12."""
    return int(name.removeprefix(CHECKPOINT_PREFIX))


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


def _split(path: str) -> tuple[str, str]:
    """(trial folder, checkpoint folder name) of a checkpoint's path."""
    parent, name = path.rstrip("/").rsplit("/", 1)
    return parent, name


def _kept_path(checkpoint_path: str) -> str:
    """Where the kept copy of the checkpoint at `checkpoint_path` lives."""
    trial_dir, name = _split(checkpoint_path)
    return f"{trial_dir}/{KEPT_DIR}/{name}"


def _link_or_copy(filesystem: pafs.FileSystem, source: str, target: str) -> None:
    """`target` holding `source`'s files: hard links on a local disk (no space, no time), else a copy."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        try:
            os.makedirs(target, exist_ok=True)
            for name in os.listdir(source):
                destination = os.path.join(target, name)
                if os.path.exists(destination):
                    os.remove(destination)
                os.link(os.path.join(source, name), destination)
            return
        except OSError:
            pass  # a file system without hard links: copy below
    filesystem.create_dir(target, recursive=True)
    pafs.copy_files(source, target, source_filesystem=filesystem, destination_filesystem=filesystem)


def _delete(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as error:  # a full or read-only store: the sweep goes on, the folder stays
        print(f"[facetune] could not delete {path}: {error}", flush=True)


class CheckpointKeeper(tune.Callback):
    """Keeps a copy of each trial checkpoint until the saved experiment state has moved past it."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        # trial id -> checkpoint folder name -> (filesystem, the kept copy's path)
        self._kept: dict[str, dict[str, tuple[pafs.FileSystem, str]]] = {}

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: tune.Checkpoint, **info: Any) -> None:
        kept = _kept_path(checkpoint.path)
        try:
            _link_or_copy(checkpoint.filesystem, checkpoint.path, kept)
        except OSError as error:
            print(f"[facetune] could not keep a copy of {checkpoint.path}: {error}", flush=True)
            return
        self._kept.setdefault(trial.trial_id, {})[_split(checkpoint.path)[1]] = (checkpoint.filesystem, kept)

    def get_state(self) -> None:
        # Tune calls this each time it saves the experiment state; nothing of ours needs saving.
        self.drop_superseded()
        return None

    def drop_superseded(self) -> None:
        saved = saved_trials(self.experiment)
        if not saved:
            return
        for trial_id, kept in self._kept.items():
            for name in superseded(kept, saved.get(trial_id)):
                _delete(*kept.pop(name))


def _subdirs(filesystem: pafs.FileSystem, path: str, prefix: str) -> list[str]:
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [info.base_name for info in infos
            if info.type == pafs.FileType.Directory and info.base_name.startswith(prefix)]


def resumable_checkpoints(experiment: str) -> list[tune.Checkpoint]:
    """The checkpoints that the newest saved state of `experiment` would resume its unfinished
    trials from, as Tune reads that state (whether or not they are still there)."""
    from ray.tune import ExperimentAnalysis

    return [trial.checkpoint for trial in ExperimentAnalysis(experiment).trials
            if trial.status != TERMINATED and trial.checkpoint is not None]


def restore_kept_checkpoints(experiment: str) -> tuple[list[str], list[str]]:
    """Before a resume: put back each checkpoint that the saved state would resume an unfinished
    trial from but that Tune had deleted. Returns (paths put back, paths with no kept copy)."""
    restored, lost = [], []
    for checkpoint in resumable_checkpoints(experiment):
        if checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound:
            continue
        kept = _kept_path(checkpoint.path)
        if checkpoint.filesystem.get_file_info(kept).type == pafs.FileType.Directory:
            _link_or_copy(checkpoint.filesystem, kept, checkpoint.path)
            restored.append(checkpoint.path)
        else:
            lost.append(checkpoint.path)
    return restored, lost


def keep_latest_checkpoints(results: Iterable[Any]) -> int:
    """After an experiment has ended: delete each trial's kept copies and every checkpoint folder
    but the one Tune restores or exports it from (`result.checkpoint`); returns how many
    checkpoint folders were deleted."""
    deleted = 0
    for result in results:
        if result.checkpoint is None:
            continue
        filesystem, keep = result.checkpoint.filesystem, result.checkpoint.path.rstrip("/")
        trial_dir, keep_name = _split(keep)
        _delete(filesystem, f"{trial_dir}/{KEPT_DIR}")
        for name in _subdirs(filesystem, trial_dir, CHECKPOINT_PREFIX):
            if name != keep_name:  # newer folders a killed run left behind, which nothing names
                _delete(filesystem, f"{trial_dir}/{name}")
                deleted += 1
    return deleted
