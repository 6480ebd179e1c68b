"""Cut a face out of a photo the way UTKFace's "aligned & cropped" faces were cut, from five landmarks.

REFERENCE_POINTS is where the CNN detector (facetune.predict.retinaface) puts the eyes, nose tip
and mouth corners inside UTKFace's own crops, in crop sides from the crop's top-left corner.
Measured with `python bench/align_reference.py --sample 1000` (1,000 random crops of the shared
UTKFace folder, each upscaled 3x and centred on a gray canvas; faces found in 1000/1000): the
spread per coordinate is 0.015-0.038 crop sides, and the eye line of the crops themselves sits at
+1.0 degrees on average (right eye a little lower), which the alignment keeps.

Alignment: turn the face so its eye line lies as the reference eye line does, then choose scale and
shift that put all five points closest (least squares) to the reference. The crop is warped from
the original pixels at their own resolution and only then resized, so faces are scaled as the
training crops were (Lanczos).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from facetune.records import DEFAULT_INPUT_SPEC

#: Eye on the image's left, other eye, nose tip, left and right mouth corners, in crop sides.
REFERENCE_POINTS = np.array(
    [(0.2970, 0.2950), (0.6899, 0.3019), (0.4843, 0.5244), (0.3201, 0.6802), (0.6608, 0.6870)]
)
REFERENCE_EYE_ANGLE = math.degrees(math.atan2(*(REFERENCE_POINTS[1] - REFERENCE_POINTS[0])[::-1]))


def eye_angle(landmarks: np.ndarray) -> float:
    """The eye line's angle in degrees (positive: the eye on the image's right is lower)."""
    (lx, ly), (rx, ry) = np.asarray(landmarks, dtype=np.float64)[:2]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def to_crop(landmarks: np.ndarray) -> np.ndarray:
    """The 2x3 affine map from image pixels to crop coordinates (crop sides, origin top-left)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    theta = math.radians(REFERENCE_EYE_ANGLE - eye_angle(points))
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    turned = points @ rotation.T
    centred = turned - turned.mean(axis=0)
    scale = float(np.sum(centred * (REFERENCE_POINTS - REFERENCE_POINTS.mean(axis=0)))) / float(np.sum(centred**2))
    shift = REFERENCE_POINTS.mean(axis=0) - scale * turned.mean(axis=0)
    return np.hstack([scale * rotation, shift[:, None]])


def crop_square(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The crop as an upright square (x, y, w, h) in image pixels: its centre and side, unturned."""
    matrix = to_crop(landmarks)
    back = cv2.invertAffineTransform(matrix)
    cx, cy = back @ np.array([0.5, 0.5, 1.0])
    side = 1.0 / math.hypot(*matrix[0, :2])
    return (float(cx - side / 2), float(cy - side / 2), float(side), float(side))


def roll(landmarks: np.ndarray) -> float:
    """Degrees the face is turned from UTKFace's pose (what alignment undoes)."""
    return eye_angle(landmarks) - REFERENCE_EYE_ANGLE


def aligned_region(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face with these landmarks cut from `rgb` ((H, W, 3) uint8) in UTKFace's geometry at the
    photo's own resolution: (side, side, 3) uint8 RGB, which each model converts to its own spec."""
    matrix = to_crop(landmarks)
    native = max(int(round(1.0 / math.hypot(*matrix[0, :2]))), 1)  # the crop's side in image pixels
    return cv2.warpAffine(rgb, native * matrix, (native, native), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = DEFAULT_INPUT_SPEC.size, gray: bool = True) -> np.ndarray:
    """aligned_region as a (size, size) uint8 gray array, or (size, size, 3) RGB with gray=False.

    Gray output is PIL's convert("L") and then a Lanczos resize, the training conversion."""
    if size < 1:
        raise ValueError(f"size {size}: must be at least 1")
    image = Image.fromarray(aligned_region(rgb, landmarks))
    if gray:
        image = image.convert("L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)
