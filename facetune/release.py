"""The release models: trained by one recipe (raycfg/release.yaml), shipped in facetune/pretrained/.

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
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from facetune.errors import InputNotFoundError, InvalidInputError
from facetune.json_files import write_json
from facetune.release_card import figures_line, readme_block_span, task_figure_line, write_model_card, write_readme_figures
from facetune.schema import ENSEMBLE_CONFIG_FILE, MAX_AGE, MODEL_CONFIG_FILE, SPLITS, PreparedManifest

#: Where the shipped models live inside the installed package.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
METRICS_FILE = "metrics.json"
#: The recipe keys a member's training depends on (a changed description does not retrain).
MEMBER_KEYS = ("family", "arch", "train", "torch_threads")
STATE_FILE = "release_state.pt"
FINETUNE_STATE_FILE = "finetune_state.pt"
#: A member's second stage draws its own shuffling and augmentation (seed + this), not a replay of
#: its first stage's order.
FINETUNE_SEED_OFFSET = 100
#: The recipe's `weights_dtype`: how the shipped weights are stored (float16 halves the files).
WEIGHTS_DTYPES: tuple[str, ...] = ("float32", "float16")
MEMBERS_DIR = "members"
#: A task member's name, which is also its folder under members/ (seed-N is taken by the seeds).
TASK_MEMBER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
#: The keys of a task member's entry its training depends on (a changed weight does not retrain).
TASK_MEMBER_KEYS = ("family", "task", "arch", "train", "torch_threads")
#: What metrics.json records of each member's fit (and of its second stage under `finetune`); written
#: by the release and read back when a shipped member is reused.
FIT_FIGURES: tuple[str, ...] = ("best_epoch", "epochs_run", "train_seconds", "val_at_best_epoch")
AGE_BANDS: tuple[tuple[int, int], ...] = ((0, 12), (13, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, MAX_AGE))


def default_recipe_path() -> Path:
    from facetune.config import raycfg_dir

    return raycfg_dir() / "release.yaml"


def load_recipe(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The release recipe; unknown keys (facetune.config_schema.RELEASE) and a bad TrainConfig
    fail here, before any training."""
    from facetune.config_schema import RELEASE, check, is_number, with_defaults
    from facetune.tasks import MULTITASK, TASKS
    from facetune.training.loop import TrainConfig

    recipe_path = Path(path) if path is not None else default_recipe_path()
    if not recipe_path.is_file():
        raise InputNotFoundError(f"--recipe {recipe_path}: no such file")
    recipe = yaml.safe_load(recipe_path.read_text()) or {}
    recipe = with_defaults(recipe, RELEASE, str(recipe_path))
    check(recipe, RELEASE, str(recipe_path), context={"family": recipe["family"]})
    seeds = recipe["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(seed, int) and seed >= 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{recipe_path}: seeds must be distinct non-negative integers, got {seeds!r}")
    if recipe["weights_dtype"] not in WEIGHTS_DTYPES:
        raise InvalidInputError(f"{recipe_path}: weights_dtype {recipe['weights_dtype']!r}; known: {list(WEIGHTS_DTYPES)}")
    for own in ("member_train", "member_arch"):
        strangers = [seed for seed in recipe[own] if seed not in seeds]
        if strangers:
            raise InvalidInputError(f"{recipe_path}: {own} names seed {strangers[0]!r}, which is not in seeds {seeds}")
    for seed, member in member_recipes(recipe).items():  # each seed's own keys merged: every member's config
        train = TrainConfig.from_dict(member["train"])
        if member["finetune"] is not None:
            TrainConfig.from_dict(member["finetune"])
        _refuse_unbuildable(f"{recipe_path}: seed {seed}'s arch", recipe["family"], member["arch"], MULTITASK, train.loss)
    stacked = recipe["stacked_head"]
    classification = [name for name, task in TASKS.items() if task.kind == "classification"]
    tasks = stacked["tasks"]
    if not isinstance(tasks, list) or any(task not in classification for task in tasks) or len(set(tasks)) != len(tasks):
        raise InvalidInputError(f"{recipe_path}: stacked_head.tasks must list distinct tasks of {classification}, got {tasks!r}")
    if not (is_number(stacked["c"]) and stacked["c"] > 0):
        raise InvalidInputError(f"{recipe_path}: stacked_head.c must be a positive number, got {stacked['c']!r}")
    recipe["task_members"] = recipe["task_members"] or {}  # a bare `task_members:` is none
    if not isinstance(recipe["task_members"], dict):
        raise InvalidInputError(f"{recipe_path}: task_members should be a mapping of name to member, not "
                                f"{type(recipe['task_members']).__name__}")
    recipe["task_members"] = {name: _checked_task_member(recipe_path, name, entry, tasks)
                              for name, entry in recipe["task_members"].items()}
    return recipe


