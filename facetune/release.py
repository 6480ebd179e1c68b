"""The release models: trained by one recipe (raycfg/release.yaml), shipped in facetune/pretrained/.

`train_release` prepares the data, trains the recipe on the train split (val chooses the epoch),
evaluates once on test overall and per group, and writes the model, its metrics and a model card
with the sha256 of every shipped file. A rerun with the same recipe resumes from its own
per-epoch state in the work folder, so an interrupted release training loses at most one epoch.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from facetune.errors import InputNotFoundError
from facetune.release_card import CARD_FILE, write_model_card

#: Where the shipped models live inside the installed package.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
METRICS_FILE = "metrics.json"
STATE_FILE = "release_state.pt"
AGE_BANDS: tuple[tuple[int, int], ...] = ((0, 12), (13, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 116))


def default_recipe_path() -> Path:
    from facetune.config import raycfg_dir

    return raycfg_dir() / "release.yaml"


def load_recipe(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The release recipe; unknown keys (facetune.config_schema.RELEASE) and a bad TrainConfig
    fail here, before any training."""
    from facetune.config_schema import RELEASE, check, with_defaults
    from facetune.training.loop import TrainConfig

    recipe_path = Path(path) if path is not None else default_recipe_path()
    if not recipe_path.is_file():
        raise InputNotFoundError(f"--recipe {recipe_path}: no such file")
    recipe = yaml.safe_load(recipe_path.read_text()) or {}
    recipe = with_defaults(recipe, RELEASE, str(recipe_path))
    check(recipe, RELEASE, str(recipe_path), context={"family": recipe["family"]})
    TrainConfig.from_dict(recipe["train"])
    return recipe


def group_metrics(outputs: np.ndarray, labels: dict[str, np.ndarray], split_outputs: Callable[[Any], dict]) -> dict[str, dict]:
    """Every task's metrics overall and within each ethnicity, gender and age band."""
    import torch

    from facetune.tasks import TASKS

    def metrics_of(mask: np.ndarray) -> dict[str, dict[str, float]]:
        parts = split_outputs(torch.from_numpy(outputs[mask]))
        return {name: TASKS[name].metrics(labels[name][mask], parts[name].numpy()) | {"n": int(mask.sum())} for name in TASKS}

    groups: dict[str, dict] = {"overall": metrics_of(np.ones(len(outputs), bool))}
    for code, name in enumerate(TASKS["ethnicity"].class_names):
        groups[f"ethnicity={name}"] = metrics_of(labels["ethnicity"] == code)
    for code, name in enumerate(TASKS["gender"].class_names):
        groups[f"gender={name}"] = metrics_of(labels["gender"] == code)
    for low, high in AGE_BANDS:
        mask = (labels["age"] >= low) & (labels["age"] <= high)
        if mask.sum() > 1:
            groups[f"age={low}-{high}"] = metrics_of(mask)
    return groups


def train_release(
    data: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] = PRETRAINED_DIR,
    recipe_path: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the release recipe and write model, metrics and model card into `out_dir`.

    `epochs` and `limit` (train rows) shrink the run for tests; a shrunk run's card says so.
    """
    import torch

    from facetune.data.loading import load_split
    from facetune.models import build_model, save_model
    from facetune.models.registry import age_distribution_context
    from facetune.storage import ResultsStore
    from facetune.tasks import MULTITASK, TASKS
    from facetune.training.loop import TrainConfig, fit, predict_outputs, seed_everything
    from facetune.tuning.sweep import ensure_prepared

    recipe = load_recipe(recipe_path)
    train_cfg = TrainConfig.from_dict({**recipe["train"], **({"epochs": epochs} if epochs else {})})
    work = Path(work_dir)
    out = Path(out_dir)
    prepared = ensure_prepared(data, ResultsStore(work))
    splits = {name: load_split(prepared, name) for name in ("train", "val", "test")}
    if limit:
        splits["train"] = splits["train"].head(limit)
    torch.set_num_threads(int(recipe["torch_threads"]))
    seed_everything(train_cfg.seed)

    train_ages = splits["train"].age
    context = {"target_mean": float(np.mean(train_ages)), "target_std": float(np.std(train_ages) or 1.0)}
    context |= age_distribution_context(train_cfg.loss)
    model = build_model(recipe["family"], recipe["arch"], MULTITASK, context)
    labels = {split: {name: torch.as_tensor(np.array(arrays.labels(name))) for name in TASKS} for split, arrays in splits.items()}

    state_path = work / STATE_FILE
    resume = None
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved.get("train_config") == train_cfg.to_dict() and saved.get("recipe") == recipe and saved.get("limit") == limit:
            resume = saved
            log(f"[release] resuming after epoch {saved['epoch']} from {state_path}")

    started = time.time()

    def on_epoch(report: Any) -> None:
        m = report.metrics
        log(f"[release] epoch {report.epoch}/{train_cfg.epochs}: val age MAE {m['val_age_mae']:.2f}, gender "
            f"{m['val_gender_accuracy']:.2%}, ethnicity {m['val_ethnicity_accuracy']:.2%}, "
            f"{m['epoch_seconds']:.0f} s, {m['images_per_second']:.0f} img/s{' *' if report.is_best else ''}")
        state = report.training_state() | {"recipe": recipe, "limit": limit}
        partial = state_path.with_suffix(".tmp")
        torch.save(state, partial)
        os.replace(partial, state_path)  # a kill mid-save leaves the previous epoch's state

    result = fit(model, MULTITASK, splits["train"].images(), labels["train"], splits["val"].images(), labels["val"],
                 train_cfg, on_epoch=on_epoch, resume_state=resume)
    wall = time.time() - started

    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out, family=recipe["family"], task=MULTITASK, arch=recipe["arch"])
    test = splits["test"]
    test_labels = {name: np.asarray(test.labels(name)) for name in TASKS}
    evaluation = {}
    for tta in (False, True):
        outputs = predict_outputs(model, test.images(), tta_flip=tta)
        evaluation["tta_flip" if tta else "single_view"] = group_metrics(outputs, test_labels, model.split_outputs)
    manifest = json.loads((prepared / "manifest.json").read_text())
    metrics = {
        "recipe": recipe,
        "train_config": train_cfg.to_dict(),
        "data": {"source": str(manifest.get("source", prepared)), "rows": {k: len(v) for k, v in splits.items()}, "split_seed": manifest.get("seed", 0)},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "shrunk_for_test": bool(epochs or limit),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "val_at_best_epoch": {k: v for k, v in result.best_metrics.items() if k.startswith("val_")},
        "test": evaluation,
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_model_card(out, metrics)
    log(f"[release] wrote {out} in {wall / 60:.1f} min")
    return metrics
