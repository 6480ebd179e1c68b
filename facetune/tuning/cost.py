"""What a sweep plan costs on this machine: each combination's epoch timed, the wall time bounded.

An epoch is timed by training the combination's first sampled config for two short epochs on
random faces with the profile's torch threads (the second epoch, without start-up costs, is
the one kept) and scaling it to the split's size. The sweep's wall time then lies between
two bounds: every trial running all its epochs, and ASHA stopping at each rung as many trials
as its reduction factor allows (per-trial patience can stop trials sooner still).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from facetune.models import build_model, make_context
from facetune.records import LABEL_RANGES, MULTITASK
from facetune.training.loop import TrainConfig, fit
from facetune.tuning.plan import CombinationPlan, SweepPlan, dummy_pca

#: Faces per timed epoch: enough batches to time, few enough that a dry run takes seconds.
TIMED_FACES = 256
#: The validation faces timed beside them, in the study split's proportion (10% vs 80%).
TIMED_VAL_FACES = TIMED_FACES // 8


@dataclass
class CombinationCost:
    """One combination's measured epoch and the epochs its trials train, at most and at least."""

    name: str
    epoch_seconds: float
    most_epochs: int
    least_epochs: int

    @property
    def most_seconds(self) -> float:
        return self.epoch_seconds * self.most_epochs

    @property
    def least_seconds(self) -> float:
        return self.epoch_seconds * self.least_epochs


def measure_epoch_seconds(plan: SweepPlan, combination: CombinationPlan, train_rows: int, seed: int = 0) -> float:
    """Seconds for one epoch of `combination`'s first config over `train_rows` faces (and a
    validation split an eighth of that), measured here on random faces."""
    import torch


    config = combination.configs[0]
    rng = np.random.default_rng(seed)
    labels = {task: rng.integers(low, high + 1, TIMED_FACES + TIMED_VAL_FACES) for task, (low, high) in LABEL_RANGES.items()}
    spec = plan.input_spec  # faces of the swept data's layout: a 64px colour epoch costs more than a 48px gray one
    faces = torch.from_numpy(rng.random((TIMED_FACES + TIMED_VAL_FACES, *spec.shape), np.float32))
    targets = {task: torch.from_numpy(values) for task, values in labels.items()}
    if combination.task != MULTITASK:
        targets = targets[combination.task]
    train_cfg = TrainConfig.from_dict({**config["train"], "epochs": 2, "patience": 0})
    context = make_context(combination.task, labels["age"], pca=dummy_pca(int(plan.profile["pca_components"]), spec),
                           loss=train_cfg.loss, input_spec=spec)
    model = build_model(combination.family, config["arch"], combination.task, context)
    seconds: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(int(plan.profile["torch_threads"]))
    try:
        split = TIMED_FACES
        fit(model, combination.task, faces[:split], _head(targets, split), faces[split:], _tail(targets, split),
            train_cfg, on_epoch=lambda report: seconds.append(report.metrics["epoch_seconds"]))
    finally:
        torch.set_num_threads(threads)
    return seconds[-1] * train_rows / TIMED_FACES


def _head(targets: Any, n: int) -> Any:
    return {k: v[:n] for k, v in targets.items()} if isinstance(targets, dict) else targets[:n]


def _tail(targets: Any, n: int) -> Any:
    return {k: v[n:] for k, v in targets.items()} if isinstance(targets, dict) else targets[n:]


def epochs_bounds(plan: SweepPlan, combination: CombinationPlan) -> tuple[int, int]:
    """(most, least) epochs the combination's trials train together: all trials to max_epochs,
    or ASHA keeping 1/reduction_factor of them at each rung (at least one to the end)."""
    trials, factor = combination.num_trials, plan.scheduler_settings["reduction_factor"]
    most = trials * combination.max_epochs
    least, previous, alive = 0, 0, trials
    for rung in plan.rungs(combination):
        least += alive * (rung - previous)
        previous, alive = rung, max(1, math.ceil(alive / factor))
    least += alive * (combination.max_epochs - previous)
    return most, least


def plan_costs(plan: SweepPlan, train_rows: int) -> list[CombinationCost]:
    """Every combination's measured epoch and epoch bounds."""
    costs = []
    for c in plan.combinations:
        most, least = epochs_bounds(plan, c)
        costs.append(CombinationCost(c.name, measure_epoch_seconds(plan, c, train_rows), most, least))
    return costs
