"""`facetune predict`: age, gender and ethnicity for image files, a prepared dir or a Kaggle CSV."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from facetune.predict.predictor import DEFAULT_BATCH_SIZE, RAY_MIN_IMAGES

#: Rejects listed on the terminal; all of them go to the rejects CSV.
SHOWN_REJECTS = 20


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict age, gender and ethnicity with a sweep's best models",
        description=(
            "Predict age, gender and ethnicity. INPUT is image files or folders (JPEG/PNG, any size, "
            "colour or gray; folders are searched recursively), a prepared Parquet directory, or a "
            "Kaggle-layout CSV (.csv or .csv.gz). Per task, the model with the best validation "
            "metric in RESULTS_DIR/summary.json is used (of --family if given)."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files/folders, a prepared dir or a CSV")
    parser.add_argument("--models", required=True, metavar="RESULTS_DIR", help="a sweep's results directory")
    parser.add_argument("--family", help="use this model family's checkpoints (cnn, dnn, pca_dnn)")
    parser.add_argument("--out", required=True, type=Path, help="predictions CSV to write")
    parser.add_argument(
        "--evaluate", action="store_true",
        help="score against known labels (UTKFace names, CSV or Parquet columns) next to the sweep's test figures",
    )
    parser.add_argument("--all-metrics", action="store_true", help="with --evaluate: print every metric")
    parser.add_argument("--split", choices=("train", "val", "test"), help="prepared Parquet input: this split only")
    parser.add_argument(
        "--ray", action=argparse.BooleanOptionalAction, default=None,
        help=f"force (or forbid) Ray Data batch inference; default: Ray above {RAY_MIN_IMAGES} inputs",
    )
    parser.add_argument("--workers", type=int, help="Ray Data predictor actors (default: one per GPU, else one per CPU, at most 8)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="faces per forward pass")
    parser.add_argument("--device", help="torch device for the plain loop (default: cuda when present)")
    parser.add_argument(
        "--faces", choices=("auto", "detect", "whole"), default="auto",
        help="detect: find and align the faces in every image; whole: each image is one face crop "
             "(UTKFace-style); auto (default): images over 128 px are searched, smaller ones are crops",
    )
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write each image with boxes and labels to DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.set_defaults(func=run)
    return parser


class ProgressLine:
    """'predict: done/total (pct, rate)' on stderr: redrawn in place on a terminal, else every few seconds."""

    def __init__(self, label: str = "predict", every_s: float = 2.0) -> None:
        self.label = label
        self.every_s = every_s
        self.started = time.monotonic()
        self.last = float("-inf")
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self.last < (0.2 if self.tty else self.every_s):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        text = f"{self.label}: {done}/{total} images ({100 * done / max(total, 1):.0f}%, {rate:.0f} img/s)"
        end = "\n" if finished or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from facetune.predict.evaluate import evaluate, format_evaluation
    from facetune.predict.inputs import gather_inputs
    from facetune.predict.photos import needs_detection, predict_photos
    from facetune.predict.predictor import Predictor

    try:
        inputs = gather_inputs(args.inputs, split=args.split, with_labels=args.evaluate)
        predictor = Predictor.from_results(args.models, family=args.family, device=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"facetune predict: {err}", file=sys.stderr)
        return 2
    print(f"models:\n{predictor.describe()}", file=sys.stderr)
    mode = "Ray Data" if (args.ray if args.ray is not None else len(inputs) > RAY_MIN_IMAGES) else "plain loop"
    print(f"inputs: {len(inputs)} ({mode})", file=sys.stderr)

    progress = None if args.quiet else ProgressLine()
    if inputs.paths is not None and (args.annotate or needs_detection(inputs.paths, args.faces)):
        # Photos: one row per face (whole-image rows where `auto` sees a crop).
        result = predict_photos(predictor, inputs.paths, args.faces, args.batch_size, progress, args.annotate)
        result.rejects[:0] = inputs.rejects
    else:
        result = predictor.predict_inputs(
            inputs, use_ray=args.ray, num_workers=args.workers, batch_size=args.batch_size, progress=progress,
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.predictions.to_csv(args.out, index=False)
    print(f"wrote {len(result.predictions)} predictions to {args.out}", file=sys.stderr)
    if result.rejects:
        rejects_path = args.out.with_name(args.out.name.removesuffix(".csv") + ".rejects.csv")
        result.rejects_frame().to_csv(rejects_path, index=False)
        print(f"{len(result.rejects)} input(s) without a prediction (all in {rejects_path}):", file=sys.stderr)
        for reject in result.rejects[:SHOWN_REJECTS]:
            print(f"  {reject.source}: {reject.reason}", file=sys.stderr)
        if len(result.rejects) > SHOWN_REJECTS:
            print(f"  ... and {len(result.rejects) - SHOWN_REJECTS} more", file=sys.stderr)

    if args.evaluate:
        if inputs.labels is None or inputs.labels.isna().all().all():
            print("evaluate: no labels known for these inputs (UTKFace names, CSV or Parquet carry them)")
        else:
            print(format_evaluation(evaluate(predictor, result, inputs.labels), all_metrics=args.all_metrics))
    return 0 if len(result.predictions) else 1
