"""The sweep's driver is killed mid-run (SIGKILL to its process group); `--resume` finishes the
sweep without redoing what had finished, also when Tune had deleted the checkpoint that the killed
driver's saved state names.

One interrupted-then-resumed run serves every test here. Both drivers run `python jobs/tune_all.py`
in their own process group with a private RAY_TMPDIR, so each starts (and, killed, loses) its own
local Ray instance; whatever is left is ended by process group and session, also on failure.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from trial_log import read_trial_reports, read_trial_states, resume_checkpoints

from facetune.cluster.local_head import session_members
from facetune.config_files import load_yaml
from facetune.results.collect import STUDY_FAMILIES
from facetune.records import TASK_NAMES, combination_name, split_combination_name

pytestmark = pytest.mark.slow  # a sweep killed and resumed on Ray Tune (minutes)

REPO_ROOT = Path(__file__).resolve().parent.parent
KILL_DEADLINE_S = 300
TRIAL_EPOCHS = 12
RESUME_TIMEOUT_S = 420
#: The profile below sizes the study's families only, so the drill stays as long as it was.
COMBINATIONS = {combination_name(family, task) for family in STUDY_FAMILIES for task in TASK_NAMES}


def finished_combinations(results: Path) -> list[dict]:
    summary = results / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else []


def end_session(process: subprocess.Popen) -> None:
    """SIGKILL the driver's process group, then whatever is left of its session (Ray workers
    lead their own process groups but stay in the driver's session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    for pid in session_members(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mid_combination(results: Path) -> bool:
    """At least two combinations are done and a trial of a later one has reported two epochs (so
    the saved state names a checkpoint of it)."""
    done = {f"{entry['family']}_{entry['task']}" for entry in finished_combinations(results)}
    if len(done) < 2 or not (results / "tune").is_dir():
        return False
    return any(report.experiment not in done and report.epoch >= 2
               for report in read_trial_reports(results / "tune", live=True))


def deleted_checkpoints(storage: Path) -> list[Path]:
    """Tune (`num_to_keep=1`) deletes a trial's previous checkpoint a step before the saved state
    moves past it; a kill in that gap, which only some runs hit, leaves the state naming a deleted
    checkpoint. This makes the gap certain: the checkpoint the killed state names for one
    unfinished trial is deleted, as Tune would have. Returns every named checkpoint now missing."""
    named = resume_checkpoints(storage)
    existing = [path for path in named if path.is_dir()]
    if existing:
        shutil.rmtree(existing[0])
    return [path for path in named if not path.is_dir()]


def slow_smoke_profile(folder: Path) -> Path:
    """The smoke profile with 12 epochs per trial and no early stopping: on a quiet machine the
    2-epoch smoke combinations finish faster than a watcher can catch one mid-search."""
    profile = load_yaml("profiles/smoke.yaml")
    profile.update(max_epochs=TRIAL_EPOCHS, scheduler={**profile["scheduler"], "grace_period": TRIAL_EPOCHS},
                   num_samples={family: profile["num_samples"][family] for family in STUDY_FAMILIES})
    path = folder / "smoke_slow.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="module")
def sweep(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    results = out / "results"
    command = [sys.executable, "jobs/tune_all.py", "--profile", str(slow_smoke_profile(out)),
               "--data", str(prepared_data), "--results", str(results)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each driver starts its own Ray
    env.update(OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="ft-resume-", dir="/tmp") as ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp
        with open(out / "killed.log", "wb") as log:
            driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            try:
                deadline = time.monotonic() + KILL_DEADLINE_S
                while not mid_combination(results):
                    assert driver.poll() is None, \
                        f"driver ended before it was killed:\n{(out / 'killed.log').read_text()[-3000:]}"
                    assert time.monotonic() < deadline, "the sweep never got past two combinations"
                    time.sleep(0.5)
            finally:
                end_session(driver)
        # What Tune and facetune had recorded as finished when the driver died.
        before = {"summary": finished_combinations(results), "states": read_trial_states(results / "tune"),
                  "reports": read_trial_reports(results / "tune", live=True),
                  "deleted": deleted_checkpoints(results / "tune")}
        with open(out / "resumed.log", "wb") as log:
            resumed = subprocess.Popen([*command, "--resume"], cwd=REPO_ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = resumed.wait(timeout=RESUME_TIMEOUT_S)
            finally:
                end_session(resumed)
    resumed_log = (out / "resumed.log").read_text()
    assert code == 0, resumed_log[-4000:]
    return {"before": before, "results": results, "log": resumed_log,
            "summary": finished_combinations(results), "states": read_trial_states(results / "tune"),
            "reports": read_trial_reports(results / "tune")}


def test_resume_finishes_all_nine_combinations(sweep):
    assert {f"{entry['family']}_{entry['task']}" for entry in sweep["summary"]} == COMBINATIONS
    unfinished = [state for state in sweep["states"] if state.status != "TERMINATED"]
    assert unfinished == [], sweep["log"][-4000:]


def test_a_checkpoint_the_killed_state_names_but_tune_deleted_is_put_back(sweep):
    assert sweep["before"]["deleted"]
    for path in sweep["before"]["deleted"]:
        assert f"[facetune] {path}: put back from its kept copy" in sweep["log"]


def test_combinations_finished_before_the_kill_are_skipped_and_kept(sweep):
    before = sweep["before"]["summary"]
    assert len(before) >= 2
    skipped = [line for line in sweep["log"].splitlines() if line.endswith("already finished, skipped")]
    assert len(skipped) == len(before)
    after = {(entry["family"], entry["task"]): entry for entry in sweep["summary"]}
    for entry in before:
        assert after[(entry["family"], entry["task"])] == entry


def test_trials_finished_before_the_kill_are_not_redone(sweep):
    finished = {(s.experiment, s.trial_id) for s in sweep["before"]["states"] if s.status == "TERMINATED"}
    assert len(finished) >= 4  # at least the two finished CNN combinations, two trials each

    def reports_of(reports, key):
        return [(r.epoch, r.pid) for r in reports if (r.experiment, r.trial_id) == key]

    for key in finished:
        # Same epochs from the same processes: nothing about these trials ran again.
        assert reports_of(sweep["reports"], key) == reports_of(sweep["before"]["reports"], key), key


def test_resume_starts_no_extra_trials(sweep):
    profile = load_yaml("profiles/smoke.yaml")
    trials_per_experiment: dict[str, int] = {}
    for state in sweep["states"]:
        trials_per_experiment[state.experiment] = trials_per_experiment.get(state.experiment, 0) + 1
    expected = {name: profile["num_samples"][split_combination_name(name)[0]] for name in COMBINATIONS}
    assert trials_per_experiment == expected


def test_the_interrupted_combinations_are_resumed_not_restarted(sweep):
    done_before = {f"{entry['family']}_{entry['task']}" for entry in sweep["before"]["summary"]}
    interrupted = {r.experiment for r in sweep["before"]["reports"]} - done_before
    # Two slots: one or two combinations (sharing the pool) were mid-search when the driver died.
    assert 1 <= len(interrupted) <= 2
    for name in interrupted:
        assert f"[facetune] {name}: resuming the interrupted search" in sweep["log"]
