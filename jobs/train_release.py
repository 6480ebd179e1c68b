"""Rebuild the models shipped in the package: `python jobs/train_release.py` (45-60 min a member on
the 2-core machines that trained the shipped members; about 3 h on an AVX2-only 2-core CPU).

Trains raycfg/release.yaml (one member per seed) on the train split of the default data (or --data), writes
facetune/pretrained/ (model, metrics.json, MODEL_CARD.md). Rerunning after an interruption
resumes from the last finished epoch kept in --work; members already shipped with the same
member recipe and split are taken from facetune/pretrained/. The same options, code and exit
codes as `facetune train-release`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("train_release.py", "train_release"))
