"""Rebuild the models shipped in the package: `python jobs/train_release.py` (2.5-3.5 h on 2 CPU cores).

Trains raycfg/release.yaml (one member per seed) on the train split of the default data (or --data), writes
facetune/pretrained/ (model, metrics.json, MODEL_CARD.md). Rerunning after an interruption
resumes from the last finished epoch kept in --work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetune.release import PRETRAINED_DIR, train_release  # noqa: E402
from facetune.settings import DataNotFoundError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Train the release models shipped inside the facetune package.")
    parser.add_argument("--data", default=None, help="Kaggle CSV, UTKFace folder or prepared folder (default: $FACETUNE_DATA or ../shared/data/age_gender.csv.gz)")
    parser.add_argument("--work", default="runs/release", help="prepared data and the per-epoch resume state (default: runs/release)")
    parser.add_argument("--out", default=str(PRETRAINED_DIR), help="where the release files go (default: the package's pretrained/ folder)")
    parser.add_argument("--recipe", default=None, help="recipe YAML (default: raycfg/release.yaml)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for a quick check only)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N train rows only (for a quick check only)")
    args = parser.parse_args()
    try:
        train_release(args.data, args.work, args.out, args.recipe, epochs=args.epochs, limit=args.limit,
                      log=lambda line: print(line, flush=True))
    except DataNotFoundError as err:
        print(f"facetune: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
