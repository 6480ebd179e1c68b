"""`facetune export`: a sweep's best models (or the shipped ones) as ONNX files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetune.errors import InvalidInputError
from facetune.release.paths import PRETRAINED_CHOICES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export the prediction models to ONNX",
        description=(
            "Write one ONNX file per task (<task>.onnx) with the preprocessing contract in its "
            "metadata (key facetune.contract), then compare onnxruntime with torch (max abs difference)."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", metavar="RESULTS_DIR|pretrained",
                        help="a sweep's results directory ('pretrained': the same as --pretrained ensemble)")
    source.add_argument("--pretrained", choices=PRETRAINED_CHOICES,
                        help="a model shipped with facetune: ensemble (the most accurate) or fast (one distilled network)")
    parser.add_argument("--family", help="with a results dir: this family's checkpoints")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--out", required=True, type=Path, help="directory to write the model files to")
    parser.add_argument("--check-data", type=Path, metavar="PREPARED_DIR",
                        help="compare onnxruntime with torch on this prepared dataset's test split, "
                             "converted to each model's input spec (default: 64 random faces)")
    parser.set_defaults(func=run)
    return parser


def load_predictor(models: str | None, family: str | None, pretrained: str | None = None):
    from facetune.predict.predictor import Predictor

    if models is None or models == "pretrained":
        return Predictor.pretrained(device="cpu", which=pretrained or "ensemble")
    return Predictor.from_results(models, family=family, device="cpu")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from facetune.predict.faces import Faces
    from facetune.predict.onnx_export import export_onnx, max_abs_difference

    try:
        predictor = load_predictor(args.models, args.family, args.pretrained)
        paths = export_onnx(predictor, args.out)
    except (FileNotFoundError, ValueError, InvalidInputError) as err:
        print(f"facetune export: {err}", file=sys.stderr)
        return 2
    if args.check_data is not None:
        from facetune.data.loading import load_split

        split = load_split(args.check_data, "test")
        faces = Faces.from_pixels(split.pixels, split.spec)
    else:  # random pixels in every layout the models take
        rng = np.random.default_rng(0)
        faces = Faces({spec: rng.integers(0, 256, (64, spec.pixels), dtype=np.uint8) for spec in predictor.input_specs})
    print(f"parity check on {len(faces)} faces", file=sys.stderr)
    for task, difference in max_abs_difference(predictor, paths, faces).items():
        print(f"{paths[task]}: onnxruntime vs torch max abs difference {difference:.2e}")
    return 0
