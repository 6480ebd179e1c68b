"""The face detectors a photo can be searched with, and the check of a requested name.

Kept apart from facetune.predict.face_detection (OpenCV, onnxruntime) so the command-line parsers
and the service's settings can name the choices without loading either.
"""
from __future__ import annotations

from typing import Literal

from facetune.errors import InvalidInputError

Detector = Literal["cnn", "haar"]
#: cnn: RetinaFace with five landmarks (facetune.predict.retinaface); haar: OpenCV's cascades, the fallback.
DETECTORS: tuple[str, ...] = ("cnn", "haar")
DEFAULT_DETECTOR: Detector = "cnn"


def check_detector(detector: str, name: str = "--detector") -> Detector:
    """`detector` when it is one of DETECTORS, else a one-line InvalidInputError naming it."""
    if detector not in DETECTORS:
        raise InvalidInputError(f"{name} {detector!r}: unknown face detector; known: {', '.join(DETECTORS)}")
    return detector  # type: ignore[return-value]
