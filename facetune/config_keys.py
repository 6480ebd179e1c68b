"""Every key of facetune's YAML configs, declared once, and the one check that rejects the rest.

A schema is a nested dict: a key's value is its default, a nested dict a section. Markers say
what a plain default cannot:

    REQUIRED          no default: the file must give the key
    PerFamily(d)      one value for every model family, or {family: value}
    Table(schema)     {name: entry following `schema`} (CGAN presets, profiles)
    TrialKeys(...)    {dotted key: value} into a trial config ("train.lr", "arch.dense")
    Free(d)           a value whose inside is checked by the code that uses it (a list, a spec)

Trial configs are declared where they are used: `train.*` keys are TrainConfig's fields and
`arch.*` keys a family's arch defaults (facetune.models.registry.arch_defaults).

An unknown key raises InvalidInputError (exit 2) naming the file, the dotted key and the
nearest known key, before Ray starts or any data is read. Overrides have one style
everywhere: `dotted.key=value` (`--set`), checked by the same schema as the file they change.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable

import yaml

from facetune.errors import InvalidInputError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a key the file must give.
REQUIRED = _Required()


@dataclass(frozen=True)
class Free:
    """A value taken as it is here (its inside is checked where it is used)."""

    default: Any = None


@dataclass(frozen=True)
class PerFamily:
    """One value for every family, or a {family: value} mapping."""

    default: Any = REQUIRED


@dataclass(frozen=True)
class Table:
    """{name: entry}; `names(context)` lists the allowed names (None: any name), and the entry
    is checked with the name in its context under `key` (e.g. "family" for arch keys)."""

    entry: Any
    names: Callable[[dict], Iterable[str]] | None = None
    key: str = "scope"
    default: Any = None


@dataclass(frozen=True)
class TrialKeys:
    """{dotted trial key: value}; `specs`: values are search distributions (or null to drop a key)."""

    specs: bool = False
    default: Any = None


@dataclass(frozen=True)
class Section:
    """A section whose keys are known only at check time: `keys(context)` -> {key: schema}."""

    keys: Callable[[dict], dict[str, Any]]
    default: Any = None


# ---- the trial config: TrainConfig fields and a family's arch keys ----------------------------


def train_keys() -> list[str]:
    """TrainConfig's fields: every `train.*` key a trial, a preset or the release recipe may set."""
    from facetune.training.loop import TrainConfig

    return [f.name for f in fields(TrainConfig)]


def arch_keys(family: str) -> list[str]:
    """The arch keys of a registered family (from the registry)."""
    from facetune.models.registry import arch_defaults

    return sorted(arch_defaults(family))


def family_names(_context: dict | None = None) -> list[str]:
    from facetune.models.registry import families

    return families()


def task_names(_context: dict | None = None) -> list[str]:
    from facetune.tasks import MULTITASK, TASKS

    return [*TASKS, MULTITASK]


def _scopes(context: dict) -> list[str]:
    return ["all", *family_names()]


def _task_scopes(context: dict) -> list[str]:
    return ["all", *task_names()]


TRAIN = Section(lambda context: {key: Free() for key in train_keys()})
ARCH = Section(lambda context: {key: Free() for key in arch_keys(context["family"])})

# ---- sweep profiles: raycfg/profiles/<name>.yaml ---------------------------------------------

PROFILE: dict[str, Any] = {
    "name": None,                 # default: the file name
    "description": "",
    "preset": None,               # a model preset (raycfg/models/<name>.yaml): nothing is tuned
    "search_dir": "search",       # folder of the search spaces, inside raycfg/
    "combinations": Free("all"),  # "all" or a list of "family/task"
    "num_samples": PerFamily(),
    "max_epochs": PerFamily(),
    "pca_components": 500,
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "trial_resources": {"cpu": 1, "gpu": 0},
    "max_concurrent_trials": None,
    # true: all combinations' trials share one pool of slots (one Tune experiment, in order);
    # false: one experiment per combination, one after another (the layout before the pool)
    "slot_pool": True,
    "torch_threads": 1,
    "failure": {"max_failures": 2},
    "row_limit": None,            # train and val on their first N faces only (smoke runs); None: all
    # {all|family: {dotted trial key: value}}: fixed values, winning over a tuned key
    "overrides": Table(TrialKeys(), names=_scopes, default={}),
    # {family: {all|task: {dotted trial key: distribution, or null to stop tuning it}}}
    "space_overrides": Table(Table(TrialKeys(specs=True), names=_task_scopes, key="task"), names=family_names,
                             key="family", default={}),
}

