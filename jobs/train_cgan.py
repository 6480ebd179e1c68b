"""Train the age-conditional GAN on Ray Train.

    python jobs/train_cgan.py --profile smoke --data DIR --results DIR [--resume] [--age-model PATH]
    ray job submit --working-dir . -- python jobs/train_cgan.py --profile local --data DIR --results DIR

The same options, code and exit codes as `facetune train-cgan`: connects to --address or
RAY_ADDRESS when given (as under `ray job submit`), else starts a local Ray and stops it at the end.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Runs from a plain checkout too (`python jobs/...` puts jobs/, not the repo root, on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("train_cgan.py", "train_cgan"))
