"""`facetune quantize`: int8 ranges for a shipped model, calibrated on train faces and judged on test."""
from __future__ import annotations

import argparse

from facetune.release.paths import PRETRAINED_CHOICES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quantize",
        help="calibrate int8 for a shipped model (used by predict --engine int8)",
        description="Calibrate the activation ranges of a shipped model on 512 train faces, compare its int8 "
        "network with float32 on the test split, and keep the ranges in the model's folder "
        "(int8_ranges.json). `facetune predict --engine int8` uses them where the test figures stay within "
        "0.2 points and 0.05 years.",
    )
    parser.add_argument("--pretrained", choices=PRETRAINED_CHOICES, required=True,
                        help="the shipped model: ensemble or fast")
    parser.add_argument("--data", default=None, help="Kaggle CSV, UTKFace folder or prepared folder "
                        "(default: $FACETUNE_DATA or ../shared/data/age_gender.csv.gz)")
    parser.add_argument("--work", default="runs/quantize", help="where a raw source is prepared (default: runs/quantize)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from facetune.release.quantize import quantize_shipped

    quantize_shipped(args.pretrained, args.data, args.work, log=lambda line: print(line, flush=True))
    return 0
