"""facetune prepare: Parquet + manifest + figures, the split rules, and the command's exit codes."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pytest
from synthetic import make_faces, write_kaggle_csv

from facetune.cli import run_command
from facetune.commands import prepare as prepare_command
from facetune.data.prepare import BadRowError, prepare
from facetune.data.split import assign_splits, content_hashes, duplicate_stats
from facetune.records import PREPARED_FIGURES_DIR, PREPARED_MANIFEST, SPLITS
from facetune.settings import DataNotFoundError


def run_cli(argv: list[str]) -> int:
    """Run `facetune prepare ...` through the subcommand's own parser, as facetune.cli does."""
    parser = argparse.ArgumentParser(prog="facetune")
    prepare_command.add_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return run_command("facetune prepare", args.func, args)


def with_bad_row(clean: Path, out: Path) -> Path:
    """`clean` with its third data row cut to 2303 pixels."""
    lines = clean.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0]
    out.write_text("\n".join(lines) + "\n")
    return out


def test_manifest_counts_and_splits(prepared_data):
    manifest = json.loads((prepared_data / PREPARED_MANIFEST).read_text())
    assert manifest["rows_read"] == manifest["rows_written"] == 400
    assert manifest["rows_rejected"] == 0 and manifest["rejected"] == []
    assert manifest["seed"] == 0 and manifest["duplicate_groups"] == 0
    assert manifest["conflicting_label_groups"] == 0
    splits = manifest["splits"]
    assert sum(splits[s]["rows"] for s in SPLITS) == 400
    for name, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(splits[name]["rows"] / 400 - share) <= 0.02
        for label in ("age", "gender", "ethnicity"):
            assert sum(splits[name][label].values()) == splits[name]["rows"]


def test_parquet_has_the_documented_schema_and_reads_as_one_dataset(prepared_data, faces):
    dataset = pa_ds.dataset(prepared_data, exclude_invalid_files=True)
    schema = dataset.schema
    assert schema.field("pixels").type == pa.list_(pa.uint8(), 2304)
    for label in ("age", "gender", "ethnicity"):
        assert schema.field(label).type == pa.int64()
    for text in ("split", "source", "content_hash"):
        assert schema.field(text).type == pa.string()
    table = dataset.to_table()
    assert table.num_rows == 400
    assert set(table.column("split").to_pylist()) == set(SPLITS)
    # Row i of the CSV is the face whose img_name ends in its index.
    first = table.filter(pa_ds.field("source").isin([f"{faces['age'][0]}_{faces['gender'][0]}_{faces['ethnicity'][0]}_20170000000000.jpg.chip.jpg"]))
    np.testing.assert_array_equal(np.asarray(first.column("pixels")[0].as_py(), np.uint8), faces["pixels"][0])


