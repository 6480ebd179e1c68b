"""Training one release member: a seed's multitask network, its second stage, or a task member,
each resumable from its per-epoch state in the work folder; and the stacked heads over them."""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from facetune.config_keys import RELEASE, with_defaults
from facetune.models import build_model, make_context
from facetune.release.recipe import MEMBER_KEYS
from facetune.tasks import MULTITASK, TASKS
from facetune.training.loop import TrainConfig, fit, seed_everything
from facetune.training.stacking import fit_stacked_head, joined_features

STATE_FILE = "release_state.pt"
FINETUNE_STATE_FILE = "finetune_state.pt"


def fit_stacked_heads(
    members: Any, train: Any, settings: dict[str, Any], log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """({task: nn.Linear}, facts for metrics.json): the recipe's stacked heads, fitted on the train
    split's joined trunk features of the members as shipped."""
    started = time.time()
    features = joined_features(members, train.images())
    heads, train_accuracy = {}, {}
    for name in settings["tasks"]:
        heads[name], train_accuracy[name] = fit_stacked_head(
            features, np.asarray(train.labels(name)), TASKS[name].num_outputs, float(settings["c"]))
    seconds = time.time() - started
    log(f"[release] stacked heads {sorted(heads)}: fitted on {len(features):,} train faces' {features.shape[1]} joined "
        f"trunk features in {seconds:.0f} s (train accuracy {', '.join(f'{k} {v:.2%}' for k, v in train_accuracy.items())})")
    return heads, {"tasks": sorted(heads), "c": float(settings["c"]), "features": int(features.shape[1]),
                   "train_accuracy": train_accuracy, "fit_seconds": seconds}


def train_member(
    member: dict[str, Any], splits: dict[str, Any], work: Path, epochs: int | None, limit: int | None,
    log: Callable[[str], None], device: Any, task: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume, or reuse when finished) one seed's model, or with `task` one task member
    (`member` then being its task_member_recipes entry); returns it with its fit figures."""

    train_cfg = train_config(member["train"], epochs)
    seed_everything(train_cfg.seed)
    # The faces' layout is the prepared data's: a 64px colour prepare trains 64px colour members.
    context = make_context(task or MULTITASK, splits["train"].age, loss=train_cfg.loss, input_spec=splits["train"].spec)
    model = build_model(member["family"], member["arch"], task or MULTITASK, context)

    state_path = work / STATE_FILE
    resume = None
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if task is None:
            # Compared with every default filled in, so a state saved before a key was declared still matches.
            saved_member = with_defaults({k: v for k, v in (saved.get("recipe") or {}).items() if k in MEMBER_KEYS},
                                         {k: RELEASE[k] for k in MEMBER_KEYS}, str(state_path))
            same_recipe = all(saved_member.get(k) == member.get(k) for k in MEMBER_KEYS if k != "train")
        else:
            same_recipe = saved.get("recipe") == member
        if saved.get("train_config") == train_cfg.to_dict() and same_recipe and saved.get("limit") == limit:
            resume = saved
    name = f"seed {member['train']['seed']}" if task is None else f"task member {work.name}"
    return fit_resumably(model, train_cfg, splits, state_path, resume, {"recipe": member, "limit": limit}, name, log, device,
                          task=task)


def finetune_member(
    base: Any, base_fitted: dict[str, Any], member: dict[str, Any], weights_dtype: str, splits: dict[str, Any], work: Path,
    epochs: int | None, limit: int | None, log: Callable[[str], None], device: Any,
) -> tuple[Any, dict[str, Any]]:
    """A member's second stage (the recipe's `finetune`), from its first stage's weights as they
    would ship (rounded to `weights_dtype`), so that a rebuild from scratch and one that starts from
    the package's first-stage members fine-tune the same weights. Resumable like the first stage."""


    train_cfg = train_config(member["finetune"], epochs)
    seed_everything(train_cfg.seed)
    model = copy.deepcopy(base).float()
    stored = getattr(torch, weights_dtype)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(stored))
    identity = {"base": {k: member[k] for k in MEMBER_KEYS}, "base_train_config": base_fitted["train_config"],
                "weights_dtype": weights_dtype, "limit": limit}
    state_path = work / FINETUNE_STATE_FILE
    resume = resumable_state(state_path, train_cfg, identity)
    model, fitted = fit_resumably(model, train_cfg, splits, state_path, resume, {"identity": identity},
                                   f"seed {member['train']['seed']} fine-tune", log, device)
    return model, base_fitted | {"train_seconds": base_fitted["train_seconds"] + fitted["train_seconds"], "finetune": fitted}


