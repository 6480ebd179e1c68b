"""Issue 10's building blocks: resnet and multitask families, age distributions, recipe switches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facetune.models import build_model, load_model, save_model
from facetune.models.multitask import TaskView
from facetune.models.registry import age_distribution_context
from facetune.tasks import AGE_BINS, MULTITASK, TASKS, age_expectation
from facetune.training import TrainConfig, fit, predict_outputs, seed_everything
from facetune.training.augment import augment_batch, color_jitter, random_affine

TINY_RESNET = {"widths": [4, 8], "blocks": [1, 1]}
TINY_MULTITASK = {"trunk_arch": TINY_RESNET}
AGE_STATS = {"target_mean": 33.0, "target_std": 19.0}


@pytest.fixture(scope="module")
def data(faces):
    images = torch.from_numpy(faces["pixels"].reshape(-1, 1, 48, 48).astype(np.float32) / 255.0)
    labels = {task: torch.from_numpy(faces[task].astype(np.int64)) for task in TASKS}
    return images[:320], {t: y[:320] for t, y in labels.items()}, images[320:], {t: y[320:] for t, y in labels.items()}


def one_epoch(model, task, data, **cfg):
    train_x, train_y, val_x, val_y = data
    pick = (lambda y: y) if task == MULTITASK else (lambda y: y[task])
    config = TrainConfig(**{"epochs": 1, "batch_size": 64, **cfg})
    return fit(model, task, train_x, pick(train_y), val_x, pick(val_y), config)


@pytest.mark.parametrize("task", list(TASKS))
def test_resnet_builds_trains_and_round_trips(task, data, tmp_path):
    seed_everything(0)
    model = build_model("resnet", TINY_RESNET, task, AGE_STATS if task == "age" else {})
    one_epoch(model, task, data)
    save_model(model, tmp_path, family="resnet", task=task, arch=TINY_RESNET)
    loaded, _ = load_model(tmp_path)
    x = data[2][:5]
    assert torch.allclose(model.eval()(x), loaded(x), atol=1e-6)


def test_resnet_rejects_mismatched_stage_lists():
    with pytest.raises(ValueError, match="same non-zero length"):
        build_model("resnet", {"widths": [8, 16], "blocks": [1]}, "gender")


def test_resnet_squeeze_excitation_adds_parameters():
    plain = build_model("resnet", TINY_RESNET, "gender")
    gated = build_model("resnet", {**TINY_RESNET, "squeeze_excitation": True}, "gender")
    assert sum(p.numel() for p in gated.parameters()) > sum(p.numel() for p in plain.parameters())


def test_multitask_outputs_every_task_side_by_side():
    model = build_model("multitask", TINY_MULTITASK, MULTITASK, AGE_STATS)
    outputs = model.eval()(torch.rand(3, 1, 48, 48))
    parts = model.split_outputs(outputs)
    assert {name: tuple(part.shape) for name, part in parts.items()} == {"age": (3, 1), "gender": (3, 2), "ethnicity": (3, 5)}


def test_multitask_is_built_for_all_tasks_only():
    with pytest.raises(ValueError, match="every task"):
        build_model("multitask", TINY_MULTITASK, "gender")


@pytest.mark.parametrize("trunk,arch", [("resnet", TINY_RESNET), ("cnn", {"conv_channels": [4], "dense": [8]})])
def test_multitask_takes_any_registered_trunk(trunk, arch, data, tmp_path):
    model = build_model("multitask", {"trunk": trunk, "trunk_arch": arch}, MULTITASK, AGE_STATS)
    result = one_epoch(model, MULTITASK, data)
    assert {"val_age_mae", "val_gender_accuracy", "val_ethnicity_accuracy", "val_error_sum"} <= set(result.best_metrics)
    save_model(model, tmp_path, family="multitask", task=MULTITASK, arch={"trunk": trunk, "trunk_arch": arch})
    loaded, config = load_model(tmp_path)
    assert config["task"] == MULTITASK
    x = data[2][:4]
    assert torch.allclose(model.eval()(x), loaded(x), atol=1e-6)


def test_uncertainty_weighting_learns_one_log_variance_per_task(data):
    model = build_model("multitask", {**TINY_MULTITASK, "uncertainty_weighting": True}, MULTITASK, AGE_STATS)
    one_epoch(model, MULTITASK, data, lr=0.01)
    assert model.log_vars.shape == (3,) and bool((model.log_vars != 0).all())


def test_task_view_is_the_tasks_columns_of_the_shared_output():
    model = build_model("multitask", TINY_MULTITASK, MULTITASK, AGE_STATS).eval()
    x = torch.rand(2, 1, 48, 48)
    assert torch.equal(TaskView(model, "ethnicity")(x), model(x)[:, 3:8])


@pytest.mark.parametrize("loss", ["dldl", "mean_variance"])
def test_distribution_losses_train_an_age_head_with_one_logit_per_year(loss, data, tmp_path):
    context = AGE_STATS | age_distribution_context(loss)
    model = build_model("resnet", TINY_RESNET, "age", context)
    result = one_epoch(model, "age", data, loss=loss)
    assert predict_outputs(model, data[2][:3]).shape == (3, AGE_BINS)
    assert np.isfinite(result.best_metrics["val_mae"])
    save_model(model, tmp_path, family="resnet", task="age", arch=TINY_RESNET)
    loaded, config = load_model(tmp_path)
    assert config["context_meta"]["age_bins"] == AGE_BINS


def test_a_distribution_loss_needs_a_distribution_head():
    with pytest.raises(ValueError, match="does not fit"):
        TASKS["age"].loss(torch.zeros(4, 1), torch.ones(4), loss_name="dldl")


def test_age_prediction_of_a_distribution_is_its_expectation_with_a_spread():
    logits = torch.full((1, AGE_BINS), -1e4)
    logits[0, 30] = logits[0, 32] = 0.0  # half the mass at 30, half at 32
    predicted = TASKS["age"].predict(logits)
    assert predicted["pred"][0] == pytest.approx(31.0) and predicted["std"][0] == pytest.approx(1.0)
    mean, std = age_expectation(logits)
    assert float(mean) == pytest.approx(31.0)


def test_dldl_is_lowest_at_the_true_age():
    loss = TASKS["age"].loss
    target = torch.tensor([40])
    near, far = torch.zeros(1, AGE_BINS), torch.zeros(1, AGE_BINS)
    near[0, 40], far[0, 70] = 10.0, 10.0
    assert loss(near, target, loss_name="dldl") < loss(far, target, loss_name="dldl")


def test_ema_weights_are_what_fit_returns(data):
    seed_everything(0)
    model = build_model("resnet", TINY_RESNET, "gender")
    result = one_epoch(model, "gender", data, ema_decay=0.9)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in result.best_state_dict.items())


@pytest.mark.parametrize("switch", [{"mixup": 0.2}, {"sampling": "balanced"}, {"augment": "flip_affine", "color_jitter": 0.2},
                                    {"tta_flip": True}, {"warmup_epochs": 1, "scheduler": "cosine", "epochs": 2}])
def test_each_recipe_switch_trains(switch, data):
    model = build_model("resnet", TINY_RESNET, "ethnicity")
    result = one_epoch(model, "ethnicity", data, **switch)
    assert 0.0 <= result.best_metrics["val_accuracy"] <= 1.0


def test_flip_tta_averages_an_image_and_its_mirror():
    model = build_model("resnet", TINY_RESNET, "gender").eval()
    x = torch.rand(2, 1, 48, 48)
    expected = 0.5 * (model(x) + model(x.flip(-1)))
    assert np.allclose(predict_outputs(model, x, tta_flip=True), expected.detach().numpy(), atol=1e-6)


def test_affine_augmentation_keeps_shape_and_range_and_changes_images():
    x = torch.rand(8, 1, 48, 48)
    out = random_affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, x)


def test_flip_affine_keeps_the_unwarped_images_sharp():
    x = torch.rand(64, 1, 48, 48)
    out = augment_batch(x, "flip_affine", torch.Generator().manual_seed(0), affine_probability=0.0)
    # whole-pixel shifts and flips only: every output pixel is one of its own image's pixels
    assert all(set(out[i].flatten().tolist()) <= set(x[i].flatten().tolist()) for i in range(len(x)))


def test_flip_affine_warps_about_the_requested_share_of_images():
    x = torch.rand(400, 1, 48, 48)
    out = augment_batch(x, "flip_affine", torch.Generator().manual_seed(0), affine_probability=0.5)
    warped = sum(not set(out[i].flatten().tolist()) <= set(x[i].flatten().tolist()) for i in range(len(x)))
    assert 150 < warped < 250


def test_affine_probability_outside_0_1_is_rejected():
    with pytest.raises(ValueError, match="affine_probability"):
        TrainConfig(augment="flip_affine", affine_probability=1.5)


def test_color_jitter_changes_each_face_and_stays_in_range():
    x = torch.rand(8, 1, 48, 48) * 0.5 + 0.25
    out = color_jitter(x, 0.5, torch.Generator().manual_seed(0))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    changed = (out - x).abs().flatten(1).amax(dim=1)
    assert bool((changed > 0.01).all())  # every face got its own brightness or contrast
    assert not torch.allclose(out[0] - x[0], out[1] - x[1])  # drawn per face, not once for the batch


def test_augment_modes_are_reproducible_from_the_generator():
    x = torch.rand(4, 1, 48, 48)
    a = augment_batch(x, "flip_affine", torch.Generator().manual_seed(3), 0.1)
    b = augment_batch(x, "flip_affine", torch.Generator().manual_seed(3), 0.1)
    assert torch.equal(a, b)


def test_unknown_loss_weight_task_is_rejected():
    with pytest.raises(ValueError, match="loss_weights"):
        TrainConfig(loss_weights={"agee": 1.0})
