"""Benchmark: facetune's CSV parser against the usual notebook approach, with gunzip as the floor.

    python bench/ingest.py [--csv ../shared/data/age_gender.csv.gz] [--repeats 3]

Prints the median wall time of each approach over --repeats runs and the ratio baseline/facetune.
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without installing

from facetune.data.ingest import read_kaggle_csv  # noqa: E402

DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "age_gender.csv.gz"


def notebook_baseline(path: Path) -> np.ndarray:
    """What most Kaggle notebooks do: pandas read_csv, then split each pixel string in Python."""
    frame = pd.read_csv(path)
    rows = frame["pixels"].apply(lambda s: np.array(s.split(), dtype=np.uint8))
    return np.stack(rows.to_numpy())


def facetune_parser(path: Path) -> np.ndarray:
    """facetune's ingest: pyarrow CSV reader + vectorised numpy, with per-row validation."""
    return read_kaggle_csv(path).pixels


def gunzip_only(path: Path) -> int:
    """The floor: just decompressing the file, no parsing at all."""
    with gzip.open(path, "rb") as handle:
        return len(handle.read())


def median_seconds(function: Callable[[Path], object], path: Path, repeats: int) -> tuple[float, float, object]:
    """Median wall time, median CPU time of this process (all threads), and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function(path)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help=f"Kaggle CSV (default: {DEFAULT_CSV})")
    parser.add_argument("--repeats", type=int, default=3, help="runs per approach; the median is reported")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        print(f"bench/ingest.py: {args.csv} does not exist (pass --csv PATH)", file=sys.stderr)
        return 2

    floor, floor_cpu, size = median_seconds(gunzip_only, args.csv, args.repeats) if args.csv.suffix == ".gz" else (0.0, 0.0, 0)
    baseline, baseline_cpu, expected = median_seconds(notebook_baseline, args.csv, args.repeats)
    ours, ours_cpu, pixels = median_seconds(facetune_parser, args.csv, args.repeats)
    if not np.array_equal(expected, pixels):
        print("bench/ingest.py: the two parsers disagree on the pixels", file=sys.stderr)
        return 1

    # Wall time is what a user waits for; CPU time shows how much of a gap is parallelism (facetune
    # uses the cores, the baseline cannot) and is steadier on a busy machine.
    print(f"file: {args.csv} ({pixels.shape[0]:,} rows, {pixels.size:,} pixel values), median of {args.repeats}")
    print(f"{'':52} {'wall s':>7} {'cpu s':>7}")
    print(f"{'notebook baseline (pandas read_csv + str.split apply)':52} {baseline:7.2f} {baseline_cpu:7.2f}")
    print(f"{'facetune parser (pyarrow + vectorised numpy)':52} {ours:7.2f} {ours_cpu:7.2f}")
    if size:
        print(f"{f'gunzip alone (the floor, {size / 1e6:.0f} MB)':52} {floor:7.2f} {floor_cpu:7.2f}")
    print(f"ratio baseline/facetune: {baseline / ours:.1f}x wall ({baseline_cpu / ours_cpu:.1f}x cpu)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
