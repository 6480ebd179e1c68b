"""The CNN face detector (RetinaFace, five landmarks), landmark alignment, and the --detector switch."""
from __future__ import annotations

import socket

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import skimage.data as skimage_data  # a test dependency: real photographs

from facetune import cli
from facetune.errors import InvalidInputError
from facetune.predict import Predictor, alignment, retinaface
from facetune.detectors import check_detector
from facetune.predict.face_detection import find_faces
from predict_fixture import build_results_dir
from scenes import background_photos, iou, make_scene
from synthetic import make_faces


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_crop(astronaut) -> np.ndarray:
    """Her face cut as UTKFace would be, by the detector under test."""
    (face,) = retinaface.detect(astronaut)
    return alignment.align_face(astronaut, face.landmarks, size=128, gray=False)


def test_a_face_pasted_into_a_scene_is_found_with_its_landmarks_inside_the_box(astronaut_crop):
    rng = np.random.default_rng(3)
    scene, (pasted,) = make_scene(rng, background_photos(), [astronaut_crop], [0], max_angle=25)
    (found,) = retinaface.detect(scene)
    box = alignment.crop_square(found.landmarks)
    assert iou(box, pasted.box) >= 0.5
    x, y, w, h = found.box
    assert found.landmarks.shape == (5, 2)
    assert np.all((found.landmarks >= (x, y)) & (found.landmarks <= (x + w, y + h)))


def _eye_angle_in_crop(crop: np.ndarray) -> float:
    """The eye line's angle in an aligned crop, measured by the detector on a gray canvas (so the
    face is not at an image edge, as in bench/align_reference.py)."""
    canvas = np.full((256, 256, 3), 128, np.uint8)
    canvas[64:192, 64:192] = crop
    (found,) = retinaface.detect(canvas)
    return alignment.eye_angle(found.landmarks)


def test_alignment_levels_the_eyes_of_a_rotated_face(astronaut):
    (face,) = retinaface.detect(astronaut)
    centre = tuple(face.landmarks.mean(axis=0))
    turned = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, 25, 1.0), astronaut.shape[1::-1],
                            borderMode=cv2.BORDER_REPLICATE)
    (tilted,) = retinaface.detect(turned)
    assert abs(alignment.eye_angle(tilted.landmarks)) > 20  # far from level before
    after = _eye_angle_in_crop(alignment.align_face(turned, tilted.landmarks, size=128, gray=False))
    upright = _eye_angle_in_crop(alignment.align_face(astronaut, face.landmarks, size=128, gray=False))
    # The rotation is undone: the turned face's crop measures as the upright face's crop does...
    assert abs(after - upright) < 2.5
    # ...and both near UTKFace's eye line (re-detected landmarks wander ~5 degrees on this face).
    assert abs(after - alignment.REFERENCE_EYE_ANGLE) < 7


def test_crops_come_at_the_requested_size_in_colour_or_gray(astronaut):
    (face,) = retinaface.detect(astronaut)
    assert alignment.align_face(astronaut, face.landmarks).shape == (48, 48)
    assert alignment.align_face(astronaut, face.landmarks, size=64, gray=False).shape == (64, 64, 3)


def test_detector_haar_still_finds_the_face_from_the_command_line(tmp_path, astronaut):
    faces = make_faces(8, seed=2)
    models = build_results_dir(tmp_path / "results", faces["pixels"], faces)
    Image.fromarray(astronaut).save(tmp_path / "astronaut.jpg")
    out = tmp_path / "predictions.csv"
    code = cli.main(["predict", str(tmp_path / "astronaut.jpg"), "--models", str(models), "--out", str(out),
                     "--faces", "detect", "--detector", "haar", "--quiet"])
    assert code == 0
    frame = pd.read_csv(out)
    assert len(frame) == 1
    assert iou(tuple(frame.loc[0, ["x", "y", "w", "h"]]), (170, 60, 110, 110)) > 0.5
    assert frame.loc[0, "score"] > 1  # a count of cascade windows, not the CNN's probability


def test_a_bad_detector_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["predict", "face.jpg", "--detector", "dlib"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--detector" in err and "dlib" in err
    with pytest.raises(InvalidInputError, match=r"^detector 'dlib': unknown face detector; known: cnn, haar$"):
        check_detector("dlib", "detector")


def test_the_detector_loads_from_package_data_with_no_network(monkeypatch, astronaut):
    def refuse(*args, **kwargs):
        raise OSError("network use in a test that must not need it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    retinaface.session.cache_clear()
    try:
        faces = find_faces(astronaut, "detect", "cnn")
    finally:
        retinaface.session.cache_clear()
    assert len(faces) == 1 and 0.7 <= faces[0].score <= 1 and faces[0].landmarks.shape == (5, 2)
