"""facetune.training: the plain-PyTorch fit/evaluate loop and batch augmentation."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from facetune.models import build_model, make_context
from facetune.tasks import TASKS
from facetune.training import EpochReport, TrainConfig, evaluate, fit, predict_outputs, seed_everything
from facetune.training.augment import augment_batch, random_shift
from facetune.training.fit_parts import batch_bounds

SMALL_CNN = {"conv_channels": [4, 8], "dense": [16], "batch_norm": True}


@pytest.fixture(scope="module")
def data(faces):
    """Synthetic faces as the loop receives them: float images in [0,1] and int64 labels."""
    images = torch.from_numpy(faces["pixels"].reshape(-1, 1, 48, 48).astype(np.float32) / 255.0)
    labels = {task: torch.from_numpy(faces[task].astype(np.int64)) for task in TASKS}
    return images[:320], {t: y[:320] for t, y in labels.items()}, images[320:], {t: y[320:] for t, y in labels.items()}


def small_model(task, train_y, seed=0, arch=SMALL_CNN):
    seed_everything(seed)
    return build_model("cnn", arch, task, make_context(task, train_y if task == "age" else None))


def run(task, data, arch=SMALL_CNN, **cfg):
    train_x, train_y, val_x, val_y = data
    model = small_model(task, train_y[task], arch=arch)
    reports: list[EpochReport] = []
    config = TrainConfig(**{"epochs": 3, "batch_size": 32, **cfg})
    result = fit(model, task, train_x, train_y[task], val_x, val_y[task], config, on_epoch=reports.append)
    return model, result, reports


# ---- TrainConfig ---------------------------------------------------------------------------


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize("key, value", [("optimizer", "rmsprop"), ("scheduler", "step"), ("augment", "rotate"), ("class_weighting", "sqrt"),
                                        ("class_loss", "hinge")])
def test_config_rejects_unknown_choices(key, value):
    with pytest.raises(ValueError, match=value):
        TrainConfig.from_dict({key: value})


def test_config_coerces_tune_sampled_numbers():
    cfg = TrainConfig.from_dict({"batch_size": 64.0, "lr": np.float64(0.01), "epochs": np.int64(3)})
    assert (cfg.batch_size, cfg.epochs) == (64, 3) and type(cfg.lr) is float


def test_class_loss_switches_the_classifiers_loss_and_defaults_to_cross_entropy():
    from facetune.training.loop import Objective

    # A linear output outside (0, 1), as the study's DNN: cross entropy still has a gradient,
    # the Keras-style clipped binary cross-entropy none.
    y = torch.tensor([0, 1])
    grads = {}
    for class_loss in (None, "keras_bce"):
        outputs = torch.tensor([[-0.5, 2.0], [1.5, -0.2]], requires_grad=True)
        objective = Objective(torch.nn.Identity(), "gender", TrainConfig(class_loss=class_loss))
        loss = objective.loss(outputs, {"gender": y}, {})
        loss.backward()
        grads[class_loss] = outputs.grad
        if class_loss is None:
            assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(outputs, y).item())
    assert grads[None].abs().min() > 0
    assert torch.equal(grads["keras_bce"], torch.zeros(2, 2))


# ---- fit -----------------------------------------------------------------------------------


def test_fit_learns_gender_and_reports_every_epoch(data):
    model, result, reports = run("gender", data, epochs=4, lr=3e-3)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    expected = {"train_loss", "val_loss", "lr", "epoch_seconds", "images_per_second"}
    expected |= {f"{split}_{m}" for split in ("train", "val") for m in TASKS["gender"].metric_names}
    assert set(reports[0].metrics) == expected
    assert result.best_metrics["val_accuracy"] >= 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.epochs_run == 4 and result.train_seconds > 0


def test_bf16_channels_last_training_learns_gender_too(data):
    model, result, _ = run("gender", data, epochs=4, precision="bf16", channels_last=True, lr=3e-3)
    assert result.best_metrics["val_accuracy"] > 0.8
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert next(model.parameters()).dtype == torch.float32  # autocast leaves the weights in fp32


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="fp16"):
        TrainConfig.from_dict({"precision": "fp16"})


def test_model_ends_with_the_best_epochs_weights(data):
    model, result, reports = run("ethnicity", data, epochs=4)
    assert sum(r.is_best for r in reports) >= 1
    best = max(result.history, key=lambda h: h["val_accuracy"])
    assert result.best_epoch == best["epoch"]
    val_x, val_y = data[2], data[3]["ethnicity"]
    metrics, _ = evaluate(model, "ethnicity", val_x, val_y)
    assert metrics["accuracy"] == pytest.approx(result.best_metrics["val_accuracy"])


def test_age_trains_in_standardised_units_and_reports_years(data):
    _, result, _ = run("age", data, epochs=5, lr=1e-2, arch={"conv_channels": [4, 8], "dense": [16]})
    ages = data[3]["age"].numpy()
    predict_the_mean_mae = np.abs(ages - data[1]["age"].numpy().mean()).mean()
    assert result.best_metrics["val_mae"] < predict_the_mean_mae / 2
    assert result.history[0]["train_loss"] < 10  # MSE in std units, not years²
    assert {"val_mae", "val_mse", "val_rmse", "val_r2"} <= set(result.best_metrics)


def test_same_seed_same_run(data):
    histories = [run("gender", data, epochs=2, augment="flip_shift")[1].history for _ in range(2)]
    assert [h["train_loss"] for h in histories[0]] == [h["train_loss"] for h in histories[1]]
    assert [h["val_loss"] for h in histories[0]] == [h["val_loss"] for h in histories[1]]


def test_early_stopping_after_patience_epochs_without_improvement(data):
    # A learning rate far below float32 resolution leaves the metric flat, so it never improves
    # (no batch norm: its running statistics would move the metric).
    _, result, _ = run("gender", data, epochs=10, lr=1e-12, patience=2, arch={"conv_channels": [4], "dense": [8]})
    assert result.stopped_early and result.best_epoch == 1 and result.epochs_run == 3


def test_patience_zero_runs_every_epoch(data):
    _, result, _ = run("gender", data, epochs=4, lr=1e-12, patience=0, arch={"conv_channels": [4], "dense": [8]})
    assert not result.stopped_early and result.epochs_run == 4


@pytest.mark.parametrize("optimizer, scheduler", [("adamw", "onecycle"), ("sgd", "cosine")])
def test_optimizers_and_schedules_run(data, optimizer, scheduler):
    _, result, _ = run("gender", data, epochs=2, optimizer=optimizer, scheduler=scheduler, grad_clip=1.0, weight_decay=1e-4)
    assert result.history[1]["lr"] != result.history[0]["lr"]
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_resume_continues_exactly_where_the_state_was_taken(data):
    train_x, train_y, val_x, val_y = data
    cfg = TrainConfig(epochs=4, batch_size=32, scheduler="onecycle", augment="flip_shift", patience=0)
    straight = fit(small_model("gender", None), "gender", train_x, train_y["gender"], val_x, val_y["gender"], cfg)

    saved = {}

    class Interrupted(Exception):
        pass

    def checkpoint_then_die_at_epoch_2(report):
        buffer = io.BytesIO()
        torch.save(report.training_state(), buffer)  # as a Tune checkpoint would
        saved["state"] = buffer.getvalue()
        if report.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(small_model("gender", None), "gender", train_x, train_y["gender"], val_x, val_y["gender"], cfg, on_epoch=checkpoint_then_die_at_epoch_2)
    state = torch.load(io.BytesIO(saved["state"]), weights_only=True)
    resumed = fit(small_model("gender", None, seed=99), "gender", train_x, train_y["gender"], val_x, val_y["gender"], cfg, resume_state=state)

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in straight.history], rel=1e-5)
    assert resumed.best_epoch == straight.best_epoch


def test_a_state_saved_on_another_kind_of_device_resumes_with_fresh_augmentation_draws(data):
    train_x, train_y, val_x, val_y = data
    cfg = TrainConfig(epochs=3, batch_size=32, augment="flip_affine", patience=0)
    saved = []

    def save_as_if_on_a_gpu(report):
        state = report.training_state()
        state["rng"] |= {"augment": torch.zeros(16, dtype=torch.uint8), "augment_device": "cuda"}  # a CUDA generator's
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved.append(buffer.getvalue())

    fit(small_model("gender", None), "gender", train_x, train_y["gender"], val_x, val_y["gender"], cfg, on_epoch=save_as_if_on_a_gpu)

    def resume():
        return fit(small_model("gender", None, seed=99), "gender", train_x, train_y["gender"], val_x, val_y["gender"], cfg,
                   resume_state=torch.load(io.BytesIO(saved[0]), weights_only=True))

    first, second = resume(), resume()
    assert [h["epoch"] for h in first.history] == [1, 2, 3]
    assert first.history[0] == torch.load(io.BytesIO(saved[0]), weights_only=True)["history"][0]  # kept, not trained again
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]  # reseeded the same way


def test_balanced_class_weighting_needs_every_class(data):
    train_x, train_y, val_x, val_y = data
    only_first_classes = train_y["ethnicity"].clamp(max=3)
    with pytest.raises(ValueError, match=r"classes \[4\] have no training sample"):
        fit(small_model("ethnicity", None), "ethnicity", train_x, only_first_classes, val_x, val_y["ethnicity"], TrainConfig(class_weighting="balanced"))


def test_balanced_class_weighting_is_for_classifiers_only(data):
    train_x, train_y, val_x, val_y = data
    with pytest.raises(ValueError, match="classification"):
        fit(small_model("age", train_y["age"]), "age", train_x, train_y["age"], val_x, val_y["age"], TrainConfig(class_weighting="balanced"))


def test_a_trailing_batch_of_one_joins_the_previous_batch(data):
    assert batch_bounds(65, 32) == [(0, 32), (32, 65)]
    assert batch_bounds(64, 32) == [(0, 32), (32, 64)]
    train_x, train_y, val_x, val_y = data
    model = small_model("gender", None, arch={**SMALL_CNN, "batch_norm": True})
    fit(model, "gender", train_x[:33], train_y["gender"][:33], val_x, val_y["gender"], TrainConfig(epochs=1, batch_size=32))


def test_mismatched_images_and_labels_are_an_error(data):
    train_x, train_y, val_x, val_y = data
    with pytest.raises(ValueError, match="mismatch"):
        fit(small_model("gender", None), "gender", train_x, train_y["gender"][:10], val_x, val_y["gender"], TrainConfig())


def test_predict_outputs_is_batched_no_grad_and_keeps_the_mode(data):
    model = small_model("ethnicity", None)
    model.train()
    outputs = predict_outputs(model, data[2], batch_size=7)
    assert outputs.shape == (len(data[2]), 5) and outputs.dtype == np.float32
    assert model.training
    model.eval()
    assert np.allclose(outputs, model(data[2]).detach().numpy(), atol=1e-5)


# ---- augmentation --------------------------------------------------------------------------


def test_flip_mirrors_some_images_and_leaves_the_others():
    x = torch.rand(64, 1, 48, 48)
    out = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_shift_moves_each_image_by_its_own_offset():
    x = torch.zeros(32, 1, 48, 48)
    x[:, :, 24, 24] = 1.0  # one bright pixel in the middle
    out = random_shift(x, torch.Generator().manual_seed(0), max_shift=3)
    positions = [divmod(int(o.flatten().argmax()), 48) for o in out]
    assert out.shape == x.shape
    assert all(abs(r - 24) <= 3 and abs(c - 24) <= 3 for r, c in positions)
    assert len(set(positions)) > 5


def test_augment_none_is_the_identity_and_seeds_repeat():
    x = torch.rand(8, 1, 48, 48)
    assert augment_batch(x, "none", torch.Generator()) is x
    a = augment_batch(x, "flip_shift", torch.Generator().manual_seed(3))
    b = augment_batch(x, "flip_shift", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_without_a_validation_set_every_epoch_runs_and_the_last_weights_are_kept(data):
    train_x, train_y, _, _ = data
    model = small_model("gender", train_y["gender"])
    reports: list[EpochReport] = []
    result = fit(model, "gender", train_x, train_y["gender"], None, None,
                 TrainConfig(epochs=3, batch_size=32, patience=1), on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3] and all(r.is_best for r in reports)
    assert result.best_epoch == 3 and not result.stopped_early
    assert not any(key.startswith("val_") for key in result.best_metrics)
    final = {k: v for k, v in model.state_dict().items()}
    assert all(torch.equal(final[k], v) for k, v in result.best_state_dict.items())
