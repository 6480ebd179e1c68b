"""Predict on ordinary photos: find the faces (facetune.predict.face_detection), predict each crop with a
Predictor, and return one row per face with its box; optionally draw the results.

Whole-image inputs (UTKFace-style crops, `--faces whole`) keep the batch path of
facetune.predict.run; this module is the per-face path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from facetune.data.images import ImageDecodeError, header_size, open_image, upright_rgb
from facetune.detectors import DEFAULT_DETECTOR, Detector, check_detector
from facetune.errors import OutputError, path_text
from facetune.predict.face_detection import AUTO_WHOLE_MAX_SIDE, FacesMode, find_faces
from facetune.predict.faces import Faces
from facetune.predict.inputs import Reject
from facetune.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, ProgressCallback
from facetune.predict.table import PredictionResult, prediction_frame

#: Columns put in front of the predictions for per-face output.
FACE_COLUMNS = ["source", "face", "x", "y", "w", "h", "score", "faces_mode"]
NO_FACE = "no face found"


def read_rgb(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """An image file as (H, W, 3) uint8 RGB and the factor it was decoded smaller by (see
    facetune.data.images.Decoded), or ImageDecodeError with the reason."""
    decoded = open_image(path)
    try:
        return upright_rgb(decoded.image), decoded.scale
    except (OSError, ValueError) as err:  # a mode PIL decodes but cannot convert
        raise ImageDecodeError(f"unreadable image ({err})") from None
    finally:
        decoded.image.close()


def needs_detection(paths: Sequence[str | os.PathLike[str]], mode: FacesMode) -> bool:
    """Whether any of `paths` goes through the detector (reads image headers only)."""
    if mode == "whole":
        return False
    if mode == "detect":
        return True
    return any(max(size) > AUTO_WHOLE_MAX_SIDE for size in map(header_size, paths) if size is not None)


def predict_photos(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike[str]],
    mode: FacesMode = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    annotate_dir: str | os.PathLike[str] | None = None,
    detector: Detector = DEFAULT_DETECTOR,
) -> PredictionResult:
    """One row per face found in each image (columns FACE_COLUMNS + the predictions).

    Images without a face and unreadable files are rejects with the reason. With
    `annotate_dir`, a copy of every image with its boxes and labels is written there.
    `detector`: "cnn" (default) or "haar" (facetune.predict.face_detection).
    """
    check_detector(detector)
    rows: list[dict] = []
    positions: list[int] = []  # input index per face, so labels line up as in run.predict_inputs
    crops: list[np.ndarray] = []
    rejects: list[Reject] = []
    found: list[tuple[str, np.ndarray, int]] = []
    for done, path in enumerate(paths, start=1):
        source = str(path)
        try:
            rgb, scale = read_rgb(path)
            faces = find_faces(rgb, mode, detector)
        except ImageDecodeError as err:
            rejects.append(Reject(source, err.reason))
            continue
        if not faces:
            rejects.append(Reject(source, NO_FACE))
        for index, face in enumerate(faces):
            x, y, w, h = (v * scale for v in face.box)  # in the file's pixels, however it was decoded
            rows.append({"source": source, "face": index, "x": x, "y": y, "w": w, "h": h,
                         "score": face.score, "faces_mode": face.mode})
            crops.append(face.region)  # native resolution: converted per model below
            positions.append(done - 1)
        if annotate_dir is not None:
            found.append((source, rgb, scale))
        if progress is not None:
            progress(done, len(paths))
    faces_frame = pd.DataFrame(rows, columns=FACE_COLUMNS)
    outputs = predictor.raw_outputs(Faces.from_images(crops, predictor.input_specs), batch_size)
    predictions = prediction_frame(predictor.tasks, faces_frame["source"].tolist(), outputs)
    frame = pd.concat([faces_frame, predictions.drop(columns="source").reset_index(drop=True)], axis=1)
    frame.index = pd.Index(positions)
    if annotate_dir is not None:
        write_annotations(found, frame, Path(annotate_dir))
    return PredictionResult(frame, rejects, outputs)


def face_label(row: pd.Series) -> list[str]:
    """The text drawn next to a face: one line per task, with the probability of the class."""
    lines = []
    if "age" in row:
        lines.append(f"age {row['age']:.0f}")
    if "gender" in row:
        p_female = row.get("gender_prob_female", np.nan)
        p = p_female if row["gender"] == "female" else 1 - p_female
        lines.append(f"{row['gender']} {p:.0%}")
    if "ethnicity" in row:
        p = row.get(f"prob_{str(row['ethnicity']).lower().replace(' ', '_')}", np.nan)
        lines.append(f"{row['ethnicity']} {p:.0%}")
    return lines


def annotate(rgb: np.ndarray, rows: pd.DataFrame, scale: int = 1) -> Image.Image:
    """A copy of the image with each face's box and its labels (boxes in file pixels, `scale`
    times those of `rgb`)."""
    image = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(image)
    size = max(11, min(image.size) // 40)
    font = ImageFont.load_default(size=size)
    for _, row in rows.iterrows():
        x, y, w, h = (int(row[k]) // scale for k in ("x", "y", "w", "h"))
        line = max(2, min(image.size) // 200)
        draw.rectangle((x, y, x + w, y + h), outline=(255, 210, 0), width=line)
        text = "\n".join(face_label(row))
        left, top, right, bottom = draw.multiline_textbbox((x, y + h + line), text, font=font)
        # Below the box when there is room, else above it.
        if bottom > image.height:
            shift = (y - line) - (bottom - top) - (y + h + line)
            top, bottom = top + shift, bottom + shift
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.multiline_text((left, top), text, fill=(255, 255, 255), font=font)
    return image


def write_annotations(found: list[tuple[str, np.ndarray, int]], frame: pd.DataFrame, out: Path) -> None:
    """OUT/<name>.png per image (a number is added when two inputs share a name); a folder or
    file that cannot be written is an OutputError naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--annotate {path_text(out)}: cannot create the folder ({err.strerror or err})") from None
    used: set[str] = set()
    for source, rgb, scale in found:
        stem = Path(source).stem
        name, n = f"{stem}.png", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        try:
            annotate(rgb, frame[frame["source"] == source], scale).save(out / name)
        except OSError as err:
            raise OutputError(f"--annotate {path_text(out)}: cannot write {name} ({err.strerror or err})") from None
