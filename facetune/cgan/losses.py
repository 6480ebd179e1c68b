"""Adversarial losses by name: each is (discriminator_loss(real, fake), generator_loss(fake)) on raw scores."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch.nn import functional as F


class GanLoss(NamedTuple):
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]


def _bce_discriminator(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
    fake = F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
    return real + fake


def _bce_generator(fake_scores: torch.Tensor) -> torch.Tensor:
    # Non-saturating form: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    return F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores))


def _hinge_discriminator(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def _hinge_generator(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


LOSSES: dict[str, GanLoss] = {
    "bce": GanLoss(_bce_discriminator, _bce_generator),
    "hinge": GanLoss(_hinge_discriminator, _hinge_generator),
}


def get_loss(name: str) -> GanLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]
