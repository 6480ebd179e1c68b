"""Distil the shipped ensemble into the fast model: `python jobs/train_student.py`.

Trains raycfg/student.yaml on the train split of the default data (or --data) to match the
ensemble in facetune/pretrained/ and the labels, and writes facetune/pretrained/student/ and the
model card's student section. Rerunning after an interruption resumes from the last finished
epoch kept in --work. The same options, code and exit codes as `facetune train-student`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("train_student.py", "train_student"))
