"""The three recognition tasks: output size, loss, predictions and sklearn metrics.

Age is regression in years; gender (2 classes) and ethnicity (5 classes) are classification.
Losses are looked up by name in a small registry so a new loss is one `register_loss` call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from facetune.records import ETHNICITY_NAMES, GENDER_NAMES, MAX_AGE, MULTITASK  # noqa: F401  (MULTITASK: re-exported)

#: loss(outputs, targets, class_weights, label_smoothing) -> scalar tensor. Regression losses
#: receive outputs and targets already standardised (see Task.loss).
LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", float], torch.Tensor]

#: kind -> loss name -> loss function
_LOSSES: dict[str, dict[str, LossFn]] = {"regression": {}, "classification": {}}

#: Ages are whole years 0..MAX_AGE: a distribution head has one logit per year.
AGE_BINS = MAX_AGE + 1
#: Regression losses that train a distribution head (AGE_BINS logits) instead of one output.
DISTRIBUTION_LOSSES: frozenset[str] = frozenset({"dldl", "mean_variance"})
#: Spread of the Gaussian label distribution in years (DLDL): neighbouring ages look alike.
DLDL_SIGMA = 2.0


def register_loss(name: str, kind: str) -> Callable[[LossFn], LossFn]:
    """Decorator: make `fn` selectable as `loss_name=name` for tasks of `kind`."""
    if kind not in _LOSSES:
        raise ValueError(f"unknown task kind {kind!r}; known: {sorted(_LOSSES)}")

    def register(fn: LossFn) -> LossFn:
        _LOSSES[kind][name] = fn
        return fn

    return register


def losses(kind: str) -> list[str]:
    """The loss names available for tasks of `kind`."""
    return sorted(_LOSSES[kind])


@register_loss("mse", "regression")
def _mse(outputs: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    return F.mse_loss(outputs, targets)


@register_loss("l1", "regression")
def _l1(outputs: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    return F.l1_loss(outputs, targets)


@register_loss("huber", "regression")
def _huber(outputs: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    # delta = 1 standard deviation of age: quadratic near the target, linear for outliers.
    return F.huber_loss(outputs, targets, delta=1.0)


def _age_bins(logits: torch.Tensor) -> torch.Tensor:
    return torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)


def age_expectation(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected age, standard deviation) in years of a distribution head's logits (N, bins)."""
    probs = torch.softmax(logits.float(), dim=1)
    bins = _age_bins(probs)
    mean = probs @ bins
    var = probs @ bins.square() - mean.square()
    return mean, var.clamp_min(0).sqrt()


