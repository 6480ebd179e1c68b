"""The `multitask` family: one trunk, three heads (age, gender, ethnicity), one forward pass.

The model returns the three tasks' outputs side by side in one (N, age + 2 + 5) tensor, so every
tool that handles a plain tensor model (batched inference, ONNX export, Ray Data) handles it
too; `split_outputs` names the columns. `TaskView` exposes one task as an ordinary model.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from facetune.models.registry import (
    FaceModel,
    TargetScale,
    build_model,
    check_arch_keys,
    context_spec,
    output_size,
    register_family,
)
from facetune.records import TASK_NAMES
from facetune.tasks import MULTITASK, TASKS, Task

#: Head order inside the output tensor.
TASK_ORDER: tuple[str, ...] = TASK_NAMES

DEFAULTS: dict = {
    "trunk": "resnet",  # any registered single-task family; its `features` become the trunk
    "trunk_arch": {},
    "head_dropout": 0.0,
    # Learn per-task loss weights as homoscedastic uncertainties (Kendall et al. 2018)
    # instead of the fixed TrainConfig.loss_weights.
    "uncertainty_weighting": False,
}


class MultiTaskModel(nn.Module):
    def __init__(self, features: nn.Module, width: int, arch: dict, context: dict) -> None:
        super().__init__()
        self.features = features
        age_out = output_size(TASKS["age"], context)
        dropout = float(arch["head_dropout"])
        self.heads = nn.ModuleDict(
            {name: nn.Sequential(nn.Dropout(dropout), nn.Linear(width, age_out if name == "age" else TASKS[name].num_outputs))
             for name in TASK_ORDER}
        )
        distribution = age_out > 1
        self.age_scale = TargetScale(0.0 if distribution else context.get("target_mean", 0.0),
                                     1.0 if distribution else context.get("target_std", 1.0))
        widths = [age_out if name == "age" else TASKS[name].num_outputs for name in TASK_ORDER]
        bounds = [0, *itertools.accumulate(widths)]
        self.slices: dict[str, slice] = {name: slice(bounds[i], bounds[i + 1]) for i, name in enumerate(TASK_ORDER)}
        self.log_vars = nn.Parameter(torch.zeros(len(TASK_ORDER))) if arch["uncertainty_weighting"] else None
        #: The faces' layout the model takes (save_model records it, inference converts faces to it).
        self.input_spec = context_spec(context)
        self.context_meta: dict = {"age_bins": age_out} if distribution else {}
        self.context_meta.update({k: context[k] for k in ("n_components",) if k in context})

    @property
    def target_std(self) -> float:
        return float(self.age_scale.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs_from_features(self.features(x))

    def outputs_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """The heads' outputs for trunk features `f` (an ensemble with stacked heads reuses `f`)."""
        outputs = [self.heads[name](f) for name in TASK_ORDER]
        outputs[0] = self.age_scale(outputs[0])
        return torch.cat(outputs, dim=1)

    def split_outputs(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """{task: its columns of `outputs`}."""
        return {name: outputs[:, s] for name, s in self.slices.items()}


class TaskView(nn.Module):
    """One task of a MultiTaskModel as a single-task model (its columns of the shared output)."""

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.columns = model.slices[task]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.columns]


def network_of(module: nn.Module) -> nn.Module:
    """The network that computes `module`'s outputs: a TaskView's shared multitask model, else
    `module` itself (so callers run a shared network once for all its tasks)."""
    return module.model if isinstance(module, TaskView) else module


@register_family("multitask", DEFAULTS, multitask=True)
def build_multitask(arch: dict, task: "Task | str", context: dict) -> nn.Module:
    if task != MULTITASK:
        raise ValueError(f"multitask answers every task at once: build it for task {MULTITASK!r}, not {getattr(task, 'name', task)!r}")
    check_arch_keys("multitask", arch, set(DEFAULTS))
    a = {**DEFAULTS, **arch}
    if a["trunk"] == "multitask":
        raise ValueError("multitask: the trunk must be a single-task family")
    # The trunk is the `features` part of the chosen family's gender model (the head is dropped).
    trunk_context = {k: v for k, v in context.items() if k not in ("age_bins", "target_mean", "target_std")}
    donor = build_model(a["trunk"], a["trunk_arch"], "gender", trunk_context)
    if not isinstance(donor, FaceModel):
        raise ValueError(f"multitask: family {a['trunk']!r} has no separable feature trunk")
    with torch.no_grad():
        donor.eval()
        width = int(donor.features(torch.zeros(2, *donor.input_spec.shape)).reshape(2, -1).shape[1])
    model = MultiTaskModel(donor.features, width, a, context)
    model.context_meta.update(donor.context_meta)
    return model
