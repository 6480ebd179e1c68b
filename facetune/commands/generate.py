"""`facetune generate`: a grid of generated faces, one row per noise vector, one column per age."""
from __future__ import annotations

import argparse

from facetune.cgan.generate import generate_grid, parse_ages


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="draw faces for requested ages with a trained cGAN",
        description="Each row keeps one noise vector (one 'person'); each column is a requested age.",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="generator.pt, a train-cgan results dir, or one of its Ray Train checkpoint dirs")
    parser.add_argument("--ages", type=parse_ages, default=parse_ages("21-30"), help="e.g. 21-30 or 20,40,60 (default 21-30)")
    parser.add_argument("--n", type=int, default=8, help="rows (noise vectors), default 8")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; the same seed draws the same people")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise SystemExit("facetune generate: --n must be at least 1")
    out = generate_grid(args.checkpoint, args.ages, args.n, args.seed, args.out)
    print(f"wrote {out} ({args.n} rows x {len(args.ages)} ages)")
    return 0
