"""Which model answers each task: the best validation figure in a sweep's summary.json."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from facetune.tasks import TASKS


def read_summary(results_dir: str | os.PathLike[str]) -> list[dict]:
    """The list in RESULTS/summary.json, with a clear error when it is missing or malformed."""
    path = Path(results_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --models must be a results directory written by a sweep (jobs/tune_all.py)"
        )
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of combinations, got {type(entries).__name__}")
    return entries


def choose_best(entries: Sequence[Mapping], family: str | None = None) -> dict[str, Mapping]:
    """task -> the summary entry with the best *validation* selection metric.

    Validation, not test: choosing by test figures would leak the test split into the choice
    and make the reported test numbers optimistic.
    """
    chosen: dict[str, Mapping] = {}
    for task_name, task in TASKS.items():
        candidates = [
            e for e in entries if e.get("task") == task_name and (family is None or e.get("family") == family)
        ]
        scored = []
        for entry in candidates:
            value = (entry.get("val") or {}).get(task.metric)
            if value is None or not math.isfinite(float(value)):
                raise ValueError(
                    f"summary entry {entry.get('family')}_{task_name} has no finite val {task.metric}"
                )
            scored.append((float(value), entry))
        if scored:
            pick = min if task.mode == "min" else max
            chosen[task_name] = pick(scored, key=lambda pair: pair[0])[1]
    if not chosen:
        which = f"family {family!r}" if family else "any family"
        present = sorted({f"{e.get('family')}_{e.get('task')}" for e in entries})
        raise ValueError(f"no finished combination for {which} in summary.json (it has: {present or 'none'})")
    return chosen