# ---- a rehearsal of any profile: raycfg/rehearsal.yaml (`facetune tune --rehearse`) -------------

REHEARSAL: dict[str, Any] = {"row_limit": REQUIRED, "trials": REQUIRED, "epochs": REQUIRED}

# ---- search spaces: raycfg/search/<family>.yaml -----------------------------------------------

SEARCH: dict[str, Any] = {
    "defaults": {"arch": ARCH, "train": TRAIN},
    "space": TrialKeys(specs=True, default={}),
    "tasks": Table({"arch": ARCH, "train": TRAIN, "space": TrialKeys(specs=True)}, names=task_names, key="task",
                   default={}),
}

# ---- model presets: raycfg/models/<name>.yaml ({family: {task: entry}}) -------------------------

PRESET = Table(Table({"arch": ARCH, "train": TRAIN}, names=task_names, key="task"), names=family_names, key="family")

# ---- the release recipe: raycfg/release.yaml -------------------------------------------------

RELEASE: dict[str, Any] = {
    "description": "",
    "seeds": [0],  # one member per seed, averaged (train.seed is replaced by each)
    "family": REQUIRED,
    "arch": ARCH,
    "train": TRAIN,
    # {seed: {train key: value}}: members that differ from `train` (a seed's other keys are `train`'s)
    "member_train": Table(TRAIN, default={}),
    # {seed: {arch key: value}}: members of another shape (a key given replaces the recipe's whole,
    # e.g. trunk_arch); each member's own model_config.json says what it is
    "member_arch": Table(ARCH, default={}),
    # A second stage for every member: from its best weights (as stored in weights_dtype), trained
    # again with these keys over its own `train` keys; empty: no second stage.
    "finetune": Section(TRAIN.keys, default={}),
    "weights_dtype": "float32",  # float32 | float16: how the shipped weights are stored
    # Classification tasks answered by a logistic regression over the members' joined trunk
    # features (fitted on the train split after the members) instead of their averaged heads;
    # c is sklearn's C, the inverse L2 strength.
    "stacked_head": {"tasks": Free([]), "c": 0.1},
    # {name: TASK_MEMBER}: single-task models that join the ensemble for their task only
    # (each entry is checked against TASK_MEMBER with its own family's arch keys)
    "task_members": Free({}),
    "torch_threads": 2,
}

#: The distilled model shipped beside the ensemble: raycfg/student.yaml.
STUDENT: dict[str, Any] = {
    "description": "",
    # A shipped member's folder under members/ (e.g. seed-0) whose weights it starts from; null: from scratch.
    "init": None,
    "family": REQUIRED,
    "arch": ARCH,
    "train": TRAIN,  # train.distill_weight: the share of each task's loss spent matching the ensemble
    "weights_dtype": "float16",
    "torch_threads": 2,
}

#: One entry of the release's `task_members`: a single-task classifier trained on the train split
#: like a seed (val picks its epoch), whose probabilities join its task's average with `weight`
#: (a multitask member weighs 1).
TASK_MEMBER: dict[str, Any] = {
    "family": REQUIRED,
    "task": REQUIRED,
    "weight": 1.0,
    "weights_dtype": None,  # how its weights are stored: float32 | float16; null: the recipe's weights_dtype
    "arch": ARCH,
    "train": TRAIN,
}

# ---- CGAN: raycfg/cgan.yaml (its `defaults:` section holds the run defaults) ------------------