def resumable_state(state_path: Path, train_cfg: Any, identity: dict[str, Any]) -> dict | None:
    """The per-epoch state saved at `state_path` when it was saved by the same train config and
    `identity` (what else the training depends on), else None: train from the start."""
    if not state_path.is_file():
        return None
    saved = torch.load(state_path, map_location="cpu", weights_only=False)
    return saved if saved.get("train_config") == train_cfg.to_dict() and saved.get("identity") == identity else None


def train_config(keys: dict[str, Any], epochs: int | None) -> Any:
    """The TrainConfig a stage runs: its recipe keys, with --epochs (a quick check's shrink) over them."""
    return TrainConfig.from_dict({**keys, **({"epochs": epochs} if epochs else {})})


def fit_resumably(
    model: Any, train_cfg: Any, splits: dict[str, Any], state_path: Path, resume: dict | None, extra_state: dict[str, Any],
    name: str, log: Callable[[str], None], device: Any, task: str | None = None,
    teacher: dict[str, torch.Tensor] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """fit() on the train split (val picks the epoch) on `device`, saving its state to `state_path`
    after every epoch (with `extra_state`, which the caller compares before resuming from it).
    `task`: a single-task model's task; None for a multitask model. `teacher`: what a distilled
    model also matches (fit's `teacher`, rows of the train split). The model comes back on the CPU."""

    # The images and labels go to the device once: fit() trains where its train images are.
    images = {split: splits[split].images().to(device) for split in ("train", "val")}
    labels = {split: {name: torch.as_tensor(np.array(splits[split].labels(name))).to(device) for name in TASKS}
              for split in ("train", "val")}
    if resume is not None:
        log(f"[release] {name}: resuming after epoch {resume['epoch']} of {train_cfg.epochs} from {state_path}")
    state_path.parent.mkdir(parents=True, exist_ok=True)

    def on_epoch(report: Any) -> None:
        m = report.metrics
        if task is None:
            figures = (f"val age MAE {m['val_age_mae']:.2f}, gender {m['val_gender_accuracy']:.2%}, "
                       f"ethnicity {m['val_ethnicity_accuracy']:.2%}")
        else:
            figures = f"val {task} {TASKS[task].metric} {m['val_' + TASKS[task].metric]:.4f}"
        log(f"[release] {name} epoch {report.epoch}/{train_cfg.epochs}: {figures}, "
            f"{m['epoch_seconds']:.0f} s, {m['images_per_second']:.0f} img/s{' *' if report.is_best else ''}")
        state = report.training_state() | extra_state
        partial = state_path.with_suffix(".tmp")
        torch.save(state, partial)
        os.replace(partial, state_path)  # a kill mid-save leaves the previous epoch's state

    pick = (lambda y: y) if task is None else (lambda y: y[task])
    result = fit(model, task or MULTITASK, images["train"], pick(labels["train"]), images["val"], pick(labels["val"]),
                 train_cfg, on_epoch=on_epoch, resume_state=resume,
                 teacher=None if teacher is None else {k: v.to(device) for k, v in teacher.items()})
    model.to("cpu")
    return model, {
        "train_config": train_cfg.to_dict(),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,  # summed over epochs, so a resumed member reports its whole training
        "val_at_best_epoch": {k: v for k, v in result.best_metrics.items() if k.startswith("val_")},
    }

