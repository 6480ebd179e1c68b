"""Results roots may be local paths or URIs; a URI root is written through pyarrow's filesystems."""
from __future__ import annotations

import json

from facetune.storage import ResultsStore, is_uri


def test_uris_and_paths_are_told_apart(tmp_path):
    assert is_uri("s3://bucket/run") and is_uri(f"file://{tmp_path}")
    assert not is_uri(tmp_path) and not is_uri("runs/results")


def test_local_root_is_written_in_place_atomically(tmp_path):
    store = ResultsStore(tmp_path / "results")
    store.write_json("summary.json", [{"task": "age"}])
    assert json.loads((tmp_path / "results" / "summary.json").read_text()) == [{"task": "age"}]
    assert not list((tmp_path / "results").glob("*.tmp"))
    assert store.read_json("summary.json") == [{"task": "age"}]
    assert store.read_json("missing.json", default=[]) == []


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
