"""Find faces in ordinary photos and cut them out the way UTKFace's aligned crops were cut.

Two detectors (`detector=`): "cnn" (default), RetinaFace with five landmarks
(facetune.predict.retinaface), aligned by facetune.predict.alignment; "haar", below, the fallback.

Haar detector: OpenCV's Haar cascades, bundled in the opencv-python-headless 4.x wheel
(`cv2.data.haarcascades`), so nothing is downloaded at run time. dlib (what UTKFace used) has
no wheel in the package registry and its landmark model ships separately; see README
("Faces in photos") for the measurements behind the choice.

Crop geometry: measured by running the same detector on 600 UTKFace 64x64 crops
(/tmp script kept out of the repo; figures in the README). Relative to a crop of side S,
the frontal cascade's box has side 1.026 S, its centre sits 0.008 S left of and 0.091 S
above the crop centre, and the eyes lie 0.396 S apart. So from a box we take S = w / 1.026
and move the centre down by 0.091 S; the eye line only sets the rotation (eyes level).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from facetune.data.images import ImageDecodeError, face_problem, to_face, to_gray48
from facetune.detectors import DEFAULT_DETECTOR, Detector, check_detector
from facetune.predict import alignment, retinaface
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec

FacesMode = Literal["auto", "detect", "whole"]
FACES_MODES: tuple[str, ...] = ("auto", "detect", "whole")

#: Cascades from cv2.data.haarcascades (frontal faces; eyes for the roll angle). alt2 found
#: more pasted faces than `default` on composite scenes (77.5% vs 72%, 120 scenes) with fewer
#: false boxes, at the same speed; boxes of both sit alike on UTKFace crops.
FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
EYE_CASCADE = "haarcascade_eye.xml"
#: Face box side / UTKFace crop side, and the crop centre's offset from the box centre (in crop sides).
BOX_PER_CROP = 1.026
CROP_CENTRE_OFFSET = (0.008, 0.091)
#: auto: images no larger than this (both sides) are taken as crops already (UTKFace, Kaggle).
AUTO_WHOLE_MAX_SIDE = 128
#: In `auto`, an image whose largest face is at least this wide (as a fraction of the image's
#: width) is a face crop already, like UTKFace's (its face box spans ~the whole crop): it is
#: taken whole, exactly as in training, rather than re-cropped.
AUTO_CROP_FACE_FRACTION = 0.6
#: Photos are searched at most this size (longer side); boxes are mapped back to the original.
DETECT_MAX_SIDE = 1024
#: Cascade settings (alt2 rejects clutter by itself; more neighbours lost faces).
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 3
#: Upright frontal cascades miss faces rolled by more than ~10 degrees, so the image is also
#: searched turned by these angles (recall 77.5% -> 88% on composite scenes; 3x the time).
SEARCH_ANGLES = (0.0, 12.0, -12.0)
#: Boxes from different passes overlapping more than this are one face.
MERGE_IOU = 0.3
MIN_FACE = 24
#: Eye pairs tilted more than this are taken as a misdetection (frontal cascades see ~±20°).
MAX_ROLL_DEGREES = 25.0


@dataclass(frozen=True)
class Face:
    """One face: its box (x, y, w, h) in the original image's pixels, the detector's score
    (cnn: its probability 0..1; haar: the number of agreeing cascade windows; NaN for a
    whole-image crop), the roll angle applied to level the eyes, the aligned crop at the photo's
    own resolution, (H, W, 3) uint8 RGB: each model converts it to its own input spec (`crop`),
    from the original pixels; and (cnn) the five landmarks (5, 2) in image pixels."""

    box: tuple[int, int, int, int]
    score: float
    region: np.ndarray
    angle: float = 0.0
    mode: str = "detect"
    landmarks: np.ndarray | None = None

    def crop(self, spec: InputSpec = DEFAULT_INPUT_SPEC) -> np.ndarray:
        """The face as a model of `spec` takes it: spec.shape uint8 (the training conversion)."""
        return to_face(Image.fromarray(self.region), spec)

    @property
    def crop48(self) -> np.ndarray:
        """The face in the default layout, (S, S) uint8 gray."""
        return self.crop().reshape(DEFAULT_INPUT_SPEC.size, DEFAULT_INPUT_SPEC.size)


_per_thread = threading.local()


def _cascade(name: str) -> cv2.CascadeClassifier:
    # One per thread: a CascadeClassifier is not safe to share between threads (the service
    # detects in a thread pool), and loading the XML costs ~50 ms, so it is kept per thread.
    cascades = _per_thread.__dict__.setdefault("cascades", {})
    if name not in cascades:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if cascade.empty():
            raise RuntimeError(f"OpenCV could not load {name} from {cv2.data.haarcascades}")
        cascades[name] = cascade
    return cascades[name]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA uint8 -> (H, W, 3) RGB uint8."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"images must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")


def whole_face(image: np.ndarray) -> Face:
    """The whole image as one face (UTKFace-style inputs): exactly the training conversion.

    Raises ImageDecodeError for an image that cannot be a face (too small, too uniform): the
    rule `facetune predict` applies to every whole-image input, whichever path it takes.
    """
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    crop = to_gray48(Image.fromarray(rgb))
    problem = face_problem(width, height, crop)
    if problem is not None:
        raise ImageDecodeError(problem, "not_a_face")
    return Face((0, 0, width, height), math.nan, rgb, 0.0, "whole")


def detect_boxes(gray: np.ndarray) -> list[tuple[tuple[int, int, int, int], float, float]]:
    """Face boxes (x, y, w, h) in `gray`'s pixels with their scores and the search angle that
    found them (a rough roll), largest face first."""
    height, width = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)  # Haar features are contrast-sensitive; photos vary a lot
    found = []
    for angle in SEARCH_ANGLES:
        for (x, y, w, h), score in _search(small, angle):
            found.append(((int(round(x / scale)), int(round(y / scale)), int(round(w / scale)),
                           int(round(h / scale))), score, angle))
    found.sort(key=lambda item: -item[1])
    kept: list = []
    for box, score, angle in found:  # greedy: the surest box of each overlapping group wins
        if all(_iou(box, other[0]) <= MERGE_IOU for other in kept):
            kept.append((box, score, angle))
    kept.sort(key=lambda item: -item[0][2])
    return kept


def _search(gray: np.ndarray, angle: float) -> list[tuple[tuple[float, float, float, float], float]]:
    """Cascade boxes in `gray` turned by `angle`, mapped back to upright axis-aligned boxes."""
    if angle:
        height, width = gray.shape
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        gray = cv2.warpAffine(gray, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
        back = cv2.invertAffineTransform(matrix)
    boxes, neighbours = _cascade(FACE_CASCADE).detectMultiScale2(
        gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(MIN_FACE, MIN_FACE)
    )
    result = []
    for (x, y, w, h), n in zip(boxes, np.ravel(neighbours)):
        cx, cy = x + w / 2, y + h / 2
        if angle:
            cx, cy = back @ np.array([cx, cy, 1.0])
        result.append(((cx - w / 2, cy - h / 2, float(w), float(h)), float(n)))
    return result


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def eye_angle(gray: np.ndarray, box: tuple[int, int, int, int], fallback: float = 0.0) -> float:
    """Roll angle (degrees, positive = right eye lower in the image) from the two eyes in the
    box's upper part; `fallback` when no plausible pair is found."""
    x, y, w, h = box
    roi = gray[max(y, 0) : y + int(0.6 * h), max(x, 0) : x + w]
    if roi.size == 0:
        return fallback
    eyes = _cascade(EYE_CASCADE).detectMultiScale(
        roi, scaleFactor=1.1, minNeighbors=3, minSize=(max(w // 8, 8), max(w // 8, 8)), maxSize=(w // 3, w // 3)
    )
    centres = [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in eyes]
    left = [c for c in centres if c[0] < 0.5 * w]
    right = [c for c in centres if c[0] >= 0.5 * w]
    if not left or not right:
        return fallback
    # The pair whose distance is closest to UTKFace's (0.386 of the box side) is the most likely one.
    expected = 0.396 / BOX_PER_CROP * w
    lx, ly, rx, ry = min(
        ((*l, *r) for l in left for r in right),
        key=lambda p: abs(math.hypot(p[2] - p[0], p[3] - p[1]) - expected),
    )
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    distance = math.hypot(rx - lx, ry - ly)
    if abs(angle) > MAX_ROLL_DEGREES or not 0.6 * expected <= distance <= 1.5 * expected:
        return fallback
    return angle


def align_crop(rgb: np.ndarray, box: tuple[int, int, int, int], angle: float,
               spec: InputSpec = DEFAULT_INPUT_SPEC) -> np.ndarray:
    """The UTKFace-geometry crop around `box`, rotated by `angle` to level the eyes, in `spec`'s
    layout (spec.shape uint8): aligned_region, then the training conversion (PIL gray or RGB +
    Lanczos), so it is resized like the faces the models were trained on."""
    return to_face(Image.fromarray(aligned_region(rgb, box, angle)), spec)


def aligned_region(rgb: np.ndarray, box: tuple[int, int, int, int], angle: float) -> np.ndarray:
    """The UTKFace-geometry crop around `box`, rotated by `angle` to level the eyes, cut at the
    photo's native resolution (rotation only, border replicated): (side, side, 3) uint8 RGB."""
    x, y, w, h = box
    side = w / BOX_PER_CROP
    # Offset measured in an upright crop; rotate it with the face.
    dx, dy = CROP_CENTRE_OFFSET[0] * side, CROP_CENTRE_OFFSET[1] * side
    theta = math.radians(angle)
    cx = x + w / 2 + dx * math.cos(theta) - dy * math.sin(theta)
    cy = y + h / 2 + dx * math.sin(theta) + dy * math.cos(theta)
    size = max(int(round(side)), 1)
    # Map the crop's centre to (cx, cy) and turn it by `angle`, in one affine warp.
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (size / 2 - cx, size / 2 - cy)
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def cnn_faces(rgb: np.ndarray) -> list[Face]:
    """Faces found by the CNN detector, aligned on their landmarks, largest first."""
    faces = []
    for found in retinaface.detect(rgb):
        box = tuple(int(round(v)) for v in alignment.crop_square(found.landmarks))
        faces.append(Face(box, found.score, alignment.aligned_region(rgb, found.landmarks),
                          alignment.roll(found.landmarks), "detect", found.landmarks))
    faces.sort(key=lambda face: -face.box[2])
    return faces


def haar_faces(rgb: np.ndarray) -> list[Face]:
    """Faces found by the Haar cascades, rolled by their eye pair, largest first."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    faces = []
    for box, score, search_angle in detect_boxes(gray):
        angle = eye_angle(gray, box, fallback=search_angle)
        faces.append(Face(box, score, aligned_region(rgb, box, angle), angle, "detect"))
    return faces


def find_faces(image: np.ndarray, mode: FacesMode = "auto", detector: Detector = DEFAULT_DETECTOR) -> list[Face]:
    """Faces in an RGB/RGBA/gray uint8 image, largest first, each cropped as UTKFace was.

    mode "whole": the image is one face (today's behaviour, for UTKFace-style crops);
    "detect": always run the detector (an empty list when there is no face);
    "auto": images up to AUTO_WHOLE_MAX_SIDE pixels are crops already (too small to hold a
    findable face anywhere else), larger ones are searched, and one whose largest face spans
    AUTO_CROP_FACE_FRACTION of its width is a crop too. `Face.mode` records the choice.
    `detector`: "cnn" (landmarks, default) or "haar" (cascades). A whole-image face that cannot
    be one raises ImageDecodeError (see whole_face).
    """
    if mode not in FACES_MODES:
        raise ValueError(f"unknown faces mode {mode!r}; known: {', '.join(FACES_MODES)}")
    check_detector(detector)
    rgb = to_rgb(image)
    if mode == "whole" or (mode == "auto" and max(rgb.shape[:2]) <= AUTO_WHOLE_MAX_SIDE):
        return [whole_face(rgb)]
    faces = cnn_faces(rgb) if detector == "cnn" else haar_faces(rgb)
    if mode == "auto" and faces and faces[0].box[2] >= AUTO_CROP_FACE_FRACTION * rgb.shape[1]:
        return [whole_face(rgb)]
    return faces