def _checked_task_member(recipe_path: Path, name: Any, entry: Any, stacked_tasks: list[str]) -> dict[str, Any]:
    """One `task_members` entry with its defaults filled in; anything the release could not train
    or ship (a bad name, family, task, key or train config) is refused with the entry named."""
    from facetune.config_schema import TASK_MEMBER, check, is_number, with_defaults
    from facetune.models.registry import families, is_multitask_family
    from facetune.tasks import TASKS
    from facetune.training.loop import TrainConfig

    where = f"{recipe_path}: task_members.{name}"
    if not isinstance(name, str) or not TASK_MEMBER_NAME.fullmatch(name) or re.fullmatch(r"seed-\d+", name):
        raise InvalidInputError(f"{where}: a task member's name is lower-case letters, digits, '-' and '_' "
                                "(and not seed-N, the seeds' folders)")
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where} should be a mapping, not {type(entry).__name__}")
    single_task = [family for family in families() if not is_multitask_family(family)]
    if entry.get("family") not in single_task:
        raise InvalidInputError(f"{where}.family: {entry.get('family')!r}; a task member is one of {single_task}")
    classification = [task for task, spec in TASKS.items() if spec.kind == "classification"]
    if entry.get("task") not in classification:
        raise InvalidInputError(f"{where}.task: {entry.get('task')!r}; a task member answers one of {classification} "
                                "(averaging ages of differently shaped heads is not defined)")
    if entry["task"] in stacked_tasks:
        raise InvalidInputError(f"{where}.task: {entry['task']} has a stacked head (stacked_head.tasks), which would ignore it")
    entry = with_defaults(entry, TASK_MEMBER, str(recipe_path), prefix=f"task_members.{name}.")
    check(entry, TASK_MEMBER, str(recipe_path), prefix=f"task_members.{name}.", context={"family": entry["family"]})
    if not (is_number(entry["weight"]) and entry["weight"] > 0):
        raise InvalidInputError(f"{where}.weight must be a positive number, got {entry['weight']!r}")
    if entry["weights_dtype"] not in (None, *WEIGHTS_DTYPES):
        raise InvalidInputError(f"{where}.weights_dtype: {entry['weights_dtype']!r}; known: {list(WEIGHTS_DTYPES)} or null")
    try:
        train = TrainConfig.from_dict(entry["train"])
    except (ValueError, TypeError, KeyError) as err:
        raise InvalidInputError(f"{where}: {err}") from None
    _refuse_unbuildable(where, entry["family"], entry["arch"], entry["task"], train.loss)
    return entry


def _refuse_unbuildable(where: str, family: str, arch: dict[str, Any], task: str, loss: str | None) -> None:
    """Raise InvalidInputError (`where: reason`) when a member of this shape cannot be built. Seeds
    and task members are built once when the recipe is read (milliseconds), with the context the
    release trains them with, so such a shape is refused before the members ahead of it train for hours."""
    from facetune.models import build_model, make_context

    try:
        build_model(family, arch, task, make_context(task, [0, MAX_AGE], loss=loss))
    except (ValueError, TypeError, KeyError) as err:
        raise InvalidInputError(f"{where}: {err}") from None


