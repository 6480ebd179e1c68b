"""Loading a trained generator and drawing age grids: rows = one noise vector each, columns = ages,
each column headed by the age it was asked for."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from torch import nn
from torchvision.utils import make_grid

from facetune.cgan.models import SIDE, build_generator, to_unit
from facetune.records import MAX_AGE

#: The exported generator inside a results dir (written at the end of a training run).
GENERATOR_FILE = "generator.pt"
#: The full training state inside each Ray Train checkpoint directory.
STATE_FILE = "cgan_state.pt"
GRID_PADDING = 2
#: Height of the band above the grid that names each column's age.
CAPTION_HEIGHT = 14
#: The PNG text key listing the columns' ages (JSON), so a reader need not read the drawn labels.
AGES_KEY = "facetune.ages"


def parse_ages(text: str) -> list[int]:
    """'21-30' -> [21..30]; '20,30,40' -> [20, 30, 40]; mixed forms too ('1-3,10')."""
    ages: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            ages += list(range(int(low), int(high) + 1)) if sep else [int(low)]
        except ValueError:
            raise ValueError(f"cannot read ages {text!r}: use e.g. '21-30' or '20,30,40'") from None
    if not ages or any(not 0 <= age <= MAX_AGE for age in ages):
        raise ValueError(f"ages {text!r} must name at least one age, each in 0..{MAX_AGE}")
    return ages


def _resolve(path: Path) -> Path:
    if path.is_dir():
        for candidate in (path / GENERATOR_FILE, path / STATE_FILE):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path} holds neither {GENERATOR_FILE} nor a training checkpoint ({STATE_FILE})")
    if not path.is_file():
        raise FileNotFoundError(f"generator checkpoint not found: {path}")
    return path


def generator_payload(state: dict[str, Any]) -> dict[str, Any]:
    """The exportable part of a training state: model config + generator weights (the EMA copy if kept)."""
    weights = state["generator"]
    if state.get("ema") is not None:
        # AveragedModel's state dict prefixes the wrapped model's keys with "module.".
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    return {"model": state["config"]["model"], "generator": weights, "epoch": state["epoch"]}


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a generator from generator.pt, a results dir, or a Ray Train checkpoint dir; eval mode."""
    payload = torch.load(_resolve(Path(path)), map_location=device, weights_only=True)
    if "config" in payload:  # a full training state
        payload = generator_payload(payload)
    generator = build_generator(payload["model"])
    generator.load_state_dict(payload["generator"])
    return generator.to(device).eval(), payload["model"]


@torch.no_grad()
def age_grid_images(generator: nn.Module, noise: torch.Tensor, ages: Sequence[int]) -> torch.Tensor:
    """(rows*len(ages), C, S, S) in [0,1], row-major: row r holds noise[r] at every age."""
    generator.eval()
    device = next(generator.parameters()).device
    rows = noise.repeat_interleave(len(ages), dim=0).to(device)
    ages_tensor = torch.as_tensor(list(ages), dtype=torch.float32).repeat(len(noise)).to(device)
    return to_unit(generator(rows, ages_tensor)).cpu()


def fixed_noise(n: int, noise_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, noise_dim, generator=torch.Generator().manual_seed(seed))


def column_labels(ages: Sequence[int]) -> list[str]:
    """The text above each column of an age grid."""
    return [f"age {int(age)}" for age in ages]


def save_age_grid(images: torch.Tensor, ages: Sequence[int], out: str | os.PathLike[str]) -> Path:
    """Save images (row-major, one column per age in `ages`; gray or colour, any side) as one PNG
    grid with each column's age written above it (and listed under AGES_KEY); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, nrow=len(ages), padding=GRID_PADDING, pad_value=1.0)  # 3 channels either way
    pixels = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    side = images.shape[-1]
    page = Image.new("RGB", (pixels.shape[1], pixels.shape[0] + CAPTION_HEIGHT), "white")
    page.paste(Image.fromarray(pixels), (0, CAPTION_HEIGHT))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=CAPTION_HEIGHT - 4)
    for column, label in enumerate(column_labels(ages)):
        centre = GRID_PADDING + column * (side + GRID_PADDING) + side / 2
        draw.text((centre, CAPTION_HEIGHT / 2), label, fill="black", font=font, anchor="mm")
    info = PngImagePlugin.PngInfo()
    info.add_text(AGES_KEY, json.dumps([int(age) for age in ages]))
    page.save(out, pnginfo=info)
    return out


def grid_size(rows: int, columns: int, side: int = SIDE) -> tuple[int, int]:
    """(height, width) in pixels of a grid written by save_age_grid."""
    return rows * (side + GRID_PADDING) + GRID_PADDING + CAPTION_HEIGHT, columns * (side + GRID_PADDING) + GRID_PADDING


def generate_grid(
    checkpoint: str | os.PathLike[str], ages: Sequence[int], n: int, seed: int, out: str | os.PathLike[str]
) -> Path:
    """Load the generator at `checkpoint` and write an n x len(ages) grid to `out`."""
    generator, model_config = load_generator(checkpoint)
    images = age_grid_images(generator, fixed_noise(n, model_config["noise_dim"], seed), ages)
    return save_age_grid(images, ages, out)
