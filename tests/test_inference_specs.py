"""Everything after training follows each model's input spec (issue 40, part 2): predict, the
service and ONNX export give every model the faces converted to its own spec, from the original
pixels; a gray face given to a colour model has its channel replicated."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facetune.data.images import face_image, to_face
from facetune.errors import InvalidInputError
from facetune.models import build_model, make_context, save_model
from facetune.models.ensemble import Ensemble, input_specs, to_prediction_space
from facetune.predict import Predictor, predict_images
from facetune.predict.faces import Faces
from facetune.predict.onnx_export import CONTRACT_KEY, export_onnx, max_abs_difference
from facetune.predict.photos import predict_photos
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec
from facetune.serve.inference import face_entries
from facetune.tasks import TASKS

COLOUR = InputSpec.color(40)
GRAY = DEFAULT_INPUT_SPEC
ARCH = {"conv_channels": [4, 8], "dense": [8]}


def tiny_cnn(task: str, spec: InputSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    ages = np.array([20.0, 40.0]) if task == "age" else None  # an age model scales by its targets
    return build_model("cnn", ARCH, task, make_context(task, ages, input_spec=spec)).eval()


@pytest.fixture(scope="module")
def mixed_dirs(tmp_path_factory) -> dict[str, object]:
    """A colour (40x40) gender model and a gray (48x48) ethnicity model, saved."""
    root = tmp_path_factory.mktemp("mixed")
    dirs = {}
    for task, spec, seed in (("gender", COLOUR, 1), ("ethnicity", GRAY, 2)):
        save_model(tiny_cnn(task, spec, seed), root / task, family="cnn", task=task, arch=ARCH)
        dirs[task] = root / task
    return dirs


@pytest.fixture(scope="module")
def mixed(mixed_dirs) -> Predictor:
    return Predictor.from_model_dirs(mixed_dirs, device="cpu")


def rgb_faces(n: int, side: int = 64) -> np.ndarray:
    """(n, side, side, 3) uint8 colour faces whose channels differ (red bright, blue dark)."""
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (n, side, side), dtype=np.uint8)
    return np.stack([base, base // 2, base // 4], axis=-1)


def expected(predictor: Predictor, task: str, images: list[Image.Image]) -> np.ndarray:
    """The task's model run on the images converted to its own spec with to_face."""
    module = predictor.models[task].module
    (spec,) = input_specs(module)
    x = torch.from_numpy(np.stack([to_face(image, spec) for image in images]).astype(np.float32) / 255.0)
    with torch.no_grad():
        return module(x).numpy()


def test_the_predictor_knows_every_spec_its_models_take(mixed):
    assert set(mixed.input_specs) == {COLOUR, GRAY}
    assert "40x40 colour" in mixed.describe() and "48x48 gray" in mixed.describe()


def test_each_model_answers_a_colour_array_converted_to_its_own_spec(mixed):
    faces = rgb_faces(3)
    outputs = mixed.raw_outputs(Faces.from_images(list(faces), mixed.input_specs))
    images = [Image.fromarray(face) for face in faces]
    for task in ("gender", "ethnicity"):
        np.testing.assert_allclose(outputs[task], expected(mixed, task, images), atol=1e-5)


def test_a_colour_model_given_gray_faces_sees_the_gray_channel_replicated(mixed):
    gray = rgb_faces(3)[..., 0]  # (3, 64, 64): predict_array's gray layout
    frame_outputs = mixed.raw_outputs(torch.from_numpy(gray[:, None].astype(np.float32) / 255.0))
    replicated = [Image.fromarray(np.repeat(face[:, :, None], 3, axis=2)) for face in gray]
    np.testing.assert_allclose(frame_outputs["gender"], expected(mixed, "gender", replicated), atol=1e-5)
    assert len(mixed.predict_array(gray)) == 3


