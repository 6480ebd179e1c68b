"""Every checkpoint a killed sweep driver's saved state may resume from is kept (a hard-linked copy)
until the state saved on storage has moved past it, and put back before a resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray import tune

from facetune.tuning.retention import (
    KEPT_DIR,
    CheckpointKeeper,
    SavedTrial,
    keep_latest_checkpoints,
    restore_kept_checkpoints,
    saved_trials,
    superseded,
)

NAMES = [f"checkpoint_{index:06d}" for index in range(5)]


def write_experiment_state(experiment: Path, trials: dict[str, tuple[str, str | None]],
                           session: str = "2026-12-07_10-00-00") -> None:
    """An experiment_state file as Tune writes it: trial_data = [[trial JSON, run metadata JSON]]."""
    trial_data = [[json.dumps({"trial_id": trial_id, "status": status}),
                   json.dumps({"last_result": {"checkpoint_dir_name": last} if last else {}})]
                  for trial_id, (status, last) in trials.items()]
    (experiment / f"experiment_state-{session}.json").write_text(json.dumps({"trial_data": trial_data}))


def save_checkpoints(keeper: CheckpointKeeper, trial_id: str, trial_dir: Path, count: int) -> None:
    """What Tune does with `num_to_keep=1`: each checkpoint is written, shown to the callbacks, and
    the previous one deleted."""
    for index, name in enumerate(NAMES[:count]):
        (trial_dir / name).mkdir(parents=True)
        (trial_dir / name / "training_state.pt").write_bytes(f"epoch {index + 1}".encode())
        keeper.on_checkpoint(0, [], SimpleNamespace(trial_id=trial_id), tune.Checkpoint.from_directory(str(trial_dir / name)))
        if index:
            shutil.rmtree(trial_dir / NAMES[index - 1])


def kept(trial_dir: Path) -> list[str]:
    return sorted(path.name for path in (trial_dir / KEPT_DIR).iterdir())


def test_a_running_trial_keeps_its_last_saved_checkpoint_and_the_one_before():
    assert superseded(NAMES, SavedTrial("RUNNING", "checkpoint_000003")) == NAMES[:2]


def test_a_terminated_trial_keeps_only_its_newest_checkpoint():
    assert superseded(reversed(NAMES), SavedTrial("TERMINATED", "checkpoint_000002")) == NAMES[:4]


def test_a_trial_the_saved_state_does_not_know_keeps_everything():
    assert superseded(NAMES, None) == []
    assert superseded(NAMES, SavedTrial("PENDING", None)) == []


def test_the_newest_saved_state_is_read(tmp_path):
    write_experiment_state(tmp_path, {"a": ("RUNNING", "checkpoint_000001")}, session="2026-12-07_09-00-00")
    write_experiment_state(tmp_path, {"a": ("TERMINATED", "checkpoint_000004")}, session="2026-12-07_10-00-00")
    assert saved_trials(str(tmp_path)) == {"a": SavedTrial("TERMINATED", "checkpoint_000004")}


def test_no_saved_state_yet_is_empty_and_a_half_copied_one_is_unknown(tmp_path):
    assert saved_trials(str(tmp_path)) == {}
    (tmp_path / "experiment_state-2026-12-07_10-00-00.json").write_text('{"trial_data": [["{')
    assert saved_trials(str(tmp_path)) is None


def test_each_checkpoint_is_kept_as_a_hard_link(tmp_path):
    keeper = CheckpointKeeper(str(tmp_path))
    save_checkpoints(keeper, "a", tmp_path / "cnn_age_a", 3)
    assert kept(tmp_path / "cnn_age_a") == NAMES[:3]
    original = tmp_path / "cnn_age_a" / NAMES[2] / "training_state.pt"
    assert (tmp_path / "cnn_age_a" / KEPT_DIR / NAMES[2] / "training_state.pt").stat().st_ino == original.stat().st_ino


def test_each_saved_state_drops_the_copies_it_no_longer_names(tmp_path):
    keeper = CheckpointKeeper(str(tmp_path))
    save_checkpoints(keeper, "a", tmp_path / "cnn_age_a", 5)
    save_checkpoints(keeper, "b", tmp_path / "cnn_age_b", 5)
    # The state on storage lags the trials: a resumes from checkpoint 2 (or 1, not yet registered).
    write_experiment_state(tmp_path, {"a": ("RUNNING", "checkpoint_000002"), "b": ("TERMINATED", "checkpoint_000004")})
    assert keeper.get_state() is None
    assert kept(tmp_path / "cnn_age_a") == NAMES[1:]
    assert kept(tmp_path / "cnn_age_b") == NAMES[4:]


def test_an_unreadable_saved_state_drops_nothing(tmp_path):
    keeper = CheckpointKeeper(str(tmp_path))
    save_checkpoints(keeper, "a", tmp_path / "cnn_age_a", 3)
    (tmp_path / "experiment_state-2026-12-07_10-00-00.json").write_text("{")
    keeper.get_state()
    assert kept(tmp_path / "cnn_age_a") == NAMES[:3]


@pytest.mark.slow  # one tiny Tune experiment (seconds)
def test_a_resume_puts_back_the_checkpoint_tune_deleted(tmp_path, ray_session):
    def failing_after_two_epochs(config: dict) -> None:
        """Saves two checkpoints, then fails: Tune leaves the trial ERROR, to be resumed.
        (Defined here: Ray's workers cannot import a test module, so it travels by value.)"""
        import pathlib
        import tempfile

        from ray import tune

        for epoch in (1, 2):
            with tempfile.TemporaryDirectory() as directory:
                (pathlib.Path(directory) / "training_state.pt").write_text(f"epoch {epoch}")
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(directory))
        raise RuntimeError("the trial fails after its second epoch")

    experiment = tmp_path / "tune" / "sweep"
    tuner = tune.Tuner(failing_after_two_epochs, run_config=tune.RunConfig(
        name="sweep", storage_path=str(tmp_path / "tune"), verbose=0,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=[CheckpointKeeper(str(experiment))]))
    [result] = list(tuner.fit())
    named = Path(result.checkpoint.path)
    assert result.error is not None and named.name == NAMES[1]
    shutil.rmtree(named)  # what Tune does when the kill lands between its deletion and the saved state

    restored, lost = restore_kept_checkpoints(str(experiment))
    assert (restored, lost) == ([str(named)], [])
    assert (named / "training_state.pt").read_text() == "epoch 2"
    assert (named / "training_state.pt").stat().st_nlink == 2  # the kept copy and it: one file on disk
    assert restore_kept_checkpoints(str(experiment)) == ([], [])  # nothing is missing any more


def test_after_the_experiment_only_the_checkpoint_tune_names_stays(tmp_path):
    keeper = CheckpointKeeper(str(tmp_path))
    trial_dir = tmp_path / "cnn_age_a"
    save_checkpoints(keeper, "a", trial_dir, 2)
    (trial_dir / NAMES[3]).mkdir()  # a newer folder a killed run left behind, which nothing names
    (trial_dir / "result.json").write_text("{}")
    results = [SimpleNamespace(checkpoint=tune.Checkpoint.from_directory(str(trial_dir / NAMES[1]))),
               SimpleNamespace(checkpoint=None)]
    assert keep_latest_checkpoints(results) == 1
    assert sorted(path.name for path in trial_dir.iterdir()) == [NAMES[1], "result.json"]
