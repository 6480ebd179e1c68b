"""The `facetune` console script: a thin dispatcher over facetune.commands.*."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from facetune.settings import DataNotFoundError

#: Subcommand modules under facetune.commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = ("prepare", "tune", "report", "train_cgan", "generate", "predict", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facetune",
        description="Face attribute recognition (age, gender, ethnicity) trained and tuned on Ray.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"facetune.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataNotFoundError as err:
        print(f"facetune: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
