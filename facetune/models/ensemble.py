"""An ensemble of saved models for one task, stored as a folder of member models plus ensemble.json.

Members are combined in prediction space: the weighted mean of class probabilities (returned as
log-probabilities, so the usual softmax gives the mean back) or of predicted ages in years
(the expectation for a distribution head). Members may be of any family, a multitask model's
task columns included, so an ensemble is just another model to everything that loads one.

An ensemble of multitask models (task MULTITASK) keeps the members' output layout: each task's
columns are combined on their own (a distribution age head stays a distribution: the mean of
the members' distributions, whose expectation is the mean of their expectations), so it slots in
wherever one multitask model does. A classification task may instead have a stacked head: one
linear layer over the members' trunk features joined side by side (fitted after the members,
facetune.training.stacking), whose log-softmax replaces the averaged probabilities. It may also
hold task members: single-task classifiers (any family) whose probabilities join the average of
their own task only, so a model of another family can add its view of one task.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from facetune.json_files import write_json
from facetune.models.multitask import TaskView
from facetune.records import DEFAULT_INPUT_SPEC, ENSEMBLE_CONFIG_FILE, STACKED_HEADS_FILE, InputSpec
from facetune.tasks import MULTITASK, TASKS, Task, age_expectation, get_task

MEMBERS_DIR = "members"

#: What a network takes: one batch of faces in its spec, or (an ensemble whose members take different
#: specs) a batch per spec, the same faces converted for each member.
NetworkInput = Union[torch.Tensor, Mapping[InputSpec, torch.Tensor]]


def input_specs(module: nn.Module) -> tuple[InputSpec, ...]:
    """The layouts `module` takes, in order of first use: its own `input_spec`, or its members'
    for an ensemble (a TaskView's, its model's). 48x48 gray for a module that states none."""
    if isinstance(module, (Ensemble, MultiTaskEnsemble)):
        found = [spec for member in module.all_members() for spec in input_specs(member)]
        return tuple(dict.fromkeys(found))
    if isinstance(module, TaskView):
        return input_specs(module.model)
    return (getattr(module, "input_spec", DEFAULT_INPUT_SPEC),)


def member_input(x: NetworkInput, member: nn.Module) -> torch.Tensor:
    """The faces a member takes: `x` itself, or from a batch per spec, the one in the member's spec."""
    if isinstance(x, torch.Tensor):
        return x  # one layout for every member (the only input an exported graph has)
    (spec,) = input_specs(member)
    if spec not in x:
        raise ValueError(f"no faces in {spec.describe()} given for an ensemble member that takes them")
    return x[spec]


def to_prediction_space(outputs: torch.Tensor, task: Task) -> torch.Tensor:
    """Raw outputs -> what members are averaged in: ages (N, 1) or class probabilities (N, C)."""
    if task.kind == "regression":
        return age_expectation(outputs)[0][:, None] if outputs.shape[1] > 1 else outputs.float()
    return torch.softmax(outputs.float(), dim=1)


def from_prediction_space(mean: torch.Tensor, task: Task) -> torch.Tensor:
    """The inverse for the combined prediction: ages stay ages; probabilities become log-probabilities."""
    return mean if task.kind == "regression" else torch.log(mean.clamp_min(1e-12))


class Ensemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], task: "Task | str") -> None:
        super().__init__()
        if not members or len(members) != len(weights):
            raise ValueError(f"an ensemble needs one weight per member ({len(members)} members, {len(weights)} weights)")
        self.members = nn.ModuleList(members)
        self.task = get_task(task)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]) / float(sum(weights)))

    def all_members(self) -> list[nn.Module]:
        return list(self.members)

    def forward(self, x: NetworkInput) -> torch.Tensor:
        """The weighted mean of the members; each is given `x` in its own spec (see member_input)."""
        mean = sum(w * to_prediction_space(m(member_input(x, m)), self.task) for w, m in zip(self.weights, self.members))
        return from_prediction_space(mean, self.task)


