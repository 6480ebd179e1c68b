"""`facetune tune --dry-run`: a checked plan printed with what it will cost here, Ray never started."""
from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

from facetune.data.loading import split_rows
from facetune.data.split import DEFAULT_FRACTIONS
from facetune.records import PREPARED_DIR, SUMMARY_FILE, is_prepared_dir
from facetune.tuning.cost import plan_costs
from facetune.tuning.plan import SweepPlan


def train_faces(data: Path, results: str) -> tuple[int, str]:
    """(train faces, where the count comes from): a prepared folder's manifest, else the raw
    source's rows times the split's train fraction (the split itself is made by prepare)."""
    for folder in (data, Path(results) / PREPARED_DIR):
        if "://" not in str(folder) and is_prepared_dir(folder):
            return split_rows(folder, "train"), f"the train split of {folder}"
    if data.is_dir():
        rows = sum(1 for path in data.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    else:
        opener = gzip.open if data.name.endswith(".gz") else open
        with opener(data, "rb") as lines:
            rows = max(0, sum(1 for _ in lines) - 1)  # less the header
    return int(rows * DEFAULT_FRACTIONS[0]), f"{DEFAULT_FRACTIONS[0]:.0%} of the {rows:,} rows of {data} (not prepared yet)"


def print_dry_run(plan: SweepPlan, data: Path, results: str, cpus: int | None) -> None:
    """Print the plan: combinations with their trials, epochs and ASHA rungs, the slots, each
    combination's epoch as measured here, the wall-time bounds and where results go."""
    profile = plan.profile
    started = time.perf_counter()
    faces, counted = train_faces(data, results)
    if profile["row_limit"]:
        faces = min(faces, int(profile["row_limit"]))
        counted += f", cut to row_limit {profile['row_limit']}"
    slots = plan.slots(cpus) or 1
    scheduler = plan.scheduler_settings
    print(f"profile {profile['name']} ({plan.source}): {profile['description']}")
    print(f"data: {data}; {faces:,} train faces ({counted})")
    print(f"slots: {slots} trial(s) at a time ({_slots_reason(plan, cpus)}), {profile['torch_threads']} torch "
          f"thread(s) each; ASHA grace period {scheduler['grace_period']}, reduction factor "
          f"{scheduler['reduction_factor']}")
    busy = os.getloadavg()[0]
    costs = plan_costs(plan, faces)
    print(f"{'combination':<18} {'trials':>6} {'epochs':>6}  {'ASHA rungs':<12} {'epoch here':>10}  "
          f"{'trial-minutes (ASHA..all)':>25}")
    for combination, cost in zip(plan.combinations, costs):
        rungs = ",".join(str(r) for r in plan.rungs(combination)) or "-"
        print(f"{combination.name:<18} {combination.num_trials:>6} {combination.max_epochs:>6}  {rungs:<12} "
              f"{cost.epoch_seconds:>9.1f}s  {cost.least_seconds / 60:>12.1f} .. {cost.most_seconds / 60:<10.1f}")
    least = sum(c.least_seconds for c in costs) / slots / 60
    most = sum(c.most_seconds for c in costs) / slots / 60
    print(f"wall time here: {least:.0f} to {most:.0f} minutes of training over {slots} slot(s) "
          f"(ASHA stopping every trial it can .. no trial stopped early; per-trial patience can stop sooner), "
          "plus preparing the data, the PCA and the test evaluations")
    if cpus and busy > 1.0:  # more than a core's worth of other work
        print(f"note: the load average was {busy:.1f} on {cpus} CPUs when timing: other work shares this machine, "
              "so the epochs above are slower than on a quiet one")
    print(f"results: {results} ({SUMMARY_FILE}; then `facetune report {results}`)")
    print(f"dry run: checked and timed in {time.perf_counter() - started:.0f} s; Ray not started")


def _slots_reason(plan: SweepPlan, cpus: int | None) -> str:
    wanted, cpu = plan.profile["max_concurrent_trials"], plan.profile["trial_resources"]["cpu"]
    limit = f"max_concurrent_trials {wanted}" if wanted else "no max_concurrent_trials"
    machine = f"{cpus} CPUs here at {cpu:g} a trial" if cpus else "a cluster: its CPUs are known once Ray is up"
    return f"{limit}; {machine}"
