"""The cGAN's training step and epoch in plain PyTorch: no Ray, runs in any process.

`GanTrainer` holds both networks, their optimisers, the loss and the optional EMA generator;
the Ray Train loop (facetune.cgan.train) wraps it as the Tune trainable wraps the training
loop's `fit`: it adds the data shard, DDP (through `wrap`), checkpoints and reports.
Step metrics stay on the device and are read once per epoch (`EpochMetrics.summary`), so a
GPU step never waits for a copy to the host.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from facetune.cgan.losses import get_loss
from facetune.cgan.models import build_discriminator, build_generator, to_signed

#: What every step measures, in the order of `GanTrainer.step`'s result.
STEP_METRICS = ("d_loss", "g_loss", "d_real", "d_fake")


def ema_rate(decay: float, updates_done: int) -> float:
    """The weight the EMA keeps of itself at an update: 0 at the first (a copy of the generator),
    then (1+n)/(10+n) up to `decay`, so early samples are not dominated by the random initial
    weights (a fixed 0.999 needs thousands of steps)."""
    if updates_done == 0:
        return 0.0
    return min(decay, (1.0 + updates_done) / (10.0 + updates_done))


class EpochMetrics:
    """Step metrics summed on the device; `summary()` is the epoch's one host sync."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps = 0
        self.images = 0
        self._sums = torch.zeros(len(STEP_METRICS), device=device)
        self._started = time.perf_counter()

    def add(self, step_values: torch.Tensor, images: int) -> None:
        self._sums += step_values
        self.steps += 1
        self.images += images

    def summary(self) -> dict[str, float]:
        """Per-step means and throughput; under torch.distributed, averaged over the workers
        (images/s summed), which every worker must call at the same point."""
        if self.steps == 0:
            raise ValueError("no step was taken this epoch")
        seconds = time.perf_counter() - self._started
        rate = torch.tensor([self.images / seconds], device=self.device)
        packed = torch.cat([self._sums / self.steps, rate])
        workers = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed)
            workers = dist.get_world_size()
            packed /= workers
        values = packed.tolist()
        return {**dict(zip(STEP_METRICS, values)), "steps_per_worker": self.steps, "epoch_seconds": seconds,
                "images_per_second": values[-1] * workers}


def _unwrapped(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DDP keeps the network in .module


class GanTrainer:
    """Generator, discriminator, both Adam optimisers, the loss and the optional EMA generator.

    `wrap` is applied to each network after its weights are loaded (e.g. Ray Train's
    `prepare_model`, which adds DDP with more than one worker); `state` is a previous
    `state_dict()` to resume from.
    """

    def __init__(self, model_config: dict[str, Any], optim_config: dict[str, Any], *,
                 device: torch.device | str = "cpu", wrap: Callable[[nn.Module], nn.Module] | None = None,
                 state: dict[str, Any] | None = None) -> None:
        wrap = wrap or (lambda module: module)
        generator, discriminator = build_generator(model_config), build_discriminator(model_config)
        if state is not None:
            generator.load_state_dict(state["generator"])
            discriminator.load_state_dict(state["discriminator"])
        self.device = torch.device(device)
        self.generator = wrap(generator.to(self.device))
        self.discriminator = wrap(discriminator.to(self.device))
        self.bare_generator = _unwrapped(self.generator)
        self.bare_discriminator = _unwrapped(self.discriminator)
        self.loss = get_loss(optim_config["loss"])
        betas = tuple(optim_config["betas"])
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=optim_config["lr_g"], betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=optim_config["lr_d"], betas=betas)
        self.ema_decay = optim_config.get("ema_decay")
        # AveragedModel holds the EMA copy and its update count (on the CPU) in the state-dict layout
        # generate.generator_payload reads; `_update_ema` does the update without reading the device.
        self.ema = AveragedModel(self.bare_generator, use_buffers=True) if self.ema_decay else None
        if state is not None:
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])

    @property
    def sampler(self) -> nn.Module:
        """The generator to draw samples from: the EMA copy when one is kept."""
        return self.ema.module if self.ema is not None else self.bare_generator

    def step(self, images: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """One discriminator and one generator update on a batch of real faces ([0, 1] images,
        ages in years); returns STEP_METRICS as a detached tensor on the device (no host sync)."""
        real = to_signed(images.float())
        real_ages = ages.float()
        # Condition fakes on the batch's own ages, shuffled: the real age distribution.
        fake_ages = real_ages[torch.randperm(len(real_ages), device=real_ages.device)]
        noise = torch.randn(len(real), self.bare_generator.noise_dim, device=real.device)
        fake = self.generator(noise, fake_ages)

        # Discriminator: real and fake in one forward, so DDP reduces once.
        scores = self.discriminator(torch.cat([real, fake.detach()]), torch.cat([real_ages, fake_ages]))
        real_scores, fake_scores = scores.split(len(real))
        d_loss = self.loss.discriminator(real_scores, fake_scores)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        # Generator: through the bare discriminator with its weights frozen, so only G's
        # gradients are computed and reduced.
        self.bare_discriminator.requires_grad_(False)
        g_loss = self.loss.generator(self.bare_discriminator(fake, fake_ages))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.bare_discriminator.requires_grad_(True)
        if self.ema is not None:
            self._update_ema()
        return torch.stack([d_loss, g_loss, real_scores.mean(), fake_scores.mean()]).detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.ema is not None
        rate = ema_rate(self.ema_decay, int(self.ema.n_averaged))
        averaged = [*self.ema.module.parameters(), *self.ema.module.buffers()]
        current = [*self.bare_generator.parameters(), *self.bare_generator.buffers()]
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - rate)
        for average, value in zip(averaged, current):
            if not average.is_floating_point():
                average.copy_(value)  # counters such as BatchNorm's num_batches_tracked
        self.ema.n_averaged += 1

    def train_epoch(self, batches: Iterable[dict[str, torch.Tensor]], *, max_steps: int | None = None,
                    before_step: Callable[[int], None] | None = None) -> EpochMetrics:
        """Steps over `batches` (dicts with "image" and "age" on the device), at most `max_steps`."""
        self.generator.train()
        self.discriminator.train()
        metrics = EpochMetrics(self.device)
        for step, batch in enumerate(batches):
            if step == max_steps:
                break  # every worker stops at the same step, so DDP stays in lock-step
            if before_step is not None:
                before_step(step)
            metrics.add(self.step(batch["image"], batch["age"]), len(batch["image"]))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Weights and optimiser states, as `state=` takes them back."""
        return {
            "generator": self.bare_generator.state_dict(),
            "discriminator": self.bare_discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }
