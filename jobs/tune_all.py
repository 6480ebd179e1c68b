"""Entry point for the sweep: `python jobs/tune_all.py ...` or `ray job submit -- python jobs/tune_all.py ...`.

Under `ray job submit --working-dir .` the uploaded copy of facetune beside this file is used.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cli import OneLineParser, run_command  # noqa: E402
from facetune.commands.tune import add_arguments, run  # noqa: E402


def main() -> int:
    parser = OneLineParser(prog="tune_all.py",
                           description="Tune all nine (model family, task) combinations with Ray Tune.")
    add_arguments(parser)
    return run_command("tune_all.py", run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
