"""Results roots may be local paths or URIs; a URI root is written through pyarrow's filesystems."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from facetune.storage import ResultsStore, is_uri


def test_uris_and_paths_are_told_apart(tmp_path):
    assert is_uri("s3://bucket/run") and is_uri(f"file://{tmp_path}")
    assert not is_uri(tmp_path) and not is_uri("runs/results")


def test_local_root_is_written_in_place_and_read_back(tmp_path):
    store = ResultsStore(tmp_path / "results")
    store.write_json("summary.json", [{"task": "age"}])
    assert json.loads((tmp_path / "results" / "summary.json").read_text()) == [{"task": "age"}]
    assert store.read_json("summary.json") == [{"task": "age"}]
    assert store.read_json("missing.json", default=[]) == []
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["summary.json"]  # no temp file left


def test_a_write_that_fails_midway_keeps_the_previous_content(tmp_path):
    store = ResultsStore(tmp_path / "results")
    store.write_json("summary.json", [{"task": "age"}])
    # The list serialises, then the last entry cannot: a write streamed into the file would stop there.
    with pytest.raises(TypeError, match="not JSON serialisable"):
        store.write_json("summary.json", [{"task": "gender", "rows": list(range(10_000))}, {"bad": object()}])
    assert store.read_json("summary.json") == [{"task": "age"}]
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["summary.json"]


def test_a_disk_filling_up_mid_write_keeps_the_previous_content(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "results")
    store.write_json("summary.json", [{"task": "age"}])
    real_write_text = Path.write_text

    def half_then_disk_full(path: Path, text: str, *args, **kwargs) -> int:
        real_write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.write_json("summary.json", [{"task": "gender"}, {"task": "ethnicity"}])
    monkeypatch.undo()
    assert store.read_json("summary.json") == [{"task": "age"}]
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["summary.json"]


def test_a_reader_never_sees_a_partial_file_while_it_is_rewritten(tmp_path):
    store = ResultsStore(tmp_path / "results")
    versions = [[{"version": v, "rows": list(range(50_000))}] for v in range(2)]
    store.write_json("summary.json", versions[0])
    seen, errors, done = [], [], threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            try:
                seen.append(store.read_json("summary.json")[0]["version"])
            except Exception as error:  # noqa: BLE001 - any failure to read is the finding
                errors.append(repr(error))

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for round_ in range(40):
            store.write_json("summary.json", versions[round_ % 2])
    finally:
        done.set()
        reader.join()
    assert errors == [] and seen and set(seen) <= {0, 1}


def test_uri_root_stages_a_combination_and_publishes_it_whole(tmp_path):
    root = tmp_path / "bucket" / "run"
    store = ResultsStore(f"file://{root}")
    folder = store.local_dir("cnn_gender")
    (folder / "test_metrics.json").write_text('{"accuracy": 0.9}')
    assert not (root / "cnn_gender").exists()  # nothing visible before publish
    store.publish("cnn_gender")
    assert json.loads((root / "cnn_gender" / "test_metrics.json").read_text()) == {"accuracy": 0.9}


def test_uri_root_reads_back_what_it_wrote(tmp_path):
    store = ResultsStore(f"file://{tmp_path / 'remote'}")
    store.write_json("summary.json", [{"family": "cnn"}])
    assert store.read_json("summary.json") == [{"family": "cnn"}]
    assert store.child("tune") == f"file://{tmp_path / 'remote'}/tune"
