"""Sweep profiles (raycfg/profiles/<name>.yaml): how big a search, on what resources."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from facetune.config_files import config_path, load_yaml
from facetune.config_keys import PROFILE, REHEARSAL, apply_assignments, check, is_number, is_whole_number, with_defaults
from facetune.errors import InvalidInputError
from facetune.models.registry import is_multitask_family
from facetune.records import MULTITASK, TASK_NAMES
from facetune.tuning.space import SEARCH_DIR, sweepable_families

#: The sections of a trial config that `--set` may name directly.
TRIAL_SECTIONS = ("train.", "arch.")


def load_profile(name_or_path: str, assignments: Iterable[str] = ()) -> dict[str, Any]:
    """A profile by name (raycfg/profiles/NAME.yaml) or by path to a YAML file, with `--set`
    assignments (`max_epochs=3`, `train.lr=0.01`, `overrides.cnn.arch.dense=[64]`) applied, checked and completed
    with the declared defaults (facetune.config_keys.PROFILE)."""
    # A trial key alone (`train.lr=0.01`) is short for the profile's `overrides.all.train.lr=0.01`.
    assignments = [f"overrides.all.{a}" if a.startswith(TRIAL_SECTIONS) else a for a in assignments]
    path = profile_file(name_or_path)
    raw = apply_assignments(load_yaml(path), assignments, PROFILE)
    return resolve_profile(raw, profile_source(name_or_path, assignments), default_name=path.stem)


def profile_file(name_or_path: str) -> Path:
    """The YAML file of a profile given by name (raycfg/profiles/NAME.yaml) or path."""
    path = Path(name_or_path)
    return config_path(path if path.suffix in (".yaml", ".yml") else f"profiles/{name_or_path}.yaml")


def profile_source(name_or_path: str, assignments: Iterable[str] = ()) -> str:
    """How an error names a profile: its file, and the `--set` values that changed it."""
    assignments = list(assignments)
    path = profile_file(name_or_path)
    return f"{path} with --set {' '.join(assignments)}" if assignments else str(path)


def resolve_profile(raw: dict[str, Any], source: str, default_name: str | None = None) -> dict[str, Any]:
    """A profile dict checked against the schema (an unknown key raises InvalidInputError naming
    `source`, the key and the nearest known key) and completed with the declared defaults."""
    families = sorted({family for family, _ in combinations(raw)})
    check(raw, PROFILE, source, context={"families": families})
    profile = with_defaults(raw, PROFILE, source)
    profile["name"] = profile["name"] or default_name
    check_values(profile, source)
    return profile


def rehearsal(profile: dict[str, Any], source: str) -> tuple[dict[str, Any], str]:
    """`profile` cut down as raycfg/rehearsal.yaml says (every combination kept, few faces, one
    short trial each), and its source marked as a rehearsal."""
    path = config_path("rehearsal.yaml")
    settings = load_yaml(path)
    check(settings, REHEARSAL, str(path))
    for key in REHEARSAL:
        if not is_whole_number(settings[key], 1):
            raise InvalidInputError(f"{path}: {key} {settings[key]!r}: must be a whole number >= 1")
    families = list(dict.fromkeys(family for family, _ in combinations(profile)))  # the sweep's order
    cut = {
        **profile,
        "row_limit": min(settings["row_limit"], profile["row_limit"] or settings["row_limit"]),
        "num_samples": {family: settings["trials"] for family in families},
        "max_epochs": {family: settings["epochs"] for family in families},
        "scheduler": {**profile["scheduler"], "grace_period": min(settings["epochs"], profile["scheduler"]["grace_period"])},
    }
    source = f"{source} with --rehearse ({path})"
    return resolve_profile(cut, source, default_name=profile["name"]), source


def check_values(profile: dict[str, Any], source: str) -> None:
    """Refuse a profile value out of range (`--set max_epochs=0`, a CPU count of 0) here, in one
    line naming `source` and the key, rather than as failing trials after Ray has started."""
    def refuse(key: str, value: Any, need: str) -> None:
        raise InvalidInputError(f"{source}: {key} {value!r}: must be {need}")

    for key in ("num_samples", "max_epochs"):
        value = profile[key]
        for family, count in (value.items() if isinstance(value, dict) else [(None, value)]):
            if not is_whole_number(count, 1):
                refuse(f"{key}.{family}" if family else key, count, "a whole number >= 1")
    for key, least in (("pca_components", 1), ("torch_threads", 1)):
        if not is_whole_number(profile[key], least):
            refuse(key, profile[key], f"a whole number >= {least}")
    for key, value in (("max_concurrent_trials", profile["max_concurrent_trials"]), ("row_limit", profile["row_limit"])):
        if value is not None and not is_whole_number(value, 1):
            refuse(key, value, "a whole number >= 1, or null for no limit")
    scheduler = profile["scheduler"]
    if scheduler["type"] != "asha":
        refuse("scheduler.type", scheduler["type"], "asha (the one scheduler configured)")
    if not is_whole_number(scheduler["grace_period"], 1):
        refuse("scheduler.grace_period", scheduler["grace_period"], "a whole number of epochs >= 1")
    if not (is_number(scheduler["reduction_factor"]) and scheduler["reduction_factor"] > 1):
        refuse("scheduler.reduction_factor", scheduler["reduction_factor"], "a number above 1")
    resources = profile["trial_resources"]
    if not (is_number(resources["cpu"]) and resources["cpu"] > 0):
        refuse("trial_resources.cpu", resources["cpu"], "a number of CPUs above 0")
    if not (is_number(resources["gpu"]) and resources["gpu"] >= 0):
        refuse("trial_resources.gpu", resources["gpu"], "a number of GPUs >= 0")
    if not is_whole_number(profile["failure"]["max_failures"], -1):
        refuse("failure.max_failures", profile["failure"]["max_failures"], "a whole number >= 0 (-1: retry for ever)")


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
    sizes = profile.get("num_samples")
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
