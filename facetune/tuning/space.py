"""Search spaces: YAML (raycfg/search/<family>.yaml + a profile) -> a Ray Tune param_space.

A search file names, per family, the defaults every task starts from, per-task overrides and
the tuned keys. Tuned keys are dotted paths into the trial config ("train.lr", "arch.dense")
mapped to one distribution each, written as data:

    train.lr: {loguniform: [3.0e-4, 3.0e-3]}
    arch.dense: {choice: [[256], [512, 128]]}
"""
from __future__ import annotations

from typing import Any

from ray import tune

from facetune.config_files import config_path, deep_merge, load_yaml, raycfg_dir, set_dotted
from facetune.config_keys import SEARCH, check
from facetune.errors import InvalidInputError
from facetune.records import combination_name
from facetune.tuning.presets import load_preset

SEARCH_DIR = "search"


def sweepable_families(search_dir: str = SEARCH_DIR) -> tuple[str, ...]:
    """The registered model families that have a search space (raycfg/<search_dir>/<family>.yaml)."""
    import facetune.models  # noqa: F401  (registers the built-in families)
    from facetune.models.registry import families

    return tuple(f for f in families() if (raycfg_dir() / search_dir / f"{f}.yaml").is_file())

_DISTRIBUTIONS = {
    "choice": lambda args: tune.choice(args),
    "uniform": lambda args: tune.uniform(*args),
    "loguniform": lambda args: tune.loguniform(*args),
    "randint": lambda args: tune.randint(*args),
    "quniform": lambda args: tune.quniform(*args),
}


def to_distribution(spec: Any) -> Any:
    """{"loguniform": [a, b]} -> tune.loguniform(a, b); a plain value stays a constant."""
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, args), = spec.items()
        if kind in _DISTRIBUTIONS:
            return _DISTRIBUTIONS[kind](args)
        raise ValueError(f"unknown distribution {kind!r}; known: {sorted(_DISTRIBUTIONS)}")
    return spec


def combination_config(family: str, task: str, profile: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fixed part and the tuned part of one combination's trial config.

    Returns (base, space): `base` is the complete trial config with every default filled in
    (from raycfg/search/<family>.yaml, or from a model preset when the profile names one);
    `space` maps dotted keys to YAML distribution specs. The profile may replace the search
    folder (`search_dir`), fix values (`overrides`: {all|family: {dotted_key: value}}) and narrow or widen
    the space (`space_overrides`: {family: {task|all: {dotted_key: spec or null}}}).
    """
    if profile.get("preset"):
        # A fixed preset (e.g. the study's architectures): nothing is tuned.

        entry = load_preset(profile["preset"])[family][task]
        base = {"arch": dict(entry["arch"]), "train": dict(entry["train"])}
        space: dict[str, Any] = {}
    else:
        path = config_path(f"{profile.get('search_dir', SEARCH_DIR)}/{family}.yaml")
        search = load_yaml(path)
        check(search, SEARCH, str(path), context={"family": family})
        task_section = search.get("tasks", {}).get(task, {})
        base = deep_merge(search.get("defaults", {}), {k: v for k, v in task_section.items() if k != "space"})
        space = dict(search.get("space", {}))
        space.update(task_section.get("space", {}))
    base["family"], base["task"] = family, task
    fixed = profile_overrides(profile, family)
    for dotted, value in fixed.items():
        set_dotted(base, dotted, value)
    family_overrides = (profile.get("space_overrides") or {}).get(family, {})
    for scope in ("all", task):
        for dotted, spec in (family_overrides.get(scope) or {}).items():
            if spec is None:
                space.pop(dotted, None)
            else:
                space[dotted] = spec
    # A fixed override wins over a tuned key of the same name.
    for dotted in fixed:
        space.pop(dotted, None)
    for dotted, spec in space.items():
        try:
            to_distribution(spec)
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"{family}/{task}: search key {dotted!r}: {err}") from None
    return base, space


def combination_of(config: dict[str, Any]) -> str:
    """The combination a trial config belongs to ("cnn_age"), from the family and task keys
    combination_config puts in every trial config."""
    return combination_name(config["family"], config["task"])


def profile_overrides(profile: dict[str, Any], family: str) -> dict[str, Any]:
    """The profile's fixed values for `family`: its `overrides.all`, then `overrides.<family>`."""
    overrides = profile.get("overrides") or {}
    return {**(overrides.get("all") or {}), **(overrides.get(family) or {})}


def param_space(base: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """Merge the tuned keys, as Ray Tune distributions, into a copy of `base`."""
    config = deep_merge(base, {})
    for dotted, spec in space.items():
        set_dotted(config, dotted, to_distribution(spec))
    return config