CGAN_RUN: dict[str, Any] = {
    "preset": REQUIRED,
    "seed": REQUIRED,
    "num_workers": REQUIRED,
    "use_gpu": REQUIRED,
    "cpus_per_worker": REQUIRED,
    "torch_threads": REQUIRED,
    "max_failures": REQUIRED,
    "keep_checkpoints": REQUIRED,
    "shuffle_buffer": REQUIRED,
    "grid": {"rows": REQUIRED, "ages": REQUIRED, "seed": REQUIRED},
    "eval_split": REQUIRED,
    "eval_samples": REQUIRED,
    "max_steps_per_epoch": REQUIRED,
    "row_limit": REQUIRED,
    "epochs": REQUIRED,
    "batch_size": REQUIRED,
    "age_model": {"family": REQUIRED, "arch": Free(), "epochs": REQUIRED, "batch_size": REQUIRED, "lr": REQUIRED},
    # Only for the recovery tests: {rank, epoch, step, marker} of one injected worker failure.
    "fail_at": Free(),
}

CGAN_PRESET: dict[str, Any] = {
    "noise_dim": REQUIRED,
    "generator": Free(),       # {arch: NAME, ...}: the builder's keyword arguments
    "discriminator": Free(),
    "loss": REQUIRED,
    "lr_g": REQUIRED,
    "lr_d": REQUIRED,
    "betas": REQUIRED,
    "ema_decay": REQUIRED,
}

CGAN_FILE: dict[str, Any] = {
    "age_scaling": {"center": REQUIRED, "scale": REQUIRED},
    "presets": Table(CGAN_PRESET),
    "defaults": CGAN_RUN,
    "profiles": Table(CGAN_RUN),
}


# ---- checking --------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A YAML number (a bool is not a number here, though Python counts it as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole_number(value: Any, least: int) -> bool:
    """A YAML whole number >= `least` (3.0 is not one: counts and epochs are written as integers)."""
    return is_number(value) and isinstance(value, int) and value >= least


