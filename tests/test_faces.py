"""Faces in ordinary photos: detection, UTKFace-geometry crops, per-face predictions, drawings."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import skimage.data as skimage_data  # noqa: E402  (a test dependency: real photographs)

from facetune.commands import predict as predict_command  # noqa: E402
from facetune.data.images import to_gray48  # noqa: E402
from facetune.predict import Predictor  # noqa: E402
from facetune.predict.face_detection import find_faces  # noqa: E402
from facetune.predict.photos import FACE_COLUMNS, NO_FACE, predict_photos  # noqa: E402
from predict_fixture import build_results_dir  # noqa: E402
from scenes import background_photos, iou, make_scene  # noqa: E402
from synthetic import make_faces  # noqa: E402

#: Where the astronaut's face is in skimage.data.astronaut() (512x512): forehead to chin, ear to ear.
ASTRONAUT_FACE = (170, 60, 110, 110)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    faces = make_faces(8, seed=2)
    return Predictor.from_results(build_results_dir(tmp_path_factory.mktemp("results"), faces["pixels"], faces),
                                  device="cpu")


def test_the_astronaut_photo_has_one_face_and_the_box_is_on_it(astronaut):
    faces = find_faces(astronaut, "detect")
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.5
    assert face.score > 0 and face.mode == "detect"
    assert face.crop48.shape == (48, 48) and face.crop48.dtype == np.uint8
    assert abs(face.angle) < 10  # she holds her head nearly upright


def test_photos_without_faces_give_none():
    for name in ("coffee", "chelsea", "rocket"):
        assert find_faces(getattr(skimage_data, name)(), "detect") == [], name


def test_whole_mode_is_the_training_conversion_and_auto_treats_small_images_as_crops(astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((64, 64)))
    for mode in ("whole", "auto"):
        (face,) = find_faces(small, mode)
        assert face.mode == "whole" and face.box == (0, 0, 64, 64) and np.isnan(face.score)
        np.testing.assert_array_equal(face.crop48, to_gray48(Image.fromarray(small)))
    assert [f.mode for f in find_faces(astronaut, "auto")] == ["detect"]
    with pytest.raises(ValueError, match="unknown faces mode"):
        find_faces(astronaut, "everything")


def test_gray_and_rgba_photos_are_searched_like_rgb(astronaut):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    rgba = np.asarray(Image.fromarray(astronaut).convert("RGBA"))
    assert len(find_faces(gray, "detect")) == 1 and len(find_faces(rgba, "detect")) == 1


def test_pasted_faces_are_found_at_their_place_scale_and_rotation(astronaut):
    """The astronaut's own crop pasted into face-free photos: found where it was put, and the
    re-cropped face looks like the crop that was pasted (same geometry, eyes level)."""
    (face,) = find_faces(astronaut, "detect")
    x, y, w, h = face.box
    crop = np.asarray(Image.fromarray(astronaut).crop((x, y + 0.09 * w, x + w, y + 1.09 * w)))
    rng = np.random.default_rng(0)
    photos = background_photos()
    found, differences = 0, []
    for _ in range(8):
        scene, (pasted,) = make_scene(rng, photos, [crop], [0], max_angle=12)
        hits = [f for f in find_faces(scene, "detect") if iou(f.box, pasted.box) >= 0.5]
        if hits:
            found += 1
            differences.append(np.abs(hits[0].crop48.astype(int) - face.crop48.astype(int)).mean())
    assert found >= 7
    assert np.median(differences) < 25  # gray levels out of 255: the same face, similarly framed


def test_photos_give_one_row_per_face_and_a_reject_for_a_photo_without_one(tmp_path, astronaut, predictor):
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    paths = [tmp_path / "astronaut.png", tmp_path / "coffee.jpg", tmp_path / "broken.jpg"]
    result = predict_photos(predictor, paths, "auto", annotate_dir=tmp_path / "drawn")
    frame = result.predictions
    assert list(frame.columns[: len(FACE_COLUMNS)]) == FACE_COLUMNS
    assert {"age", "gender", "gender_prob_female", "ethnicity", "prob_white"} <= set(frame.columns)
    assert len(frame) == 1 and frame.iloc[0]["source"].endswith("astronaut.png") and frame.iloc[0]["face"] == 0
    assert iou(tuple(frame.iloc[0][["x", "y", "w", "h"]]), ASTRONAUT_FACE) > 0.5
    reasons = {r.source.rsplit("/", 1)[-1]: r.reason for r in result.rejects}
    assert reasons["coffee.jpg"] == NO_FACE and reasons["broken.jpg"] == "not an image"
    drawn = Image.open(tmp_path / "drawn" / "astronaut.png")
    assert drawn.size == (512, 512)
    # The box is drawn: its top edge is the box colour, the untouched photo is not.
    x, y, w, _ = (int(v) for v in frame.iloc[0][["x", "y", "w", "h"]])
    assert np.asarray(drawn)[y, x + w // 2].tolist() == [255, 210, 0]
    assert (tmp_path / "drawn" / "coffee.png").is_file()


def test_cli_faces_detect_writes_face_rows_and_rejects(tmp_path, astronaut, predictor):
    Image.fromarray(astronaut).save(tmp_path / "astronaut.jpg")
    Image.fromarray(skimage_data.rocket()).save(tmp_path / "rocket.jpg")
    parser = argparse.ArgumentParser(prog="facetune")
    predict_command.add_parser(parser.add_subparsers(dest="command"))
    models = predictor.models["age"].model_dir.parent
    out = tmp_path / "out" / "predictions.csv"
    args = parser.parse_args(["predict", str(tmp_path / "astronaut.jpg"), str(tmp_path / "rocket.jpg"),
                              "--models", str(models), "--out", str(out), "--faces", "detect", "--quiet"])
    assert args.func(args) == 0
    frame = pd.read_csv(out)
    assert frame["source"].str.endswith("astronaut.jpg").tolist() == [True]
    assert frame.loc[0, "faces_mode"] == "detect"
    rejects = pd.read_csv(out.with_name("predictions.rejects.csv"))
    assert rejects["reason"].tolist() == [NO_FACE]


def test_the_shipped_models_see_a_woman_in_the_astronaut_photo(tmp_path, astronaut):
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    result = predict_photos(Predictor.pretrained(device="cpu"), [tmp_path / "astronaut.png"], "detect")
    assert result.predictions["gender"].tolist() == ["female"]
