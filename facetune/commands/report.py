"""`facetune report RESULTS_DIR [--out DIR]`: the comparison report of a (possibly partial) sweep."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from facetune.commands.checks import check_writable_folder, read_sweep_summary
from facetune.errors import NoDataError, UsageError, path_text
from facetune.groups import MIN_GROUP_SIZE
from facetune.records import SWEEP_FILE, SweepRecord
from facetune.results.build import build_report
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
    check_report_arguments(args)
    try:
        paths = build_report(args.results_dir, args.out, study_file=args.study, min_group_size=args.min_group_size)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    for kind in ("md", "html", "csv"):
        print(f"{kind}: {paths[kind]}")
    print(f"figures: {paths['figures']} ({len(list(paths['figures'].glob('*.png')))} PNG files)")
    return 0


def check_report_arguments(args: argparse.Namespace) -> None:
    """Results folder, its summary, --min-group-size and --out, checked before the figures are drawn."""
    results = args.results_dir
    if not results.is_dir():
        what = "does not exist" if not results.exists() else "is a file, not a results folder"
        raise UsageError(f"not a results directory: {path_text(results)} {what}")
    read_sweep_summary(str(results))
    sweep_path = results / SWEEP_FILE
    if sweep_path.is_file():
        try:
            sweep = json.loads(sweep_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise NoDataError(f"{path_text(sweep_path)}: corrupt ({err})") from None
        SweepRecord.from_dict(sweep, path_text(sweep_path))
    if args.min_group_size < 1:
        raise UsageError(f"--min-group-size {args.min_group_size}: must be at least 1")
    out = args.out if args.out is not None else results / "report"
    check_writable_folder(out, out)
