"""facetune.records: one writer and one reader per file, and prepared folders plain Parquet readers can open."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.dataset as pa_ds
import pytest

from facetune.data.loading import load_split
from facetune.errors import RecordFormatError
from facetune.records import (
    OLD_PREPARED_MANIFEST,
    PREPARED_FIGURES_DIR,
    PREPARED_MANIFEST,
    PreparedManifest,
    SummaryEntry,
    SweepRecord,
    combination_name,
    split_combination_name,
)
from facetune.settings import DataNotFoundError

ENTRY = SummaryEntry(family="cnn", task="gender", val={"accuracy": 0.8}, test={"accuracy": 0.78},
                     checkpoint="cnn_gender/model.pt", num_parameters=1234, epochs=3)


def test_pandas_reads_a_prepared_folder_with_no_flags(prepared_data):
    frame = pd.read_parquet(prepared_data)
    manifest = json.loads((prepared_data / PREPARED_MANIFEST).read_text())
    assert len(frame) == manifest["rows_written"]
    assert {"pixels", "age", "gender", "ethnicity", "split", "source", "content_hash"} == set(frame.columns)


def test_pyarrow_reads_a_prepared_folder_with_no_flags(prepared_data):
    assert (prepared_data / PREPARED_FIGURES_DIR).is_dir()  # the figures are there and are skipped
    dataset = pa_ds.dataset(prepared_data, format="parquet")
    assert dataset.count_rows() == PreparedManifest.read(prepared_data).rows_written


def test_manifest_is_read_back_by_the_record_that_wrote_it(prepared_data):
    manifest = PreparedManifest.read(prepared_data)
    assert manifest.to_dict() == json.loads((prepared_data / PREPARED_MANIFEST).read_text())


def test_a_folder_in_the_old_layout_says_to_prepare_it_again(prepared_data, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(prepared_data, old)
    (old / PREPARED_MANIFEST).rename(old / OLD_PREPARED_MANIFEST)
    with pytest.raises(DataNotFoundError, match=r"older facetune .*run `facetune prepare SOURCE --out .*` again") as err:
        load_split(old, "train")
    assert "\n" not in str(err.value)


def test_summary_entry_round_trips_without_unset_fields():
    written = ENTRY.to_dict()
    assert "best_epoch" not in written and written["epochs"] == 3
    assert SummaryEntry.from_dict(written) == ENTRY


def test_a_key_the_writer_never_writes_is_refused_naming_file_and_key():
    with pytest.raises(RecordFormatError, match=r"^results/summary\.json: unknown key 'val_metrics'"):
        SummaryEntry.from_dict({**ENTRY.to_dict(), "val_metrics": {}}, "results/summary.json")


def test_sweep_record_accepts_started_but_not_other_spellings():
    record = SweepRecord(profile="smoke", data="/d", storage="/r/tune", combinations=["cnn_age"], started="2025-01-01T10:00:00")
    assert SweepRecord.from_dict(record.to_dict()) == record
    spelled = {**record.to_dict(), "start": record.started}
    del spelled["started"]
    with pytest.raises(RecordFormatError, match="sweep.json: unknown key 'start'"):
        SweepRecord.from_dict(spelled)


@pytest.mark.parametrize("family, task", [("cnn", "gender"), ("pca_dnn", "age"), ("multitask", "ethnicity")])
def test_combination_names_split_back_into_family_and_task(family, task):
    assert split_combination_name(combination_name(family, task)) == (family, task)