@register_loss("dldl", "regression")
def _dldl(logits: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    # Deep label distribution learning: KL to a Gaussian around the true age, plus an L1 on the
    # expectation (in units of 10 years) so the prediction itself is pulled to the target.
    bins = _age_bins(logits.float())
    target = torch.softmax(-0.5 * ((bins[None, :] - targets.float()[:, None]) / DLDL_SIGMA) ** 2, dim=1)
    log_probs = torch.log_softmax(logits.float(), dim=1)
    kl = F.kl_div(log_probs, target, reduction="batchmean")
    mean, _ = age_expectation(logits)
    return kl + F.l1_loss(mean, targets.float()) / 10.0


@register_loss("mean_variance", "regression")
def _mean_variance(logits: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    # Mean-variance loss (Pan et al. 2018): softmax CE on the age bin, plus the squared error of
    # the mean and the variance, both in units of 10 years so their weights stay O(1).
    mean, std = age_expectation(logits)
    ce = F.cross_entropy(logits.float(), targets.long().clamp(0, logits.shape[1] - 1))
    return ce + 0.2 * 0.5 * ((mean - targets.float()) / 10.0).square().mean() + 0.05 * (std / 10.0).square().mean()


@register_loss("cross_entropy", "classification")
def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, weight=class_weights, label_smoothing=label_smoothing)


#: Keras' backend epsilon: its binary_crossentropy clips "probabilities" to [eps, 1 - eps].
KERAS_EPSILON = 1e-7


@register_loss("keras_bce", "classification")
def _keras_bce(outputs: torch.Tensor, targets: torch.Tensor, class_weights, label_smoothing) -> torch.Tensor:
    # The study's DNN set-up (its Table II): a linear output layer under Keras'
    # binary_crossentropy, which takes the raw outputs as probabilities of one-hot targets and
    # clips them. A unit outside (eps, 1 - eps) gets no gradient, so once every output has left
    # that band the network stops learning (docs/study-dnn.md).
    if class_weights is not None or label_smoothing:
        raise ValueError("keras_bce takes no class weights or label smoothing (the study used neither)")
    target = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    probs = outputs.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return -(target * probs.log() + (1 - target) * (1 - probs).log()).mean()


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


@dataclass(frozen=True)
class Task:
    """One recognition task. `metric`/`mode` select the best epoch and trial on validation."""

    name: str
    kind: str  # "regression" | "classification"
    num_outputs: int
    class_names: tuple[str, ...]
    metric: str
    mode: str  # "min" | "max"
    default_loss: str
    #: Regression only: the spread (in target units) used to standardise outputs and targets
    #: when the caller gives no `target_std` (fit() passes the model's train-set std).
    target_scale: float = 1.0

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The names `metrics()` returns, in a stable order."""
        if self.kind == "regression":
            return ("mae", "mse", "rmse", "r2")
        if self.num_outputs == 2:
            return ("accuracy", "balanced_accuracy", "roc_auc", "f1")
        return ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")

    def loss(
        self,
        outputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        class_weights: torch.Tensor | None = None,
        loss_name: str | None = None,
        label_smoothing: float = 0.0,
        target_std: float | None = None,
    ) -> torch.Tensor:
        """Training loss of model `outputs` (N, num_outputs) against integer `targets` (N,).

        Regression outputs are in target units (years); both sides are divided by `target_std`
        (default `target_scale`) so the loss is in standardised units whatever the loss name.
        """
        name = loss_name or self.default_loss
        table = _LOSSES[self.kind]
        if name not in table:
            raise ValueError(f"unknown {self.kind} loss {name!r} for task {self.name}; known: {sorted(table)}")
        if self.kind == "regression":
            if class_weights is not None:
                raise ValueError(f"class weights make no sense for the regression task {self.name}")
            distribution_head = outputs.ndim == 2 and outputs.shape[1] > 1
            if distribution_head != (name in DISTRIBUTION_LOSSES):
                raise ValueError(f"{self.name}: loss {name!r} does not fit a model with {outputs.shape[-1]} outputs "
                                 f"(distribution losses {sorted(DISTRIBUTION_LOSSES)} need {AGE_BINS})")
            if distribution_head:
                return table[name](outputs, targets, None, 0.0)
            scale = float(target_std if target_std is not None else self.target_scale)
            return table[name](outputs.reshape(-1) / scale, targets.to(outputs.dtype).reshape(-1) / scale, None, 0.0)
        return table[name](outputs, targets.long(), class_weights, label_smoothing)

    def predict(self, outputs) -> dict[str, np.ndarray]:
        """Raw outputs -> {"pred": (N,)} plus {"probs": (N, C)} for classifiers.

        A regression model with a distribution head (one logit per age) also gives {"std": (N,)}.
        """
        raw = _as_numpy(outputs).astype(np.float64).reshape(len(outputs), -1)
        if self.kind == "regression":
            if raw.shape[1] > 1:
                mean, std = age_expectation(torch.from_numpy(raw))
                return {"pred": mean.numpy(), "std": std.numpy()}
            return {"pred": raw[:, 0]}
        probs = torch.softmax(torch.from_numpy(raw), dim=1).numpy()
        return {"pred": probs.argmax(axis=1), "probs": probs}

    def metrics(self, y_true, outputs) -> dict[str, float]:
        """sklearn metrics of raw `outputs` against `y_true`, names as in `metric_names`."""
        y = _as_numpy(y_true).reshape(-1)
        if len(y) != len(outputs):
            raise ValueError(f"{self.name}: {len(y)} labels but {len(outputs)} outputs")
        if len(y) == 0:
            raise ValueError(f"{self.name}: cannot compute metrics on an empty set")
        predicted = self.predict(outputs)
        pred = predicted["pred"]
        if self.kind == "regression":
            mse = float(skm.mean_squared_error(y, pred))
            return {
                "mae": float(skm.mean_absolute_error(y, pred)),
                "mse": mse,
                "rmse": math.sqrt(mse),
                # R² is undefined (sklearn warns, returns nan) for a single sample.
                "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan"),
            }
        probs = predicted["probs"]
        result = {
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": float(_balanced_accuracy(y, pred)),
        }
        if self.num_outputs == 2:
            result["roc_auc"] = _binary_auc(y == 1, probs[:, 1])
            result["f1"] = float(skm.f1_score(y, pred, pos_label=1, zero_division=0))
        else:
            labels = list(range(self.num_outputs))
            result["macro_f1"] = float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0))
            result["roc_auc"] = _one_vs_rest_auc(y, probs)
        return result


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    # Mean recall over the classes present in y_true (sklearn's definition); sklearn warns
    # when pred has classes absent from y, which small validation splits hit legitimately.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return skm.balanced_accuracy_score(y, pred)


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, or nan when only one class is present (AUC is undefined then)."""
    if positive.all() or not positive.any():
        return float("nan")
    return float(skm.roc_auc_score(positive, score))


def _one_vs_rest_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes present in `y`.

    Equal to sklearn's roc_auc_score(multi_class="ovr", average="macro") when every class is
    present, and still defined when a small split lacks a class (sklearn raises there).
    """
    present = np.unique(y)
    if len(present) == probs.shape[1]:
        return float(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))
    scores = [_binary_auc(y == c, probs[:, c]) for c in present]
    scores = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scores)) if scores else float("nan")


TASKS: dict[str, Task] = {
    "age": Task(
        name="age",
        kind="regression",
        num_outputs=1,
        class_names=(),
        metric="mae",
        mode="min",
        default_loss="mse",
        target_scale=20.0,  # roughly the std of UTKFace ages in years
    ),
    "gender": Task(
        name="gender",
        kind="classification",
        num_outputs=2,
        class_names=GENDER_NAMES,
        metric="accuracy",
        mode="max",
        default_loss="cross_entropy",
    ),
    "ethnicity": Task(
        name="ethnicity",
        kind="classification",
        num_outputs=5,
        class_names=ETHNICITY_NAMES,
        metric="accuracy",
        mode="max",
        default_loss="cross_entropy",
    ),
}


def get_task(task: "str | Task") -> Task:
    """`task` itself, or TASKS[task] with a clear error for an unknown name."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    return TASKS[task]
