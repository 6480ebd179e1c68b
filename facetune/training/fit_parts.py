"""The parts of a fit() that carry no training decision: what it reports (EpochReport, FitResult),
its optimiser, schedule, EMA update, mixup draw, batch bounds, best-epoch test, device precision
check, CPU copies of its state, and the distillation loss with its teacher's check."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EpochReport:
    epoch: int  # 1-based
    metrics: dict[str, float]  # train_loss, val_loss, train_/val_<metric>, lr, epoch_seconds, images_per_second
    is_best: bool
    _state_fn: Callable[[], dict] = field(repr=False, compare=False, default=dict)

    def training_state(self) -> dict:
        """Everything `fit(..., resume_state=...)` needs to carry on after this epoch.

        A CPU snapshot of plain tensors/containers (saveable with torch.save, loadable with
        weights_only=True). Take it inside `on_epoch`: training moves on once it returns.
        """
        return self._state_fn()


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict]  # one dict per epoch: {"epoch", **metrics}
    epochs_run: int
    stopped_early: bool
    best_state_dict: dict  # CPU tensors; already loaded into the model
    train_seconds: float


def to_cpu(obj: Any) -> Any:
    """A deep CPU copy of nested dicts/lists/tuples of tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch (start, end) pairs; a trailing batch of one joins the previous batch because
    batch norm cannot train on a single sample."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int):
    """A per-batch LR schedule over the whole run (after an optional linear warm-up), or None."""
    warmup_steps = min(cfg.warmup_epochs, cfg.epochs - 1) * steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch - warmup_steps
    if cfg.scheduler == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif cfg.scheduler == "onecycle":
        main = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps)
    elif warmup_steps:
        main = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        return None
    if not warmup_steps:
        return main
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True  # the first epoch is the best so far, so a best state always exists
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (not emulated, which would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # AVX512-BF16 / AMX CPUs
    except (AttributeError, RuntimeError):
        return False


def ema_update(decay: float) -> Callable[[list, list, Any], None]:
    """An AveragedModel update with warm-up: the decay grows as (1 + n) / (10 + n) up to `decay`,
    so the average forgets the random initial weights within the first few hundred steps."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
        steps = float(num_averaged)  # AveragedModel's own counter, so a resumed run continues the warm-up
        weight = 1.0 - min(decay, (1.0 + steps) / (10.0 + steps))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)  # counters such as batch norm's num_batches_tracked

    return update


def mixup_batch(x: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mixed batch, partner permutation, weight of the original) for mixup with Beta(alpha, alpha)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=generator, device=x.device)
    return lam * x + (1 - lam) * x[perm], perm, lam


def distillation_loss(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || model) per face, averaged: how far the model's softmax is from the teacher's
    probabilities (classes, or age bins of a distribution head)."""
    if logits.shape != teacher_probs.shape:
        raise ValueError(f"distillation needs the teacher's outputs in the model's layout: {tuple(teacher_probs.shape)} "
                         f"against {tuple(logits.shape)} (a teacher's age is its distribution over years)")
    return F.kl_div(torch.log_softmax(logits.float(), dim=1), teacher_probs.float(), reduction="batchmean")


def check_teacher(teacher: dict[str, torch.Tensor] | None, distill_weight: float, rows: dict[str, int]) -> None:
    """A teacher comes with a distill_weight and gives one row per train face ({task: rows}) for every task."""
    if (teacher is None) != (distill_weight == 0):
        raise ValueError(f"distill_weight and a teacher go together: distill_weight={distill_weight} with "
                         f"{'a' if teacher is not None else 'no'} teacher")
    if teacher is not None and {name: len(t) for name, t in teacher.items()} != rows:
        raise ValueError(f"the teacher needs one row per train face for each task {rows}, "
                         f"got {({name: len(t) for name, t in teacher.items()})}")
