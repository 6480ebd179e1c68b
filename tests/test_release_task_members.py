"""Task members: single-task models of another family that join the release's average for one task."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from facetune.errors import InvalidInputError
from facetune.models import build_model, load_model
from facetune.models.ensemble import MultiTaskEnsemble
from facetune.release.paths import CARD_FILE
from facetune.release.recipe import load_recipe, task_member_recipes
from facetune.release.train import train_release
from facetune.release.card import card_checksums
from facetune.records import ENSEMBLE_CONFIG_FILE
from facetune.tasks import MULTITASK

CNN_GENDER = {
    "family": "cnn",
    "task": "gender",
    "weight": 2.0,
    "weights_dtype": "float16",
    "arch": {"conv_channels": [4, 8], "dense": [8]},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.002, "seed": 0},
}
RECIPE = {
    "description": "one seed and a gender CNN, for tests",
    "seeds": [3],
    "family": "multitask",
    "arch": {"trunk": "resnet", "trunk_arch": {"widths": [8, 16], "blocks": [1, 1]}, "head_dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.002, "loss": "dldl", "seed": 0},
    "task_members": {"cnn-gender": CNN_GENDER},
    "torch_threads": 1,
}


@pytest.fixture(scope="module")
def task_member_release(train_tiny_release):
    return train_tiny_release(RECIPE, "task-members")


def test_a_task_member_ships_beside_the_seeds_with_its_weight(task_member_release):
    config = json.loads((task_member_release["out"] / ENSEMBLE_CONFIG_FILE).read_text())
    assert config["members"] == [{"dir": "members/seed-3", "weight": 1.0}, {"dir": "members/cnn-gender", "weight": 2.0}]
    ensemble, _ = load_model(task_member_release["out"])
    assert len(ensemble.members) == 1 and ensemble.task_member_tasks == ["gender"]
    assert "members/cnn-gender/model.pt" in card_checksums(task_member_release["out"] / CARD_FILE)


def test_a_task_member_can_be_stored_in_its_own_weights_dtype(task_member_release):
    def dtypes(folder: str) -> set[torch.dtype]:
        state = torch.load(task_member_release["out"] / folder / "model.pt", weights_only=True)
        return {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}

    assert dtypes("members/cnn-gender") == {torch.float16}
    assert dtypes("members/seed-3") == {torch.float32}  # the recipe's weights_dtype, the default


def test_a_task_member_is_evaluated_alone_on_its_task(task_member_release):
    entry = task_member_release["metrics"]["task_members"]["cnn-gender"]
    assert entry["test_tta_flip"]["task"] == "gender" and 0.0 <= entry["test_tta_flip"]["accuracy"] <= 1.0
    assert entry["epochs_run"] == 1 and entry["train_config"]["lr"] == 0.002


def test_the_card_says_what_the_task_member_adds(task_member_release):
    card = (task_member_release["out"] / CARD_FILE).read_text()
    assert "For gender, a cnn network trained on gender alone (`task_members.cnn-gender`" in card
    assert "joins the average with weight 2" in card
    assert "| task member cnn-gender (cnn, gender only) alone, flip averaging | - |" in card


def test_a_rerun_resumes_the_finished_task_member(task_member_release, tmp_path):
    lines: list[str] = []
    train_release(task_member_release["data"], task_member_release["root"] / "work", tmp_path / "out", task_member_release["recipe"], log=lines.append)
    assert any("task member cnn-gender: resuming after epoch 1 of 1" in line for line in lines)
    assert not any("epoch 1/1" in line for line in lines)


def test_a_shipped_task_member_is_reused_without_its_work_folder(task_member_release, tmp_path):
    shutil.copytree(task_member_release["out"], tmp_path / "out")
    lines: list[str] = []
    again = train_release(task_member_release["data"], tmp_path / "new-work", tmp_path / "out", task_member_release["recipe"], log=lines.append)
    assert any("task member cnn-gender: taken from" in line for line in lines)
    assert again["task_members"]["cnn-gender"]["test_tta_flip"] == task_member_release["metrics"]["task_members"]["cnn-gender"]["test_tta_flip"]


def test_a_task_member_of_another_recipe_is_trained_again(task_member_release, tmp_path):
    shutil.copytree(task_member_release["out"], tmp_path / "out")
    changed = tmp_path / "release.yaml"
    changed.write_text(yaml.safe_dump(RECIPE | {"task_members": {"cnn-gender": CNN_GENDER | {"train": CNN_GENDER["train"] | {"lr": 0.001}}}}))
    lines: list[str] = []
    train_release(task_member_release["data"], tmp_path / "new-work", tmp_path / "out", changed, log=lines.append)
    assert any("task member cnn-gender epoch 1/1" in line for line in lines)
    assert not any("task member cnn-gender: taken from" in line for line in lines)


def test_a_validation_only_run_shows_the_task_member_alone(task_member_release, tmp_path):
    lines: list[str] = []
    figures = train_release(task_member_release["data"], task_member_release["root"] / "work", tmp_path / "out", task_member_release["recipe"], log=lines.append,
                            val_only=True)
    assert figures["task_members"]["cnn-gender"]["task"] == "gender"
    assert any("val, ensemble of 1 + cnn-gender, flip averaging: age MAE" in line for line in lines)
    assert any("val, task member cnn-gender alone, flip averaging: gender accuracy" in line for line in lines)


def test_a_weight_change_alone_does_not_retrain_the_task_member():
    heavier = RECIPE | {"task_members": {"cnn-gender": CNN_GENDER | {"weight": 5.0}}}
    assert task_member_recipes(heavier) == task_member_recipes(RECIPE)


def test_a_task_member_joins_only_its_tasks_average():
    members = [build_model("multitask", RECIPE["arch"], MULTITASK, {"age_bins": 117}).eval() for _ in range(2)]
    cnn = build_model("cnn", CNN_GENDER["arch"], "gender", {}).eval()
    plain = MultiTaskEnsemble(members, [1.0, 1.0]).eval()
    with_cnn = MultiTaskEnsemble(members, [1.0, 1.0], task_members=[(cnn, "gender", 2.0)]).eval()
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        parts = [m.split_outputs(m(x)) for m in members]
        before, after = plain.split_outputs(plain(x)), with_cnn.split_outputs(with_cnn(x))
        cnn_probabilities = torch.softmax(cnn(x), 1)
    expected = (torch.softmax(parts[0]["gender"], 1) + torch.softmax(parts[1]["gender"], 1) + 2.0 * cnn_probabilities) / 4.0
    assert torch.allclose(torch.softmax(after["gender"], 1), expected, atol=1e-5)
    for task in ("age", "ethnicity"):
        assert torch.allclose(after[task], before[task])


@pytest.mark.parametrize("name, change, message", [
    ("cnn-age", {"task": "age"}, r"task_members.cnn-age.task: 'age'; a task member answers one of \['gender', 'ethnicity'\]"),
    ("mt", {"family": "multitask"}, r"task_members.mt.family: 'multitask'; a task member is one of"),
    ("cnn-gender", {"arch": {"conv_chanels": [4]}}, r"unknown key 'task_members.cnn-gender.arch.conv_chanels' "
                                                    r".did you mean 'task_members.cnn-gender.arch.conv_channels'"),
    ("cnn-gender", {"wieght": 1.0}, r"unknown key 'task_members.cnn-gender.wieght' .did you mean 'task_members.cnn-gender.weight'"),
    ("cnn-gender", {"weight": 0}, r"task_members.cnn-gender.weight must be a positive number, got 0"),
    ("cnn-gender", {"train": {"optimizer": "adamm"}}, r"task_members.cnn-gender: TrainConfig.optimizer='adamm'"),
    ("seed-1", {}, r"task_members.seed-1: a task member's name is lower-case letters"),
    ("cnn-gender", {"weights_dtype": "bfloat16"}, r"task_members.cnn-gender.weights_dtype: 'bfloat16'; known: \['float32', 'float16'\] or null"),
    ("resnet-gender", {"family": "resnet", "arch": {"widths": [8, 16], "blocks": [1]}},
     r"task_members.resnet-gender: resnet: widths \[8, 16\] and blocks \[1\] need the same"),
])
def test_a_bad_task_member_is_refused_before_training(tmp_path, name, change, message):
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(RECIPE | {"task_members": {name: CNN_GENDER | change}}))
    with pytest.raises(InvalidInputError, match=message):
        load_recipe(path)


def test_a_task_member_for_a_task_with_a_stacked_head_is_refused(tmp_path):
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(RECIPE | {"stacked_head": {"tasks": ["gender"], "c": 0.1}}))
    with pytest.raises(InvalidInputError, match=r"task_members.cnn-gender.task: gender has a stacked head"):
        load_recipe(path)
