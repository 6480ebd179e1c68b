"""Members already shipped in the release folder that a rerun takes instead of training them again."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facetune.config_keys import RELEASE, with_defaults
from facetune.errors import InvalidInputError
from facetune.models import load_model
from facetune.release.members import train_config
from facetune.release.paths import MEMBERS_DIR, METRICS_FILE
from facetune.release.recipe import MEMBER_KEYS, member_recipes, task_member_dtype, task_member_recipes
from facetune.training.loop import TrainConfig

#: What metrics.json records of each member's fit (and of its second stage under `finetune`); written
#: by the release and read back when a shipped member is reused.
FIT_FIGURES: tuple[str, ...] = ("best_epoch", "epochs_run", "train_seconds", "val_at_best_epoch")


def shipped_metrics(out: Path, recipe: dict[str, Any], data_record: dict[str, Any]) -> tuple[dict, dict] | None:
    """(metrics.json, its recipe with every default filled in) of the release in `out` when its models
    could serve this recipe: trained on the same data file, split seed and split sizes, and stored
    at least as precisely as this recipe stores them; None otherwise."""

    metrics_path = out / METRICS_FILE
    if not metrics_path.is_file():
        return None
    shipped_metrics = json.loads(metrics_path.read_text())
    data = shipped_metrics.get("data") or {}
    same_data = (Path(str(data.get("source"))).name == Path(data_record["source"]).name
                 and data.get("split_seed") == data_record["split_seed"] and data.get("rows") == data_record["rows"]
                 and data.get("input_spec") == data_record.get("input_spec"))  # absent both: 48x48 gray
    old_recipe = with_defaults(shipped_metrics.get("recipe") or {}, RELEASE, str(metrics_path))
    for own in ("member_train", "member_arch"):  # JSON keys are text
        old_recipe[own] = {int(seed): keys for seed, keys in old_recipe[own].items()}
    if not same_data or old_recipe["weights_dtype"] not in ("float32", recipe["weights_dtype"]):
        return None
    return shipped_metrics, old_recipe


def _shipped_fit(out: Path, key: str, entry: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any]:
    """The fit figures of shipped record `key` (with its `train_config`), refused when one is missing."""
    missing = [k for k in FIT_FIGURES if k not in entry]
    if missing:
        raise InvalidInputError(f"{out / METRICS_FILE}: {key} lacks {', '.join(missing)}; rebuild the release or restore the file")
    return {"train_config": config} | {k: entry[k] for k in FIT_FIGURES}


def _seed_fit(shipped_metrics: dict, old: dict[str, Any] | None, new: dict[str, Any] | None, entry: dict[str, Any],
              epochs: int | None) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """(first-stage train config, second-stage train config or None) of a shipped seed when this
    recipe would train the same member; None otherwise. A member shipped without a second stage
    serves as the first stage of a recipe that adds one; one shipped with a second stage only as itself."""
    if old is None or new is None:
        return None
    # Releases written before train_config was recorded ran the recipe unshrunk.
    old_train = entry.get("train_config") or (None if shipped_metrics.get("shrunk_for_test")
                                               else TrainConfig.from_dict(old["train"]).to_dict())
    if old_train != train_config(new["train"], epochs).to_dict() or any(
            old.get(k) != new.get(k) for k in MEMBER_KEYS if k != "train"):
        return None
    old_finetune = (entry.get("finetune") or {}).get("train_config")
    if old_finetune is not None and old_finetune != (new["finetune"] and train_config(new["finetune"], epochs).to_dict()):
        return None
    return old_train, old_finetune


def read_shipped(
    out: Path, shipped_release: tuple[dict, dict] | None, recipe: dict[str, Any], epochs: int | None,
) -> tuple[dict[int, tuple[Any, dict[str, Any]]], dict[str, tuple[Any, dict[str, Any]]]]:
    """(seed -> (model, fit figures), task member name -> (model, fit figures)) for the members
    already in the release folder `out` that this recipe would train again: the same member recipe
    (every TrainConfig default filled in, epochs as run; a task member's weight aside), and stored at
    least as precisely as this recipe stores them, from a release of the same data file, split seed
    and split sizes (`shipped_release`: shipped_metrics of `out`). A release thus grows by a member,
    or by a second stage, without retraining the rest, also where the work folder is gone."""
    if shipped_release is None:
        return {}, {}
    shipped_metrics, old_recipe = shipped_release
    old_seeds, new_seeds = member_recipes(old_recipe), member_recipes(recipe)
    seeds = {}
    for key, entry in (shipped_metrics.get("members") or {}).items():
        configs = _seed_fit(shipped_metrics, old_seeds.get(int(key)), new_seeds.get(int(key)), entry, epochs)
        if configs is not None:
            fitted = _shipped_fit(out, f"members.{key}", entry, configs[0])
            if configs[1] is not None:
                fitted["finetune"] = entry["finetune"]
                _shipped_fit(out, f"members.{key}.finetune", entry["finetune"], configs[1])
            seeds[int(key)] = (load_model(out / MEMBERS_DIR / f"seed-{key}")[0], fitted)
    old_tasks, new_tasks = task_member_recipes(old_recipe), task_member_recipes(recipe)
    tasks = {}
    for name, entry in (shipped_metrics.get("task_members") or {}).items():
        if (name in new_tasks and old_tasks.get(name) == new_tasks[name]
                and task_member_dtype(old_recipe, name) in ("float32", task_member_dtype(recipe, name))
                and entry.get("train_config") == train_config(new_tasks[name]["train"], epochs).to_dict()):
            fitted = _shipped_fit(out, f"task_members.{name}", entry, entry["train_config"])
            tasks[name] = (load_model(out / MEMBERS_DIR / name)[0], fitted)
    return seeds, tasks
