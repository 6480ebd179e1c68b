"""Named architecture + training presets under raycfg/models/ (e.g. the study's, "paper")."""
from __future__ import annotations

import copy
from typing import Any

from facetune.config_files import config_path, load_yaml
from facetune.config_keys import PRESET, check


def load_preset(name: str = "paper") -> dict[str, Any]:
    """raycfg/models/<name>.yaml as {family: {task: {"arch": ..., "train": ...}}}.

    raycfg/ is the one beside the package, or $FACETUNE_RAYCFG.
    """
    path = config_path(f"models/{name}.yaml")
    preset = load_yaml(path)
    check(preset, PRESET, str(path))
    for family, tasks in preset.items():
        for task, entry in (tasks or {}).items():
            if not isinstance(entry, dict) or "arch" not in entry or "train" not in entry:
                raise ValueError(f"preset {name}: {family}.{task} needs both 'arch' and 'train'")
            # One deepcopy per entry: YAML anchors share objects, and a caller editing one
            # entry must not change the others.
            tasks[task] = copy.deepcopy(entry)
    return preset
