"""The one seam between the service and face detection: facetune.predict.face_detection, as `predict` uses it.

Faces are found and aligned exactly as `facetune predict --faces auto` does (with the same
`--detector`), and kept at the image's own resolution until each model converts them to its input
spec, so the service and the command give the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facetune.data.images import Decoded, upright_rgb
from facetune.detectors import DEFAULT_DETECTOR, Detector
from facetune.predict.face_detection import find_faces


@dataclass(frozen=True)
class Face:
    """A face found in an image: its box in image pixels (x, y, width, height) and the aligned crop."""

    box: tuple[int, int, int, int]
    crop: np.ndarray  # (H, W, 3) uint8 RGB at the image's resolution; converted per model
    score: float | None = None  # detector confidence, when a detector found the face


def faces_in(decoded: Decoded, detector: Detector = DEFAULT_DETECTOR) -> list[Face]:
    """The faces of a decoded image, largest first (an empty list when there is none), boxes in
    the file's pixels. ImageDecodeError for an image taken whole that cannot be a face."""
    return [Face(box=tuple(int(v) * decoded.scale for v in face.box), crop=face.region,
                 score=None if math.isnan(face.score) else float(face.score))
            for face in find_faces(upright_rgb(decoded.image), "auto", detector)]