def test_image_files_are_converted_per_model_from_the_file_itself(mixed, tmp_path):
    paths = []
    for i, face in enumerate(rgb_faces(3, side=90)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(face).save(paths[-1])
    result = predict_images(mixed, paths, use_ray=False, batch_size=2)
    images = [Image.open(p) for p in paths]
    np.testing.assert_allclose(result.outputs["gender"], expected(mixed, "gender", images), atol=1e-5)
    np.testing.assert_allclose(result.outputs["ethnicity"], expected(mixed, "ethnicity", images), atol=1e-5)


def test_photo_faces_reach_a_colour_model_from_the_native_crop(mixed, tmp_path):
    path = tmp_path / "crop.png"
    Image.fromarray(rgb_faces(1, side=100)[0]).save(path)
    result = predict_photos(mixed, [path], mode="whole")
    np.testing.assert_allclose(result.outputs["gender"], expected(mixed, "gender", [Image.open(path)]), atol=1e-5)


@pytest.mark.parametrize("colour", [True, False], ids=["colour crop", "gray crop"])
def test_the_service_answers_each_model_in_its_spec(mixed, colour):
    face = rgb_faces(1, side=72)[0]
    crop = face if colour else face[..., 0]
    [entry] = face_entries(mixed, [crop])
    outputs = {task: expected(mixed, task, [face_image(crop)]) for task in ("gender", "ethnicity")}
    probs = torch.softmax(torch.from_numpy(outputs["gender"]), dim=1)[0]
    assert entry["gender"]["probability"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert set(entry) == {"gender", "ethnicity"}


def test_export_writes_each_models_own_input_shape_and_matches_torch(mixed, mixed_dirs, tmp_path):
    import onnx

    paths = export_onnx(Predictor.from_model_dirs(mixed_dirs, device="cpu"), tmp_path)
    shapes = {}
    for task, path in paths.items():
        contract = json.loads({e.key: e.value for e in onnx.load(str(path)).metadata_props}[CONTRACT_KEY])
        shapes[task] = (contract["input"]["shape"], contract["input"]["input_spec"])
    assert shapes == {"gender": (["N", 3, 40, 40], {"size": 40, "channels": 3}),
                      "ethnicity": (["N", 1, 48, 48], {"size": 48, "channels": 1})}
    faces = Faces.from_images(list(rgb_faces(4)), mixed.input_specs)
    assert max(max_abs_difference(mixed, paths, faces).values()) <= 1e-4


def test_an_ensemble_of_mixed_specs_is_the_mean_of_each_member_on_its_own_conversion():
    members = [tiny_cnn("gender", COLOUR, 3), tiny_cnn("gender", GRAY, 4)]
    ensemble = Ensemble(members, [1, 3], "gender").eval()
    assert input_specs(ensemble) == (COLOUR, GRAY)
    faces = Faces.from_images(list(rgb_faces(4)), input_specs(ensemble))
    with torch.no_grad():
        got = torch.softmax(ensemble({spec: faces.images(spec) for spec in faces.specs}), dim=1)
        each = [to_prediction_space(m(faces.images(spec)), TASKS["gender"]) for m, spec in zip(members, (COLOUR, GRAY))]
    assert torch.allclose(got, 0.25 * each[0] + 0.75 * each[1], atol=1e-5)


def test_a_predictor_runs_a_mixed_ensemble_and_export_refuses_it_in_one_line(tmp_path):
    from facetune.predict.predictor import TaskModel

    members = [tiny_cnn("gender", COLOUR, 3), tiny_cnn("gender", GRAY, 4)]
    ensemble = Ensemble(members, [1, 1], "gender").eval()
    predictor = Predictor({"gender": TaskModel("gender", "ensemble", tmp_path, ensemble, {})}, device="cpu")
    faces = rgb_faces(2)
    with torch.no_grad():
        direct = ensemble({spec: Faces.from_images(list(faces), [spec]).images(spec) for spec in (COLOUR, GRAY)})
    np.testing.assert_allclose(predictor.raw_outputs(Faces.from_images(list(faces), predictor.input_specs))["gender"],
                               direct.numpy(), atol=1e-5)
    with pytest.raises(InvalidInputError) as refused:
        export_onnx(predictor, tmp_path / "onnx")
    assert "\n" not in str(refused.value) and "different input specs" in str(refused.value)


def test_a_colour_prepared_folder_reaches_each_model_in_its_spec(mixed, utkface_folder, tmp_path, no_figures):
    from facetune.data.prepare import prepare
    from facetune.predict import gather_inputs, predict_inputs

    prepare(utkface_folder, tmp_path / "c64", spec=InputSpec.color(64))
    inputs = gather_inputs([tmp_path / "c64"], split="test")
    assert inputs.spec == InputSpec.color(64)
    result = predict_inputs(mixed, inputs, use_ray=False)
    images = [face_image(row.reshape(3, 64, 64)) for row in inputs.pixels]
    np.testing.assert_allclose(result.outputs["gender"], expected(mixed, "gender", images), atol=1e-5)
    np.testing.assert_allclose(result.outputs["ethnicity"], expected(mixed, "ethnicity", images), atol=1e-5)


def test_the_ray_actor_converts_table_rows_and_decodes_files_per_model(mixed, mixed_dirs, tmp_path):
    from facetune.predict.batch import PredictBatch

    actor = PredictBatch({t: str(d) for t, d in mixed_dirs.items()}, batch_size=4,
                         pixels_spec=InputSpec.color(64).to_dict())
    faces = rgb_faces(2)
    rows = np.ascontiguousarray(faces.transpose(0, 3, 1, 2)).reshape(2, -1)
    from_rows = actor({"position": np.arange(2), "pixels": rows})
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for path, face in zip(paths, faces):
        Image.fromarray(face).save(path)
    from_files = actor({"position": np.arange(2), "path": np.asarray([str(p) for p in paths], dtype=object)})
    images = [Image.fromarray(face) for face in faces]
    for out in (from_rows, from_files):
        np.testing.assert_allclose(out["out_gender"], expected(mixed, "gender", images), atol=1e-5)


def test_the_cgans_gray_faces_reach_a_colour_age_regressor_converted_to_its_spec():
    from facetune.cgan.metrics import predict_with_features

    regressor = tiny_cnn("age", COLOUR, 5)
    generated = torch.rand(3, 1, 48, 48)  # the CGAN's default layout
    ages, features = predict_with_features(regressor, generated)
    gray = [Image.fromarray(np.rint(face[0].numpy() * 255).astype(np.uint8)) for face in generated]
    assert ages.shape == (3,) and len(features) == 3
    np.testing.assert_allclose(ages, expected_module(regressor, COLOUR, gray).reshape(-1), atol=1e-4)


def expected_module(module: torch.nn.Module, spec: InputSpec, images: list[Image.Image]) -> np.ndarray:
    x = torch.from_numpy(np.stack([to_face(image, spec) for image in images]).astype(np.float32) / 255.0)
    with torch.no_grad():
        return module(x).numpy()
