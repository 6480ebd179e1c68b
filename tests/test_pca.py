"""facetune.models.pca: one PCA fitted on the train pixels, saved, reused and inverted."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from facetune.models import build_model
from facetune.models.pca import components_for_ratio, fit_pca, load_pca, reconstruct, save_pca, summary, transform


@pytest.fixture(scope="module")
def train_pixels(faces):
    return faces["pixels"][:300]


@pytest.fixture(scope="module")
def params(train_pixels):
    return fit_pca(train_pixels, n_components=40, seed=0)


def test_fit_gives_orthonormal_components_in_unit_pixel_scale(params, train_pixels):
    assert params.components.shape == (40, 2304) and params.mean.shape == (2304,)
    assert np.allclose(params.components @ params.components.T, np.eye(40), atol=1e-4)
    assert np.allclose(params.mean, train_pixels.mean(axis=0) / 255.0, atol=1e-6)


def test_explained_variance_is_recorded_and_decreasing(params):
    ratio = params.explained_variance_ratio
    assert ratio.shape == (40,) and np.all(np.diff(ratio) <= 1e-7)
    assert 0.0 < ratio.sum() <= 1.0
    assert params.explained_variance.shape == (40,)


def test_fit_is_repeatable_with_a_seed(params, train_pixels):
    again = fit_pca(train_pixels, n_components=40, seed=0)
    assert np.array_equal(again.components, params.components)


def test_transform_centres_then_projects(params, faces):
    pixels = faces["pixels"][300:310]
    expected = (pixels / 255.0 - params.mean) @ params.components.T
    assert np.allclose(transform(params, pixels), expected, atol=1e-4)
    assert transform(params, pixels, n_components=5).shape == (10, 5)


def test_more_components_reconstruct_better(params, faces):
    pixels = faces["pixels"][300:340]
    errors = [np.mean((reconstruct(params, pixels, k) - pixels / 255.0) ** 2) for k in (1, 10, 40)]
    assert errors[0] > errors[1] > errors[2]
    assert reconstruct(params, pixels).min() >= 0.0 and reconstruct(params, pixels).max() <= 1.0


def test_components_for_ratio_is_the_smallest_k_reaching_it(params):
    cumulative = np.cumsum(params.explained_variance_ratio, dtype=np.float64)
    target = float(cumulative[8] + cumulative[9]) / 2  # passed by the 10th component, not the 9th
    assert components_for_ratio(params, target) == 10
    with pytest.raises(ValueError, match="explain only"):
        components_for_ratio(params, 1.0)


def test_summary_reports_sizes_and_unreachable_ratios_as_none(params):
    got = summary(params, ratios=(0.5, 0.9999))
    assert got["n_components"] == 40
    assert got["explained_variance_total"] == pytest.approx(float(params.explained_variance_ratio.sum()), rel=1e-5)
    assert isinstance(got["components_for_variance"]["50%"], int)
    assert got["components_for_variance"]["100%"] is None


def test_save_and_load_round_trip(params, tmp_path):
    save_pca(params, tmp_path / "pca" / "pca.npz")
    loaded = load_pca(tmp_path / "pca" / "pca.npz")
    for name in ("mean", "components", "explained_variance", "explained_variance_ratio"):
        assert np.array_equal(getattr(loaded, name), getattr(params, name))


def test_too_many_components_for_a_small_split_is_reported_and_capped(faces, caplog):
    with caplog.at_level(logging.WARNING):
        small = fit_pca(faces["pixels"][:30], n_components=500)
    assert small.n_components == 30
    assert "500 components asked" in caplog.text


def test_fit_wants_uint8_pixels(faces):
    with pytest.raises(ValueError, match="uint8"):
        fit_pca(faces["pixels"][:50].astype(np.float32))


def test_pca_dnn_features_equal_transform(params, faces):
    for whiten in (False, True):
        model = build_model("pca_dnn", {"dense": [8], "whiten": whiten}, "gender", {"pca": params})
        pixels = faces["pixels"][300:305]
        images = torch.from_numpy(pixels.reshape(-1, 1, 48, 48) / 255.0).float()
        expected = transform(params, pixels)
        if whiten:
            expected = expected / np.sqrt(params.explained_variance)
        assert np.allclose(model.features(images).numpy(), expected, atol=1e-3)
