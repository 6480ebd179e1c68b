"""Composite scenes for face-detection tests and benchmarks: face crops pasted at a known place,
scale and small rotation into real photographs that hold no face (scikit-image's sample images).

The pasted square is the ground truth: detection recall and box IoU are measured against it,
and the predictions on the detected crop can be compared with those on the original crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: skimage.data photographs without faces (checked: the detector finds none in them).
BACKGROUNDS = ("coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
               "brick", "grass", "gravel", "clock", "text", "page")
SCENE_SIZE = (300, 400)  # (height, width)


@dataclass(frozen=True)
class Pasted:
    """Where a face crop went: its index in the caller's list, centre, side (pixels) and rotation."""

    index: int
    centre: tuple[float, float]
    side: int
    angle: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The axis-aligned square of the unrotated crop (x, y, w, h)."""
        half = self.side / 2
        return (self.centre[0] - half, self.centre[1] - half, float(self.side), float(self.side))


def background_photos() -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in BACKGROUNDS:
        image = np.asarray(getattr(skimage.data, name)())
        photos.append(np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3])
    return photos


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


def _background(rng: np.random.Generator, photos: list[np.ndarray]) -> Image.Image:
    photo = photos[rng.integers(len(photos))]
    height, width = SCENE_SIZE
    ph, pw = photo.shape[:2]
    scale = max(height / ph, width / pw) * rng.uniform(1.0, 1.5)
    resized = Image.fromarray(photo).resize((math.ceil(pw * scale), math.ceil(ph * scale)), Image.Resampling.BILINEAR)
    left = rng.integers(resized.width - width + 1)
    top = rng.integers(resized.height - height + 1)
    return resized.crop((left, top, left + width, top + height))


def make_scene(
    rng: np.random.Generator,
    photos: list[np.ndarray],
    faces: list[np.ndarray],
    indices: list[int],
    min_fraction: float = 0.15,
    max_fraction: float = 0.5,
    max_angle: float = 15.0,
    margin: float = 0.25,
) -> tuple[np.ndarray, list[Pasted]]:
    """One scene with faces[i] for i in `indices` pasted without overlap; faces are square RGB
    or gray uint8 crops. Each face's side is `min_fraction`..`max_fraction` of the scene's
    shorter side; rotation uniform in +-max_angle degrees.

    UTKFace crops cut through forehead and chin, and a frontal detector's window reaches past
    them; a face ending at a knife edge is no real photo. So each crop gets a mirrored border
    of `margin` of its side that fades into the background (0 pastes the bare square).
    """
    scene = _background(rng, photos)
    height, width = SCENE_SIZE
    placed: list[Pasted] = []
    for index in indices:
        for _ in range(50):  # rejection sampling for a free spot
            side = int(rng.uniform(min_fraction, max_fraction) * min(height, width))
            angle = float(rng.uniform(-max_angle, max_angle))
            reach = side * (1 + 2 * margin) * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))) / 2
            centre = (float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach)))
            candidate = Pasted(index, centre, side, angle)
            if all(iou(candidate.box, p.box) == 0 and _apart(candidate, p, margin) for p in placed):
                break
        else:
            continue
        face, mask = _with_margin(faces[index], side, margin)
        # PIL turns counter-clockwise for positive angles; the mask keeps the corners as background.
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        face = face.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        scene.paste(face, (round(centre[0] - face.width / 2), round(centre[1] - face.height / 2)), mask)
        placed.append(candidate)
    return np.asarray(scene), placed


def _with_margin(face: np.ndarray, side: int, margin: float) -> tuple[Image.Image, Image.Image]:
    """The crop resized to `side`, mirrored outwards by `margin` * side, and an alpha mask that
    is opaque over the crop and ramps to transparent across the border."""
    import cv2

    resized = np.asarray(Image.fromarray(face).convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
    pad = int(round(margin * side))
    extended = cv2.copyMakeBorder(resized, pad, pad, pad, pad, cv2.BORDER_REFLECT) if pad else resized
    ramp = np.minimum(np.arange(side + 2 * pad), np.arange(side + 2 * pad)[::-1]).astype(np.float32)
    ramp = np.clip(ramp / max(pad, 1), 0.0, 1.0)
    mask = (255 * np.minimum(ramp[:, None], ramp[None, :])).astype(np.uint8)
    return Image.fromarray(extended), Image.fromarray(mask)


def _apart(a: Pasted, b: Pasted, margin: float) -> bool:
    # Rotated squares (with their borders) reach out to side/sqrt(2) from their centres.
    return math.dist(a.centre, b.centre) > (a.side + b.side) * (1 + 2 * margin) / math.sqrt(2)
