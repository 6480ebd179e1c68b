"""The plain-PyTorch train/evaluate loop (no Ray here: the Tune trainable wraps it).

The data arrives as tensors already on the training device, so an epoch is index-and-slice on
that device with no DataLoader and no host-device copies.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from facetune.tasks import Task, get_task
from facetune.training.augment import augment_batch, check_augment

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
CLASS_WEIGHTINGS = ("none", "balanced")
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    scheduler: str = "none"  # none | cosine | onecycle
    augment: str = "none"  # none | flip | flip_shift
    class_weighting: str = "none"  # none | balanced
    loss: str | None = None  # None = the task's default
    label_smoothing: float = 0.0
    patience: int = 5  # early stopping on the task's selection metric; 0 = off
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    seed: int = 0
    # bf16 autocast for the forward pass (weights and loss stay fp32): ~2-3x faster CNN
    # training on CPUs with AVX512-BF16/AMX and on recent GPUs.
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 where the hardware has it, else fp32)
    # NHWC layout: oneDNN's fast convolution path on CPU (and tensor cores on GPU).
    channels_last: bool = False

    def __post_init__(self) -> None:
        # Tune's samplers hand out floats for integer knobs (quniform) and numpy scalars.
        for name in ("epochs", "batch_size", "patience", "seed"):
            setattr(self, name, int(getattr(self, name)))
        for name in ("lr", "weight_decay", "label_smoothing", "grad_clip"):
            setattr(self, name, float(getattr(self, name)))
        self.channels_last = bool(self.channels_last)
        for name, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("class_weighting", CLASS_WEIGHTINGS),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; allowed: {list(allowed)}")
        check_augment(self.augment)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 0:
            raise ValueError(f"TrainConfig needs epochs >= 1, batch_size >= 1, lr > 0, patience >= 0: {self}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a config dict; an unknown key is an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call before build_model so weight init repeats too."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to_cpu(obj: Any) -> Any:
    """A deep CPU copy of nested dicts/lists/tuples of tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch (start, end) pairs; a trailing batch of one joins the previous batch because
    batch norm cannot train on a single sample."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9, nesterov=True)


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-batch LR schedule over the whole run, or None."""
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps)
    return None


def _class_weights(task: Task, train_y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor | None:
    if cfg.class_weighting == "none":
        return None
    if task.kind != "classification":
        raise ValueError(f"class_weighting={cfg.class_weighting!r} needs a classification task, not {task.name}")
    y = train_y.cpu().numpy()
    classes = np.arange(task.num_outputs)
    counts = np.bincount(y, minlength=task.num_outputs)
    if (counts == 0).any():
        raise ValueError(f"{task.name}: classes {classes[counts == 0].tolist()} have no training sample; cannot balance")
    # Inverse class frequency, n / (C * count_c), as sklearn's "balanced".
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return torch.as_tensor(weights, dtype=torch.float32, device=train_y.device)


def _improved(value: float, best: float | None, mode: str) -> bool:
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


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def predict_outputs(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Raw model outputs (N, num_outputs) as float32 NumPy, in eval mode without gradients."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict_outputs: empty input")
    return torch.cat(outputs).numpy()


def evaluate(model: nn.Module, task: "Task | str", x: torch.Tensor | np.ndarray, y, batch_size: int = 512) -> tuple[dict[str, float], np.ndarray]:
    """(task metrics, raw outputs) of `model` on (x, y)."""
    task = get_task(task)
    outputs = predict_outputs(model, x, batch_size)
    return task.metrics(y, outputs), outputs


def fit(
    model: nn.Module,
    task: "Task | str",
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
    resume_state: dict | None = None,
) -> FitResult:
    """Train `model` on (train_x, train_y), select the best epoch on validation, load it back.

    Trains on train_x's device. Early stopping after `cfg.patience` epochs without a better
    validation `task.metric`. `resume_state` (an EpochReport.training_state()) continues a run.
    """
    task = get_task(task)
    n = len(train_x)
    if n == 0 or len(val_x) == 0:
        raise ValueError(f"fit needs non-empty train and val sets (got {n} and {len(val_x)})")
    if len(train_y) != n or len(val_y) != len(val_x):
        raise ValueError(f"images/labels mismatch: train {n}/{len(train_y)}, val {len(val_x)}/{len(val_y)}")
    device = train_x.device
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported(device))

    torch.manual_seed(cfg.seed)  # dropout draws
    shuffle_rng = torch.Generator().manual_seed(cfg.seed)
    augment_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    class_weights = _class_weights(task, train_y, cfg)
    bounds = _batch_bounds(n, cfg.batch_size)
    optimizer = _make_optimizer(model, cfg)
    scheduler = _make_scheduler(optimizer, cfg, len(bounds))
    target_std = getattr(model, "target_std", None) if task.kind == "regression" else None

    history: list[dict] = []
    best_value: float | None = None
    best_epoch = 0
    best_state: dict | None = None
    start_epoch = 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None and resume_state.get("scheduler") is not None:
            scheduler.load_state_dict(resume_state["scheduler"])
        history = list(resume_state["history"])
        best_value, best_epoch, best_state = resume_state["best_value"], resume_state["best_epoch"], resume_state["best_state"]
        rng = resume_state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        shuffle_rng.set_state(rng["shuffle"])
        augment_rng.set_state(rng["augment"])
        start_epoch = int(resume_state["epoch"]) + 1

    def training_state(epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": _to_cpu(model.state_dict()),
            "optimizer": _to_cpu(optimizer.state_dict()),
            "scheduler": _to_cpu(scheduler.state_dict()) if scheduler is not None else None,
            "best_value": best_value,
            "best_epoch": best_epoch,
            "best_state": best_state,
            "history": copy.deepcopy(history),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "shuffle": shuffle_rng.get_state(),
                "augment": augment_rng.get_state().cpu(),
            },
            "train_config": cfg.to_dict(),
        }

    # A resumed run that had already hit its patience stays stopped.
    stopped_early = cfg.patience > 0 and 1 < start_epoch <= cfg.epochs and (start_epoch - 1) - best_epoch >= cfg.patience
    epoch = start_epoch
    while epoch <= cfg.epochs and not stopped_early:
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=shuffle_rng).to(device)
        loss_sum = torch.zeros((), device=device)
        train_outputs: list[torch.Tensor] = []
        for start, end in bounds:
            index = order[start:end]
            xb = augment_batch(train_x[index], cfg.augment, augment_rng)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = train_y[index]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                outputs = model(xb)
            outputs = outputs.float()
            loss = task.loss(outputs, yb, class_weights=class_weights, loss_name=cfg.loss, label_smoothing=cfg.label_smoothing, target_std=target_std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            # Summed on-device: a .item() per batch would sync a GPU every step.
            loss_sum += loss.detach() * (end - start)
            train_outputs.append(outputs.detach())
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU work is queued; time it, not its launch
        train_seconds = time.perf_counter() - started

        # Train metrics from the running (dropout, augmented) outputs: free, Keras-style.
        train_metrics = task.metrics(train_y[order].cpu().numpy(), torch.cat(train_outputs).float().cpu().numpy())
        val_metrics, val_outputs = evaluate(model, task, val_x, val_y)
        val_loss = task.loss(torch.from_numpy(val_outputs), val_y.cpu(), loss_name=cfg.loss, target_std=target_std).item()
        metrics: dict[str, float] = {"train_loss": float(loss_sum.item()) / n, "val_loss": float(val_loss)}
        metrics.update({f"train_{k}": v for k, v in train_metrics.items()})
        metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        metrics["lr"] = float(optimizer.param_groups[0]["lr"])
        metrics["epoch_seconds"] = time.perf_counter() - started
        metrics["images_per_second"] = n / train_seconds

        is_best = _improved(val_metrics[task.metric], best_value, task.mode)
        if is_best:
            best_value, best_epoch, best_state = val_metrics[task.metric], epoch, _to_cpu(model.state_dict())
        history.append({"epoch": epoch, **metrics})
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, metrics, is_best, _state_fn=lambda e=epoch: training_state(e)))
        stopped_early = cfg.patience > 0 and epoch - best_epoch >= cfg.patience and epoch < cfg.epochs
        epoch += 1

    if best_state is None:
        raise ValueError("resume_state has no best state: it was not made by fit()")
    model.load_state_dict(best_state)
    best_metrics = {k: v for k, v in history[best_epoch - 1].items() if k != "epoch"}
    return FitResult(
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        history=history,
        epochs_run=len(history),
        stopped_early=stopped_early,
        best_state_dict=best_state,
        train_seconds=float(sum(h["epoch_seconds"] for h in history)),
    )
