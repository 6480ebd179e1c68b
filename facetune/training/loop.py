"""The plain-PyTorch train/evaluate loop (no Ray here: the Tune trainable wraps it).

The data arrives as tensors already on the training device, so an epoch is index-and-slice on
that device with no DataLoader and no host-device copies.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.optim.swa_utils import AveragedModel

from facetune.models.inference import predict_outputs
from facetune.records import TASK_NAMES
from facetune.tasks import MULTITASK, TASKS, Task, get_task, losses
from facetune.training.augment import AFFINE_PROBABILITY, augment_batch, check_augment
from facetune.training.fit_parts import (  # noqa: F401  (EpochReport and FitResult: fit's outputs, named here too)
    EpochReport,
    FitResult,
    batch_bounds,
    bf16_supported,
    check_teacher,
    distillation_loss,
    ema_update,
    improved,
    make_optimizer,
    make_scheduler,
    mixup_batch,
    to_cpu,
)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
CLASS_WEIGHTINGS = ("none", "balanced")
PRECISIONS = ("fp32", "bf16", "auto")
SAMPLINGS = ("uniform", "balanced")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    scheduler: str = "none"  # none | cosine | onecycle
    augment: str = "none"  # none | flip | flip_shift | flip_affine (small rotations, scale and shift)
    # flip_affine only: the share of images warped (the rest shifted by whole pixels, so sharp);
    # 1.0 warps every image, as the first release did (it then reads sharp faces as older)
    affine_probability: float = AFFINE_PROBABILITY
    color_jitter: float = 0.0  # brightness/contrast jitter strength; 0 = off
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 = off
    # balanced: draw each epoch's samples with replacement so rare classes (classification) or
    # rare age bands (age) are seen as often as common ones; multitask balances ethnicity.
    sampling: str = "uniform"  # uniform | balanced
    ema_decay: float = 0.0  # evaluate and keep an exponential moving average of the weights; 0 = off
    tta_flip: bool = False  # evaluate on each image and its mirror image, outputs averaged
    warmup_epochs: int = 0  # linear learning-rate warm-up before the scheduler
    # multitask only: fixed weights of the three task losses (ignored with uncertainty weighting)
    loss_weights: dict = field(default_factory=lambda: {"age": 1.0, "gender": 1.0, "ethnicity": 1.0})
    class_weighting: str = "none"  # none | balanced
    loss: str | None = None  # regression heads' loss; None = the task's default
    # classification heads' loss; None = the task's default (cross_entropy); keras_bce = the
    # study's linear output under Keras' binary cross-entropy (docs/study-dnn.md)
    class_loss: str | None = None
    label_smoothing: float = 0.0
    # The share of each task's loss that matches a teacher's outputs (fit's `teacher`): KL from
    # its class or age-bin probabilities; the rest stays on the labels. 0 = labels only.
    distill_weight: float = 0.0
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
        for name in ("epochs", "batch_size", "patience", "seed", "warmup_epochs"):
            setattr(self, name, int(getattr(self, name)))
        for name in ("lr", "weight_decay", "label_smoothing", "grad_clip", "color_jitter", "mixup", "ema_decay",
                     "affine_probability", "distill_weight"):
            setattr(self, name, float(getattr(self, name)))
        self.channels_last = bool(self.channels_last)
        self.tta_flip = bool(self.tta_flip)
        for name, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("class_weighting", CLASS_WEIGHTINGS),
                              ("precision", PRECISIONS), ("sampling", SAMPLINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; allowed: {list(allowed)}")
        check_augment(self.augment)
        if self.class_loss is not None and self.class_loss not in losses("classification"):
            raise ValueError(f"TrainConfig.class_loss={self.class_loss!r}; allowed: {losses('classification')}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 0:
            raise ValueError(f"TrainConfig needs epochs >= 1, batch_size >= 1, lr > 0, patience >= 0: {self}")
        if not 0.0 <= self.ema_decay < 1.0 or self.mixup < 0 or self.color_jitter < 0 or self.warmup_epochs < 0:
            raise ValueError(f"TrainConfig needs 0 <= ema_decay < 1, mixup >= 0, color_jitter >= 0, warmup_epochs >= 0: {self}")
        for name in ("affine_probability", "distill_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)} must lie in [0, 1]")
        unknown = set(self.loss_weights) - set(TASK_NAMES)
        if unknown:
            raise ValueError(f"TrainConfig.loss_weights: unknown tasks {sorted(unknown)}; known: {list(TASK_NAMES)}")
        self.loss_weights = dict.fromkeys(TASK_NAMES, 1.0) | {k: float(v) for k, v in self.loss_weights.items()}

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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call before build_model so weight init repeats too."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def evaluate(model: nn.Module, task: "Task | str", x: torch.Tensor | np.ndarray, y, batch_size: int = 512,
             tta_flip: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """(task metrics, raw outputs) of `model` on (x, y)."""
    task = get_task(task)
    outputs = predict_outputs(model, x, batch_size, tta_flip=tta_flip)
    return task.metrics(y, outputs), outputs


class Objective:
    """What fit optimises and how it scores an epoch: one task, or every task of a multitask model.

    Single-task metric names are unprefixed (`val_accuracy`), as the sweep and its reports expect;
    a multitask model's are prefixed by task (`val_gender_accuracy`) and the epoch is chosen by
    `val_error_sum`: gender error + ethnicity error + age MAE in units of 20 years (about the
    spread of UTKFace ages), so one point of accuracy weighs like 0.2 years of MAE.
    """

    def __init__(self, model: nn.Module, task: "Task | str", cfg: TrainConfig) -> None:
        self.multitask = task == MULTITASK
        if self.multitask:
            self.tasks = dict(TASKS)
            self.metric, self.mode = "error_sum", "min"
        else:
            task = get_task(task)
            self.tasks = {task.name: task}
            self.metric, self.mode = task.metric, task.mode
        self.model = model
        self.cfg = cfg
        self.target_std = getattr(model, "target_std", None)

    def targets(self, y: Any) -> dict[str, torch.Tensor]:
        if self.multitask:
            if not isinstance(y, dict) or set(y) != set(self.tasks):
                raise ValueError(f"a multitask fit needs labels for every task {sorted(self.tasks)}")
            return dict(y)
        (name,) = self.tasks
        return {name: y}

    def split(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.multitask:
            return self.model.split_outputs(outputs)
        (name,) = self.tasks
        return {name: outputs}

    def loss(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor], class_weights: dict[str, torch.Tensor | None],
             teacher: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The training loss; with `teacher` ({task: probabilities, N x outputs}) each task's loss is
        mixed with the KL divergence from the teacher's probabilities by cfg.distill_weight."""
        parts = self.split(outputs)
        total = outputs.new_zeros(())
        log_vars = getattr(self.model, "log_vars", None)
        for i, (name, task) in enumerate(self.tasks.items()):
            loss_name = self.cfg.loss if task.kind == "regression" else self.cfg.class_loss
            value = task.loss(parts[name], targets[name], class_weights=class_weights.get(name), loss_name=loss_name,
                              label_smoothing=self.cfg.label_smoothing if task.kind == "classification" else 0.0,
                              target_std=self.target_std if task.kind == "regression" else None)
            if teacher is not None:
                share = self.cfg.distill_weight
                value = (1 - share) * value + share * distillation_loss(parts[name], teacher[name])
            if not self.multitask:
                return value
            if log_vars is not None:
                # Kendall et al.: each loss scaled by a learnt precision, plus its log-variance.
                total = total + torch.exp(-log_vars[i]) * value + log_vars[i]
            else:
                total = total + self.cfg.loss_weights[name] * value
        return total

    def metrics(self, targets: dict[str, np.ndarray], outputs: np.ndarray) -> dict[str, float]:
        parts = self.split(torch.from_numpy(outputs))
        if not self.multitask:
            (name,) = self.tasks
            return self.tasks[name].metrics(targets[name], parts[name].numpy())
        result: dict[str, float] = {}
        for name, task in self.tasks.items():
            result.update({f"{name}_{k}": v for k, v in task.metrics(targets[name], parts[name].numpy()).items()})
        result["error_sum"] = (1 - result["gender_accuracy"]) + (1 - result["ethnicity_accuracy"]) + result["age_mae"] / 20.0
        return result

    def class_weights(self, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        if self.cfg.class_weighting != "none" and self.multitask:
            raise ValueError("class_weighting applies to single-task models; use sampling=balanced for multitask")
        return {name: _class_weights(self.tasks[name], y, self.cfg) for name, y in targets.items()}

    def sample_weights(self, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample weights that make every class (or 10-year age band) equally likely."""
        name = "ethnicity" if self.multitask else next(iter(self.tasks))
        y = targets[name].cpu().long()
        if self.tasks[name].kind == "regression":
            y = torch.div(y, 10, rounding_mode="floor")
        counts = torch.bincount(y).float()
        return (1.0 / counts)[y]


def fit(
    model: nn.Module,
    task: "Task | str",
    train_x: torch.Tensor,
    train_y: "torch.Tensor | dict[str, torch.Tensor]",
    val_x: torch.Tensor | None,
    val_y: "torch.Tensor | dict[str, torch.Tensor] | None",
    cfg: TrainConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
    resume_state: dict | None = None,
    teacher: dict[str, torch.Tensor] | None = None,
) -> FitResult:
    """Train `model` on (train_x, train_y), select the best epoch on validation, load it back.

    `task` is a task name, or MULTITASK ("all") for a multitask model whose labels are a dict
    {task: tensor}. Trains on train_x's device. Early stopping after `cfg.patience` epochs
    without a better validation metric. With `cfg.ema_decay` the moving average of the weights
    is what is evaluated, selected and returned. `resume_state` (an
    EpochReport.training_state()) continues a run, also one saved on another kind of device. With
    no validation set (`val_x` None, as in a final fit on train+val) every epoch counts as the
    best, so the last weights are returned. `teacher` ({task: probabilities}, one row per train
    face, on train_x's device) is what a distilled model also learns to match (cfg.distill_weight).
    """
    run = _FitRun(model, task, train_x, train_y, val_x, val_y, cfg, teacher)
    if resume_state is not None:
        run.restore(resume_state)
    run.train(on_epoch)
    return run.result()


class _FitRun:
    """One call of fit(): what its epochs read and update, and its steps by name."""

    def __init__(self, model: nn.Module, task: "Task | str", train_x: torch.Tensor, train_y: Any,
                 val_x: torch.Tensor | None, val_y: Any, cfg: TrainConfig,
                 teacher: dict[str, torch.Tensor] | None = None) -> None:
        self.model, self.cfg = model, cfg
        self.objective = objective = Objective(model, task, cfg)
        self.validated = validated = val_x is not None
        self.train_t = train_t = objective.targets(train_y)
        self.val_t = val_t = objective.targets(val_y) if validated else {name: y[:0] for name, y in train_t.items()}
        self.train_x, self.val_x = train_x, val_x if validated else train_x[:0]
        self.n = n = len(train_x)
        if n == 0 or (validated and len(self.val_x) == 0):
            raise ValueError(f"fit needs a non-empty train set and, if given, val set (got {n} and {len(self.val_x)})")
        for name in train_t:
            if len(train_t[name]) != n or len(val_t[name]) != len(self.val_x):
                raise ValueError(f"images/labels mismatch: train {n}/{len(train_t[name])}, "
                                 f"val {len(self.val_x)}/{len(val_t[name])}")
        check_teacher(teacher, cfg.distill_weight, {name: len(y) for name, y in train_t.items()})
        self.teacher = teacher
        self.device = device = train_x.device
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported(device))

        torch.manual_seed(cfg.seed)  # dropout draws
        self.shuffle_rng = torch.Generator().manual_seed(cfg.seed)
        self.augment_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.class_weights = objective.class_weights(train_t)
        self.sample_weights = objective.sample_weights(train_t) if cfg.sampling == "balanced" else None
        self.bounds = batch_bounds(n, cfg.batch_size)
        self.optimizer = make_optimizer(model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg, len(self.bounds))
        self.ema = AveragedModel(model, multi_avg_fn=ema_update(cfg.ema_decay), use_buffers=True) \
            if cfg.ema_decay > 0 else None
        self.evaluated = self.ema.module if self.ema is not None else model
        self.val_numpy = {name: y.cpu().numpy() for name, y in val_t.items()}

        self.history: list[dict] = []
        self.best_value: float | None = None
        self.best_state: dict | None = None
        self.best_epoch, self.start_epoch, self.stopped_early = 0, 1, False

    def restore(self, state: dict) -> None:
        """Carry on from an EpochReport.training_state()."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = list(state["history"])
        self.best_value, self.best_epoch, self.best_state = state["best_value"], state["best_epoch"], state["best_state"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.shuffle_rng.set_state(rng["shuffle"])
        self.start_epoch = int(state["epoch"]) + 1
        if rng.get("augment_device", self.device.type) == self.device.type:
            self.augment_rng.set_state(rng["augment"])
        else:
            # A CPU generator's state does not fit a GPU's: a run moved to another kind of device
            # goes on with fresh augmentation draws, seeded by the epoch it resumes at.
            self.augment_rng.manual_seed(self.cfg.seed + 1 + self.start_epoch)

    def training_state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": to_cpu(self.model.state_dict()),
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "scheduler": to_cpu(self.scheduler.state_dict()) if self.scheduler is not None else None,
            "ema": to_cpu(self.ema.state_dict()) if self.ema is not None else None,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "history": copy.deepcopy(self.history),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "shuffle": self.shuffle_rng.get_state(),
                "augment": self.augment_rng.get_state().cpu(),
                "augment_device": self.device.type,
            },
            "train_config": self.cfg.to_dict(),
        }

    def train(self, on_epoch: Callable[[EpochReport], None] | None) -> None:
        """Epochs from start_epoch until cfg.epochs or early stopping, each reported to `on_epoch`."""
        cfg = self.cfg
        # A resumed run that had already hit its patience stays stopped.
        start = self.start_epoch
        self.stopped_early = cfg.patience > 0 and 1 < start <= cfg.epochs and (start - 1) - self.best_epoch >= cfg.patience
        epoch = start
        while epoch <= cfg.epochs and not self.stopped_early:
            started = time.perf_counter()
            order, loss_sum, train_outputs, train_seconds = self._train_one_epoch(started)
            metrics, val_metrics = self._epoch_metrics(order, loss_sum, train_outputs, train_seconds, started)
            is_best = not self.validated or improved(val_metrics[self.objective.metric], self.best_value,
                                                     self.objective.mode)
            if is_best:
                self.best_value, self.best_epoch = val_metrics.get(self.objective.metric), epoch
                self.best_state = to_cpu(self.evaluated.state_dict())
            self.history.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(EpochReport(epoch, metrics, is_best, _state_fn=lambda e=epoch: self.training_state(e)))
            self.stopped_early = self.validated and cfg.patience > 0 and epoch - self.best_epoch >= cfg.patience \
                and epoch < cfg.epochs
            epoch += 1

    def _train_one_epoch(self, started: float) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], float]:
        """One pass over the train split: (order of the faces, summed loss, outputs, seconds)."""
        cfg, model, device, objective = self.cfg, self.model, self.device, self.objective
        model.train()
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, self.n, replacement=True, generator=self.shuffle_rng).to(device)
        else:
            order = torch.randperm(self.n, generator=self.shuffle_rng).to(device)
        loss_sum = torch.zeros((), device=device)
        train_outputs: list[torch.Tensor] = []
        for start, end in self.bounds:
            index = order[start:end]
            xb = augment_batch(self.train_x[index], cfg.augment, self.augment_rng, cfg.color_jitter,
                               cfg.affine_probability)
            yb = {name: y[index] for name, y in self.train_t.items()}
            tb = {name: t[index] for name, t in self.teacher.items()} if self.teacher is not None else None
            if cfg.mixup > 0:
                xb, partner, lam = mixup_batch(xb, cfg.mixup, self.augment_rng)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                outputs = model(xb)
            outputs = outputs.float()
            loss = objective.loss(outputs, yb, self.class_weights, tb)
            if cfg.mixup > 0:
                # Mixup's loss is the same mix of the two partners' losses.
                loss = lam * loss + (1 - lam) * objective.loss(
                    outputs, {k: v[partner] for k, v in yb.items()}, self.class_weights,
                    {k: v[partner] for k, v in tb.items()} if tb is not None else None)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            # Summed on-device: a .item() per batch would sync a GPU every step.
            loss_sum += loss.detach() * (end - start)
            train_outputs.append(outputs.detach())
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # GPU work is queued; time it, not its launch
        return order, loss_sum, train_outputs, time.perf_counter() - started

    def _epoch_metrics(self, order: torch.Tensor, loss_sum: torch.Tensor, train_outputs: list[torch.Tensor],
                       train_seconds: float, started: float) -> tuple[dict[str, float], dict[str, float]]:
        """(every metric of the epoch, the validation ones by their own names)."""
        objective = self.objective
        # Train metrics from the running (dropout, augmented) outputs: free, Keras-style.
        order_cpu = order.cpu()
        train_metrics = objective.metrics({k: v.cpu()[order_cpu].numpy() for k, v in self.train_t.items()},
                                          torch.cat(train_outputs).float().cpu().numpy())
        metrics: dict[str, float] = {"train_loss": float(loss_sum.item()) / self.n}
        val_metrics: dict[str, float] = {}
        if self.validated:
            val_outputs = predict_outputs(self.evaluated, self.val_x, tta_flip=self.cfg.tta_flip)
            val_metrics = objective.metrics(self.val_numpy, val_outputs)
            metrics["val_loss"] = objective.loss(
                torch.from_numpy(val_outputs), {k: v.cpu() for k, v in self.val_t.items()},
                {k: (w.cpu() if w is not None else None) for k, w in self.class_weights.items()}).item()
        metrics.update({f"train_{k}": v for k, v in train_metrics.items()})
        metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics["epoch_seconds"] = time.perf_counter() - started
        metrics["images_per_second"] = self.n / train_seconds
        return metrics, val_metrics

    def result(self) -> FitResult:
        """The best epoch's weights loaded back into the model, and the run's record."""
        if self.best_state is None:
            raise ValueError("resume_state has no best state: it was not made by fit()")
        self.model.load_state_dict(self.best_state)
        best_metrics = {k: v for k, v in self.history[self.best_epoch - 1].items() if k != "epoch"}
        return FitResult(
            best_epoch=self.best_epoch,
            best_metrics=best_metrics,
            history=self.history,
            epochs_run=len(self.history),
            stopped_early=self.stopped_early,
            best_state_dict=self.best_state,
            train_seconds=float(sum(h["epoch_seconds"] for h in self.history)),
        )
