"""Sweep profiles (raycfg/profiles/<name>.yaml): how big a search, on what resources."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from facetune.config import load_yaml
from facetune.models.registry import is_multitask_family
from facetune.schema import MULTITASK, TASK_NAMES
from facetune.tuning.space import SEARCH_DIR, sweepable_families

REQUIRED_KEYS = ("num_samples", "max_epochs", "scheduler", "trial_resources")


def load_profile(name_or_path: str) -> dict[str, Any]:
    """A profile by name (raycfg/profiles/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    profile = load_yaml(path) if path.suffix in (".yaml", ".yml") else load_yaml(f"profiles/{name_or_path}.yaml")
    missing = [key for key in REQUIRED_KEYS if key not in profile]
    if missing:
        raise ValueError(f"profile {name_or_path!r} lacks {', '.join(missing)}")
    profile.setdefault("name", path.stem)
    return profile


def combinations(profile: dict[str, Any], only: list[str] | None = None) -> list[tuple[str, str]]:
    """The (family, task) pairs a sweep runs: the profile's `combinations` ("all" or a list of
    "family/task"), narrowed by `only` (the same notation) when given.

    "all" means every task of the families the profile sizes (the keys of its per-family
    num_samples mapping), or of every sweepable family when num_samples is one number. A
    multitask family has one combination, FAMILY/all: one search for the three tasks.
    """
    wanted = profile.get("combinations", "all")
    sweepable = sweepable_families(profile.get("search_dir", SEARCH_DIR))
    if wanted == "all":
        pairs = [pair for family in sized_families(profile, sweepable) for pair in family_combinations(family)]
    else:
        pairs = [_parse(c, sweepable) for c in wanted]
    if only:
        chosen = {_parse(c, sweepable) for c in only}
        pairs = [pair for pair in pairs if pair in chosen]
    return pairs


def sized_families(profile: dict[str, Any], sweepable: tuple[str, ...]) -> list[str]:
    """The families a profile sizes, in its order; each must be sweepable."""
    sizes = profile["num_samples"]
    if not isinstance(sizes, dict):
        return list(sweepable)
    unknown = [family for family in sizes if family not in sweepable]
    if unknown:
        raise ValueError(f"profile {profile.get('name')!r} sizes {unknown[0]!r}, which is not a sweepable family "
                         f"(registered, with a search space): {', '.join(sweepable)}")
    return list(sizes)


def family_combinations(family: str) -> list[tuple[str, str]]:
    """(family, task) for each task, or the one (family, MULTITASK) of a multitask family."""
    return [(family, MULTITASK)] if is_multitask_family(family) else [(family, task) for task in TASK_NAMES]


def _parse(combination: str, sweepable: tuple[str, ...]) -> tuple[str, str]:
    family, _, task = combination.partition("/")
    if family not in sweepable or (family, task) not in family_combinations(family):
        raise ValueError(f"unknown combination {combination!r}: expected FAMILY/TASK with FAMILY in "
                         f"{sweepable} and TASK in {TASK_NAMES} ({MULTITASK} for a multitask family)")
    return family, task


def per_family(profile: dict[str, Any], key: str, family: str) -> Any:
    """A profile value that is either one value or a {family: value} mapping."""
    value = profile[key]
    return value[family] if isinstance(value, dict) else value
