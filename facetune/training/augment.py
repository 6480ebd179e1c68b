"""Per-sample batch augmentation on the batch's own device: flips, shifts, small affine warps, jitter.

Hand-written rather than torchvision.transforms.v2: v2's RandomHorizontalFlip / RandomAffine
draw one random decision per call, so a batched tensor gets the same flip/shift for every
sample; per-sample randomness would need a Python loop over samples. Two vectorised tensor
ops do it for the whole batch, on CPU or GPU, reproducibly from one torch.Generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS: tuple[str, ...] = ("none", "flip", "flip_shift", "flip_affine")
#: Largest shift in pixels (of 48): enough to cover face-crop jitter without losing the face.
MAX_SHIFT = 3
#: flip_affine's ranges: the residual misalignment of detector-aligned crops.
MAX_ROTATION_DEGREES = 10.0
MAX_SCALE_CHANGE = 0.08
#: flip_affine's share of images warped (bilinear); the others are shifted by whole pixels. A
#: bilinear warp blurs a 48x48 face, and a model that only ever saw blurred faces reads sharp
#: ones as older (+1.8 years on val for the first release, whose every training image was warped).
AFFINE_PROBABILITY = 0.5


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


def random_affine(x: torch.Tensor, generator: torch.Generator, max_degrees: float = MAX_ROTATION_DEGREES,
                  max_scale: float = MAX_SCALE_CHANGE, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Rotate, scale and translate each image by its own draw (bilinear, border pixels repeated)."""
    n, _, h, w = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, device=x.device, generator=generator)

    angle = torch.deg2rad(uniform(-max_degrees, max_degrees))
    scale = uniform(1.0 - max_scale, 1.0 + max_scale)
    # affine_grid works in [-1, 1] coordinates: a shift of s pixels is 2s/size.
    tx, ty = uniform(-1, 1) * 2 * max_shift / w, uniform(-1, 1) * 2 * max_shift / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per-image brightness offset and contrast factor, each within +-strength, clipped to [0, 1]."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    brightness = (torch.rand(shape, device=x.device, generator=generator) * 2 - 1) * strength
    contrast = 1 + (torch.rand(shape, device=x.device, generator=generator) * 2 - 1) * strength
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def random_affine_or_shift(x: torch.Tensor, generator: torch.Generator, probability: float) -> torch.Tensor:
    """Each image warped by random_affine with `probability`, else shifted by whole pixels (kept sharp)."""
    warped = random_affine(x, generator)
    shifted = random_shift(x, generator)
    chosen = torch.rand(x.shape[0], device=x.device, generator=generator) < probability
    return torch.where(chosen[:, None, None, None], warped, shifted)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator, jitter: float = 0.0,
                  affine_probability: float = AFFINE_PROBABILITY) -> torch.Tensor:
    """Apply augmentation `mode` ("none" | "flip" | "flip_shift" | "flip_affine") and an optional
    brightness/contrast `jitter` to a batch (N, C, H, W). flip_affine warps each image with
    `affine_probability` and shifts the others."""
    check_augment(mode)
    if mode != "none":
        x = random_flip(x, generator)
    if mode == "flip_shift":
        x = random_shift(x, generator)
    elif mode == "flip_affine":
        # At 1.0 the warp alone, so the generator draws exactly what it drew before the choice existed.
        x = random_affine(x, generator) if affine_probability >= 1.0 else random_affine_or_shift(x, generator, affine_probability)
    if jitter > 0:
        x = color_jitter(x, jitter, generator)
    return x
