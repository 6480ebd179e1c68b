"""facetune.models: the family registry, the three families, checkpoints and the paper preset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from facetune.models import build_model, families, load_model, make_context, register_family, save_model
from facetune.models import registry
from facetune.models.pca import fit_pca
from facetune.tuning.presets import load_preset
from facetune.tasks import TASKS

SMALL_ARCH = {
    "cnn": {"conv_channels": [4, 8], "dense": [16]},
    "dnn": {"dense": [16, 8]},
    "pca_dnn": {"dense": [16]},
}


@pytest.fixture(scope="module")
def pca(faces):
    return fit_pca(faces["pixels"][:200], n_components=20)


def context_for(family, task, faces, pca):
    return make_context(task, faces["age"] if task == "age" else None, pca if family == "pca_dnn" else None)


def test_the_three_study_families_are_registered():
    assert {"cnn", "dnn", "pca_dnn"} <= set(families())


@pytest.mark.parametrize("family", ["cnn", "dnn", "pca_dnn"])
@pytest.mark.parametrize("task", ["age", "gender", "ethnicity"])
def test_every_family_maps_images_to_the_tasks_outputs(family, task, faces, pca):
    model = build_model(family, SMALL_ARCH[family], task, context_for(family, task, faces, pca))
    assert model(torch.rand(3, 1, 48, 48)).shape == (3, TASKS[task].num_outputs)


def test_age_models_output_years_from_the_training_mean_and_std(faces):
    model = build_model("cnn", SMALL_ARCH["cnn"], "age", make_context("age", [10, 30, 50]))
    final = model.head[-1]
    nn.init.zeros_(final.weight)
    nn.init.constant_(final.bias, 1.0)  # one standard deviation above the mean
    assert model(torch.rand(2, 1, 48, 48)).flatten().tolist() == pytest.approx([30 + np.std([10, 30, 50])] * 2)


def test_age_needs_the_training_targets():
    with pytest.raises(ValueError, match="training targets"):
        make_context("age")


def test_one_context_builder_serves_single_task_multitask_and_distribution_losses():
    from facetune.models.registry import AGE_BINS
    from facetune.tasks import MULTITASK

    assert make_context("gender", [10, 30, 50]) == {}
    assert make_context(MULTITASK, [10, 30, 50]) == {"target_mean": 30.0, "target_std": pytest.approx(np.std([10, 30, 50]))}
    assert make_context(MULTITASK, [10, 30, 50], loss="dldl")["age_bins"] == AGE_BINS
    assert "age_bins" not in make_context("age", [10, 30, 50], loss="mse")


def test_cnn_blocks_follow_the_arch():
    model = build_model(
        "cnn",
        {"conv_channels": [8, 16, 32], "convs_per_block": 2, "kernel_size": 5, "batch_norm": True, "activation": "gelu", "dense": [64, 32]},
        "gender",
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32]
    assert {c.kernel_size for c in convs} == {(5, 5)}
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [64, 32, 2]


def test_cnn_flattens_like_the_study_unless_global_pool():
    flat = build_model("cnn", {"conv_channels": [8, 16], "dense": [32]}, "gender")
    pooled = build_model("cnn", {"conv_channels": [8, 16], "dense": [32], "global_pool": True}, "gender")
    assert flat.head[0][0].in_features == 16 * 12 * 12
    assert pooled.head[0][0].in_features == 16


def test_dropout_given_per_layer_or_once():
    model = build_model("cnn", {"conv_channels": [8, 8], "conv_dropout": [0.1, 0.2], "dense": [16, 16], "dense_dropout": 0.3}, "gender")
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.2, 0.3, 0.3]


@pytest.mark.parametrize(
    "family, arch, message",
    [
        ("cnn", {"conv_chanels": [8]}, "unknown arch keys"),
        ("cnn", {"conv_channels": [4] * 6}, "below 1px"),
        ("cnn", {"activation": "tanhh"}, "unknown activation"),
        ("dnn", {"dense": [8], "dropout": [0.1, 0.1]}, "2 values for 1 layers"),
        ("dnn", {"dropout": 1.0}, "outside"),
        ("pca_dnn", {}, "context\\['pca'\\]"),
    ],
)
def test_bad_arch_is_a_clear_error(family, arch, message):
    with pytest.raises(ValueError, match=message):
        build_model(family, arch, "gender")


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model family 'vit'.*'cnn'"):
        build_model("vit", {}, "gender")


def test_adding_a_family_is_one_registration(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))

    @register_family("linear")
    def build_linear(arch, task, context):
        return nn.Sequential(nn.Flatten(), nn.Linear(48 * 48, task.num_outputs))

    assert "linear" in families()
    assert build_model("linear", {}, "ethnicity")(torch.rand(2, 1, 48, 48)).shape == (2, 5)


def test_pca_dnn_projects_with_the_fitted_pca_as_frozen_buffers(faces, pca):
    model = build_model("pca_dnn", {"dense": [8]}, "gender", {"pca": pca})
    buffers = dict(model.named_buffers())
    assert np.array_equal(buffers["features.components"].numpy(), pca.components)
    assert not any("components" in name for name, _ in model.named_parameters())
    assert model.head[0][0].in_features == pca.n_components


@pytest.mark.parametrize("family, task", [("cnn", "age"), ("pca_dnn", "ethnicity"), ("dnn", "gender")])
def test_saved_model_reloads_from_its_json_alone(tmp_path, faces, pca, family, task):
    arch = {**SMALL_ARCH[family], **({"whiten": True} if family == "pca_dnn" else {})}
    model = build_model(family, arch, task, context_for(family, task, faces, pca)).eval()
    save_model(model, tmp_path, family=family, task=task, arch=arch)

    config = json.loads((tmp_path / "model_config.json").read_text())
    assert config["family"] == family and config["task"] == task and config["arch"] == arch
    assert config["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == set(model.state_dict())

    loaded, loaded_config = load_model(tmp_path)
    x = torch.rand(4, 1, 48, 48)
    assert not loaded.training
    assert loaded_config == config
    assert torch.allclose(loaded(x), model(x))


def test_a_channels_last_model_saves_the_bytes_of_its_reloaded_copy(tmp_path):
    arch = {"widths": [8, 16], "blocks": [1, 1]}
    model = build_model("resnet", arch, "gender", {}).to(memory_format=torch.channels_last)
    save_model(model, tmp_path / "trained", family="resnet", task="gender", arch=arch)
    reloaded, _ = load_model(tmp_path / "trained")
    save_model(reloaded, tmp_path / "again", family="resnet", task="gender", arch=arch)
    assert (tmp_path / "trained" / "model.pt").read_bytes() == (tmp_path / "again" / "model.pt").read_bytes()


def test_pca_dnn_checkpoint_records_only_the_pca_size(tmp_path, pca):
    model = build_model("pca_dnn", {"dense": [8]}, "gender", {"pca": pca})
    save_model(model, tmp_path, family="pca_dnn", task="gender", arch={"dense": [8]})
    assert json.loads((tmp_path / "model_config.json").read_text())["context_meta"] == {"n_components": 20}


def test_load_model_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_config.json is missing"):
        load_model(tmp_path)


def test_paper_preset_builds_the_studys_nine_models(faces, pca):
    preset = load_preset("paper")
    assert set(preset) == {"cnn", "dnn", "pca_dnn"}
    for family, by_task in preset.items():
        assert set(by_task) == set(TASKS)
        for task, entry in by_task.items():
            model = build_model(family, entry["arch"], task, context_for(family, task, faces, pca))
            assert model(torch.rand(2, 1, 48, 48)).shape == (2, TASKS[task].num_outputs)
            assert entry["train"]["optimizer"] == "adam"


def test_paper_preset_has_the_tables_architectures():
    preset = load_preset("paper")["cnn"]
    gender = build_model("cnn", preset["gender"]["arch"], "gender")
    ethnicity = build_model("cnn", preset["ethnicity"]["arch"], "ethnicity")
    age = build_model("cnn", preset["age"]["arch"], "age", {"target_mean": 33.0, "target_std": 20.0})
    assert [m.out_channels for m in gender.modules() if isinstance(m, nn.Conv2d)] == [16, 16, 32, 64]
    assert [m.out_features for m in gender.modules() if isinstance(m, nn.Linear)] == [128, 2]
    assert [m.p for m in gender.modules() if isinstance(m, nn.Dropout)] == [0.25] * 4
    assert any(isinstance(m, nn.ELU) for m in ethnicity.modules())
    assert [m.p for m in ethnicity.modules() if isinstance(m, nn.Dropout)] == [0.4, 0.4, 0.25, 0.25]
    assert [m.out_channels for m in age.modules() if isinstance(m, nn.Conv2d)] == [32, 64, 64]
    assert [m.out_features for m in age.modules() if isinstance(m, nn.Linear)] == [1024, 1024, 512, 256, 128, 1]
    assert [m.p for m in age.modules() if isinstance(m, nn.Dropout)] == pytest.approx([0.3, 0.3, 0.3, 0.5, 0.5, 0.4, 0.4])


def test_preset_entries_are_independent_copies():
    preset = load_preset("paper")
    preset["dnn"]["age"]["arch"]["dense"].append(7)
    assert preset["dnn"]["gender"]["arch"]["dense"] == [1024, 1024, 512, 256, 128]


def test_presets_are_read_from_FACETUNE_RAYCFG(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.yaml").write_text("cnn:\n  gender:\n    arch: {conv_channels: [4]}\n    train: {epochs: 1}\n")
    monkeypatch.setenv("FACETUNE_RAYCFG", str(tmp_path))
    assert load_preset("tiny") == {"cnn": {"gender": {"arch": {"conv_channels": [4]}, "train": {"epochs": 1}}}}
