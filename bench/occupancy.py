"""Slot occupancy of a whole sweep: one experiment per combination in turn (before) against all
combinations drawing from one pool of slots (after), one run.

    python bench/occupancy.py [--data PREPARED_OR_SOURCE] [--runs paper,smoke,local,sim16]

Each scenario runs the same profile twice into fresh results folders, once with the profile's
`slot_pool: false` (the sweep as it was: combinations one after another) and once as shipped,
and prints for each: trials, slots, the sweep's wall time (run_sweep, data and PCA included),
and the slot occupancy, i.e. the slot-seconds trials held (RESULTS/trial_times.json, from Tune
starting a trial to its end) over slots x (first trial start .. last trial end).

Scenarios (sized to finish in minutes on a 2-core machine; the figures are ratios, so the
shrinking is stated rather than hidden):
- paper: the `paper` profile (9 single trials, the study's models) on the first --paper-rows
  train/val faces and --paper-epochs epochs per trial, on 2 slots;
- smoke: the `smoke` profile as shipped (16 trials on 2,000 faces, 2 epochs), on 2 slots;
- local: the `local` profile's search spaces and trial counts (32 trials) on 2,000 faces and 2
  epochs per trial, on 2 slots;
- sim16: a simulated 16-slot cluster (Ray told it has 16 CPUs; the trials are tiny: 300 faces,
  the smoke models, 2 epochs), with 76 trials and 16 concurrent.
Ray is started per scenario (num_cpus 2, or 16 for sim16) and shut down by its handle.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without installing

from facetune.data.prepare import ensure_prepared  # noqa: E402
from facetune.ray_session import ray_session  # noqa: E402
from facetune.records import TRIAL_TIMES_FILE  # noqa: E402
from facetune.tuning.pool import TrialTime, slot_occupancy  # noqa: E402
from facetune.tuning.profiles import load_profile  # noqa: E402
from facetune.tuning.sweep import run_sweep  # noqa: E402

SCENARIOS = ("paper", "smoke", "local", "sim16")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the shared data)")
    parser.add_argument("--runs", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--paper-rows", type=int, default=6000, help="train/val faces for the paper scenario")
    parser.add_argument("--paper-epochs", type=int, default=4, help="epochs per paper trial")
    parser.add_argument("--out", type=Path, default=None, help="keep the results folders here (default: a temp dir)")
    args = parser.parse_args()
    args.runs = [name.strip() for name in args.runs.split(",") if name.strip()]
    unknown = sorted(set(args.runs) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


def scenario(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """(profile, the CPUs Ray is told it has)."""
    if name == "paper":
        epochs = args.paper_epochs
        sets = [f"row_limit={args.paper_rows}", f"scheduler.grace_period={epochs}"] + \
            [f"max_epochs.{family}={epochs}" for family in ("cnn", "dnn", "pca_dnn")]
        return load_profile("paper", sets), 2
    if name == "smoke":
        return load_profile("smoke"), 2
    if name == "local":
        families = ("cnn", "dnn", "pca_dnn", "resnet", "multitask")
        sets = ["row_limit=2000", "scheduler.grace_period=1", "pca_components=64"] + \
            [f"max_epochs.{family}=2" for family in families]
        return load_profile("local", sets), 2
    sizes = {"cnn": 8, "dnn": 6, "pca_dnn": 6, "resnet": 4, "multitask": 4}
    sets = ["row_limit=300", "max_concurrent_trials=16"] + [f"num_samples.{f}={n}" for f, n in sizes.items()]
    return load_profile("smoke", sets), 16


def run_once(profile: dict[str, Any], prepared: Path, cpus: int, results: Path) -> dict[str, Any]:
    # A private local Ray of `cpus` logical CPUs, shut down by its handle (never a recorded stale one).
    with ray_session(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run_sweep(profile, prepared, results)
        wall = time.perf_counter() - started
    times = [TrialTime(**entry) for entry in json.loads((results / TRIAL_TIMES_FILE).read_text())]
    slots = min(int(profile.get("max_concurrent_trials") or cpus), int(cpus // float(profile["trial_resources"]["cpu"])))
    return {"wall": wall, "trials": len(times), "slots": slots, "occupancy": slot_occupancy(times, slots),
            "trial_seconds": statistics.median(t.end - t.start for t in times)}


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="facetune-occupancy-") as temp:
        out = args.out or Path(temp)
        out.mkdir(parents=True, exist_ok=True)
        from facetune.storage import ResultsStore

        prepared = ensure_prepared(args.data, ResultsStore(out / "prepared"))
        rows = []
        for name in args.runs:
            profile, cpus = scenario(name, args)
            measured = {}
            for label, pooled in (("before", False), ("after", True)):
                measured[label] = run_once({**profile, "slot_pool": pooled}, prepared, cpus, out / f"{name}-{label}")
                m = measured[label]
                print(f"{name:6s} {label:6s}: {m['trials']} trials on {m['slots']} slots, {m['wall']:.0f} s, "
                      f"occupancy {m['occupancy']:.1%} (median trial {m['trial_seconds']:.0f} s)", flush=True)
            rows.append((name, measured["before"], measured["after"]))
    print()
    print("| scenario | trials | slots | wall before | wall after | speed-up | occupancy before | occupancy after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, before, after in rows:
        print(f"| {name} | {after['trials']} | {after['slots']} | {before['wall']:.0f} s | {after['wall']:.0f} s | "
              f"{before['wall'] / after['wall']:.2f}x | {before['occupancy']:.1%} | {after['occupancy']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
