"""A profile's `row_limit` (the smoke profiles' quick runs) caps the faces a run trains on."""
from __future__ import annotations

from facetune.data.loading import load_split, split_rows
from facetune.storage import ResultsStore


def test_split_rows_are_the_manifests_counts(prepared_data):
    assert [split_rows(prepared_data, split) for split in ("train", "val", "test")] == \
        [len(load_split(prepared_data, split)) for split in ("train", "val", "test")]


def test_a_sweep_row_limit_keeps_the_first_train_and_val_faces(prepared_data, tmp_path):
    from facetune.tuning.sweep import load_sweep_data

    store = ResultsStore(tmp_path / "results")
    full = load_sweep_data(prepared_data, {"row_limit": None}, store, need_pca=False)
    limited = load_sweep_data(prepared_data, {"row_limit": 25}, store, need_pca=False)
    assert len(limited.train_pixels) == 25 and len(limited.val_pixels) == 25
    assert (limited.train_pixels == full.train_pixels[:25]).all()
    assert (limited.val_labels["age"] == full.val_labels["age"][:25]).all()


def test_a_cgan_row_limit_shortens_every_workers_epoch(prepared_data):
    from facetune.cgan.job import resolve_config
    from facetune.cgan.train import steps_per_epoch

    config = {**resolve_config("smoke"), "data_dir": str(prepared_data), "num_workers": 2, "batch_size": 16}
    assert steps_per_epoch({**config, "row_limit": None}) == split_rows(prepared_data, "train") // 2 // 16
    assert steps_per_epoch({**config, "row_limit": 100}) == 100 // 2 // 16
    assert steps_per_epoch({**config, "row_limit": 100, "max_steps_per_epoch": 2}) == 2