def test_figures_are_written_as_png(prepared_data):
    manifest = json.loads((prepared_data / PREPARED_MANIFEST).read_text())
    assert sorted(manifest["figures"]) == [f"{PREPARED_FIGURES_DIR}/{name}.png" for name in ("age", "ethnicity", "gender")]
    for figure in manifest["figures"]:
        assert (prepared_data / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_is_deterministic_per_seed():
    faces = make_faces(300, seed=3)
    hashes = content_hashes(faces["pixels"])
    first = assign_splits(hashes, faces["ethnicity"], faces["gender"], seed=5)
    np.testing.assert_array_equal(first, assign_splits(hashes, faces["ethnicity"], faces["gender"], seed=5))
    assert (first != assign_splits(hashes, faces["ethnicity"], faces["gender"], seed=6)).any()


def test_split_is_stratified_by_ethnicity_and_gender():
    rng = np.random.default_rng(0)
    n = 4000
    ethnicity, gender = rng.integers(0, 5, n), rng.integers(0, 2, n)
    hashes = np.array([f"{i:08x}" for i in range(n)], dtype=object)
    splits = assign_splits(hashes, ethnicity, gender, seed=0)
    for stratum in range(10):
        members = splits[ethnicity * 2 + gender == stratum]
        assert abs((members == "train").mean() - 0.8) < 0.01
        assert abs((members == "test").mean() - 0.1) < 0.01


def test_duplicates_are_counted_and_kept_in_one_split(tmp_path):
    faces = make_faces(200, seed=1)
    # Rows 100..139 repeat rows 0..39; the first 10 copies carry a different age.
    for key in faces:
        faces[key] = np.concatenate([faces[key][:100], faces[key][:40], faces[key][100:]])[:200]
    faces["age"][100:110] += 1
    manifest = prepare(write_kaggle_csv(tmp_path / "dups.csv", faces), tmp_path / "out", seed=0)
    assert manifest["duplicate_groups"] == 40
    assert manifest["duplicate_rows"] == 80
    assert manifest["conflicting_label_groups"] == 10
    table = pa_ds.dataset(tmp_path / "out", exclude_invalid_files=True).to_table(columns=["content_hash", "split"])
    pairs = set(zip(table.column("content_hash").to_pylist(), table.column("split").to_pylist()))
    assert len(pairs) == len(set(table.column("content_hash").to_pylist()))


def test_duplicate_stats_without_duplicates_is_zero():
    faces = make_faces(20, seed=2)
    stats = duplicate_stats(content_hashes(faces["pixels"]), faces["age"], faces["gender"], faces["ethnicity"])
    assert (stats.groups, stats.rows, stats.conflicting_label_groups) == (0, 0, 0)


def test_bad_rows_are_rejected_and_counted(kaggle_csv, tmp_path):
    manifest = prepare(with_bad_row(kaggle_csv, tmp_path / "bad.csv"), tmp_path / "out")
    assert manifest["rows_read"] == 400
    assert manifest["rows_rejected"] == 1 and manifest["rows_written"] == 399
    assert manifest["rejected"][0]["reason"] == "line 4: 2303 pixel values, expected 2304"
    assert pa_ds.dataset(tmp_path / "out", exclude_invalid_files=True).count_rows() == 399


def test_strict_stops_at_the_first_bad_row_and_writes_nothing(kaggle_csv, tmp_path):
    with pytest.raises(BadRowError, match="line 4: 2303 pixel values"):
        prepare(with_bad_row(kaggle_csv, tmp_path / "bad.csv"), tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists()


def test_cli_strict_exits_non_zero_naming_the_row(kaggle_csv, tmp_path, capsys):
    code = run_cli(["prepare", str(with_bad_row(kaggle_csv, tmp_path / "bad.csv")), "--out", str(tmp_path / "o"), "--strict"])
    assert code == 3
    assert "line 4: 2303 pixel values" in capsys.readouterr().err


def test_cli_prints_a_summary(kaggle_csv, tmp_path, capsys):
    assert run_cli(["prepare", str(kaggle_csv), "--out", str(tmp_path / "o"), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "read 400 rows" in out and "wrote 400, rejected 0" in out
    assert re.search(r"split: train \d+ \(\d+\.\d%\), val \d+ \(\d+\.\d%\), test \d+", out)
    assert json.loads((tmp_path / "o" / PREPARED_MANIFEST).read_text())["seed"] == 2


def test_missing_source_is_a_data_not_found_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        prepare(tmp_path / "nowhere.csv", tmp_path / "o")


def test_rerun_replaces_old_parquet_parts(kaggle_csv, tmp_path, monkeypatch):
    monkeypatch.setattr("facetune.data.prepare.ROWS_PER_FILE", 100)
    prepare(kaggle_csv, tmp_path / "out")
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 4
    monkeypatch.setattr("facetune.data.prepare.ROWS_PER_FILE", 8192)
    prepare(kaggle_csv, tmp_path / "out")
    assert pa_ds.dataset(tmp_path / "out", exclude_invalid_files=True).count_rows() == 400