def unknown_key_error(source: str, dotted: str, known: Iterable[str]) -> InvalidInputError:
    """`SOURCE: unknown key 'a.b' (did you mean 'a.c'?)`, or the known keys when none is near."""
    known = sorted(known)
    near = nearest(dotted, known)
    hint = f"did you mean {near!r}?" if near else f"known: {', '.join(known) or 'none'}"
    return InvalidInputError(f"{source}: unknown key {dotted!r} ({hint})")


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to `name` (case-insensitive: `CPU` finds `cpu`), if any is close."""
    by_lower = {key.lower(): key for key in known}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def check(data: Any, schema: Any, source: str, *, prefix: str = "", context: dict | None = None) -> None:
    """Raise InvalidInputError for the first key of `data` that `schema` does not declare."""
    context = dict(context or {})
    if isinstance(schema, Section):
        schema = schema.keys(context)
    if isinstance(schema, dict):
        if not isinstance(data, dict):
            if data is None:
                return
            raise InvalidInputError(f"{source}: {prefix.rstrip('.') or 'the file'} should be a mapping, "
                                    f"not {type(data).__name__}")
        for key, value in data.items():
            if key not in schema:
                raise unknown_key_error(source, f"{prefix}{key}", [f"{prefix}{k}" for k in schema])
            check(value, schema[key], source, prefix=f"{prefix}{key}.", context=context)
    elif isinstance(schema, PerFamily):
        if isinstance(data, dict):
            check(data, {name: Free() for name in family_names()}, source, prefix=prefix, context=context)
    elif isinstance(schema, Table):
        if not isinstance(data, dict):
            return check(data, {}, source, prefix=prefix, context=context)
        names = list(schema.names(context)) if schema.names else None
        for name, entry in data.items():
            if names is not None and name not in names:
                raise unknown_key_error(source, f"{prefix}{name}", [f"{prefix}{n}" for n in names])
            check(entry, schema.entry, source, prefix=f"{prefix}{name}.", context={**context, schema.key: name})
    elif isinstance(schema, TrialKeys):
        for dotted in (data or {}):
            check_trial_key(dotted, source, prefix=prefix, context=context)


def check_trial_key(dotted: str, source: str, *, prefix: str = "", context: dict | None = None) -> None:
    """A dotted key into a trial config: `train.<TrainConfig field>` or `arch.<the family's key>`.

    The family comes from `context["family"]`, else from the scope it is written under (a profile's
    `overrides.cnn`), else every family in `context["families"]` must know it (`overrides.all`).
    """
    context = context or {}
    family = context.get("family") or (context.get("scope") if context.get("scope") in family_names() else None)
    families = [family] if family else list(context.get("families") or family_names())
    section, _, rest = str(dotted).partition(".")
    if section == "train":
        key = rest.split(".")[0]
        known = train_keys()
    elif section == "arch":
        key = rest.split(".")[0]
        known = sorted(set.intersection(*(set(arch_keys(f)) for f in families))) if families else []
        if key not in known:
            lacking = [f for f in families if key not in arch_keys(f)]
            if len(lacking) < len(families):  # known to some families only: say which lack it
                raise InvalidInputError(f"{source}: key {prefix}{dotted!r}: {rest!r} is not an arch key of "
                                        f"{', '.join(lacking)}; set it under that family's own section")
    else:
        raise unknown_key_error(source, f"{prefix}{dotted}", [f"{prefix}train.{k}" for k in train_keys()] +
                                [f"{prefix}arch.{k}" for k in (arch_keys(families[0]) if families else [])])
    if key not in known:
        raise unknown_key_error(source, f"{prefix}{dotted}", [f"{prefix}{section}.{k}" for k in known])


def with_defaults(data: dict[str, Any], schema: dict[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    """A copy of `data` with every declared default filled in; a missing REQUIRED key is an error."""
    filled = copy.deepcopy(data)
    for key, declared in schema.items():
        if isinstance(declared, dict):
            filled[key] = with_defaults(filled.get(key) or {}, declared, source, f"{prefix}{key}.")
            continue
        default = getattr(declared, "default", declared)
        if key in filled:
            continue
        if default is REQUIRED:
            raise InvalidInputError(f"{source}: lacks the key {prefix}{key!r}")
        filled[key] = copy.deepcopy(default)
    return filled


# ---- overrides: one style, `dotted.key=value` -------------------------------------------------


def parse_assignment(text: str) -> tuple[str, Any]:
    """'train.lr=0.001' -> ("train.lr", 0.001); the value is YAML ('[8, 16]', 'true', 'null')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInputError(f"--set {text}: expected KEY=VALUE, e.g. train.lr=0.001")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise InvalidInputError(f"--set {text}: the value is not valid YAML ({err})") from None


def apply_assignments(config: dict[str, Any], assignments: Iterable[str], schema: Any) -> dict[str, Any]:
    """A copy of `config` with each `dotted.key=value` set. The schema splits the path, so
    `overrides.all.train.lr=0.01` sets the trial key "train.lr" under a profile's `overrides.all`;
    a misspelt section is an error here, the keys inside are checked with the whole file."""
    result = copy.deepcopy(config)
    for text in assignments:
        dotted, value = parse_assignment(text)
        parts, node, declared, prefix = dotted.split("."), result, schema, ""
        while len(parts) > 1 and not isinstance(declared, TrialKeys):
            part = parts.pop(0)
            if isinstance(declared, dict):
                if part not in declared:
                    raise unknown_key_error(f"--set {text}", prefix + part, [prefix + k for k in declared])
                declared = declared[part]
            else:  # a Table's entry name, a family under PerFamily, or inside a Section/Free value
                declared = declared.entry if isinstance(declared, Table) else Free()
            prefix += part + "."
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InvalidInputError(f"--set {text}: {prefix.rstrip('.')!r} holds a value, not a section")
        if isinstance(declared, dict) and parts[0] not in declared:
            raise unknown_key_error(f"--set {text}", prefix + parts[0], [prefix + k for k in declared])
        node[".".join(parts)] = value
    return result
