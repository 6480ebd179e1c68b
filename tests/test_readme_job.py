"""A rehearsal of the README's main job on the real shared data: command 1's entry point
(`python jobs/tune_all.py --profile local`, default data) with `--rehearse`, then the report and
predictions with the shipped models, as a newcomer would run them.

It needs ../shared/data beside the checkout: without it the module is skipped, except under CI
(`CI` set), where a missing data folder fails it, so CI never passes without the rehearsal.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facetune.records import SUMMARY_FILE, combination_name
from facetune.settings import DEFAULT_DATA_SOURCE
from facetune.tuning.profiles import combinations, load_profile
from facetune.tuning.sweep import result_tasks

pytestmark = pytest.mark.slow  # a real sweep on Ray, on the real data

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_JPEGS = ["26_0_1_20170103180959080.jpg.chip.jpg", "14_1_0_20170109201824270.jpg.chip.jpg",
                "61_1_0_20170103184132186.jpg.chip.jpg"]
REHEARSAL_TIMEOUT_S = 900


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command from the repository root, as the README does, in its own process group,
    which is killed if the command outlives `timeout`."""
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(args)} ran past {timeout} s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(args, process.returncode, output, "")


@pytest.fixture(scope="module")
def data_source() -> Path:
    source = REPO_ROOT / DEFAULT_DATA_SOURCE
    if not source.is_file():
        message = f"the README's default data {source} is missing"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return source


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, data_source) -> Path:
    """RESULTS of `python jobs/tune_all.py --profile local --rehearse`, on the README's default data."""
    results = tmp_path_factory.mktemp("rehearsal") / "results"
    started = time.perf_counter()
    done = run([sys.executable, "jobs/tune_all.py", "--profile", "local", "--rehearse", "--results", str(results)],
               REHEARSAL_TIMEOUT_S)
    print(f"rehearsal of the README's job: {time.perf_counter() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-4000:]
    return results


def test_the_rehearsal_finishes_every_combination_of_the_local_profile(rehearsal):
    summary = json.loads((rehearsal / SUMMARY_FILE).read_text())
    expected = {combination_name(family, task) for family, combo in combinations(load_profile("local"))
                for task in result_tasks(combo)}
    assert {combination_name(entry["family"], entry["task"]) for entry in summary} == expected
    assert all(entry["test"] for entry in summary)


def test_the_report_of_the_rehearsal_has_its_figures(rehearsal):
    done = run([sys.executable, "-m", "facetune.cli", "report", str(rehearsal)], 600)
    assert done.returncode == 0, done.stdout[-4000:]
    report = (rehearsal / "report" / "report.md").read_text()
    figures = [line.split("](", 1)[1].split(")", 1)[0] for line in report.splitlines() if "![" in line]
    assert len(figures) >= 10
    assert all((rehearsal / "report" / figure).is_file() for figure in figures)


def test_the_shipped_models_predict_one_row_per_shared_jpeg(rehearsal, data_source, tmp_path):
    jpegs = [str(data_source.parent / "UTKFace" / name) for name in SHARED_JPEGS]
    out = tmp_path / "predictions.csv"
    done = run([sys.executable, "-m", "facetune.cli", "predict", *jpegs, "--out", str(out)], 300)
    assert done.returncode == 0, done.stdout[-4000:]
    with out.open() as rows:
        predictions = list(csv.DictReader(rows))
    assert [Path(row["source"]).name for row in predictions] == SHARED_JPEGS
    assert all(0 <= float(row["age"]) <= 116 and row["gender"] in ("male", "female") for row in predictions)
