"""A sweep deletes a trial's checkpoint only once the experiment state saved on storage cannot
restore from it, so a driver killed at any moment leaves every trial resumable."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from ray import tune

from facetune.tuning.retention import (
    CheckpointRetention,
    SavedTrial,
    keep_latest_checkpoints,
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


def make_checkpoints(trial_dir: Path, count: int) -> list[tune.Checkpoint]:
    checkpoints = []
    for name in NAMES[:count]:
        (trial_dir / name).mkdir(parents=True)
        (trial_dir / name / "training_state.pt").write_bytes(b"state")
        checkpoints.append(tune.Checkpoint.from_directory(str(trial_dir / name)))
    return checkpoints


def test_a_running_trial_keeps_its_last_saved_checkpoint_and_the_one_before():
    saved = SavedTrial("RUNNING", "checkpoint_000003")
    assert superseded(NAMES, saved) == NAMES[:2]


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


def test_each_saved_state_deletes_what_it_no_longer_names(tmp_path):
    experiment = tmp_path / "sweep"
    experiment.mkdir()
    retention = CheckpointRetention(str(experiment))
    running, ended = experiment / "cnn_age_a", experiment / "cnn_age_b"
    for trial_id, trial_dir in (("a", running), ("b", ended)):
        for checkpoint in make_checkpoints(trial_dir, 5):
            retention.on_checkpoint(0, [], SimpleNamespace(trial_id=trial_id), checkpoint)

    # The state on storage is older than the newest checkpoints: trial a resumes from 2 (or 1).
    write_experiment_state(experiment, {"a": ("RUNNING", "checkpoint_000002"), "b": ("TERMINATED", "checkpoint_000004")})
    assert retention.get_state() is None
    assert sorted(p.name for p in running.iterdir()) == NAMES[1:]
    assert sorted(p.name for p in ended.iterdir()) == NAMES[4:]


def test_an_unreadable_saved_state_deletes_nothing(tmp_path):
    retention = CheckpointRetention(str(tmp_path))
    for checkpoint in make_checkpoints(tmp_path / "trial", 3):
        retention.on_checkpoint(0, [], SimpleNamespace(trial_id="a"), checkpoint)
    (tmp_path / "experiment_state-2026-12-07_10-00-00.json").write_text("{")
    retention.get_state()
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == NAMES[:3]


def test_after_the_experiment_only_the_checkpoint_tune_names_stays(tmp_path):
    checkpoints = make_checkpoints(tmp_path / "trial", 4)
    (tmp_path / "trial" / "result.json").write_text("{}")
    results = [SimpleNamespace(checkpoint=checkpoints[2]), SimpleNamespace(checkpoint=None)]
    assert keep_latest_checkpoints(results) == 3
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == ["checkpoint_000002", "result.json"]
