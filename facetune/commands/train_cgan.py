"""`facetune train-cgan`: train the conditional GAN on Ray Train (same options as jobs/train_cgan.py)."""
from __future__ import annotations

import argparse

from facetune.cgan import job


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train-cgan",
        help="train the age-conditional GAN on Ray Train",
        description="Train the age-conditional GAN data-parallel on Ray Train; writes checkpoints, "
        "per-epoch sample grids, history.csv, metrics.json and generator.pt under --results.",
    )
    job.add_arguments(parser)
    parser.set_defaults(func=job.run)
    return parser
