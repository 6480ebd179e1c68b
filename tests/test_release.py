"""The release job: one member per seed, shipped as one ensemble with a checksummed card, resumable."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from facetune.models.ensemble import MultiTaskEnsemble
from facetune.predict import Predictor
from facetune.release.paths import CARD_FILE, shipped_models_present
from facetune.release.recipe import member_recipes
from facetune.release.train import train_release
from facetune.errors import InvalidInputError
from facetune.release.card import FIGURES_BEGIN, FIGURES_END, card_checksums, docs_figures, file_sha256, shipped_files
from facetune.records import ENSEMBLE_CONFIG_FILE, MODEL_CONFIG_FILE
from facetune.tasks import MULTITASK

TINY_RECIPE = {
    "description": "tiny two-seed release for tests",
    "seeds": [3, 4],
    "family": "multitask",
    "arch": {"trunk": "resnet", "trunk_arch": {"widths": [8, 16], "blocks": [1, 1]}, "head_dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.002, "loss": "dldl", "ema_decay": 0.9, "seed": 0},
    "member_train": {4: {"loss_weights": {"gender": 2.0}}},
    "member_arch": {4: {"trunk_arch": {"widths": [8, 24], "blocks": [1, 1]}}},
    "weights_dtype": "float16",
    "stacked_head": {"tasks": ["gender"], "c": 0.1},
    "torch_threads": 1,
}


@pytest.fixture(scope="module")
def tiny_release(train_tiny_release):
    return train_tiny_release(TINY_RECIPE, "release")


def test_the_release_says_where_it_trains_and_the_card_names_no_gpu_for_a_cpu_run(tiny_release):
    from facetune.devices import describe_device, resolve_device

    device = resolve_device()  # what a run without --device trains on
    assert f"[release] training on {describe_device(device)}" in tiny_release["log"]
    assert ("cuda" in tiny_release["metrics"]["machine"]) == (device.type == "cuda")


def test_every_seed_becomes_one_member_with_that_seed():
    members = member_recipes(TINY_RECIPE)
    assert list(members) == [3, 4]
    assert [m["train"]["seed"] for m in members.values()] == [3, 4]
    assert "description" not in members[3] and "seeds" not in members[3]


def test_a_member_with_its_own_training_keys_keeps_the_rest_of_the_recipe():
    members = member_recipes(TINY_RECIPE)
    assert "loss_weights" not in members[3]["train"]
    assert members[4]["train"]["loss_weights"] == {"gender": 2.0}
    assert {k: v for k, v in members[4]["train"].items() if k not in ("loss_weights", "seed")} == \
        {k: v for k, v in members[3]["train"].items() if k != "seed"}


def test_a_member_with_its_own_arch_keys_keeps_the_rest_of_the_recipes_arch():
    members = member_recipes(TINY_RECIPE)
    assert members[3]["arch"] == TINY_RECIPE["arch"]
    assert members[4]["arch"] == TINY_RECIPE["arch"] | {"trunk_arch": {"widths": [8, 24], "blocks": [1, 1]}}


def test_a_member_of_another_shape_ships_as_its_own_model(tiny_release):
    seed_3, seed_4 = (json.loads((tiny_release["out"] / f"members/seed-{seed}" / MODEL_CONFIG_FILE).read_text())
                      for seed in (3, 4))
    assert seed_3["arch"]["trunk_arch"]["widths"] == [8, 16]
    assert seed_4["arch"]["trunk_arch"]["widths"] == [8, 24]


def test_the_release_folder_is_an_ensemble_of_the_seeds(tiny_release):
    out = tiny_release["out"]
    config = json.loads((out / ENSEMBLE_CONFIG_FILE).read_text())
    assert config["task"] == MULTITASK
    assert [m["dir"] for m in config["members"]] == ["members/seed-3", "members/seed-4"]
    assert shipped_models_present(out)
    assert set(tiny_release["metrics"]["members"]) == {"3", "4"}


def test_float16_weights_are_stored_half_size_and_load_as_float32(tiny_release):
    state = torch.load(tiny_release["out"] / "members/seed-3/model.pt", weights_only=True)
    floats = [t for t in state.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    predictor = Predictor.from_model_dirs({MULTITASK: tiny_release["out"]}, device="cpu")
    assert all(p.dtype == torch.float32 for p in predictor.models["age"].module.model.parameters())


def test_the_card_checksums_every_shipped_file(tiny_release):
    out = tiny_release["out"]
    stated = card_checksums(out / CARD_FILE)
    assert set(stated) == set(shipped_files(out))
    assert "members/seed-3/model.pt" in stated and "metrics.json" in stated
    assert all(file_sha256(out / name) == digest for name, digest in stated.items())


def test_the_card_shows_each_member_and_the_ensemble(tiny_release):
    card = (tiny_release["out"] / CARD_FILE).read_text()
    assert "member seed 3 alone" in card
    assert "member seed 4 (train.loss_weights: {gender: 2.0}; arch.trunk_arch: {blocks: [1, 1], widths: [8, 24]}) alone" in card
    assert "seed 4 with its own keys" in card
    assert "ensemble with flip averaging" in card
    assert "shrunk test build" not in card


def test_a_stacked_gender_head_ships_beside_the_members(tiny_release):
    out, metrics = tiny_release["out"], tiny_release["metrics"]
    assert json.loads((out / ENSEMBLE_CONFIG_FILE).read_text())["stacked_heads"] == ["gender"]
    assert "stacked_heads.pt" in card_checksums(out / CARD_FILE)
    ensemble = Predictor.from_model_dirs({MULTITASK: out}, device="cpu").models["gender"].module.model
    assert list(ensemble.stacked_heads) == ["gender"]
    assert metrics["stacked_head"]["features"] == 16 + 24  # the two members' trunk widths, side by side
    assert set(metrics["stacked_head"]["test_averaged_heads"]) == {"age", "gender", "ethnicity"}
    assert any("stacked heads ['gender']: fitted on" in line for line in tiny_release["log"])


def test_the_card_shows_the_ensemble_without_its_stacked_head_beside_it(tiny_release):
    card = (tiny_release["out"] / CARD_FILE).read_text()
    assert "Gender instead comes from a stacked head" in card
    assert "ensemble with the members' gender heads averaged instead, flip averaging" in card


@pytest.mark.parametrize("stacked_head, message", [
    ({"tasks": ["age"], "c": 0.1}, "stacked_head.tasks must list distinct tasks of .'gender', 'ethnicity'., got .'age'."),
    ({"tasks": ["gender"], "c": 0}, "stacked_head.c must be a positive number, got 0"),
    ({"tasks": ["gender"], "C": 0.1}, "unknown key 'stacked_head.C'"),
])
def test_a_bad_stacked_head_is_refused_before_training(tmp_path, stacked_head, message):
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "stacked_head": stacked_head}))
    with pytest.raises(InvalidInputError, match=message):
        load_recipe(path)


def test_a_rerun_reuses_the_finished_members(tiny_release, tmp_path):
    lines: list[str] = []
    again = train_release(tiny_release["data"], tiny_release["root"] / "work", tmp_path / "out", tiny_release["recipe"], log=lines.append)
    assert sum("resuming after epoch 1 of 1" in line for line in lines) == 2
    assert not any("epoch 1/1" in line for line in lines)  # no epoch was trained again
    before, after = tiny_release["metrics"]["test"]["tta_flip"]["overall"], again["test"]["tta_flip"]["overall"]
    assert after["age"]["mae"] == pytest.approx(before["age"]["mae"], abs=1e-4)
    assert after["gender"]["accuracy"] == before["gender"]["accuracy"]


def _grown_recipe(tiny_release, tmp_path, **train_changes) -> "Path":
    """The tiny recipe with a third seed (and `train_changes`), written beside a copy of its release."""
    shutil.copytree(tiny_release["out"], tmp_path / "out")
    grown = tmp_path / "release.yaml"
    grown.write_text(yaml.safe_dump(TINY_RECIPE | {"seeds": [3, 4, 5], "train": TINY_RECIPE["train"] | train_changes}))
    return grown


def test_a_release_grows_by_a_seed_without_retraining_the_shipped_members(tiny_release, tmp_path):
    lines: list[str] = []
    grown = train_release(tiny_release["data"], tmp_path / "new-work", tmp_path / "out", _grown_recipe(tiny_release, tmp_path),
                          log=lines.append)
    assert sum("taken from" in line for line in lines) == 2
    assert [line for line in lines if "epoch 1/1" in line] == [line for line in lines if "seed 5 epoch 1/1" in line] != []
    assert set(grown["members"]) == {"3", "4", "5"}
    assert grown["members"]["3"]["test_tta_flip"] == tiny_release["metrics"]["members"]["3"]["test_tta_flip"]


def test_a_release_written_before_train_config_was_recorded_still_lends_its_members(tiny_release, tmp_path):
    grown_recipe = _grown_recipe(tiny_release, tmp_path)
    metrics_path = tmp_path / "out" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    for entry in metrics["members"].values():
        del entry["train_config"]  # the member's config then comes from the recipe (seed 4's own keys included)
    metrics_path.write_text(json.dumps(metrics))
    lines: list[str] = []
    train_release(tiny_release["data"], tmp_path / "new-work", tmp_path / "out", grown_recipe, log=lines.append)
    assert [line.split(":")[0] for line in lines if "taken from" in line] == ["[release] seed 3", "[release] seed 4"]


def test_a_shipped_member_missing_its_fit_figures_is_named_before_training(tiny_release, tmp_path):
    grown_recipe = _grown_recipe(tiny_release, tmp_path)
    metrics_path = tmp_path / "out" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["members"]["3"]["best_epoch"]
    metrics_path.write_text(json.dumps(metrics))
    lines: list[str] = []
    with pytest.raises(InvalidInputError, match=r"metrics.json: members.3 lacks best_epoch"):
        train_release(tiny_release["data"], tmp_path / "new-work", tmp_path / "out", grown_recipe, log=lines.append)
    assert not any("epoch 1/1" in line for line in lines)


def test_a_shipped_member_of_another_recipe_is_trained_again(tiny_release, tmp_path):
    lines: list[str] = []
    train_release(tiny_release["data"], tmp_path / "new-work", tmp_path / "out", _grown_recipe(tiny_release, tmp_path, lr=0.001),
                  log=lines.append)
    assert not any("taken from" in line for line in lines)
    assert sum("epoch 1/1" in line for line in lines) == 3


TINY_FINETUNE = {"epochs": 1, "lr": 0.001, "loss_weights": {"gender": 3.0}}


@pytest.fixture(scope="module")
def tiny_finetuned(tiny_release, tmp_path_factory):
    """The tiny release given a second stage: its shipped members serve as the first stage."""
    root = tmp_path_factory.mktemp("finetuned")
    shutil.copytree(tiny_release["out"], root / "out")
    recipe = root / "release.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE | {"finetune": TINY_FINETUNE}))
    lines: list[str] = []
    metrics = train_release(tiny_release["data"], root / "work", root / "out", recipe, log=lines.append)
    return {"root": root, "recipe": recipe, "out": root / "out", "metrics": metrics, "log": lines, "data": tiny_release["data"],
            "first_stage_out": tiny_release["out"]}


def test_a_second_stage_takes_each_members_keys_under_its_own_and_a_fresh_seed():
    members = member_recipes(TINY_RECIPE | {"finetune": TINY_FINETUNE})
    assert members[4]["finetune"] == {**members[4]["train"], **TINY_FINETUNE, "seed": 104}
    assert members[3]["finetune"]["batch_size"] == TINY_RECIPE["train"]["batch_size"]
    assert member_recipes(TINY_RECIPE)[3]["finetune"] is None


def test_a_second_stage_starts_from_the_shipped_members_without_retraining_them(tiny_finetuned):
    lines = tiny_finetuned["log"]
    assert sum("taken from" in line and "second stage is still to run" in line for line in lines) == 2
    assert sum("fine-tune epoch 1/1" in line for line in lines) == 2
    assert not any(line.startswith(("[release] seed 3 epoch", "[release] seed 4 epoch")) for line in lines)


def test_a_second_stage_is_recorded_per_member_and_on_the_card(tiny_finetuned):
    member = tiny_finetuned["metrics"]["members"]["3"]
    assert member["finetune"]["train_config"]["lr"] == 0.001 and member["finetune"]["train_config"]["seed"] == 103
    assert member["train_seconds"] > member["finetune"]["train_seconds"] > 0
    assert "second stage (`finetune`): seed 3: 1 of 1, seed 4: 1 of 1" in (tiny_finetuned["out"] / CARD_FILE).read_text()
    assert "then a second stage of 1 epochs (best epochs 1, 1)" in docs_figures(tiny_finetuned["metrics"])


def test_a_rerun_resumes_the_finished_second_stages(tiny_finetuned, tmp_path):
    shutil.copytree(tiny_finetuned["first_stage_out"], tmp_path / "out")
    lines: list[str] = []
    train_release(tiny_finetuned["data"], tiny_finetuned["root"] / "work", tmp_path / "out", tiny_finetuned["recipe"],
                  log=lines.append)
    assert sum("fine-tune: resuming after epoch 1 of 1" in line for line in lines) == 2
    assert not any("epoch 1/1" in line for line in lines)


def test_a_shipped_second_stage_is_reused_as_it_is(tiny_finetuned, tmp_path):
    shutil.copytree(tiny_finetuned["out"], tmp_path / "out")
    lines: list[str] = []
    train_release(tiny_finetuned["data"], tmp_path / "new-work", tmp_path / "out", tiny_finetuned["recipe"], log=lines.append)
    assert sum("taken from" in line and "still to run" not in line for line in lines) == 2
    assert not any("epoch 1/1" in line for line in lines)


def test_a_shipped_second_stage_missing_its_fit_figures_is_named_before_training(tiny_finetuned, tmp_path):
    shutil.copytree(tiny_finetuned["out"], tmp_path / "out")
    metrics_path = tmp_path / "out" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["members"]["4"]["finetune"]["epochs_run"]
    metrics_path.write_text(json.dumps(metrics))
    lines: list[str] = []
    with pytest.raises(InvalidInputError, match=r"metrics.json: members.4.finetune lacks epochs_run"):
        train_release(tiny_finetuned["data"], tmp_path / "new-work", tmp_path / "out", tiny_finetuned["recipe"], log=lines.append)
    assert not any("epoch 1/1" in line for line in lines)


def test_a_shipped_member_of_another_second_stage_is_trained_again_from_scratch(tiny_finetuned, tmp_path):
    shutil.copytree(tiny_finetuned["out"], tmp_path / "out")
    changed = tmp_path / "release.yaml"
    changed.write_text(yaml.safe_dump(TINY_RECIPE | {"finetune": TINY_FINETUNE | {"lr": 0.0005}}))
    lines: list[str] = []
    train_release(tiny_finetuned["data"], tmp_path / "new-work", tmp_path / "out", changed, log=lines.append)
    assert not any("taken from" in line for line in lines)
    assert sum(line.startswith("[release] seed 3 epoch 1/1") for line in lines) == 1
    assert sum("fine-tune epoch 1/1" in line for line in lines) == 2


def test_a_misspelt_finetune_key_is_named(tmp_path):
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "finetune": {"lrr": 0.001}}))
    with pytest.raises(InvalidInputError, match="unknown key 'finetune.lrr' .did you mean 'finetune.lr'"):
        load_recipe(path)


def test_a_rerun_can_rewrite_the_docs_pages_release_figures(tiny_release, tmp_path):
    page = tmp_path / "release-models.md"
    page.write_text(f"# Title\n\nbefore\n{FIGURES_BEGIN}\nold figures\n{FIGURES_END}\nafter\n")
    metrics = train_release(tiny_release["data"], tiny_release["root"] / "work", tmp_path / "out", tiny_release["recipe"],
                            docs=page, log=lambda line: None)
    text = page.read_text()
    assert "old figures" not in text
    assert text == f"# Title\n\nbefore\n{FIGURES_BEGIN}\n{docs_figures(metrics)}\n{FIGURES_END}\nafter\n"
    assert "| **shipped: 2-seed ensemble, flip TTA** |" in text
    assert "| seed 4 (train.loss_weights: {gender: 2.0}; arch.trunk_arch: {blocks: [1, 1], widths: [8, 24]}) alone, flip TTA |" in text


def test_a_docs_page_without_the_figures_block_is_refused_before_training(tiny_release, tmp_path):
    page = tmp_path / "release-models.md"
    page.write_text("# A page with no release figures\n")
    with pytest.raises(InvalidInputError, match="release-models.md"):
        train_release(tiny_release["data"], tmp_path / "work", tmp_path / "out", tiny_release["recipe"], docs=page)
    assert not (tmp_path / "work").exists()


def test_a_validation_only_run_gives_the_val_figures_the_release_reports_and_writes_nothing(tiny_release, tmp_path):
    shutil.copytree(tiny_release["out"], tmp_path / "out")
    before = {path.name: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    lines: list[str] = []
    figures = train_release(tiny_release["data"], tiny_release["root"] / "work", tmp_path / "out", tiny_release["recipe"],
                            log=lines.append, val_only=True)
    assert figures["val"]["overall"]["gender"]["accuracy"] == tiny_release["metrics"]["val"]["gender"]["accuracy"]
    assert figures["val"]["overall"]["age"]["mae"] == pytest.approx(tiny_release["metrics"]["val"]["age"]["mae"], abs=1e-4)
    assert set(figures["members"]) == {"3", "4"} and "test" not in figures
    assert {path.name: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no staging folder left beside it
    assert any(line.startswith("[release] val, ensemble of 2") for line in lines)


def test_a_validation_only_run_refuses_a_docs_page_before_training(tiny_release, tmp_path):
    page = tmp_path / "release-models.md"
    page.write_text(f"{FIGURES_BEGIN}\n{FIGURES_END}\n")
    with pytest.raises(InvalidInputError, match="validation-only"):
        train_release(tiny_release["data"], tmp_path / "work", tmp_path / "out", tiny_release["recipe"], docs=page,
                      val_only=True)
    assert not (tmp_path / "work").exists()


def test_the_predictor_answers_all_tasks_from_the_ensemble_in_one_call(tiny_release):
    predictor = Predictor.from_model_dirs({MULTITASK: tiny_release["out"]}, device="cpu")
    assert predictor.tasks == ("age", "gender", "ethnicity")
    network = predictor.models["age"].module.model
    assert isinstance(network, MultiTaskEnsemble) and len(network.members) == 2
    frame = predictor.predict_array(torch.rand(3, 48, 48).numpy())
    assert len(frame) == 3 and (frame["age_std"] > 0).all()


def test_a_folder_that_is_not_a_release_is_not_replaced(tiny_release, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a release folder"):
        train_release(tiny_release["data"], tiny_release["root"] / "work", precious, tiny_release["recipe"])
    assert (precious / "notes.txt").read_text() == "mine"


def test_seeds_must_be_distinct(tmp_path):
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "seeds": [1, 1]}))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        load_recipe(path)


def test_member_train_names_only_seeds_of_the_recipe(tmp_path):
    from facetune.errors import InvalidInputError
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "member_train": {5: {"lr": 0.01}}}))
    with pytest.raises(InvalidInputError, match="member_train names seed 5, which is not in seeds"):
        load_recipe(path)


def test_member_arch_names_only_seeds_of_the_recipe(tmp_path):
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "member_arch": {5: {"head_dropout": 0.1}}}))
    with pytest.raises(InvalidInputError, match="member_arch names seed 5, which is not in seeds"):
        load_recipe(path)


def test_a_member_arch_that_cannot_be_built_is_refused_before_training(tmp_path):
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "member_arch": {4: {"trunk_arch": {"widths": [8], "blocks": [1, 1]}}}}))
    with pytest.raises(InvalidInputError, match="seed 4's arch: resnet: widths .8. and blocks .1, 1. need the same"):
        load_recipe(path)


def test_a_misspelt_member_arch_key_is_named(tmp_path):
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "member_arch": {4: {"trunk_ach": {"widths": [8, 24]}}}}))
    with pytest.raises(InvalidInputError, match="unknown key 'member_arch.4.trunk_ach' .did you mean 'member_arch.4.trunk_arch'"):
        load_recipe(path)


def test_a_misspelt_member_train_key_is_named(tmp_path):
    from facetune.errors import InvalidInputError
    from facetune.release.recipe import load_recipe

    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "member_train": {4: {"los_weights": {"gender": 2.0}}}}))
    with pytest.raises(InvalidInputError, match="unknown key 'member_train.4.los_weights' .did you mean 'member_train.4.loss_weights'"):
        load_recipe(path)


def test_a_multitask_ensemble_averages_each_tasks_probabilities():
    from facetune.models import build_model

    members = [build_model("multitask", TINY_RECIPE["arch"], MULTITASK, {"age_bins": 117}).eval() for _ in range(2)]
    ensemble = MultiTaskEnsemble(members, [1.0, 1.0]).eval()
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        parts = [m.split_outputs(m(x)) for m in members]
        combined = ensemble.split_outputs(ensemble(x))
    for task in ("age", "gender", "ethnicity"):
        expected = (torch.softmax(parts[0][task], 1) + torch.softmax(parts[1][task], 1)) / 2
        assert torch.allclose(torch.softmax(combined[task], 1), expected, atol=1e-5)
