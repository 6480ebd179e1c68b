"""`facetune prepare SOURCE --out DIR [--seed N] [--strict] [--size N] [--color | --gray]`: face data -> Parquet + manifest + figures."""
from __future__ import annotations

import argparse

from facetune.data.prepare import prepare, summary_lines
from facetune.errors import UsageError
from facetune.records import (
    DEFAULT_INPUT_SPEC,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    PARQUET_PATTERN,
    PREPARED_FIGURES_DIR,
    PREPARED_MANIFEST,
    InputSpec,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare",
        help="convert a Kaggle age_gender.csv(.gz) or a UTKFace image folder to a Parquet dataset",
        description=(
            "Read SOURCE (a Kaggle age_gender.csv, plain or .gz, or a folder of UTKFace images named "
            "[age]_[gender]_[race]_[datetime].jpg.chip.jpg), validate every row, split it 80/10/10 "
            "(stratified by ethnicity x gender, identical images kept together) and write "
            f"DIR/{PARQUET_PATTERN}, DIR/{PREPARED_MANIFEST} and DIR/{PREPARED_FIGURES_DIR}/*.png."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="Kaggle CSV (.csv or .csv.gz) or UTKFace folder")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="output directory: created if missing, replaced atomically if it holds a prepared dataset")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DIR even when it is a non-empty folder that is not a prepared dataset")
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="split seed (default: 0)")
    parser.add_argument(
        "--strict", action="store_true", help="stop with a non-zero exit at the first bad row instead of rejecting it"
    )
    add_spec_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_spec_arguments(parser: argparse.ArgumentParser, what: str = "written") -> None:
    """--size N and --color/--gray: the layout of the faces prepared (prepare, train-release)."""
    parser.add_argument("--size", metavar="N", type=int, default=None,
                        help=f"side of the square faces {what}, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels "
                        f"(default: {DEFAULT_INPUT_SPEC.size}; a Kaggle CSV gives {DEFAULT_INPUT_SPEC.size} or less)")
    colour = parser.add_mutually_exclusive_group()
    colour.add_argument("--color", dest="color", action="store_true", default=None,
                        help=f"RGB faces {what} (from a UTKFace image folder only)")
    colour.add_argument("--gray", dest="color", action="store_false", help=f"gray faces {what} (the default)")


def input_spec(args: argparse.Namespace) -> InputSpec:
    """The layout --size and --color/--gray ask for (the default where neither is given), or a one-line UsageError."""
    return requested_spec(args) or DEFAULT_INPUT_SPEC


def requested_spec(args: argparse.Namespace) -> InputSpec | None:
    """The layout --size and --color/--gray ask for, None when neither is given, or a one-line UsageError."""
    if args.size is None and args.color is None:
        return None
    size = DEFAULT_INPUT_SPEC.size if args.size is None else args.size
    try:
        return InputSpec.color(size) if args.color else InputSpec.gray(size)
    except ValueError as err:
        raise UsageError(f"--size {size}: {err}") from None


def run(args: argparse.Namespace) -> int:
    """Prepare the data and print the summary; user errors are raised (facetune.errors) for cli.main."""
    manifest = prepare(args.source, args.out, seed=args.seed, strict=args.strict, progress=True,
                       overwrite=args.overwrite, spec=input_spec(args))
    for line in summary_lines(manifest):
        print(line)
    print(f"wrote {args.out}/ ({', '.join(manifest['parquet_files'])}, {PREPARED_MANIFEST}, {PREPARED_FIGURES_DIR}/)")
    return 0
