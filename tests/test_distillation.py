"""Distillation: a model trained to match a teacher's probabilities as well as the labels, and the
fast model built that way from a release."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from facetune.errors import InvalidInputError
from facetune.models import build_model, make_context
from facetune.predict import Predictor
from facetune.release.card import CARD_FILE, teacher_digest
from facetune.release.student import load_student_recipe, train_student
from facetune.tasks import MULTITASK, TASKS
from facetune.training import TrainConfig, fit, predict_outputs, seed_everything
from facetune.training.fit_parts import distillation_loss

SMALL_CNN = {"conv_channels": [4, 8], "dense": [16], "batch_norm": True}
TINY_STUDENT = {
    "description": "tiny student for tests",
    "init": "seed-3",
    "family": "multitask",
    "arch": {"trunk": "resnet", "trunk_arch": {"widths": [8, 16], "blocks": [1, 1]}, "head_dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.002, "loss": "dldl", "distill_weight": 0.7, "seed": 0},
    "weights_dtype": "float16",
    "torch_threads": 1,
}


@pytest.fixture(scope="module")
def gender_data(faces):
    images = torch.from_numpy(faces["pixels"].reshape(-1, 1, 48, 48).astype(np.float32) / 255.0)[:256]
    return images, torch.from_numpy(faces["gender"].astype(np.int64))[:256]


def test_distillation_loss_is_zero_where_the_model_says_what_the_teacher_says():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    assert distillation_loss(logits, torch.softmax(logits, dim=1)).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])).item() > 1.0


def test_distillation_loss_refuses_a_teacher_of_another_layout():
    with pytest.raises(ValueError, match="teacher's outputs in the model's layout"):
        distillation_loss(torch.zeros(4, 3), torch.full((4, 2), 0.5))


def test_distill_weight_must_lie_between_zero_and_one():
    with pytest.raises(ValueError, match="distill_weight=1.5 must lie in"):
        TrainConfig(distill_weight=1.5)


def test_a_teacher_needs_a_distill_weight_and_the_weight_needs_a_teacher(gender_data):
    images, labels = gender_data
    teacher = {"gender": torch.full((len(images), 2), 0.5)}
    for cfg, given in ((TrainConfig(epochs=1), teacher), (TrainConfig(epochs=1, distill_weight=0.5), None)):
        model = build_model("cnn", SMALL_CNN, "gender", make_context("gender"))
        with pytest.raises(ValueError, match="distill_weight and a teacher go together"):
            fit(model, "gender", images, labels, None, None, cfg, teacher=given)


def test_the_teacher_gives_one_row_per_train_face(gender_data):
    images, labels = gender_data
    model = build_model("cnn", SMALL_CNN, "gender", make_context("gender"))
    with pytest.raises(ValueError, match="one row per train face"):
        fit(model, "gender", images, labels, None, None, TrainConfig(epochs=1, distill_weight=0.5),
            teacher={"gender": torch.full((10, 2), 0.5)})


def test_a_fully_distilled_model_follows_the_teacher_not_the_labels(gender_data):
    images, labels = gender_data
    # The teacher calls every face class 1 whatever its label says.
    teacher = {"gender": torch.tensor([[0.05, 0.95]]).repeat(len(images), 1)}
    seed_everything(0)
    model = build_model("cnn", SMALL_CNN, "gender", make_context("gender"))
    fit(model, "gender", images, labels, None, None,
        TrainConfig(epochs=4, batch_size=32, lr=0.01, distill_weight=1.0), teacher=teacher)
    predicted = predict_outputs(model, images).argmax(axis=1)
    assert (predicted == 1).mean() > 0.95
    assert (labels.numpy() == 0).mean() > 0.3  # the labels did say otherwise


def test_the_student_recipe_must_distil(tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump({**TINY_STUDENT, "train": {**TINY_STUDENT["train"], "distill_weight": 0.0}}))
    with pytest.raises(InvalidInputError, match="distill_weight is 0, so nothing would be distilled"):
        load_student_recipe(path)


def test_the_student_recipe_rejects_unknown_keys(tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump({**TINY_STUDENT, "teacher": "elsewhere"}))
    with pytest.raises(Exception, match="teacher"):
        load_student_recipe(path)


def test_the_shipped_student_recipe_loads():
    recipe = load_student_recipe()
    assert recipe["family"] == "multitask" and recipe["train"]["distill_weight"] > 0


@pytest.fixture(scope="module")
def tiny_student(tiny_release, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("student")
    release = root / "release"
    shutil.copytree(tiny_release["out"], release)
    recipe = root / "student.yaml"
    recipe.write_text(yaml.safe_dump(TINY_STUDENT))
    lines: list[str] = []
    metrics = train_student(tiny_release["data"], root / "work", release, recipe, log=lines.append)
    return {"release": release, "metrics": metrics, "log": lines, "root": root, "recipe": recipe,
            "data": tiny_release["data"]}


@pytest.fixture(scope="module")
def tiny_release(train_tiny_release):
    from tests.test_release import TINY_RECIPE

    return train_tiny_release(TINY_RECIPE, "release-for-student")


def test_the_student_is_written_beside_the_ensemble_and_loads_as_one_network(tiny_student):
    folder = tiny_student["release"] / "student"
    config = json.loads((folder / "model_config.json").read_text())
    assert config["task"] == MULTITASK and config["family"] == "multitask"
    predictor = Predictor.from_model_dirs({MULTITASK: folder}, device="cpu")
    assert len(predictor.networks()) == 1 and set(predictor.models) == set(TASKS)


def test_the_student_records_its_teacher_and_its_figures(tiny_student):
    metrics = tiny_student["metrics"]
    assert metrics["teacher"] == teacher_digest(tiny_student["release"])
    assert set(metrics["test"]) == {"single_view", "tta_flip"}
    assert metrics["faces_per_second"]["torch"]["student"] > 0
    assert metrics["fit"]["epochs_run"] == 2


def test_the_model_card_gets_a_section_for_the_student(tiny_student):
    card = (tiny_student["release"] / CARD_FILE).read_text()
    assert "## The fast model (`--pretrained fast`)" in card
    assert "from member seed-3's weights" in card
    assert "| student/model.pt | `" in card
    assert "distilled from another build" not in card


def test_a_rerun_of_a_finished_student_resumes_instead_of_training_again(tiny_student):
    lines: list[str] = []
    train_student(tiny_student["data"], tiny_student["root"] / "work", tiny_student["release"], tiny_student["recipe"],
                  log=lines.append)
    assert any("resuming after epoch 2 of 2" in line for line in lines)
    assert not any("outputs on" in line for line in lines)  # the teacher's outputs were kept


def test_a_student_of_a_missing_member_is_refused_before_training(tiny_student, tmp_path):
    recipe = tmp_path / "student.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_STUDENT, "init": "seed-9"}))
    with pytest.raises(InvalidInputError, match="init: 'seed-9' is not a member"):
        train_student(tiny_student["data"], tmp_path / "work", tiny_student["release"], recipe)


def test_predict_refuses_a_shipped_model_choice_beside_a_results_directory(tmp_path, capsys):
    from facetune.cli import main

    assert main(["predict", "--models", str(tmp_path), "--pretrained", "fast", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pretrained fast picks a shipped model" in err


def test_the_service_refuses_an_unknown_shipped_model():
    from facetune.serve.app import ServeSettings

    with pytest.raises(InvalidInputError, match="pretrained 'tiny'"):
        ServeSettings(pretrained="tiny")


def test_an_unknown_shipped_model_is_refused_by_the_python_api():
    with pytest.raises(ValueError, match="pretrained model 'tiny'"):
        Predictor.pretrained(device="cpu", which="tiny")
