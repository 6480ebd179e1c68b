"""`facetune train-student` (and jobs/train_student.py): distil the shipped ensemble into the fast model."""
from __future__ import annotations

import argparse

from facetune.release.paths import PRETRAINED_DIR


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-student",
        help="distil the shipped ensemble into one fast network (raycfg/student.yaml) in pretrained/student/",
        description="Train raycfg/student.yaml on the train split to match the shipped ensemble's outputs and the "
        "labels, and write the package's pretrained/student/ (model, metrics.json) and the model card's student "
        "section. A rerun resumes from the last finished epoch kept in --work.",
    )
    parser.add_argument("--data", default=None, help="Kaggle CSV, UTKFace folder or prepared folder "
                        "(default: $FACETUNE_DATA or ../shared/data/age_gender.csv.gz)")
    parser.add_argument("--work", default="runs/student",
                        help="prepared data, the teacher's outputs and the per-epoch resume state (default: runs/student)")
    parser.add_argument("--release", default=str(PRETRAINED_DIR),
                        help="the release to distil; the student is written into its student/ folder "
                        "(default: the package's pretrained/ folder)")
    parser.add_argument("--recipe", default=None, help="recipe YAML (default: raycfg/student.yaml)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for a quick check only)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N train rows only (for a quick check only)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N, mps or auto (default): train on the first GPU when present, else the CPU")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from facetune.release.student import train_student

    train_student(args.data, args.work, args.release, args.recipe, epochs=args.epochs, limit=args.limit,
                  log=lambda line: print(line, flush=True), device=args.device)
    return 0
