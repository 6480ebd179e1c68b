"""The sweep on a head + two worker nodes (ray.cluster_utils.Cluster on this machine), one worker
removed while a trial on it is mid-training.

One drill run serves every test here (a sweep costs a minute or more on 2 cores): before the
removal both workers run trials, after it the survivor finishes the sweep. The drill runs in a
subprocess of its own process group with a private RAY_TMPDIR, so its cluster can neither meet
the test session's Ray nor be joined by another `ray.init()` on the machine, and is ended by
that group even when a test fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from trial_log import epochs_by_trial, read_trial_reports, read_trial_states

from facetune.config_files import load_yaml
from facetune.results.collect import STUDY_FAMILIES
from facetune.records import POOL_EXPERIMENT, TASK_NAMES, TUNE_DIR, combination_name

pytestmark = pytest.mark.slow  # a head and two worker nodes running the smoke sweep (minutes)

REPO_ROOT = Path(__file__).resolve().parent.parent
DRILL_TIMEOUT_S = 420
DRILL_EPOCHS = 12
#: The drill profile sizes the study's families only, so the drill stays as long as it was.
COMBINATIONS = {combination_name(family, task) for family in STUDY_FAMILIES for task in TASK_NAMES}


def drill_profile(folder: Path) -> Path:
    """The smoke profile with 12 epochs per trial and no early stopping. After its first epoch a
    trial has 11 left (~2 s for a CNN here, epochs after the first take ~0.2 s), several times
    what the drill needs to notice it (~0.2-0.4 s) and remove its node."""
    profile = load_yaml("profiles/smoke.yaml")
    profile.update(name="smoke-drill", max_epochs=DRILL_EPOCHS,
                   scheduler={**profile["scheduler"], "grace_period": DRILL_EPOCHS},
                   num_samples={family: profile["num_samples"][family] for family in STUDY_FAMILIES})
    path = folder / "smoke-drill.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def run_in_own_group(command: list[str], env: dict[str, str], log: Path, timeout_s: float) -> int:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout_s)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever the drill left running
            except ProcessLookupError:
                pass
            process.wait()


@pytest.fixture(scope="module")
def drill(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("multinode")
    results = out / "results"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", RAY_AUTH_MODE="token")
    with tempfile.TemporaryDirectory(prefix="ft-drill-", dir="/tmp") as ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp  # short (Unix socket paths) and private to this drill
        log = out / "drill.log"
        code = run_in_own_group(
            [sys.executable, str(REPO_ROOT / "tests" / "drill.py"), "--profile", str(drill_profile(out)),
             "--data", str(prepared_data), "--results", str(results), "--workers", "2", "--cpus-per-worker", "1",
             "--remove-worker"],
            env, log, DRILL_TIMEOUT_S)
    assert code == 0, log.read_text()[-4000:]
    report = json.loads((results / "drill.json").read_text())
    return {"report": report, "results": results, "reports": read_trial_reports(results / "tune"),
            "states": read_trial_states(results / "tune")}


def test_trials_ran_on_more_than_one_worker_node(drill):
    nodes = {report.node_id for report in drill["reports"]}
    assert nodes <= set(drill["report"]["worker_node_ids"])  # the head (0 CPUs) runs none
    assert len(nodes) == 2


def test_a_worker_node_was_removed_mid_trial(drill):
    removed = drill["report"]["removed"]
    assert removed is not None
    assert removed["node_id"] in drill["report"]["worker_node_ids"]
    assert 1 <= removed["epoch_reported"] < DRILL_EPOCHS


def test_all_nine_combinations_finish_in_the_shared_storage(drill):
    results = drill["results"]
    summary = json.loads((results / "summary.json").read_text())
    assert {f"{entry['family']}_{entry['task']}" for entry in summary} == COMBINATIONS
    # One experiment (the sweep's pool of slots) holding every combination's trials.
    assert [path.name for path in (results / TUNE_DIR).iterdir() if path.is_dir()] == [POOL_EXPERIMENT]
    assert {state.experiment for state in drill["states"]} == COMBINATIONS
    for combination in COMBINATIONS:
        assert (results / combination / "model.pt").is_file()


def test_the_interrupted_trial_resumed_from_its_checkpoint_on_the_surviving_node(drill):
    removed = drill["report"]["removed"]
    key = (removed["experiment"], removed["trial_id"])
    state = next(s for s in drill["states"] if (s.experiment, s.trial_id) == key)
    assert state.num_failures >= 1 and state.status == "TERMINATED"
    epochs = epochs_by_trial(drill["reports"])[key]
    # First on the removed node, then on the survivor...
    nodes = [r.node_id for r in drill["reports"] if (r.experiment, r.trial_id) == key]
    on_removed = nodes.count(removed["node_id"])
    assert 1 <= on_removed < DRILL_EPOCHS
    assert nodes[:on_removed] == [removed["node_id"]] * on_removed
    assert removed["node_id"] not in nodes[on_removed:]
    # ...resumed, not restarted: the survivor went on from the last checkpoint to the end. Tune
    # delivers results at least once, so the last epoch before the removal is redone when the
    # node went between that epoch's report and its checkpoint; no earlier one ever is.
    assert epochs[:on_removed] == list(range(1, on_removed + 1))
    resumed_at = epochs[on_removed]
    assert resumed_at in (on_removed, on_removed + 1)
    assert epochs[on_removed:] == list(range(resumed_at, DRILL_EPOCHS + 1))


def test_no_finished_result_is_lost(drill):
    # Every trial of every combination ended TERMINATED with all its epochs reported, including
    # those that had finished on the removed node before it went away; only the interrupted
    # trial may have redone an epoch (the test above says which).
    assert drill["states"] and all(state.status == "TERMINATED" for state in drill["states"])
    removed = drill["report"]["removed"]
    interrupted = (removed["experiment"], removed["trial_id"])
    for key, epochs in epochs_by_trial(drill["reports"]).items():
        assert sorted(set(epochs)) == list(range(1, DRILL_EPOCHS + 1)), key
        if key != interrupted:
            assert epochs == list(range(1, DRILL_EPOCHS + 1)), key
    for combination in COMBINATIONS:
        trials_csv = (drill["results"] / combination / "trials.csv").read_text().splitlines()
        assert all(line.endswith(",finished") for line in trials_csv[1:]), combination
