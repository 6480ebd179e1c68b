"""facetune.tasks: task definitions, pluggable losses, predictions and sklearn metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from facetune import tasks
from facetune.tasks import TASKS, get_task, register_loss


def test_the_three_tasks_have_the_studys_outputs_and_selection_metrics():
    assert {name: (t.kind, t.num_outputs, t.metric, t.mode) for name, t in TASKS.items()} == {
        "age": ("regression", 1, "mae", "min"),
        "gender": ("classification", 2, "accuracy", "max"),
        "ethnicity": ("classification", 5, "accuracy", "max"),
    }
    assert TASKS["ethnicity"].class_names == ("White", "Black", "Asian", "Indian", "Others")


def test_unknown_task_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'emotion'"):
        get_task("emotion")


def test_age_metrics_are_mae_mse_rmse_r2_in_years():
    outputs = np.array([[12.0], [18.0], [30.0]])
    got = TASKS["age"].metrics(np.array([10, 20, 30]), outputs)
    assert got == pytest.approx({"mae": 4 / 3, "mse": 8 / 3, "rmse": math.sqrt(8 / 3), "r2": 1 - 8 / 200})


def test_gender_metrics_names_and_values():
    y = np.array([0, 1, 1, 0])
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])  # two right, two wrong
    got = TASKS["gender"].metrics(y, logits)
    assert list(got) == ["accuracy", "balanced_accuracy", "roc_auc", "f1"]
    assert got["accuracy"] == 0.5 and got["balanced_accuracy"] == 0.5 and got["f1"] == 0.5
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, torch.softmax(torch.tensor(logits), 1)[:, 1].numpy()))


def test_ethnicity_auc_is_sklearns_one_vs_rest_macro():
    rng = np.random.default_rng(0)
    y = np.arange(50) % 5
    logits = rng.normal(size=(50, 5)) + np.eye(5)[y]
    got = TASKS["ethnicity"].metrics(y, logits)
    probs = torch.softmax(torch.tensor(logits), 1).numpy()
    assert set(got) == {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc"}
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_ethnicity_auc_stays_defined_when_a_small_split_lacks_a_class():
    y = np.array([0, 1, 2, 0, 1, 2])  # classes 3 and 4 absent
    logits = np.eye(5)[y] * 3.0
    assert TASKS["ethnicity"].metrics(y, logits)["roc_auc"] == 1.0


def test_gender_auc_is_nan_when_only_one_class_is_present():
    assert math.isnan(TASKS["gender"].metrics(np.array([1, 1]), np.array([[0.0, 1.0], [1.0, 0.0]]))["roc_auc"])


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="3 labels but 2 outputs"):
        TASKS["gender"].metrics(np.array([0, 1, 0]), np.zeros((2, 2)))


def test_predict_gives_argmax_and_probabilities_for_classifiers():
    got = TASKS["ethnicity"].predict(torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0, 1.0]]))
    assert got["pred"].tolist() == [1, 0]
    assert got["probs"].sum(axis=1) == pytest.approx([1.0, 1.0])


def test_predict_gives_years_for_age():
    assert TASKS["age"].predict(np.array([[33.5], [7.0]]))["pred"].tolist() == [33.5, 7.0]


def test_age_loss_is_mse_in_standardised_units():
    outputs, targets = torch.tensor([[30.0], [10.0]]), torch.tensor([10, 10])
    # errors of 20 and 0 years, std 10 -> (2^2 + 0) / 2
    assert TASKS["age"].loss(outputs, targets, target_std=10.0).item() == pytest.approx(2.0)
    # without a std the task's nominal scale (20 years) standardises
    assert TASKS["age"].loss(outputs, targets).item() == pytest.approx(0.5)


@pytest.mark.parametrize("name, expected", [("l1", 1.0), ("huber", 0.75)])
def test_regression_losses_are_selectable_by_name(name, expected):
    # errors of 2 and 0 standard deviations
    got = TASKS["age"].loss(torch.tensor([[20.0], [0.0]]), torch.tensor([0, 0]), loss_name=name, target_std=10.0)
    assert got.item() == pytest.approx(expected)


def test_classification_loss_is_cross_entropy_with_weights_and_smoothing():
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 1])
    weights = torch.tensor([1.0, 3.0])
    task = TASKS["gender"]
    assert task.loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())
    assert task.loss(logits, y, class_weights=weights).item() == pytest.approx(F.cross_entropy(logits, y, weight=weights).item())
    assert task.loss(logits, y, label_smoothing=0.2).item() != pytest.approx(task.loss(logits, y).item())


def test_keras_bce_takes_raw_outputs_as_clipped_probabilities_of_one_hot_targets():
    # Row 0 lies inside (0, 1); row 1 is a linear output outside it, clipped to [eps, 1 - eps].
    outputs = torch.tensor([[0.2, 0.6], [-0.5, 2.0]], requires_grad=True)
    loss = TASKS["gender"].loss(outputs, torch.tensor([1, 0]), loss_name="keras_bce")
    loss.backward()
    # target 1 at eps, target 0 at 1 - eps (in float32, as Keras computes it)
    clipped = -math.log(tasks.KERAS_EPSILON) - math.log(1 - float(torch.tensor(1 - tasks.KERAS_EPSILON)))
    assert loss.item() == pytest.approx((-math.log(0.8) - math.log(0.6) + clipped) / 4, rel=1e-5)
    assert outputs.grad[0].abs().min() > 0
    assert torch.equal(outputs.grad[1], torch.zeros(2))


def test_unknown_loss_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown regression loss 'hinge'.*'huber'"):
        TASKS["age"].loss(torch.zeros(2, 1), torch.zeros(2), loss_name="hinge")


def test_class_weights_are_rejected_for_age():
    with pytest.raises(ValueError, match="class weights"):
        TASKS["age"].loss(torch.zeros(2, 1), torch.zeros(2), class_weights=torch.ones(1))


def test_a_registered_loss_becomes_selectable(monkeypatch):
    monkeypatch.setitem(tasks._LOSSES, "classification", dict(tasks._LOSSES["classification"]))

    @register_loss("always_seven", "classification")
    def seven(outputs, targets, class_weights, label_smoothing):
        return outputs.sum() * 0 + 7

    assert "always_seven" in tasks.losses("classification")
    assert TASKS["gender"].loss(torch.zeros(2, 2), torch.tensor([0, 1]), loss_name="always_seven").item() == 7
