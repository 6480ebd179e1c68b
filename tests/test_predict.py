"""facetune predict: faces in (files, arrays, Parquet, CSV), age/gender/ethnicity out."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facetune.cli import run_command
from facetune.commands import predict as predict_command
from facetune.data.images import load_gray48
from facetune.predict import Predictor, evaluate, gather_inputs, predict_images, predict_inputs, prediction_columns
from facetune.predict.run import RAY_MIN_IMAGES, chooses_ray
from facetune.records import DEFAULT_INPUT_SPEC
from predict_fixture import build_results_dir
from synthetic import make_faces

EXPECTED_COLUMNS = [
    "source", "age", "gender", "gender_prob_female", "ethnicity",
    "prob_white", "prob_black", "prob_asian", "prob_indian", "prob_others",
]


@pytest.fixture(scope="module")
def labelled_faces() -> dict:
    return make_faces(24, seed=1)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory, labelled_faces):
    return build_results_dir(tmp_path_factory.mktemp("results"), labelled_faces["pixels"], labelled_faces)


@pytest.fixture(scope="module")
def predictor(results_dir) -> Predictor:
    return Predictor.from_results(results_dir, device="cpu")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, labelled_faces):
    """PNG and JPEG, several sizes, colour and gray, plus one corrupt image and one non-image."""
    folder = tmp_path_factory.mktemp("images")
    faces = labelled_faces["pixels"].reshape(-1, 48, 48)
    gray = [Image.fromarray(face) for face in faces[:4]]
    gray[0].save(folder / "a_gray48.png")
    gray[1].resize((100, 80), Image.Resampling.BICUBIC).convert("RGB").save(folder / "b_colour100x80.png")
    gray[2].resize((64, 64)).convert("RGB").save(folder / "c_colour64.jpg", quality=95)
    gray[3].resize((200, 200)).save(folder / "d_gray200.jpeg")
    valid = (folder / "c_colour64.jpg").read_bytes()
    (folder / "e_corrupt.jpg").write_bytes(valid[: len(valid) // 3])  # truncated mid-stream
    (folder / "notes.txt").write_text("not a face")
    return folder


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="facetune")
    predict_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["predict", *argv])
    return run_command("facetune predict", args.func, args)


def test_from_results_picks_best_validation_model_per_task(predictor, results_dir):
    assert {task: m.family for task, m in predictor.models.items()} == {
        "age": "cnn", "gender": "cnn", "ethnicity": "cnn"
    }
    named = Predictor.from_results(results_dir, family="dnn", device="cpu")
    assert {m.family for m in named.models.values()} == {"dnn"}


def test_from_results_names_what_exists_for_an_unknown_family(results_dir):
    with pytest.raises(ValueError, match="pca_dnn.*cnn_age"):
        Predictor.from_results(results_dir, family="pca_dnn")


def test_images_give_one_row_per_readable_file_and_report_the_rest(predictor, image_folder):
    result = predict_images(predictor, sorted(image_folder.glob("*.*")), use_ray=False)
    frame = result.predictions
    assert list(frame.columns) == EXPECTED_COLUMNS
    assert [name.rsplit("/", 1)[-1] for name in frame["source"]] == [
        "a_gray48.png", "b_colour100x80.png", "c_colour64.jpg", "d_gray200.jpeg"
    ]
    reasons = {r.source.rsplit("/", 1)[-1]: r.reason for r in result.rejects}
    assert reasons == {"e_corrupt.jpg": "truncated image", "notes.txt": "not an image"}
    assert set(frame["gender"]) <= {"male", "female"}
    assert set(frame["ethnicity"]) <= {"White", "Black", "Asian", "Indian", "Others"}
    probs = frame[[c for c in EXPECTED_COLUMNS if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_images_are_preprocessed_as_in_training(predictor, image_folder):
    files = sorted(image_folder.glob("*.png"))
    from_files = predict_images(predictor, files, use_ray=False).predictions
    decoded = np.stack([load_gray48(f) for f in files])
    from_array = predictor.predict_array(decoded, sources=[str(f) for f in files])
    pd.testing.assert_frame_equal(from_files, from_array)


def test_progress_is_reported_until_every_input_is_done(predictor, image_folder):
    calls = []
    files = sorted(image_folder.glob("*.*"))
    predict_images(predictor, files, use_ray=False, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 6), (4, 6), (6, 6)]


def test_threaded_decoding_gives_the_serial_result_in_input_order(image_folder):
    from facetune.predict.inputs import decode_images, iter_decoded

    files = sorted(image_folder.glob("*.*")) * 3
    gray = DEFAULT_INPUT_SPEC
    faces, ok, reasons = decode_images(files)
    pixels = faces.layouts[gray]
    threaded = decode_images(files, threads=4)
    threaded = (threaded[0].layouts[gray], *threaded[1:])
    chunks = list(iter_decoded(files, chunk=4, threads=3))
    assert [start for start, *_ in chunks] == list(range(0, len(files), 4))
    chunked = (np.concatenate([c[1].layouts[gray] for c in chunks]), np.concatenate([c[2] for c in chunks]),
               [reason for c in chunks for reason in c[3]])
    for got in (threaded, chunked):
        np.testing.assert_array_equal(got[0], pixels)
        np.testing.assert_array_equal(got[1], ok)
        assert got[2] == reasons
    assert ok.sum() == 12 and reasons.count("truncated image") == 3


def test_local_path_keeps_input_order_across_batches_and_rejects(predictor, image_folder):
    files = sorted(image_folder.glob("*.*"))
    result = predict_images(predictor, files, use_ray=False, batch_size=2)
    readable = [i for i, f in enumerate(files) if f.name not in ("e_corrupt.jpg", "notes.txt")]
    assert list(result.predictions.index) == readable
    expected = predictor.predict_array(np.stack([load_gray48(files[i]) for i in readable]),
                                       sources=[str(files[i]) for i in readable])
    pd.testing.assert_frame_equal(result.predictions.reset_index(drop=True), expected)


@pytest.mark.parametrize("inputs, cluster_cpus, expected", [
    (RAY_MIN_IMAGES + 1, None, False),        # no Ray cluster attached
    (RAY_MIN_IMAGES + 1, 1, False),           # a cluster no larger than this machine
    (RAY_MIN_IMAGES, 10_000, False),          # too few inputs to pay for the actor pool
    (RAY_MIN_IMAGES + 1, 10_000, True),
])
def test_auto_choice_takes_ray_only_for_many_inputs_on_a_larger_cluster(inputs, cluster_cpus, expected):
    assert chooses_ray(inputs, cluster_cpus) is expected


def test_predict_array_accepts_both_layouts_and_unit_floats(predictor, labelled_faces):
    pixels = labelled_faces["pixels"][:6]
    flat = predictor.predict_array(pixels)
    square = predictor.predict_array(pixels.reshape(-1, 48, 48))
    unit = predictor.predict_array(pixels.astype(np.float32) / 255.0)
    pd.testing.assert_frame_equal(flat, square)
    pd.testing.assert_frame_equal(flat, unit, atol=1e-5)
    assert len(flat) == 6 and list(flat.columns) == EXPECTED_COLUMNS


@pytest.mark.parametrize(
    "bad, message",
    [(np.zeros((2, 47, 48), np.uint8), "must be"), (np.full((2, 2304), 3.0), r"\[0, 1\]"),
     (np.zeros((2, 2304), np.int32), "dtype")],
)
def test_predict_array_refuses_faces_it_cannot_read_faithfully(predictor, bad, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict_array(bad)


def test_prediction_columns_follow_the_tasks_class_names():
    assert prediction_columns(("age", "gender", "ethnicity")) == EXPECTED_COLUMNS


def test_cli_writes_the_numbers_of_the_python_api(predictor, results_dir, image_folder, tmp_path):
    out = tmp_path / "preds.csv"
    # The folder's synthetic non-faces go up to 200 px, which `--faces auto` would search.
    assert run_cli([str(image_folder), "--models", str(results_dir), "--out", str(out), "--quiet", "--no-ray",
                    "--faces", "whole"]) == 0
    written = pd.read_csv(out)
    api = predict_images(predictor, sorted(image_folder.glob("*.*")), use_ray=False).predictions
    pd.testing.assert_frame_equal(written, api.reset_index(drop=True), atol=1e-6)
    rejects = pd.read_csv(tmp_path / "preds.rejects.csv")
    assert sorted(rejects["source"].str.rsplit("/", n=1).str[-1]) == ["e_corrupt.jpg", "notes.txt"]


@pytest.mark.slow  # starts Ray
def test_ray_data_path_gives_the_plain_loop_numbers(predictor, image_folder, ray_session):
    files = sorted(image_folder.glob("*.*"))
    plain = predict_images(predictor, files, use_ray=False)
    batched = predict_images(predictor, files, use_ray=True, num_workers=1, batch_size=2)
    pd.testing.assert_frame_equal(batched.predictions, plain.predictions, atol=1e-5)
    assert sorted(batched.rejects, key=str) == sorted(plain.rejects, key=str)


@pytest.mark.slow  # starts Ray
def test_ray_data_path_on_decoded_faces_keeps_input_order(predictor, labelled_faces, ray_session):
    from facetune.predict import Inputs

    pixels = labelled_faces["pixels"]
    inputs = Inputs(sources=[f"face{i}" for i in range(len(pixels))], pixels=pixels)
    batched = predict_inputs(predictor, inputs, use_ray=True, num_workers=1, batch_size=5).predictions
    plain = predictor.predict_array(pixels, sources=inputs.sources)
    pd.testing.assert_frame_equal(batched, plain, atol=1e-5)


def test_ray_actor_blocks_merged_out_of_order_give_the_local_numbers_in_input_order(predictor, image_folder):
    """The Ray path's own work (an actor decoding and predicting blocks, the driver merging them),
    without a Ray cluster: blocks are handed over in reverse, as finished actors may return them."""
    from facetune.predict.batch import PredictBatch, merged_blocks

    files = sorted(image_folder.glob("*.*"))
    actor = PredictBatch({t: str(d) for t, d in predictor.model_dirs.items()}, batch_size=2)
    blocks = [{"position": np.arange(start, min(start + 4, len(files))),
               "path": np.asarray([str(f) for f in files[start : start + 4]], dtype=object)}
              for start in range(0, len(files), 4)]
    positions, outputs, rejects = merged_blocks([actor(block) for block in reversed(blocks)],
                                                [str(f) for f in files], predictor.tasks)
    local = predict_images(predictor, files, use_ray=False)
    np.testing.assert_array_equal(positions, local.predictions.index.to_numpy())
    for task in predictor.tasks:
        np.testing.assert_allclose(outputs[task], local.outputs[task], atol=1e-5)
    assert rejects == local.rejects


def test_utkface_names_give_labels(utkface_folder, faces):
    inputs = gather_inputs([utkface_folder], with_labels=True)
    assert len(inputs) == 60 and not inputs.rejects
    # The folder's files sort by their running number, i.e. in face order.
    order = np.argsort([p.name.split("_")[3] for p in inputs.paths])
    for task in ("age", "gender", "ethnicity"):
        np.testing.assert_array_equal(inputs.labels[task].to_numpy()[order], faces[task][:60])


def test_kaggle_csv_input_carries_pixels_and_labels(kaggle_csv, faces):
    inputs = gather_inputs([kaggle_csv])
    np.testing.assert_array_equal(inputs.pixels, faces["pixels"])
    np.testing.assert_array_equal(inputs.labels["gender"].to_numpy(), faces["gender"])


def test_image_and_table_inputs_cannot_be_mixed(kaggle_csv, image_folder):
    with pytest.raises(ValueError, match="mix"):
        gather_inputs([kaggle_csv, image_folder])


def test_evaluate_on_prepared_test_split_reproduces_the_sweep_test_figures(prepared_data, tmp_path, capsys):
    from facetune.data.loading import load_split

    test = load_split(prepared_data, "test")
    labels = {task: test.labels(task) for task in ("age", "gender", "ethnicity")}
    results = build_results_dir(tmp_path / "results", test.pixels, labels)
    predictor = Predictor.from_results(results, device="cpu")
    inputs = gather_inputs([prepared_data], split="test", with_labels=True)
    table = evaluate(predictor, predict_inputs(predictor, inputs, use_ray=False), inputs.labels)
    assert set(table["n"]) == {len(test)}
    np.testing.assert_allclose(table["value"], table["sweep_test"], rtol=1e-6, equal_nan=True)

    assert run_cli([str(prepared_data), "--split", "test", "--models", str(results), "--evaluate",
                    "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "gender" in printed and "accuracy" in printed and "mae" in printed


def test_evaluate_gives_each_groups_figure_with_its_interval_and_size(prepared_data, tmp_path):
    from facetune.data.loading import load_split
    from facetune.predict.evaluate import evaluate_groups, format_groups

    test = load_split(prepared_data, "test")
    labels = {task: test.labels(task) for task in ("age", "gender", "ethnicity")}
    predictor = Predictor.from_results(build_results_dir(tmp_path / "results", test.pixels, labels), device="cpu")
    inputs = gather_inputs([prepared_data], split="test", with_labels=True)
    table = evaluate_groups(predictor, predict_inputs(predictor, inputs, use_ray=False), inputs.labels)
    gender = table[table["task"] == "gender"].set_index("group")
    assert gender.loc[["gender=female", "gender=male"], "n"].sum() == len(test)
    big = table[table["n"] >= 2]
    assert ((big["low"] <= big["value"]) & (big["value"] <= big["high"])).all()
    assert "age=0-12" in set(table["group"]) or "age=13-19" in set(table["group"])
    assert "unranked" in format_groups(table)  # 40 test faces: every group is under 30
