"""Entry point for the report: `python jobs/report.py RESULTS_DIR [--out DIR]`, also under
`ray job submit --working-dir . -- python jobs/report.py ...`. Needs no Ray cluster.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.commands.report import add_arguments, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Write report.md, report.html and results.csv for a sweep.")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
