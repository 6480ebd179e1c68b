"""`facetune predict`: age, gender and ethnicity for image files, a prepared dir or a Kaggle CSV."""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

from facetune.commands.checks import check_writable_folder
from facetune.detectors import DEFAULT_DETECTOR, DETECTORS
from facetune.devices import resolve_device
from facetune.errors import NoDataError, OutputError, UsageError, one_line, path_text
from facetune.predict.choice import read_summary
from facetune.predict.evaluate import evaluate, evaluate_groups, format_evaluation, format_groups
from facetune.predict.inputs import gather_inputs
from facetune.predict.predictor import DEFAULT_BATCH_SIZE, Predictor
from facetune.predict.run import (
    ENGINES,
    ONNXRUNTIME_MIN_IMAGES,
    RAY_MIN_IMAGES,
    attached_cluster_cpus,
    chooses_onnxruntime,
    chooses_ray,
    predict_inputs,
)
from facetune.predict.table import spreadsheet_safe
from facetune.records import SPLITS
from facetune.release.paths import CARD_FILE, PRETRAINED_CHOICES, PRETRAINED_DIR

#: Rejects listed on the terminal; all of them go to the rejects CSV.
SHOWN_REJECTS = 20


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict age, gender and ethnicity (shipped models, or a sweep's best)",
        description=(
            "Predict age, gender and ethnicity. INPUT is image files or folders (JPEG/PNG, any size, "
            "colour or gray; folders are searched recursively), a prepared Parquet directory, or a "
            "Kaggle-layout CSV (.csv or .csv.gz). Without --models the models shipped in the package "
            "answer (see --about); with --models RESULTS_DIR, per task the model with the best "
            "validation metric in RESULTS_DIR/summary.json (of --family if given)."
        ),
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files/folders, a prepared dir or a CSV")
    parser.add_argument("--models", metavar="RESULTS_DIR", help="a sweep's results directory (default: the shipped models)")
    parser.add_argument("--pretrained", choices=PRETRAINED_CHOICES, default="ensemble",
                        help="which shipped model answers without --models: ensemble (default, the most accurate) "
                        "or fast (one distilled network, about ten times the faces a second; see --about)")
    parser.add_argument("--about", action="store_true", help="print the shipped models' model card and exit")
    parser.add_argument("--family", help="with --models: use this model family's checkpoints (e.g. cnn, resnet, ensemble)")
    parser.add_argument("--out", type=Path, help="predictions CSV to write (default: print the table)")
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None,
        help="average each face with its mirror image (default: on for the shipped ensemble, off for the fast "
             "model and for --models, whose test figures were measured without it)",
    )
    parser.add_argument(
        "--evaluate", action="store_true",
        help="score against known labels (UTKFace names, CSV or Parquet columns) next to the sweep's test figures",
    )
    parser.add_argument("--all-metrics", action="store_true", help="with --evaluate: print every metric")
    parser.add_argument("--split", choices=SPLITS, help="prepared Parquet input: this split only")
    parser.add_argument(
        "--ray", action=argparse.BooleanOptionalAction, default=None,
        help=f"force (or forbid) Ray Data batch inference; default: Ray above {RAY_MIN_IMAGES} inputs on a Ray "
             "cluster with more CPUs than this machine ($RAY_ADDRESS), else the local path",
    )
    parser.add_argument("--workers", type=int, help="Ray Data predictor actors (default: one per GPU, else one per CPU, at most 8)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="faces per forward pass")
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default): the first GPU when present, else the CPU")
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto",
        help=f"run the networks with torch or onnxruntime (2-3x faster on CPU, the same outputs within 1e-4), or "
             f"int8 (onnxruntime quantised where `facetune quantize` found the test figures unchanged within 0.2 "
             f"points and 0.05 years); auto (default): onnxruntime from {ONNXRUNTIME_MIN_IMAGES} inputs on",
    )
    parser.add_argument(
        "--faces", choices=("auto", "detect", "whole"), default="auto",
        help="detect: find and align the faces in every image; whole: each image is one face crop "
             "(UTKFace-style); auto (default): images over 128 px are searched, smaller ones are crops",
    )
    parser.add_argument(
        "--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
        help="face detector for photos: cnn (default; RetinaFace, aligned on eyes, nose and mouth) or haar "
             "(OpenCV cascades, the fallback)",
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


def rejects_path(out: Path) -> Path:
    """Where the rejects of a run writing `out` go: beside it, NAME.rejects.csv."""
    return out.with_name(out.name.removesuffix(".csv") + ".rejects.csv")


def check_out(out: Path, inputs: list[str]) -> None:
    """Refuse, before any work, an --out that is a folder, a device or FIFO, or would write over an input."""
    if out.is_dir():
        raise OutputError(f"--out {path_text(out)}: is a folder; give a CSV file path such as {path_text(out / 'predictions.csv')}")
    if out.exists() and not out.is_file():
        raise OutputError(f"--out {path_text(out)}: not a regular file (a device or FIFO); give a CSV file path")
    for written in (out, rejects_path(out)):
        for given in inputs:
            if written.exists() and Path(given).exists() and written.resolve() == Path(given).resolve():
                raise OutputError(f"--out {path_text(out)}: would overwrite the input {path_text(given)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--out {path_text(out)}: cannot create its folder ({err.strerror or err})") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise OutputError(f"--out {path_text(out)}: not writable")


def load_predictor(args: argparse.Namespace):
    """The shipped models, or the sweep's best; a missing or damaged results directory is a user error."""

    if args.models is None:
        try:
            return Predictor.pretrained(device=args.device, tta_flip=args.tta, which=args.pretrained)
        except FileNotFoundError as err:
            raise NoDataError(str(err)) from None
    where = f"--models {path_text(args.models)}"
    try:
        entries = read_summary(args.models)
    except FileNotFoundError as err:
        raise UsageError(f"{where}: {err}") from None
    except (OSError, ValueError) as err:
        raise NoDataError(f"{where}: cannot load the models (summary.json: {err})") from None
    families = sorted({str(e.get("family")) for e in entries if isinstance(e, dict)})
    if args.family is not None and args.family not in families:
        raise UsageError(f"--family {args.family}: no such family in {path_text(args.models)}/summary.json "
                         f"(it has: {', '.join(families) or 'none'})")
    try:
        predictor = Predictor.from_results(args.models, family=args.family, device=args.device)
        predictor.tta_flip = bool(args.tta)
        return predictor
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise NoDataError(f"{where}: cannot load the models ({err})") from None


def run(args: argparse.Namespace) -> int:
    from facetune.predict.photos import needs_detection, predict_photos

    if args.about:
        card = PRETRAINED_DIR / CARD_FILE
        if not card.is_file():
            raise NoDataError(f"no model card at {card}: the package ships no pretrained models")
        print(card.read_text())
        return 0
    if not args.inputs:
        raise UsageError("give at least one INPUT (image files or folders, a prepared dir or a CSV), or --about")
    if args.models is not None and args.pretrained != "ensemble":
        raise UsageError(f"--pretrained {args.pretrained} picks a shipped model; leave it out with --models RESULTS_DIR")
    if args.family is not None and args.models is None:
        raise UsageError("--family needs --models RESULTS_DIR (the shipped models are one multitask network)")
    if args.batch_size < 1 or (args.workers is not None and args.workers < 1):
        raise UsageError("--batch-size and --workers must be at least 1")
    args.device = resolve_device(args.device)  # a misspelt or absent device stops here, in one line
    if args.out is not None:
        check_out(args.out, args.inputs)
    if args.annotate is not None:
        check_writable_folder(args.annotate, args.annotate, "--annotate")
    inputs = gather_inputs(args.inputs, split=args.split, with_labels=args.evaluate)
    predictor = load_predictor(args)
    print(f"models:\n{predictor.describe()}", file=sys.stderr)
    use_ray = args.ray if args.ray is not None else chooses_ray(len(inputs), attached_cluster_cpus())
    print(f"inputs: {len(inputs)} ({'Ray Data' if use_ray else 'local path'})", file=sys.stderr)
    if chooses_onnxruntime(len(inputs), args.engine):
        print(predictor.use_onnxruntime(int8=args.engine == "int8"), file=sys.stderr)

    progress = None if args.quiet else ProgressLine()
    if inputs.paths is not None and (args.annotate or needs_detection(inputs.paths, args.faces)):
        # Photos: one row per face (whole-image rows where `auto` sees a crop).
        result = predict_photos(predictor, inputs.paths, args.faces, args.batch_size, progress, args.annotate,
                                args.detector)
        result.rejects[:0] = inputs.rejects
    else:
        result = predict_inputs(
            predictor, inputs, use_ray=use_ray, num_workers=args.workers, batch_size=args.batch_size, progress=progress,
            engine=args.engine,
        )
    if args.out is not None:
        write_outputs(result, args.out)
    else:
        print_outputs(result)

    if args.evaluate and len(result.predictions):
        if inputs.labels is None or inputs.labels.isna().all().all():
            print("evaluate: no labels known for these inputs (UTKFace names, CSV or Parquet carry them)")
        else:
            print(format_evaluation(evaluate(predictor, result, inputs.labels), all_metrics=args.all_metrics))
            groups = format_groups(evaluate_groups(predictor, result, inputs.labels))
            if groups:
                print("\nper group (facetune.groups), with 95% bootstrap intervals:\n" + groups)
    if not len(result.predictions):
        raise NoDataError(
            f"no readable face in the input(s): {len(result.rejects)} reject(s)"
            + (f", reasons in {path_text(rejects_path(args.out))}" if args.out is not None else "")
        )
    return 0


def print_outputs(result) -> None:
    """Without --out: the predictions as a table on stdout, the rejects on stderr."""
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.float_format", "{:.3f}".format):
        print(result.predictions.to_string(index=False))
    print_rejects(result.rejects, "reasons below")


def print_rejects(rejects, where: str) -> None:
    if not rejects:
        return
    print(f"{len(rejects)} input(s) without a prediction ({where}):", file=sys.stderr)
    for reject in rejects[:SHOWN_REJECTS]:
        print(f"  {one_line(reject.source)}: {one_line(reject.reason)}", file=sys.stderr)
    if len(rejects) > SHOWN_REJECTS:
        print(f"  ... and {len(rejects) - SHOWN_REJECTS} more", file=sys.stderr)


def write_outputs(result, out: Path) -> None:
    """Write the predictions and, when there are any, the rejects beside them (never a stale one);
    a write that fails (disk full, a file where a folder should be) is an OutputError naming the file."""

    rejects = rejects_path(out)
    written = out
    try:
        spreadsheet_safe(result.predictions).to_csv(out, index=False)
        written = rejects
        if not result.rejects:
            rejects.unlink(missing_ok=True)  # a rejects file from an earlier run must not look like this run's
        else:
            spreadsheet_safe(result.rejects_frame()).to_csv(rejects, index=False)
    except OSError as err:
        raise OutputError(f"--out {path_text(written)}: cannot write ({err.strerror or err})") from None
    print(f"wrote {len(result.predictions)} predictions to {out}", file=sys.stderr)
    if result.rejects:
        print_rejects(result.rejects, f"all in {rejects}")
