"""Composite scenes for face-detection tests and benchmarks: face crops pasted at a known place,
scale, in-plane rotation (roll) and simulated turn (yaw) into real photographs that hold no face
(scikit-image's sample images).

Yaw is simulated on the flat crop: a perspective warp squeezes it horizontally to cos(yaw) of its
width about its centre and shortens the receding edge by YAW_PERSPECTIVE * sin|yaw|, as a card
turned about its vertical axis would look. A real head is not flat (the nose does not move
against the cheeks, the far cheek is not hidden), so this is a stand-in for turned faces.

The pasted square is the ground truth: detection recall and box IoU are measured against it,
and the predictions on the detected crop can be compared with those on the original crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: skimage.data photographs without faces. `camera` (the cameraman) is left out: it holds a real,
#: unlabelled face, which the CNN detector finds (probability 0.995).
BACKGROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "brick", "grass", "gravel", "clock", "text", "page")
SCENE_SIZE = (300, 400)  # (height, width)
#: How much the receding edge of a turned face shortens, per unit of sin(yaw).
YAW_PERSPECTIVE = 0.2


@dataclass(frozen=True)
class Pasted:
    """Where a face crop went: its index in the caller's list, centre, side (pixels), rotation
    and simulated turn (degrees)."""

    index: int
    centre: tuple[float, float]
    side: int
    angle: float
    yaw: float = 0.0

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


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
    photo = photos[rng.integers(len(photos))]
    height, width = size
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
    max_yaw: float = 0.0,
    size: tuple[int, int] = SCENE_SIZE,
) -> tuple[np.ndarray, list[Pasted]]:
    """One scene with faces[i] for i in `indices` pasted without overlap; faces are square RGB
    or gray uint8 crops. Each face's side is `min_fraction`..`max_fraction` of the scene's
    shorter side; rotation uniform in +-max_angle degrees, turn uniform in +-max_yaw degrees
    (drawn only when max_yaw > 0, so scenes without turn are those of earlier seeds). `size` is
    the scene's (height, width).

    UTKFace crops cut through forehead and chin, and a frontal detector's window reaches past
    them; a face ending at a knife edge is no real photo. So each crop gets a mirrored border
    of `margin` of its side that fades into the background (0 pastes the bare square).
    """
    scene = _background(rng, photos, size)
    height, width = size
    placed: list[Pasted] = []
    for index in indices:
        for _ in range(50):  # rejection sampling for a free spot
            side = int(rng.uniform(min_fraction, max_fraction) * min(height, width))
            angle = float(rng.uniform(-max_angle, max_angle))
            yaw = float(rng.uniform(-max_yaw, max_yaw)) if max_yaw > 0 else 0.0
            spread = (1 + 2 * margin) * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle))))
            side = min(side, int(min(height, width) / spread))  # a large face turned far still fits
            reach = side * spread / 2
            centre = (float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach)))
            candidate = Pasted(index, centre, side, angle, yaw)
            if all(iou(candidate.box, p.box) == 0 and _apart(candidate, p, margin) for p in placed):
                break
        else:
            continue
        face, mask = _with_margin(faces[index], side, margin)
        if yaw:
            face, mask = _turned(face, yaw), _turned(mask, yaw)
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


def _turned(image: Image.Image, yaw: float) -> Image.Image:
    """`image` as a flat card turned by `yaw` degrees about its vertical axis (see the module notes);
    the uncovered sides are transparent in a mask and black (then masked out) in a face."""
    import cv2

    width, height = image.size
    squeeze = math.cos(math.radians(yaw)) * width / 2
    shrink = YAW_PERSPECTIVE * math.sin(math.radians(abs(yaw))) * height / 2
    left_shrink, right_shrink = (0.0, shrink) if yaw > 0 else (shrink, 0.0)  # yaw > 0: right edge recedes
    cx = width / 2
    source = np.float32([(0, 0), (width, 0), (width, height), (0, height)])
    target = np.float32([(cx - squeeze, left_shrink), (cx + squeeze, right_shrink),
                         (cx + squeeze, height - right_shrink), (cx - squeeze, height - left_shrink)])
    matrix = cv2.getPerspectiveTransform(source, target)
    warped = cv2.warpPerspective(np.asarray(image), matrix, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Image.fromarray(warped)


def _apart(a: Pasted, b: Pasted, margin: float) -> bool:
    # Rotated squares (with their borders) reach out to side/sqrt(2) from their centres.
    return math.dist(a.centre, b.centre) > (a.side + b.side) * (1 + 2 * margin) / math.sqrt(2)
