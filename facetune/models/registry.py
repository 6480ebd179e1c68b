"""The registry of model families, and the building blocks every family shares.

A family is one builder `builder(arch, task, context) -> nn.Module`; adding a family is one
`@register_family("name")`. `context` carries what the data decides, not the search space:
`target_mean`/`target_std` (age, in years), the `input_spec` of the faces (an InputSpec; absent
means the default 48x48 gray) and, for pca_dnn, the fitted `pca` (a PCAParams) or, when
rebuilding from a checkpoint, just its size `n_components`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from facetune.records import InputSpec, input_spec_from
from facetune.tasks import AGE_BINS, DISTRIBUTION_LOSSES, MULTITASK, Task, get_task

Builder = Callable[[dict, Task, dict], nn.Module]

_FAMILIES: dict[str, Builder] = {}
#: Families whose one model answers every task (built for task MULTITASK).
_MULTITASK_FAMILIES: set[str] = set()
_ARCH_DEFAULTS: dict[str, dict] = {}

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def register_family(name: str, arch_defaults: dict | None = None, *, multitask: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: register `builder` as model family `name` with its arch keys and their defaults;
    `multitask` when its one model answers every task (it is built for task MULTITASK and swept
    as FAMILY/all).

    The arch defaults are how configs are checked before anything is built (facetune.config_keys).
    """

    def register(builder: Builder) -> Builder:
        if name in _FAMILIES and _FAMILIES[name] is not builder:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = builder
        if multitask:
            _MULTITASK_FAMILIES.add(name)
        _ARCH_DEFAULTS[name] = dict(arch_defaults or {})
        return builder

    return register


def families() -> list[str]:
    """Names of the registered model families."""
    return sorted(_FAMILIES)


def is_multitask_family(family: str) -> bool:
    """True when `family`'s one model answers every task (see register_family)."""
    return family in _MULTITASK_FAMILIES


def arch_defaults(family: str) -> dict:
    """The arch keys `family` accepts, with their defaults."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {families()}")
    return dict(_ARCH_DEFAULTS[family])


def build_model(family: str, arch: dict | None, task: "Task | str", context: dict | None = None) -> nn.Module:
    """A fresh model of `family` for `task` with architecture `arch` (defaults for omitted keys).

    `task` is MULTITASK ("all") for a family that answers every task from one trunk.
    """
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {families()}")
    resolved = task if task == MULTITASK else get_task(task)
    return _FAMILIES[family](dict(arch or {}), resolved, dict(context or {}))


def output_size(task: Task, context: dict) -> int:
    """Width of `task`'s output layer: one logit per age bin when age is learnt as a distribution."""
    if task.kind == "regression" and context.get("age_bins"):
        return int(context["age_bins"])
    return task.num_outputs


def age_distribution_context(loss_name: str | None) -> dict:
    """The context entry that makes builders give age a distribution head, for losses that need one."""

    return {"age_bins": AGE_BINS} if loss_name in DISTRIBUTION_LOSSES else {}


def make_context(task: "Task | str", train_targets: Any = None, pca: Any = None, loss: str | None = None,
                 input_spec: InputSpec | None = None) -> dict:
    """The `context` a builder needs: the age scaling (mean/std of the training ages) when `task`
    is age or MULTITASK, age bins when `loss` is a distribution loss, a fitted PCA if given, and
    the layout of the faces the model takes (`input_spec`; None: the default 48x48 gray).

    The one place a model's context is made: sweeps, the release, the GAN's regressor and tests.
    """

    context: dict = {}
    if task == MULTITASK or get_task(task).kind == "regression":
        if train_targets is None:
            raise ValueError(f"task {getattr(task, 'name', task)}: the builder needs the training targets for their mean/std")
        values = np.asarray(train_targets.cpu() if isinstance(train_targets, torch.Tensor) else train_targets, float)
        context["target_mean"] = float(values.mean())
        context["target_std"] = float(values.std()) or 1.0
        context.update(age_distribution_context(loss))
    if pca is not None:
        context["pca"] = pca
    if input_spec is not None:
        context["input_spec"] = input_spec
    return context


def context_spec(context: dict) -> InputSpec:
    """The faces' layout a builder builds for: context["input_spec"] (an InputSpec or its dict, as a
    checkpoint stores it), else the default 48x48 gray."""
    return input_spec_from(context.get("input_spec"), "context input_spec")


# ---- building blocks shared by the families -------------------------------------------------


def check_arch_keys(family: str, arch: dict, allowed: set[str]) -> None:
    """A typo in a search space must fail loudly, not silently fall back to a default."""
    unknown = set(arch) - allowed
    if unknown:
        raise ValueError(f"{family}: unknown arch keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def per_layer(value: float | Sequence[float], count: int, what: str) -> list[float]:
    """A dropout given once for all layers, or one per layer (a shorter list pads with 0)."""
    if isinstance(value, (int, float)):
        rates = [float(value)] * count
    else:
        rates = [float(v) for v in value]
        if len(rates) > count:
            raise ValueError(f"{what}: {len(rates)} values for {count} layers")
        rates += [0.0] * (count - len(rates))
    for rate in rates:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{what}: dropout {rate} is outside [0, 1)")
    return rates


def dense_stack(in_features: int, widths: Sequence[int], dropouts: Sequence[float], act: str, batch_norm: bool) -> nn.Sequential:
    """Hidden dense layers: Linear -> (BatchNorm) -> activation -> (Dropout), one per width."""
    layers: list[nn.Module] = []
    for width, rate in zip(widths, dropouts):
        layers.append(nn.Linear(in_features, int(width)))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(width)))
        layers.append(activation(act))
        if rate > 0:
            layers.append(nn.Dropout(rate))
        in_features = int(width)
    return nn.Sequential(*layers)


class TargetScale(nn.Module):
    """Maps a standardised regression output back to target units (years) with stored stats.

    Buffers, not parameters: they come back from the state_dict and are never trained.
    A classifier gets mean 0 / std 1 so every family has the same layout.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class FaceModel(nn.Module):
    """features -> head -> TargetScale: the common shape of every family's model."""

    def __init__(self, features: nn.Module, head: nn.Module, task: Task, context: dict, context_meta: dict | None = None) -> None:
        super().__init__()
        self.features = features
        self.head = head
        # A distribution head outputs logits over age bins: nothing to rescale.
        regression = task.kind == "regression" and not context.get("age_bins")
        self.output_scale = TargetScale(
            context.get("target_mean", 0.0) if regression else 0.0,
            context.get("target_std", 1.0) if regression else 1.0,
        )
        #: The faces' layout the model takes (save_model records it, inference converts faces to it).
        self.input_spec: InputSpec = context_spec(context)
        #: Sizes save_model records so load_model can rebuild the model without data.
        self.context_meta: dict = dict(context_meta or {})
        if context.get("age_bins"):
            self.context_meta["age_bins"] = int(context["age_bins"])

    @property
    def target_std(self) -> float:
        return float(self.output_scale.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_scale(self.head(self.features(x)))
