"""`facetune train-release` (and jobs/train_release.py): rebuild the models shipped in the package."""
from __future__ import annotations

import argparse

from facetune.commands.prepare import add_spec_arguments, requested_spec
from facetune.release.paths import PRETRAINED_DIR


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from facetune.release.card import DOCS_PAGE

    parser = subparsers.add_parser(
        "train-release",
        help="train the release recipe (raycfg/release.yaml) into the package's pretrained/ folder",
        description="Train raycfg/release.yaml on the train split and write facetune/pretrained/ (model, "
        "metrics.json, MODEL_CARD.md). One member takes 45-60 min on 2 fast CPU cores and several hours "
        "on slow ones. A rerun resumes from the last finished epoch kept in --work.",
    )
    parser.add_argument("--data", default=None, help="Kaggle CSV, UTKFace folder or prepared folder "
                        "(default: $FACETUNE_DATA or ../shared/data/age_gender.csv.gz)")
    parser.add_argument("--work", default="runs/release",
                        help="prepared data and the per-epoch resume state (default: runs/release)")
    parser.add_argument("--out", default=str(PRETRAINED_DIR),
                        help="where the release files go (default: the package's pretrained/ folder)")
    parser.add_argument("--recipe", default=None, help="recipe YAML (default: raycfg/release.yaml)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the recipe's epochs (for a quick check only)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N train rows only (for a quick check only)")
    parser.add_argument("--docs", default=None,
                        help=f"also rewrite this page's release-figures block with the new figures ({DOCS_PAGE})")
    parser.add_argument("--val-only", action="store_true",
                        help="train or reuse the members, then print the ensemble's and each member's validation "
                        "figures and stop: nothing is written outside --work and test is not evaluated")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:N, mps or auto (default): train on the first GPU when present, else the CPU")
    add_spec_arguments(parser, "trained on")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from facetune.release.train import train_release

    train_release(args.data, args.work, args.out, args.recipe, epochs=args.epochs, limit=args.limit,
                  docs=args.docs, log=lambda line: print(line, flush=True), val_only=args.val_only,
                  device=args.device, spec=requested_spec(args))
    return 0
