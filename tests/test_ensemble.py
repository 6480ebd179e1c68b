"""Ensemble selection: greedy on validation, never worse than its best member there."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facetune.models import build_model
from facetune.models.ensemble import Ensemble, to_prediction_space
from facetune.tasks import TASKS
from facetune.tuning.ensemble_selection import combined_metric, greedy_selection


def noisy_probabilities(y: np.ndarray, classes: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = np.eye(classes)[y] * 2.0 + rng.normal(0, noise, (len(y), classes))
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


@pytest.mark.parametrize("seed", range(5))
def test_ensemble_is_never_worse_than_its_best_member_on_validation(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 300)
    candidates = [noisy_probabilities(y, 5, noise, seed * 10 + k) for k, noise in enumerate([1.5, 2.0, 2.5, 3.0, 6.0])]
    task = TASKS["ethnicity"]
    chosen, score = greedy_selection(task, candidates, y, max_members=6)
    best_single = max(combined_metric(task, [c], [1], y) for c in candidates)
    assert score >= best_single
    assert combined_metric(task, [candidates[i] for i in sorted(set(chosen))], [chosen.count(i) for i in sorted(set(chosen))], y) == score


def test_regression_ensemble_averages_ages_and_stops_when_nothing_improves():
    y = np.array([20.0, 40.0, 60.0])
    too_low, too_high, perfect = (y - 5)[:, None], (y + 5)[:, None], y[:, None]
    chosen, score = greedy_selection(TASKS["age"], [too_low, too_high, perfect], y, max_members=5)
    assert chosen == [2] and score == 0.0
    chosen, score = greedy_selection(TASKS["age"], [too_low, too_high], y, max_members=5)
    assert sorted(chosen) == [0, 1] and score == 0.0


def test_max_members_bounds_the_ensemble():
    y = np.random.default_rng(0).integers(0, 2, 200)
    candidates = [noisy_probabilities(y, 2, 3.0, k) for k in range(8)]
    chosen, _ = greedy_selection(TASKS["gender"], candidates, y, max_members=2)
    assert len(chosen) <= 2


def test_ensemble_module_returns_log_mean_probabilities():
    members = [build_model("cnn", {"conv_channels": [4], "dense": [8]}, "gender") for _ in range(2)]
    ensemble = Ensemble(members, [1, 3], "gender").eval()
    x = torch.rand(4, 1, 48, 48)
    expected = 0.25 * to_prediction_space(members[0].eval()(x), TASKS["gender"]) + 0.75 * to_prediction_space(members[1].eval()(x), TASKS["gender"])
    assert torch.allclose(torch.softmax(ensemble(x), dim=1), expected, atol=1e-5)