class MultiTaskEnsemble(nn.Module):
    """Members that are multitask models with one output layout, combined task by task.

    `task_members` are (single-task classifier, its task, its weight): each joins the weighted mean
    of its task's probabilities beside the multitask members (weights are relative to theirs).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float],
                 stacked_heads: dict[str, nn.Linear] | None = None,
                 task_members: Sequence[tuple[nn.Module, str, float]] = ()) -> None:
        super().__init__()
        if not members or len(members) != len(weights):
            raise ValueError(f"an ensemble needs one weight per member ({len(members)} members, {len(weights)} weights)")
        layouts = {tuple((name, s.start, s.stop) for name, s in m.slices.items()) for m in members}
        if len(layouts) != 1:
            raise ValueError(f"multitask ensemble members must share one output layout, got {sorted(layouts)}")
        self.members = nn.ModuleList(members)
        self.slices: dict[str, slice] = dict(members[0].slices)
        member_weights, task_weights = [float(w) for w in weights], [float(w) for _, _, w in task_members]
        if min(member_weights + task_weights) <= 0:
            raise ValueError(f"ensemble weights must be positive, got {member_weights + task_weights}")
        self.register_buffer("weights", torch.tensor(member_weights))
        self.task_members = nn.ModuleList([module for module, _, _ in task_members])
        self.task_member_tasks = [task for _, task, _ in task_members]
        self.register_buffer("task_member_weights", torch.tensor(task_weights, dtype=torch.float32))
        self.stacked_heads = nn.ModuleDict(stacked_heads or {})
        for name, head in self.stacked_heads.items():
            if name not in self.slices or TASKS[name].kind != "classification":
                raise ValueError(f"stacked head {name!r}: only a classification task of the members can have one")
            classes = self.slices[name].stop - self.slices[name].start
            if head.out_features != classes:
                raise ValueError(f"stacked head {name!r} gives {head.out_features} outputs; the task has {classes} classes")
        for name in self.task_member_tasks:
            if name not in self.slices or TASKS[name].kind != "classification":
                raise ValueError(f"task member for {name!r}: only a classification task of the members can have one")
            if name in self.stacked_heads:
                raise ValueError(f"task member for {name!r}: that task has a stacked head, which would ignore it")

    def all_members(self) -> list[nn.Module]:
        return [*self.members, *self.task_members]

    def forward(self, x: NetworkInput) -> torch.Tensor:
        """The members combined task by task; each is given `x` in its own spec (see member_input)."""
        if self.stacked_heads:
            features = [m.features(member_input(x, m)) for m in self.members]
            outputs = [m.outputs_from_features(f).float() for m, f in zip(self.members, features)]
            joined = torch.cat(features, dim=1).float()
        else:
            outputs = [m(member_input(x, m)).float() for m in self.members]
        extra = [(module(member_input(x, module)).float(), task, w) for module, task, w
                 in zip(self.task_members, self.task_member_tasks, self.task_member_weights)]
        combined = []
        for name, s in self.slices.items():
            columns = [(out[:, s], w) for out, w in zip(outputs, self.weights)]
            columns += [(out, w) for out, task, w in extra if task == name]
            total = sum(w for _, w in columns)
            if name in self.stacked_heads:
                combined.append(torch.log_softmax(self.stacked_heads[name](joined), dim=1))
            elif columns[0][0].shape[1] == 1:  # a scalar age: the mean age
                combined.append(sum(w * c for c, w in columns) / total)
            else:  # class or age-bin probabilities: log of their mean, so softmax gives the mean back
                mean = sum(w * torch.softmax(c, dim=1) for c, w in columns) / total
                combined.append(torch.log(mean.clamp_min(1e-12)))
        return torch.cat(combined, dim=1)

    def split_outputs(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """{task: its columns of `outputs`}, as a member's split_outputs."""
        return {name: outputs[:, s] for name, s in self.slices.items()}


def write_ensemble_config(out_dir: Path, task: str, members: Sequence[dict], extra: dict | None = None) -> None:
    """ensemble.json: the task and, per member, its folder (relative) and weight, plus `extra` facts."""
    config = {"family": "ensemble", "task": task, "members": list(members), **(extra or {})}
    write_json(Path(out_dir) / ENSEMBLE_CONFIG_FILE, config)


def read_ensemble_config(out_dir: str | Path) -> dict:
    """ensemble.json of a saved ensemble: the task and its members' folders and weights."""
    return json.loads((Path(out_dir) / ENSEMBLE_CONFIG_FILE).read_text())


def stacked_heads_from_state(state: dict[str, torch.Tensor]) -> dict[str, nn.Linear]:
    """{task: nn.Linear} from a saved ModuleDict state ("gender.weight", "gender.bias", ...)."""
    heads = {}
    for name in sorted({key.split(".")[0] for key in state}):
        weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        head.load_state_dict({"weight": weight, "bias": bias})
        heads[name] = head
    return heads


def assemble_ensemble(config: dict, members: Sequence[tuple[nn.Module, dict]],
                      stacked_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The Ensemble of `config` from its loaded members ((module, model_config) in config order)
    and, for an ensemble with stacked heads, their saved state.

    Loading the files is facetune.models.checkpoint's job, so the two modules import one way.
    """
    weights = [m["weight"] for m in config["members"]]
    if config.get("stacked_heads") and (config["task"] != MULTITASK or stacked_state is None):
        raise ValueError("stacked heads need a multitask ensemble and their saved weights")
    if config["task"] == MULTITASK:
        heads = stacked_heads_from_state(stacked_state) if config.get("stacked_heads") else None
        if heads is not None and sorted(heads) != sorted(config["stacked_heads"]):
            raise ValueError(f"ensemble.json names stacked heads {config['stacked_heads']}, the weights hold {sorted(heads)}")
        # A member saved for one task (its model_config says which) is a task member.
        multitask = [(module, w) for (module, member_config), w in zip(members, weights) if member_config["task"] == MULTITASK]
        single = [(module, member_config["task"], w) for (module, member_config), w in zip(members, weights)
                  if member_config["task"] != MULTITASK]
        return MultiTaskEnsemble([m for m, _ in multitask], [w for _, w in multitask], heads, single)
    modules = [TaskView(module, config["task"]) if member_config["task"] == MULTITASK else module
               for module, member_config in members]
    return Ensemble(modules, weights, config["task"])


def write_stacked_heads(out_dir: Path, heads: dict[str, nn.Linear]) -> None:
    """The stacked heads' weights (read back by stacked_heads_from_state); ensemble.json must name
    them (write_ensemble_config's extra {"stacked_heads": [task, ...]})."""
    state = {key: tensor.detach().cpu().float() for key, tensor in nn.ModuleDict(heads).state_dict().items()}
    torch.save(state, Path(out_dir) / STACKED_HEADS_FILE)
