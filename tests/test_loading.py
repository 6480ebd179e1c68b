"""facetune.data.loading: the in-memory fast path and the per-split Ray Dataset agree."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facetune.data.loading import load_split, pixels_to_images, read_split_dataset
from facetune.records import PREPARED_MANIFEST, SPLITS
from facetune.settings import DataNotFoundError


def test_load_split_returns_each_split_in_memory(prepared_data):
    manifest = json.loads((prepared_data / PREPARED_MANIFEST).read_text())
    for split in SPLITS:
        arrays = load_split(prepared_data, split)
        assert len(arrays) == manifest["splits"][split]["rows"]
        assert arrays.pixels.shape == (len(arrays), 2304) and arrays.pixels.dtype == np.uint8
        assert arrays.source.dtype == object and isinstance(arrays.source[0], str)


def test_split_arrays_give_float_images_and_task_labels(prepared_data):
    arrays = load_split(prepared_data, "val")
    images = arrays.images()
    assert images.shape == (len(arrays), 1, 48, 48) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_allclose(images[0, 0, 0, :3].numpy(), arrays.pixels[0, :3] / 255.0, rtol=1e-6)
    assert arrays.labels("gender").dtype == np.int64
    np.testing.assert_array_equal(arrays.labels("ethnicity"), arrays.ethnicity)
    with pytest.raises(ValueError, match="unknown task"):
        arrays.labels("mood")


def test_pixels_to_images_rejects_wrong_shapes():
    assert pixels_to_images(np.zeros((2, 2304), np.uint8)).shape == (2, 1, 48, 48)
    with pytest.raises(ValueError, match="expected pixels"):
        pixels_to_images(np.zeros((2, 2303), np.uint8))


def test_unknown_split_and_missing_data_are_clear_errors(prepared_data, tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        load_split(prepared_data, "holdout")
    with pytest.raises(DataNotFoundError, match="facetune prepare"):
        load_split(tmp_path, "train")


@pytest.mark.slow  # starts Ray
def test_ray_reads_the_whole_directory_as_one_dataset(ray_session, prepared_data):
    import ray.data

    assert ray.data.read_parquet(str(prepared_data)).count() == 400


@pytest.mark.slow  # starts Ray
def test_read_split_dataset_batches_are_float_images_and_labels(ray_session, prepared_data):
    expected = load_split(prepared_data, "test")
    dataset = read_split_dataset(prepared_data, "test")
    batches = list(dataset.iter_torch_batches(batch_size=16))
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (len(expected), 1, 48, 48) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    ages = torch.cat([b["age"] for b in batches])
    assert ages.dtype == torch.int64
    # Same faces as the fast path, whatever order Ray yields them in.
    assert sorted(ages.tolist()) == sorted(expected.age.tolist())
    assert torch.isclose(images.sum(), expected.images().sum(), rtol=1e-5)
    assert set(batches[0]) == {"image", "age", "gender", "ethnicity"}
