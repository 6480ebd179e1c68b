"""The `facetune` console script: a thin dispatcher over facetune.commands.*.

Every command reports a user error the same way (facetune.errors): one line on stderr,
`facetune COMMAND: message`, and a documented exit code. Only bugs print a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Sequence

from facetune.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, FacetuneError, one_line

#: Subcommand modules under facetune.commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = ("prepare", "tune", "ensemble", "final_fit", "report", "train_cgan", "generate", "predict",
                                    "serve", "export", "train_release", "train_student", "quantize")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`PROG: message (see PROG --help)`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `facetune` parser; with `command` (a known subcommand's name), that subcommand only.

    Some commands import torch to declare their options (2-3 s); building just the one that
    was asked for keeps a usage error or a config typo a one-second answer.
    """
    parser = OneLineParser(
        prog="facetune",
        description="Face attribute recognition (age, gender, ethnicity) trained and tuned on Ray.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=OneLineParser)
    module_name = (command or "").replace("-", "_")
    for name in ([module_name] if module_name in COMMAND_MODULES else COMMAND_MODULES):
        module = importlib.import_module(f"facetune.commands.{name}")
        module.add_parser(subparsers)
    return parser


def run_command(prog: str, func, args: argparse.Namespace) -> int:
    """Call a command's `func(args)`; a FacetuneError becomes one line on stderr and its exit code."""
    try:
        return int(func(args) or 0)
    except FacetuneError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`facetune predict --about | head`): stop quietly, as a shell tool
        # killed by SIGPIPE would; stdout goes to devnull so the exit's own flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run_job(prog: str, module: str, argv: Sequence[str] | None = None) -> int:
    """A `jobs/PROG` script: the options, entry point and error handling of the command in
    facetune.commands.<module>, under the script's own name."""
    parser = OneLineParser(prog=prog)
    subparsers = parser.add_subparsers(parser_class=OneLineParser)
    importlib.import_module(f"facetune.commands.{module}").add_parser(subparsers)
    (command_parser,) = subparsers.choices.values()
    command_parser.prog = prog
    args = command_parser.parse_args(argv)
    return run_command(prog, args.func, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return run_command(f"facetune {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
