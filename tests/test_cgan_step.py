"""The cGAN's training step and epoch in plain PyTorch (facetune.cgan.step): no Ray at all."""
from __future__ import annotations

import importlib
import io
import math
import sys

import pytest
import torch

from facetune.cgan.job import resolve_config
from facetune.cgan.step import STEP_METRICS, EpochMetrics, GanTrainer


def tiny_config(preset: str) -> tuple[dict, dict]:
    """A preset's model and optimiser settings, its networks narrowed to a few channels."""
    config = resolve_config("smoke", {"preset": preset})
    model = config["model"]
    model["noise_dim"] = 8
    model["generator"]["channels"] = [8, 4] if preset == "paper" else [8, 8, 4, 4]
    model["discriminator"]["channels"] = [4, 8, 8, 8]
    if preset == "strong":
        model["generator"]["embed_dim"] = 8
    return model, config["optim"]


def faces(batches: int, size: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(size, 1, 48, 48, generator=generator),
             "age": torch.randint(1, 90, (size,), generator=generator)} for _ in range(batches)]


def weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in module.parameters()]


@pytest.mark.parametrize("preset", ["paper", "strong"])
def test_a_few_steps_train_both_networks_with_ray_unimportable(preset, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "facetune.cgan.step")
    step = importlib.import_module("facetune.cgan.step")  # imported afresh without Ray
    torch.manual_seed(0)
    gan = step.GanTrainer(*tiny_config(preset))
    generator_before, discriminator_before = weights(gan.generator), weights(gan.discriminator)

    summary = gan.train_epoch(faces(3)).summary()

    assert summary["steps_per_worker"] == 3 and summary["images_per_second"] > 0
    assert all(math.isfinite(summary[name]) for name in STEP_METRICS)
    assert any(not torch.equal(a, b) for a, b in zip(generator_before, weights(gan.generator)))
    assert any(not torch.equal(a, b) for a, b in zip(discriminator_before, weights(gan.discriminator)))


def test_a_step_returns_its_metrics_as_one_tensor_not_host_numbers():
    gan = GanTrainer(*tiny_config("paper"))
    batch = faces(1)[0]
    values = gan.step(batch["image"], batch["age"])
    assert isinstance(values, torch.Tensor) and values.shape == (len(STEP_METRICS),)
    assert not values.requires_grad


def test_epoch_summary_is_the_mean_of_the_steps_metrics():
    metrics = EpochMetrics(torch.device("cpu"))
    metrics.add(torch.tensor([1.0, 2.0, 0.5, -0.5]), images=8)
    metrics.add(torch.tensor([3.0, 4.0, 1.5, -1.5]), images=8)
    summary = metrics.summary()
    assert [summary[name] for name in STEP_METRICS] == [2.0, 3.0, 1.0, -1.0]
    assert summary["steps_per_worker"] == 2


def test_an_epoch_without_a_step_has_no_summary():
    with pytest.raises(ValueError, match="no step"):
        EpochMetrics(torch.device("cpu")).summary()


def test_an_epoch_stops_at_max_steps_and_calls_the_hook_before_each_step():
    gan = GanTrainer(*tiny_config("paper"))
    seen: list[int] = []
    metrics = gan.train_epoch(faces(4), max_steps=2, before_step=seen.append)
    assert metrics.steps == 2 and seen == [0, 1]


def test_the_ema_copy_starts_as_the_generator_and_then_lags_behind_it():
    gan = GanTrainer(*tiny_config("strong"))
    gan.train_epoch(faces(1))
    assert all(torch.equal(a, b) for a, b in zip(weights(gan.sampler), weights(gan.bare_generator)))
    gan.train_epoch(faces(1, seed=1))
    assert gan.sampler is not gan.bare_generator
    assert any(not torch.equal(a, b) for a, b in zip(weights(gan.sampler), weights(gan.bare_generator)))


def test_a_trainer_resumed_from_a_state_dict_takes_the_same_next_step():
    model, optim = tiny_config("strong")
    torch.manual_seed(0)
    original = GanTrainer(model, optim)
    original.train_epoch(faces(2))
    saved = io.BytesIO()
    torch.save(original.state_dict(), saved)  # as a checkpoint holds it
    saved.seek(0)
    resumed = GanTrainer(model, optim, state=torch.load(saved, weights_only=True))
    batch = faces(1, seed=3)[0]
    torch.manual_seed(1)
    expected = original.step(batch["image"], batch["age"])
    torch.manual_seed(1)
    assert torch.allclose(resumed.step(batch["image"], batch["age"]), expected)
    assert all(torch.allclose(a, b) for a, b in zip(weights(resumed.sampler), weights(original.sampler)))
