"""The release recipe (raycfg/release.yaml): read, checked before any training, and each member's share of it."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from facetune.config_files import raycfg_dir
from facetune.config_keys import RELEASE, TASK_MEMBER, check, is_number, with_defaults
from facetune.errors import InputNotFoundError, InvalidInputError
from facetune.models import build_model, make_context
from facetune.models.registry import families, is_multitask_family
from facetune.records import MAX_AGE
from facetune.tasks import MULTITASK, TASKS
from facetune.training.loop import TrainConfig

#: The recipe keys a member's training depends on (a changed description does not retrain).
MEMBER_KEYS = ("family", "arch", "train", "torch_threads")
#: A member's second stage draws its own shuffling and augmentation (seed + this), not a replay of
#: its first stage's order.
FINETUNE_SEED_OFFSET = 100
#: The recipe's `weights_dtype`: how the shipped weights are stored (float16 halves the files).
WEIGHTS_DTYPES: tuple[str, ...] = ("float32", "float16")
#: A task member's name, which is also its folder under members/ (seed-N is taken by the seeds).
TASK_MEMBER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
#: The keys of a task member's entry its training depends on (a changed weight does not retrain).
TASK_MEMBER_KEYS = ("family", "task", "arch", "train", "torch_threads")


def default_recipe_path() -> Path:
    return raycfg_dir() / "release.yaml"


def load_recipe(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The release recipe; unknown keys (facetune.config_keys.RELEASE) and a bad TrainConfig
    fail here, before any training."""
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

