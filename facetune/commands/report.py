"""`facetune report RESULTS_DIR [--out DIR]`: the comparison report of a (possibly partial) sweep."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetune.results.fairness import MIN_GROUP_SIZE
from facetune.results.study import STUDY_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a sweep's results directory")
    parser.add_argument("--out", type=Path, help="where to write the report (default: RESULTS_DIR/report)")
    parser.add_argument("--study", default=STUDY_FILE, help="the study's figures (default: raycfg/study.yaml)")
    parser.add_argument("--min-group-size", type=int, default=MIN_GROUP_SIZE,
                        help="fairness: smallest group ranked as best/worst (default: %(default)s test faces)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="write report.md, report.html and results.csv for a sweep's results",
        description=(
            "Read a sweep's results directory (complete or partial) and write report.md, a self-contained "
            "report.html, results.csv (one row per combination) and the figures as PNG files."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from facetune.results.build import build_report  # matplotlib/torch load only when a report is made

    try:
        paths = build_report(args.results_dir, args.out, study_file=args.study, min_group_size=args.min_group_size)
    except FileNotFoundError as err:
        print(f"facetune report: {err}", file=sys.stderr)
        return 2
    for kind in ("md", "html", "csv"):
        print(f"{kind}: {paths[kind]}")
    print(f"figures: {paths['figures']} ({len(list(paths['figures'].glob('*.png')))} PNG files)")
    return 0