def task_member_dtype(recipe: dict[str, Any], name: str) -> str:
    """How task member `name`'s weights are stored: its own weights_dtype, else the recipe's."""
    return recipe["task_members"][name].get("weights_dtype") or recipe["weights_dtype"]


def task_member_recipes(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> what that task member is trained from (TASK_MEMBER_KEYS; torch_threads is the recipe's)."""
    return {name: {key: entry[key] for key in TASK_MEMBER_KEYS if key in entry} | {"torch_threads": recipe["torch_threads"]}
            for name, entry in (recipe.get("task_members") or {}).items()}


def member_recipes(recipe: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """seed -> what that member is trained from: the recipe's training keys, with the seed's own
    `member_train` keys and train.seed set, its arch with its own `member_arch` keys, and under
    "finetune" its second stage's whole train config (None without one)."""
    own_train, own_arch = recipe.get("member_train") or {}, recipe.get("member_arch") or {}
    members = {}
    for seed in recipe["seeds"]:
        train = {**recipe["train"], **own_train.get(seed, {}), "seed": seed}
        finetune = recipe.get("finetune") or {}
        shape = {"arch": {**recipe["arch"], **own_arch[seed]}} if seed in own_arch else {}
        members[seed] = ({key: recipe[key] for key in MEMBER_KEYS if key in recipe} | shape | {"train": train}
                         | {"finetune": {**train, **finetune, "seed": seed + FINETUNE_SEED_OFFSET} if finetune else None})
    return members


def shipped_models_present(release_dir: Path | None = None) -> bool:
    """Whether `release_dir` (default: the package's pretrained/) holds a loadable release."""
    folder = PRETRAINED_DIR if release_dir is None else Path(release_dir)
    return (folder / ENSEMBLE_CONFIG_FILE).is_file() or (folder / MODEL_CONFIG_FILE).is_file()


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
    readme: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
    val_only: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Train the release recipe's members and write the ensemble, metrics and model card into `out_dir`.

    `epochs` and `limit` (train rows) shrink the run for tests; a shrunk run's card says so.
    `readme` also gets its release-figures block rewritten (facetune.release_card.readme_figures).
    `device` trains there (None: the first GPU when there is one, else the CPU; a member's state
    moves between them on a rerun); the shipped files are evaluated on the CPU either way.
    `val_only` trains (or reuses) the members as usual but stops at the validation figures of the
    ensemble as it would ship and of each member ({"val": ..., "members": {seed: ...}}, each per
    group), writing nothing outside `work_dir` and never touching test: the way to judge a recipe
    change before the one test evaluation.
    """
    import torch

    from facetune.data.loading import load_split
    from facetune.data.prepare import ensure_prepared
    from facetune.devices import describe_device, resolve_device
    from facetune.models import load_model, save_model
    from facetune.models.ensemble import write_ensemble_config, write_stacked_heads
    from facetune.storage import ResultsStore
    from facetune.tasks import MULTITASK, TASKS
    from facetune.training.loop import predict_outputs

    for flag, value in (("--epochs", epochs), ("--limit", limit)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{flag} {value}: must be at least 1 (leave it out for the recipe's own)")
    recipe = load_recipe(recipe_path)
    train_device = resolve_device(device)
    if val_only and readme is not None:
        raise InvalidInputError(f"{readme}: a validation-only run writes no figures; leave out the README")
    if readme is not None:
        readme_block_span(Path(readme))  # refused now, not after hours of training
    out = Path(out_dir)
    if not val_only and out.exists() and any(out.iterdir()) and not (out / METRICS_FILE).is_file():
        raise ValueError(f"{out}: not a release folder (no {METRICS_FILE}); refusing to replace it")
    work = Path(work_dir)
    prepared = ensure_prepared(data, ResultsStore(work))
    splits = {name: load_split(prepared, name) for name in SPLITS}
    if limit:
        splits["train"] = splits["train"].head(limit)
    torch.set_num_threads(int(recipe["torch_threads"]))

    manifest = PreparedManifest.read(prepared)
    data_record = {"source": manifest.source, "rows": {k: len(v) for k, v in splits.items()}, "split_seed": manifest.seed}
    shipped_release = _shipped_metrics(out, recipe, data_record)
    reusable = _read_shipped(out, shipped_release, recipe, epochs)
    reusable_tasks = _read_shipped_task_members(out, shipped_release, recipe, epochs)
    log(f"[release] training on {describe_device(train_device)}")
    started = time.time()
    members, recipes = {}, member_recipes(recipe)
    for seed, member in recipes.items():
        if seed in reusable and not (work / f"seed-{seed}" / STATE_FILE).is_file():
            model, fitted = reusable[seed]
            log(f"[release] seed {seed}: taken from {out} (trained by the same member recipe on the same split"
                f"{'' if 'finetune' in fitted or member['finetune'] is None else '; its second stage is still to run'})")
        else:
            model, fitted = _train_member(member, splits, work / f"seed-{seed}", epochs, limit, log, train_device)
        if member["finetune"] is not None and "finetune" not in fitted:
            model, fitted = _finetune_member(model, fitted, member, recipe["weights_dtype"], splits, work / f"seed-{seed}",
                                             epochs, limit, log, train_device)
        members[seed] = (model, fitted)
    task_members = {}
    for name, entry in task_member_recipes(recipe).items():
        if name in reusable_tasks and not (work / name / STATE_FILE).is_file():
            task_members[name] = reusable_tasks[name]
            log(f"[release] task member {name}: taken from {out} (trained by the same recipe on the same split)")
        else:
            task_members[name] = _train_member(entry, splits, work / name, epochs, limit, log, train_device, task=entry["task"])
    wall = time.time() - started

    # Written beside `out` and swapped in, so a failure never leaves half a release behind.
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
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
    # The figures are those of what ships: the ensemble and its members loaded back from the files.
    ensemble, _ = load_model(staging)
    averaged_heads, stacked_record = None, {}
    if recipe["stacked_head"]["tasks"]:
        heads, stacked_record = _fit_stacked_heads(ensemble.members, splits["train"], recipe["stacked_head"], log)
        write_stacked_heads(staging, heads)
        write_ensemble_config(staging, MULTITASK, entries, extra={"stacked_heads": sorted(heads)})
        averaged_heads, (ensemble, _) = ensemble, load_model(staging)
    shipped = dict(zip(members, ensemble.members))
    shipped_tasks = dict(zip(task_members, ensemble.task_members))

    def evaluate(model: torch.nn.Module, split: str, tta: bool) -> dict[str, dict]:
        arrays = splits[split]
        outputs = predict_outputs(model, arrays.images(), tta_flip=tta)
        return group_metrics(outputs, {name: np.asarray(arrays.labels(name)) for name in TASKS}, model.split_outputs)

    def evaluate_task_member(name: str, split: str) -> dict[str, float]:
        """A task member alone, flip averaging, on its own task."""
        task = recipe["task_members"][name]["task"]
        outputs = predict_outputs(shipped_tasks[name], splits[split].images(), tta_flip=True)
        return {"task": task, **TASKS[task].metrics(np.asarray(splits[split].labels(task)), outputs)}

    # One evaluation of val, which a validation-only run returns and a release records.
    val = evaluate(ensemble, "val", True)
    val_averaged_heads = evaluate(averaged_heads, "val", True) if averaged_heads is not None else None
    if val_only:
        shutil.rmtree(staging, ignore_errors=True)
        figures = {"val": val, "members": {str(seed): evaluate(model, "val", True) for seed, model in shipped.items()},
                   "task_members": {name: evaluate_task_member(name, "val") for name in shipped_tasks}}
        if val_averaged_heads is not None:
            figures["val_averaged_heads"] = val_averaged_heads
        log(f"[release] val, ensemble of {' + '.join([str(len(shipped)), *shipped_tasks])}, flip averaging: "
            f"{figures_line(figures['val']['overall'])}")
        if val_averaged_heads is not None:
            log(f"[release] val, the same with averaged heads: {figures_line(val_averaged_heads['overall'])}")
        for seed, groups in figures["members"].items():
            log(f"[release] val, seed {seed} alone, flip averaging: {figures_line(groups['overall'])}")
        for name, figure in figures["task_members"].items():
            log(f"[release] val, task member {name} alone, flip averaging: {task_figure_line(figure)}")
        return figures

    evaluation = {("tta_flip" if tta else "single_view"): evaluate(ensemble, "test", tta) for tta in (False, True)}
    metrics = {
        "recipe": recipe,
        "data": data_record,
        "members": {
            str(seed): {
                "train_config": result["train_config"],
                **{k: result[k] for k in FIT_FIGURES},
                **({"finetune": result["finetune"]} if "finetune" in result else {}),
                "test_tta_flip": evaluate(shipped[seed], "test", True)["overall"],
            }
            for seed, (_, result) in members.items()
        },
        "task_members": {
            name: {
                "train_config": result["train_config"],
                **{k: result[k] for k in FIT_FIGURES},
                "test_tta_flip": evaluate_task_member(name, "test"),
            }
            for name, (_, result) in task_members.items()
        },
        "train_seconds": sum(result["train_seconds"] for _, result in [*members.values(), *task_members.values()]),
        "wall_seconds": wall,
        "shrunk_for_test": bool(epochs or limit),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs" + (f", {describe_device(train_device)}" if train_device.type != "cpu" else "")
                   + f", torch {torch.__version__}",
        "val": val["overall"],
        "test": evaluation,
    }
    if averaged_heads is not None:  # what the stacked heads replaced, for the card
        metrics["stacked_head"] = stacked_record | {
            "val_averaged_heads": val_averaged_heads["overall"],
            "test_averaged_heads": evaluate(averaged_heads, "test", True)["overall"],
        }
    write_json(staging / METRICS_FILE, metrics, sort_keys=True)
    write_model_card(staging, metrics)
    _swap_in(staging, out)
    if readme is not None:
        write_readme_figures(Path(readme), metrics)
    counted = f"{len(members)} members" + (f" and {len(task_members)} task members" if task_members else "")
    log(f"[release] wrote {out}: {counted}, {metrics['train_seconds'] / 60:.0f} min of training in all "
        f"({wall / 60:.1f} min in this run)")
    return metrics


def _fit_stacked_heads(
    members: Any, train: Any, settings: dict[str, Any], log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """({task: nn.Linear}, facts for metrics.json): the recipe's stacked heads, fitted on the train
    split's joined trunk features of the members as shipped."""
    from facetune.tasks import TASKS
    from facetune.training.stacking import fit_stacked_head, joined_features

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


def _train_member(
    member: dict[str, Any], splits: dict[str, Any], work: Path, epochs: int | None, limit: int | None,
    log: Callable[[str], None], device: Any, task: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume, or reuse when finished) one seed's model, or with `task` one task member
    (`member` then being its task_member_recipes entry); returns it with its fit figures."""
    import torch

    from facetune.config_schema import RELEASE, with_defaults
    from facetune.models import build_model, make_context
    from facetune.tasks import MULTITASK
    from facetune.training.loop import seed_everything

    train_cfg = _train_config(member["train"], epochs)
    seed_everything(train_cfg.seed)
    context = make_context(task or MULTITASK, splits["train"].age, loss=train_cfg.loss)
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
    return _fit_resumably(model, train_cfg, splits, state_path, resume, {"recipe": member, "limit": limit}, name, log, device,
                          task=task)


def _finetune_member(
    base: Any, base_fitted: dict[str, Any], member: dict[str, Any], weights_dtype: str, splits: dict[str, Any], work: Path,
    epochs: int | None, limit: int | None, log: Callable[[str], None], device: Any,
) -> tuple[Any, dict[str, Any]]:
    """A member's second stage (the recipe's `finetune`), from its first stage's weights as they
    would ship (rounded to `weights_dtype`), so that a rebuild from scratch and one that starts from
    the package's first-stage members fine-tune the same weights. Resumable like the first stage."""
    import copy

    import torch

    from facetune.training.loop import seed_everything

    train_cfg = _train_config(member["finetune"], epochs)
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
    resume = None
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved.get("train_config") == train_cfg.to_dict() and saved.get("identity") == identity:
            resume = saved
    model, fitted = _fit_resumably(model, train_cfg, splits, state_path, resume, {"identity": identity},
                                   f"seed {member['train']['seed']} fine-tune", log, device)
    return model, base_fitted | {"train_seconds": base_fitted["train_seconds"] + fitted["train_seconds"], "finetune": fitted}


def _train_config(keys: dict[str, Any], epochs: int | None) -> Any:
    """The TrainConfig a stage runs: its recipe keys, with --epochs (a quick check's shrink) over them."""
    from facetune.training.loop import TrainConfig

    return TrainConfig.from_dict({**keys, **({"epochs": epochs} if epochs else {})})


def _fit_resumably(
    model: Any, train_cfg: Any, splits: dict[str, Any], state_path: Path, resume: dict | None, extra_state: dict[str, Any],
    name: str, log: Callable[[str], None], device: Any, task: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """fit() on the train split (val picks the epoch) on `device`, saving its state to `state_path`
    after every epoch (with `extra_state`, which the caller compares before resuming from it).
    `task`: a single-task model's task; None for a multitask model. The model comes back on the CPU."""
    import torch

    from facetune.tasks import MULTITASK, TASKS
    from facetune.training.loop import fit

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
                 train_cfg, on_epoch=on_epoch, resume_state=resume)
    model.to("cpu")
    return model, {
        "train_config": train_cfg.to_dict(),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,  # summed over epochs, so a resumed member reports its whole training
        "val_at_best_epoch": {k: v for k, v in result.best_metrics.items() if k.startswith("val_")},
    }


def _shipped_metrics(out: Path, recipe: dict[str, Any], data_record: dict[str, Any]) -> tuple[dict, dict] | None:
    """(metrics.json, its recipe with every default filled in) of the release in `out` when its models
    could serve this recipe: trained on the same data file, split seed and split sizes, and stored
    at least as precisely as this recipe stores them; None otherwise."""
    import json

    from facetune.config_schema import RELEASE, with_defaults

    metrics_path = out / METRICS_FILE
    if not metrics_path.is_file():
        return None
    shipped_metrics = json.loads(metrics_path.read_text())
    data = shipped_metrics.get("data") or {}
    same_data = (Path(str(data.get("source"))).name == Path(data_record["source"]).name
                 and data.get("split_seed") == data_record["split_seed"] and data.get("rows") == data_record["rows"])
    old_recipe = with_defaults(shipped_metrics.get("recipe") or {}, RELEASE, str(metrics_path))
    for own in ("member_train", "member_arch"):  # JSON keys are text
        old_recipe[own] = {int(seed): keys for seed, keys in old_recipe[own].items()}
    if not same_data or old_recipe["weights_dtype"] not in ("float32", recipe["weights_dtype"]):
        return None
    return shipped_metrics, old_recipe


def _check_fit_figures(out: Path, name: str, record: dict[str, Any]) -> None:
    """A shipped member's record `name` in out/metrics.json must hold every FIT_FIGURES key to be reused."""
    missing = [k for k in FIT_FIGURES if k not in record]
    if missing:
        raise InvalidInputError(f"{out / METRICS_FILE}: {name} lacks {', '.join(missing)}; rebuild the release or restore the file")


def _read_shipped(
    out: Path, shipped_release: tuple[dict, dict] | None, recipe: dict[str, Any], epochs: int | None,
) -> dict[int, tuple[Any, dict[str, Any]]]:
    """seed -> (model, fit figures) for the members already in the release folder `out`
    that this recipe would train again: same member recipe (every TrainConfig default filled in,
    epochs as run), same data file, split seed and split sizes, and stored at least as precisely as
    this recipe stores them (`shipped_release`: _shipped_metrics of `out`). A member shipped without a second stage serves as the first stage of
    a recipe that adds one (no `finetune` in its figures); one shipped with a second stage only as itself. A
    release thus grows by a member, or by a second stage, without retraining the rest, also on a
    machine whose work folder is gone."""
    from facetune.models import load_model
    from facetune.training.loop import TrainConfig

    if shipped_release is None:
        return {}
    shipped_metrics, old_recipe = shipped_release
    old_members, new_members = member_recipes(old_recipe), member_recipes(recipe)
    reusable = {}
    for seed_key, entry in (shipped_metrics.get("members") or {}).items():
        seed = int(seed_key)
        if seed not in new_members or seed not in old_members:
            continue
        # Releases written before train_config was recorded ran the recipe unshrunk.
        old_train = entry.get("train_config") or (None if shipped_metrics.get("shrunk_for_test")
                                                   else TrainConfig.from_dict(old_members[seed]["train"]).to_dict())
        new = new_members[seed]
        new_train = _train_config(new["train"], epochs).to_dict()
        if old_train != new_train or any(
                old_members[seed].get(k) != new.get(k) for k in MEMBER_KEYS if k != "train"):
            continue
        old_finetune = (entry.get("finetune") or {}).get("train_config")
        new_finetune = new["finetune"] and _train_config(new["finetune"], epochs).to_dict()
        if old_finetune is not None and old_finetune != new_finetune:
            continue
        records = {f"members.{seed_key}": entry} | ({f"members.{seed_key}.finetune": entry["finetune"]}
                                                     if old_finetune is not None else {})
        for name, record in records.items():
            _check_fit_figures(out, name, record)
        model, _ = load_model(out / MEMBERS_DIR / f"seed-{seed}")
        fitted = {"train_config": old_train} | {k: entry[k] for k in FIT_FIGURES}
        reusable[seed] = (model, fitted | ({"finetune": entry["finetune"]} if old_finetune is not None else {}))
    return reusable


def _read_shipped_task_members(
    out: Path, shipped_release: tuple[dict, dict] | None, recipe: dict[str, Any], epochs: int | None,
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (model, fit figures) for the task members already in the release folder `out` that
    this recipe would train again (same entry but its weight, same data and split, stored at least
    as precisely), as _read_shipped does for the seeds."""
    from facetune.models import load_model

    if shipped_release is None:
        return {}
    shipped_metrics, old_recipe = shipped_release
    old_members, new_members = task_member_recipes(old_recipe), task_member_recipes(recipe)
    reusable = {}
    for name, entry in (shipped_metrics.get("task_members") or {}).items():
        if name not in new_members or old_members.get(name) != new_members[name]:
            continue
        if task_member_dtype(old_recipe, name) not in ("float32", task_member_dtype(recipe, name)):
            continue  # stored less precisely than this recipe stores it
        if entry.get("train_config") != _train_config(new_members[name]["train"], epochs).to_dict():
            continue
        _check_fit_figures(out, f"task_members.{name}", entry)
        model, _ = load_model(out / MEMBERS_DIR / name)
        reusable[name] = (model, {"train_config": entry["train_config"]} | {k: entry[k] for k in FIT_FIGURES})
    return reusable


def _swap_in(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` (both beside each other), keeping the old one until the new is in place."""
    retired = out.with_name(f".{out.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if out.exists():
        os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)
