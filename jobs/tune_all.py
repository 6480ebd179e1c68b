"""Entry point for the sweep: `python jobs/tune_all.py ...` or `ray job submit -- python jobs/tune_all.py ...`.

The same options, code and exit codes as `facetune tune`. Under `ray job submit --working-dir .`
the uploaded copy of facetune beside this file is used.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("tune_all.py", "tune"))
