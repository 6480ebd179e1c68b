"""Reading the YAML configs under raycfg/ (configs are data; code only reads them)."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

#: Environment variable pointing at another raycfg/ folder (e.g. a user's own search spaces).
RAYCFG_ENV = "FACETUNE_RAYCFG"


def raycfg_dir() -> Path:
    """The raycfg/ folder: $FACETUNE_RAYCFG; else the copy installed inside the package
    (facetune/raycfg, from a wheel); else the repository's top-level raycfg/ (a checkout or an
    editable install, where the package data maps to that folder)."""
    env = os.environ.get(RAYCFG_ENV)
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    installed = package / "raycfg"
    return installed if installed.is_dir() else package.parent / "raycfg"


def config_path(relative: str | Path) -> Path:
    """An existing file: `relative` itself, else raycfg/<relative>; FileNotFoundError when neither."""
    path = Path(relative)
    if not path.is_file():
        path = raycfg_dir() / relative
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {relative} (looked in {raycfg_dir()})")
    return path


def load_yaml(relative: str | Path) -> dict[str, Any]:
    """Load raycfg/<relative> (or an absolute/explicit path) as a dict, with a clear error if absent."""
    path = config_path(relative)
    with path.open() as handle:
        loaded = yaml.safe_load(handle) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `override` merged into `base`, recursively for nested dicts (lists are replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(config: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set config["a"]["b"] for dotted_key "a.b", creating intermediate dicts."""
    *parents, leaf = dotted_key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
