"""Entry point for the report: `python jobs/report.py RESULTS_DIR [--out DIR]`, also under
`ray job submit --working-dir . -- python jobs/report.py ...`. Needs no Ray cluster.

The same options, code and exit codes as `facetune report`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("report.py", "report"))
