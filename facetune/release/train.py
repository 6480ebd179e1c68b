"""Training the whole release: the recipe's members, the ensemble that ships, its figures and card.

`train_release` prepares the data and trains the recipe once per seed in `seeds` on the train
split (val chooses each member's epoch), and each of its `task_members` (a single-task classifier
of another family) the same way. They are shipped as one ensemble (ensemble.json plus
members/seed-N/ and members/NAME/), which averages their predictions task by task, a task member
joining its own task only. The ensemble is evaluated once on test, overall and per group, beside
each member alone, and a model card records the figures and the sha256 of every shipped file.
Each member keeps its own per-epoch state in the work folder, so an interrupted release training
loses at most one epoch of one member, and a rerun reuses finished members.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from facetune.data.loading import load_split
from facetune.data.prepare import ensure_prepared
from facetune.devices import describe_device, resolve_device
from facetune.errors import InvalidInputError
from facetune.json_files import write_json
from facetune.models import load_model, save_model
from facetune.models.ensemble import write_ensemble_config, write_stacked_heads
from facetune.records import DEFAULT_INPUT_SPEC, SPLITS, InputSpec, PreparedManifest
from facetune.release.card import (
    figures_block_span,
    figures_line,
    task_figure_line,
    write_docs_figures,
    write_model_card,
)
from facetune.release.evaluation import evaluate, evaluate_task_member
from facetune.release.members import STATE_FILE, finetune_member, fit_stacked_heads, train_member
from facetune.release.paths import MEMBERS_DIR, METRICS_FILE, PRETRAINED_DIR, STUDENT_DIR_NAME
from facetune.release.recipe import load_recipe, member_recipes, task_member_dtype, task_member_recipes
from facetune.release.reuse import FIT_FIGURES, read_shipped, shipped_metrics
from facetune.storage import ResultsStore
from facetune.tasks import MULTITASK

Log = Callable[[str], None]
#: (model, its fit figures) of each member by seed, and of each task member by name.
Members = dict[int, tuple[Any, dict[str, Any]]]
TaskMembers = dict[str, tuple[Any, dict[str, Any]]]


def train_release(
    data: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] = PRETRAINED_DIR,
    recipe_path: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    docs: str | os.PathLike[str] | None = None,
    log: Log = print,
    val_only: bool = False,
    device: str | None = None,
    spec: InputSpec | None = None,
) -> dict[str, Any]:
    """Train the release recipe's members and write the ensemble, metrics and model card into `out_dir`.

    `epochs` and `limit` (train rows) shrink the run for tests; a shrunk run's card says so.
    `docs` (docs/release-models.md) also gets its release-figures block rewritten (card.docs_figures).
    `device` trains there (None: the first GPU when there is one, else the CPU; a member's state
    moves between them on a rerun); the shipped files are evaluated on the CPU either way.
    `val_only` trains (or reuses) the members as usual but stops at the validation figures of the
    ensemble as it would ship and of each member ({"val": ..., "members": {seed: ...}}, each per
    group), writing nothing outside `work_dir` and never touching test: the way to judge a recipe
    change before the one test evaluation. `spec` (--size/--color) prepares a raw `data` in that
    layout, so the members take it (None: the default, or a prepared folder's own).
    """
    check_shrink(epochs, limit)
    recipe = load_recipe(recipe_path)
    train_device = resolve_device(device)
    if val_only and docs is not None:
        raise InvalidInputError(f"{docs}: a validation-only run writes no figures; leave out --docs")
    if docs is not None:
        figures_block_span(Path(docs))  # refused now, not after hours of training
    out, work = Path(out_dir), Path(work_dir)
    if not val_only and out.exists() and any(out.iterdir()) and not (out / METRICS_FILE).is_file():
        raise ValueError(f"{out}: not a release folder (no {METRICS_FILE}); refusing to replace it")
    splits, data_record = release_splits(data, work, limit, spec)
    torch.set_num_threads(int(recipe["torch_threads"]))

    log(f"[release] training on {describe_device(train_device)}")
    started = time.time()
    members, task_members = _train_or_reuse(recipe, splits, out, work, data_record, epochs, limit, log, train_device)
    wall = time.time() - started

    # Written beside `out` and swapped in, so a failure never leaves half a release behind.
    staging = out.with_name(f".{out.name}.staging")
    ensemble, averaged_heads, stacked_record = _stage(staging, recipe, members, task_members, splits["train"], log)
    if val_only:
        shutil.rmtree(staging, ignore_errors=True)
        return _val_figures(ensemble, averaged_heads, members, task_members, recipe, splits["val"], log)
    metrics = _release_metrics(ensemble, averaged_heads, stacked_record, members, task_members, recipe, splits) | {
        "data": data_record,
        "wall_seconds": wall,
        "shrunk_for_test": bool(epochs or limit),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
                   + (f", {describe_device(train_device)}" if train_device.type != "cpu" else "") + f", torch {torch.__version__}",
    }
    write_json(staging / METRICS_FILE, metrics, sort_keys=True)
    if (out / STUDENT_DIR_NAME).is_dir():
        # The fast model stays; its card section says so when it was distilled from another build.
        shutil.copytree(out / STUDENT_DIR_NAME, staging / STUDENT_DIR_NAME)
    write_model_card(staging, metrics)
    _swap_in(staging, out)
    if docs is not None:
        write_docs_figures(Path(docs), metrics)
    counted = f"{len(members)} members" + (f" and {len(task_members)} task members" if task_members else "")
    log(f"[release] wrote {out}: {counted}, {metrics['train_seconds'] / 60:.0f} min of training in all "
        f"({wall / 60:.1f} min in this run)")
    return metrics


def check_shrink(epochs: int | None, limit: int | None) -> None:
    """Refuse a quick check's --epochs or --limit below 1, before anything is read or trained."""
    for flag, value in (("--epochs", epochs), ("--limit", limit)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{flag} {value}: must be at least 1 (leave it out for the recipe's own)")


def release_splits(data: str | os.PathLike[str] | None, work: Path, limit: int | None,
                   spec: InputSpec | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every split of the prepared data (train cut to `limit` rows; a raw source prepared in `spec`'s
    layout, None: the default or a prepared folder's own), and the data's record for metrics.json."""
    prepared = ensure_prepared(data, ResultsStore(work), spec)
    splits = {name: load_split(prepared, name) for name in SPLITS}
    if limit:
        splits["train"] = splits["train"].head(limit)
    manifest = PreparedManifest.read(prepared)
    record = {"source": manifest.source, "rows": {k: len(v) for k, v in splits.items()}, "split_seed": manifest.seed}
    if manifest.spec != DEFAULT_INPUT_SPEC:  # the default stays unrecorded, as in every release before specs
        record["input_spec"] = manifest.spec.to_dict()
    return splits, record


def _train_or_reuse(
    recipe: dict[str, Any], splits: dict[str, Any], out: Path, work: Path, data_record: dict[str, Any],
    epochs: int | None, limit: int | None, log: Log, device: torch.device,
) -> tuple[Members, TaskMembers]:
    """Every member and task member: taken from the release in `out` when it was trained by the same
    recipe and no training of it is under way in `work`, else trained (or resumed) there."""
    reusable, reusable_tasks = read_shipped(out, shipped_metrics(out, recipe, data_record), recipe, epochs)

    def shipped(folder: str, reusable: dict) -> tuple[Any, dict[str, Any]] | None:
        key = int(folder.removeprefix("seed-")) if folder.startswith("seed-") else folder
        return reusable.get(key) if not (work / folder / STATE_FILE).is_file() else None

    members = {}
    for seed, member in member_recipes(recipe).items():
        taken = shipped(f"seed-{seed}", reusable)
        if taken is not None:
            model, fitted = taken
            log(f"[release] seed {seed}: taken from {out} (trained by the same member recipe on the same split"
                f"{'' if 'finetune' in fitted or member['finetune'] is None else '; its second stage is still to run'})")
        else:
            model, fitted = train_member(member, splits, work / f"seed-{seed}", epochs, limit, log, device)
        if member["finetune"] is not None and "finetune" not in fitted:
            model, fitted = finetune_member(model, fitted, member, recipe["weights_dtype"], splits, work / f"seed-{seed}",
                                            epochs, limit, log, device)
        members[seed] = (model, fitted)
    task_members = {}
    for name, entry in task_member_recipes(recipe).items():
        task_members[name] = shipped(name, reusable_tasks)
        if task_members[name] is not None:
            log(f"[release] task member {name}: taken from {out} (trained by the same recipe on the same split)")
        else:
            task_members[name] = train_member(entry, splits, work / name, epochs, limit, log, device, task=entry["task"])
    return members, task_members


def _stage(
    staging: Path, recipe: dict[str, Any], members: Members, task_members: TaskMembers, train: Any, log: Log,
) -> tuple[Any, Any, dict[str, Any]]:
    """Write the members and the ensemble's config into `staging` and load them back, so that the
    figures are those of what ships: (the ensemble, the ensemble with averaged heads where the
    recipe stacks some, else None, the stacked heads' record)."""
    shutil.rmtree(staging, ignore_errors=True)
    recipes = member_recipes(recipe)
    for seed, (model, _) in members.items():
        save_model(model, staging / MEMBERS_DIR / f"seed-{seed}", family=recipe["family"], task=MULTITASK, arch=recipes[seed]["arch"],
                   weights_dtype=getattr(torch, recipe["weights_dtype"]))
    for name, (model, _) in task_members.items():
        entry = recipe["task_members"][name]
        save_model(model, staging / MEMBERS_DIR / name, family=entry["family"], task=entry["task"], arch=entry["arch"],
                   weights_dtype=getattr(torch, task_member_dtype(recipe, name)))
    entries = [{"dir": f"{MEMBERS_DIR}/seed-{seed}", "weight": 1.0} for seed in members]
    entries += [{"dir": f"{MEMBERS_DIR}/{name}", "weight": float(recipe["task_members"][name]["weight"])} for name in task_members]
    write_ensemble_config(staging, MULTITASK, entries)
    ensemble, _ = load_model(staging)
    if not recipe["stacked_head"]["tasks"]:
        return ensemble, None, {}
    heads, stacked_record = fit_stacked_heads(ensemble.members, train, recipe["stacked_head"], log)
    write_stacked_heads(staging, heads)
    write_ensemble_config(staging, MULTITASK, entries, extra={"stacked_heads": sorted(heads)})
    return load_model(staging)[0], ensemble, stacked_record


def _val_figures(
    ensemble: Any, averaged_heads: Any, members: Members, task_members: TaskMembers, recipe: dict[str, Any], val: Any, log: Log,
) -> dict[str, Any]:
    """A validation-only run's figures (per group, flip averaging), logged as well."""
    figures = {"val": evaluate(ensemble, val, True),
               "members": {str(seed): evaluate(model, val, True) for seed, model in zip(members, ensemble.members)},
               "task_members": {name: evaluate_task_member(model, recipe["task_members"][name]["task"], val)
                                for name, model in zip(task_members, ensemble.task_members)}}
    if averaged_heads is not None:
        figures["val_averaged_heads"] = evaluate(averaged_heads, val, True)
    log(f"[release] val, ensemble of {' + '.join([str(len(members)), *task_members])}, flip averaging: "
        f"{figures_line(figures['val']['overall'])}")
    if averaged_heads is not None:
        log(f"[release] val, the same with averaged heads: {figures_line(figures['val_averaged_heads']['overall'])}")
    for seed, groups in figures["members"].items():
        log(f"[release] val, seed {seed} alone, flip averaging: {figures_line(groups['overall'])}")
    for name, figure in figures["task_members"].items():
        log(f"[release] val, task member {name} alone, flip averaging: {task_figure_line(figure)}")
    return figures


def _release_metrics(
    ensemble: Any, averaged_heads: Any, stacked_record: dict[str, Any], members: Members, task_members: TaskMembers,
    recipe: dict[str, Any], splits: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json's figures: val once, then the one evaluation of test, of the ensemble (one view
    and flip averaging, per group) and of each member alone."""
    val, test = splits["val"], splits["test"]
    metrics = {
        "recipe": recipe,
        "val": evaluate(ensemble, val, True)["overall"],
        "test": {("tta_flip" if tta else "single_view"): evaluate(ensemble, test, tta) for tta in (False, True)},
        "members": {
            str(seed): {"train_config": fitted["train_config"], **{k: fitted[k] for k in FIT_FIGURES},
                        **({"finetune": fitted["finetune"]} if "finetune" in fitted else {}),
                        "test_tta_flip": evaluate(model, test, True)["overall"]}
            for (seed, (_, fitted)), model in zip(members.items(), ensemble.members)
        },
        "task_members": {
            name: {"train_config": fitted["train_config"], **{k: fitted[k] for k in FIT_FIGURES},
                   "test_tta_flip": evaluate_task_member(model, recipe["task_members"][name]["task"], test)}
            for (name, (_, fitted)), model in zip(task_members.items(), ensemble.task_members)
        },
        "train_seconds": sum(fitted["train_seconds"] for _, fitted in [*members.values(), *task_members.values()]),
    }
    if averaged_heads is not None:  # what the stacked heads replaced, for the card
        metrics["stacked_head"] = stacked_record | {
            "val_averaged_heads": evaluate(averaged_heads, val, True)["overall"],
            "test_averaged_heads": evaluate(averaged_heads, test, True)["overall"],
        }
    return metrics


def _swap_in(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` (both beside each other), keeping the old one until the new is in place."""
    retired = out.with_name(f".{out.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if out.exists():
        os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)
