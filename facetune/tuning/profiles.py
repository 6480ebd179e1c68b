"""Sweep profiles (raycfg/profiles/<name>.yaml): how big a search, on what resources."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from facetune.config import load_yaml
from facetune.tuning.space import FAMILIES, TASK_NAMES

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
    "family/task"), narrowed by `only` (the same notation) when given."""
    wanted = profile.get("combinations", "all")
    pairs = [(f, t) for f in FAMILIES for t in TASK_NAMES] if wanted == "all" else [_parse(c) for c in wanted]
    if only:
        chosen = {_parse(c) for c in only}
        pairs = [pair for pair in pairs if pair in chosen]
    return pairs


def _parse(combination: str) -> tuple[str, str]:
    family, _, task = combination.partition("/")
    if family not in FAMILIES or task not in TASK_NAMES:
        raise ValueError(f"unknown combination {combination!r}: expected FAMILY/TASK with FAMILY in "
                         f"{FAMILIES} and TASK in {TASK_NAMES}")
    return family, task


def per_family(profile: dict[str, Any], key: str, family: str) -> Any:
    """A profile value that is either one value or a {family: value} mapping."""
    value = profile[key]
    return value[family] if isinstance(value, dict) else value
