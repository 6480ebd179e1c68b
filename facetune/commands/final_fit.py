"""`facetune final-fit RESULTS [--tasks ...]`: retrain each task's chosen model on train+val, test once."""
from __future__ import annotations

import argparse
from pathlib import Path

from facetune.commands.checks import read_sweep_record
from facetune.errors import InputNotFoundError, InvalidInputError
from facetune.records import SUMMARY_FILE, TASK_NAMES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "final-fit",
        help="retrain each task's validation-chosen model on train+val and evaluate it once on test",
        description=(
            "For each task, the sweep entry `predict` would choose (best on validation, ensembles aside) is "
            "retrained with its configuration on train+val for its best epoch count, evaluated once on test and "
            "written into RESULTS as family 'final_fit' (trained_on: train+val). `report` shows it beside the "
            "sweep's model; `predict --models RESULTS --family final_fit` uses it."
        ),
    )
    parser.add_argument("results_dir", type=Path, metavar="RESULTS", help="a finished sweep's results directory")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=list(TASK_NAMES))
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    data = Path(read_sweep_record(args.results_dir).data)
    if not (args.results_dir / SUMMARY_FILE).is_file():
        raise InputNotFoundError(f"{args.results_dir / SUMMARY_FILE} not found: RESULTS must be a finished sweep's results directory")
    if not data.is_dir():
        raise InputNotFoundError(f"the sweep's prepared data {data} is gone: prepare it again to the same place")
    from facetune.tuning.final_fit import final_fit

    try:
        final_fit(args.results_dir, args.tasks)
    except ValueError as err:  # summary.json unreadable or without a finished combination
        raise InvalidInputError(str(err)) from None
    return 0
