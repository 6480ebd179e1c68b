"""facetune.json_files: the one JSON writer (numpy values and paths written, other types refused, atomic)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetune.json_files import write_json


def test_numpy_values_and_paths_are_written_as_json_values(tmp_path):
    target = tmp_path / "nested" / "out.json"
    write_json(target, {"n": np.int64(3), "x": np.float32(0.5), "v": np.arange(2), "where": Path("a/b")})
    assert json.loads(target.read_text()) == {"n": 3, "x": 0.5, "v": [0, 1], "where": "a/b"}


def test_an_unknown_type_is_refused_and_the_old_file_stays(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_sort_keys_orders_the_keys(tmp_path):
    write_json(tmp_path / "out.json", {"b": 1, "a": 2}, sort_keys=True)
    assert (tmp_path / "out.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
