"""`facetune generate`: a grid of generated faces, one row per noise vector, one column per age."""
from __future__ import annotations

import argparse
from pathlib import Path

from facetune.cgan.generate import generate_grid, load_generator, parse_ages
from facetune.commands.checks import check_output_file
from facetune.errors import NoDataError, UsageError, one_line, path_text

#: What the grid can be saved as (torchvision's save_image goes through PIL).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="draw faces for requested ages with a trained cGAN",
        description="Each row keeps one noise vector (one 'person'); each column is a requested age.",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="generator.pt, a train-cgan results dir, or one of its Ray Train checkpoint dirs")
    parser.add_argument("--ages", type=_ages, default=parse_ages("21-30"), help="e.g. 21-30 or 20,40,60 (default 21-30)")
    parser.add_argument("--n", type=int, default=8, help="rows (noise vectors), default 8")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; the same seed draws the same people")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.set_defaults(func=_run)
    return parser


def _ages(text: str) -> list[int]:
    try:
        return parse_ages(text)
    except ValueError as err:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(err)) from None


def _run(args: argparse.Namespace) -> int:
    import pickle


    if args.n < 1:
        raise UsageError(f"--n {args.n}: must be at least 1")
    check_output_file(Path(args.out), IMAGE_SUFFIXES)
    try:
        load_generator(args.checkpoint)  # checked before drawing: a classifier or a stray file is refused here
    except FileNotFoundError as err:
        raise UsageError(f"--checkpoint {path_text(args.checkpoint)}: {err}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        reason = f"missing {err}" if isinstance(err, KeyError) else one_line(err, limit=200)
        raise NoDataError(f"--checkpoint {path_text(args.checkpoint)}: not a cGAN generator checkpoint ({reason})") from None
    out = generate_grid(args.checkpoint, args.ages, args.n, args.seed, args.out)
    print(f"wrote {out} ({args.n} rows x {len(args.ages)} ages)")
    return 0
