"""An interrupted `prepare` leaves the previous dataset readable: the new one is swapped in whole."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import make_faces, write_kaggle_csv

from facetune.data.loading import load_split
from facetune.data.outdir import check_output_dir
from facetune.data.prepare import prepare
from facetune.errors import OutputError
from facetune.records import PREPARED_MANIFEST, is_prepared_dir

pytestmark = pytest.mark.usefixtures("no_figures")

REPO = Path(__file__).resolve().parents[1]
#: Runs prepare in a child that stops for good once the new Parquet files are written (before the swap).
CHILD = """
import sys, time
from pathlib import Path
import facetune.data.prepare as prepare_module

write_parquet = prepare_module.write_parquet

def write_then_hang(*args):
    paths = write_parquet(*args)
    Path(sys.argv[3]).touch()
    time.sleep(600)
    return paths

prepare_module.write_parquet = write_then_hang
prepare_module.prepare(sys.argv[1], sys.argv[2])
"""


@pytest.fixture
def old_and_new(tmp_path) -> tuple[Path, Path, Path]:
    """A prepared dataset of 40 faces in OUT, and a CSV of 60 other faces to replace it with."""
    old_csv = write_kaggle_csv(tmp_path / "old.csv", make_faces(40, seed=5))
    new_csv = write_kaggle_csv(tmp_path / "new.csv", make_faces(60, seed=6))
    out = tmp_path / "data"
    prepare(old_csv, out)
    return out, new_csv, tmp_path


def test_prepare_killed_mid_write_leaves_the_old_dataset_readable(old_and_new):
    out, new_csv, tmp = old_and_new
    manifest_before = (out / PREPARED_MANIFEST).read_text()
    train_before = load_split(out, "train")
    signal_file = tmp / "parquet-written"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(new_csv), str(out), str(signal_file)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert child.poll() is None, "the child prepare ended before writing"
            assert time.monotonic() < deadline, "the child prepare never reached the Parquet writing"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    partial = [p for p in tmp.iterdir() if p.name.startswith(".data.partial-")]
    assert partial and any(partial[0].glob("part-*.parquet")), "the kill did not land mid-write"
    assert (out / PREPARED_MANIFEST).read_text() == manifest_before
    train_after = load_split(out, "train")
    assert len(train_after) == len(train_before)
    assert (train_after.pixels == train_before.pixels).all()

    manifest = prepare(new_csv, out)  # the next run replaces it and clears the leftover
    assert manifest["rows_written"] == 60
    assert not [p for p in tmp.iterdir() if p.name.startswith(".data.")]


def test_a_run_that_died_between_the_two_renames_gets_the_old_dataset_back(old_and_new):
    out, _, tmp = old_and_new
    moved = tmp / ".data.old-1234-abc"
    out.rename(moved)  # the state right after the first rename
    check_output_dir(out, [], overwrite=False, is_ours=is_prepared_dir)
    assert is_prepared_dir(out) and not moved.exists()
    assert json.loads((out / PREPARED_MANIFEST).read_text())["rows_written"] == 40


def test_a_failure_while_writing_keeps_the_old_dataset(old_and_new, monkeypatch):
    out, new_csv, tmp = old_and_new
    before = (out / PREPARED_MANIFEST).read_text()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("facetune.data.prepare.write_parquet", disk_full)
    with pytest.raises(OutputError, match="No space left on device.*the previous content is kept"):
        prepare(new_csv, out)
    assert (out / PREPARED_MANIFEST).read_text() == before
    assert not [p for p in tmp.iterdir() if p.name.startswith(".data.")]
