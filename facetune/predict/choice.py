"""Which model answers each task: the best validation figure in a sweep's summary.json."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from facetune.records import SUMMARY_FILE, summary_from_json, summary_to_json
from facetune.tasks import TASKS


def read_summary(results_dir: str | os.PathLike[str]) -> list[dict]:
    """The list in RESULTS/summary.json, with a clear error when it is missing or malformed."""
    path = Path(results_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --models must be a results directory written by a sweep (jobs/tune_all.py)"
        )
    # Checked against the writer's record, then handed on as the plain dicts the rest of predict reads.
    return summary_to_json(summary_from_json(json.loads(path.read_text()), str(path)))


def choose_best(entries: Sequence[Mapping], family: str | None = None) -> dict[str, Mapping]:
    """task -> the summary entry with the best *validation* selection metric.

    Validation, not test: choosing by test figures would leak the test split into the choice
    and make the reported test numbers optimistic. Models that were trained on val (a final
    fit's, which carry `trained_on`) cannot be judged on it, so only an explicit `family` picks them.
    """
    chosen: dict[str, Mapping] = {}
    for task_name, task in TASKS.items():
        candidates = [
            e for e in entries if e.get("task") == task_name
            and (e.get("family") == family if family is not None else "trained_on" not in e)
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
