"""Entry point for the sweep: `python jobs/tune_all.py ...` or `ray job submit -- python jobs/tune_all.py ...`.

Under `ray job submit --working-dir .` the uploaded copy of facetune beside this file is used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.commands.tune import add_arguments, run  # noqa: E402
from facetune.settings import DataNotFoundError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Tune all nine (model family, task) combinations with Ray Tune.")
    add_arguments(parser)
    try:
        return run(parser.parse_args())
    except DataNotFoundError as err:
        print(f"facetune: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
