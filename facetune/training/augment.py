"""Per-sample batch augmentation on the batch's own device: horizontal flips and small shifts.

Hand-written rather than torchvision.transforms.v2: v2's RandomHorizontalFlip / RandomAffine
draw one random decision per call, so a batched tensor gets the same flip/shift for every
sample; per-sample randomness would need a Python loop over samples. Two vectorised tensor
ops do it for the whole batch, on CPU or GPU, reproducibly from one torch.Generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS: tuple[str, ...] = ("none", "flip", "flip_shift")
#: Largest shift in pixels (of 48): enough to cover face-crop jitter without losing the face.
MAX_SHIFT = 3


def check_augment(mode: str) -> None:
    if mode not in AUGMENTS:
        raise ValueError(f"unknown augment {mode!r}; known: {list(AUGMENTS)}")


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (N, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-max_shift, max_shift], edges replicated."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), device=x.device, generator=generator)
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (N, W)
    # Gather each sample's own H x W window out of its padded image.
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation `mode` ("none" | "flip" | "flip_shift") to a batch (N, C, H, W)."""
    check_augment(mode)
    if mode == "none":
        return x
    x = random_flip(x, generator)
    if mode == "flip_shift":
        x = random_shift(x, generator)
    return x
