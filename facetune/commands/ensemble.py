"""`facetune ensemble RESULTS [--max-members K]`: ensembles per task from every trial a sweep trained."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetune.commands.checks import read_sweep_record
from facetune.records import TASK_NAMES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ensemble",
        help="select an ensemble per task from a sweep's trials and write it into RESULTS",
        description=(
            "Greedy ensemble selection on validation over every trial of the sweep that left a checkpoint "
            "(any family), evaluated once on test. Writes RESULTS/ensemble_<task>/ and summary entries of "
            "family 'ensemble', which `report` shows beside the single best models and `predict --models "
            "RESULTS` uses when they are best on validation."
        ),
    )
    parser.add_argument("results_dir", type=Path, metavar="RESULTS", help="a finished sweep's results directory")
    parser.add_argument("--max-members", type=int, default=5, help="largest ensemble, counting repeats (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.max_members < 1:
        print(f"facetune ensemble: --max-members must be at least 1, not {args.max_members}", file=sys.stderr)
        return 2
    read_sweep_record(args.results_dir)
    from facetune.tuning.ensemble_selection import build_ensembles

    entries = build_ensembles(args.results_dir, args.max_members, args.tasks)
    return 0 if entries else 1
