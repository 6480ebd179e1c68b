"""Tiny synthetic face-like data for tests: learnable labels, both input layouts.

The images are not faces; each label leaves a visible trace (gender: a bright blob left or
right; ethnicity: overall brightness; age: a vertical gradient), so a few epochs of any model
family learn something and tests can tell a working pipeline from a broken one.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from facetune.records import IMAGE_SIZE as SIZE  # the faces are drawn in the training layout


def make_faces(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Return {"pixels": (n, 2304) uint8, "age", "gender", "ethnicity": (n,) int64}."""
    rng = np.random.default_rng(seed)
    age = rng.integers(1, 90, n)
    gender = rng.integers(0, 2, n)
    ethnicity = rng.choice(5, n, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = np.empty((n, SIZE, SIZE), np.float32)
    for i in range(n):
        base = 60.0 + 30.0 * ethnicity[i]
        gradient = (age[i] / 90.0) * 60.0 * (yy / SIZE)
        cx = 14.0 if gender[i] == 0 else 34.0
        blob = 70.0 * np.exp(-((xx - cx) ** 2 + (yy - 24.0) ** 2) / 40.0)
        images[i] = base + gradient + blob + rng.normal(0, 8, (SIZE, SIZE))
    pixels = np.clip(images, 0, 255).astype(np.uint8).reshape(n, -1)
    return {"pixels": pixels, "age": age, "gender": gender, "ethnicity": ethnicity}


def write_kaggle_csv(path: Path, faces: dict[str, np.ndarray], gz: bool = False) -> Path:
    """Write `faces` in the Kaggle age_gender.csv layout (age,ethnicity,gender,img_name,pixels)."""
    lines = ["age,ethnicity,gender,img_name,pixels"]
    for i in range(len(faces["age"])):
        pixel_text = " ".join(map(str, faces["pixels"][i].tolist()))
        name = f"{faces['age'][i]}_{faces['gender'][i]}_{faces['ethnicity'][i]}_2017{i:010d}.jpg.chip.jpg"
        lines.append(f"{faces['age'][i]},{faces['ethnicity'][i]},{faces['gender'][i]},{name},{pixel_text}")
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_utkface_folder(folder: Path, faces: dict[str, np.ndarray], size: int = 64) -> Path:
    """Write `faces` as UTKFace-named RGB JPEGs of `size` x `size` pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(faces["age"])):
        gray = Image.fromarray(faces["pixels"][i].reshape(SIZE, SIZE))
        image = gray.resize((size, size), Image.Resampling.LANCZOS).convert("RGB")
        name = f"{faces['age'][i]}_{faces['gender'][i]}_{faces['ethnicity'][i]}_2017{i:010d}.jpg.chip.jpg"
        image.save(folder / name, quality=95)
    return folder
