"""The one seam between the service and face detection.

Until facetune.predict has a face finder, the whole image is taken as one face, cropped to 48x48
exactly as `facetune predict` converts an image file (facetune.data.images.to_gray48), so the
service and the command give the same numbers. Switching to a detector changes only `faces_in`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facetune.data.images import to_gray48


@dataclass(frozen=True)
class Face:
    """A face found in an image: its box in image pixels (x, y, width, height) and the 48x48 crop."""

    box: tuple[int, int, int, int]
    crop: np.ndarray  # (48, 48) uint8 gray, the training layout
    score: float | None = None  # detector confidence, when a detector found the face


def faces_in(image: Image.Image) -> list[Face]:
    """The faces of a decoded image; today: the whole image as one face."""
    width, height = image.size
    return [Face(box=(0, 0, width, height), crop=to_gray48(image))]
