"""Benchmark: the shipped ensemble against the fast (distilled) model, on torch, onnxruntime and
int8, in one run: faces a second on test crops, and each engine's test figures.

    python bench/fast_inference.py [--data PREPARED_OR_RAW] [--faces 2000] [--runs 3] [--threads 2]

Faces are the test split's first --faces crops, already decoded (the networks' time, not JPEG
decoding or process start). Each (model, engine) is timed --runs times after a warm-up batch;
the median is reported, with the ratio to the ensemble on the same engine. Test figures use the
whole test split, each model answering as it does by default (the ensemble with flip averaging,
the fast model with one view). int8 needs the ranges `facetune quantize` keeps in each model's
folder; without them that row says so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facetune.data.loading import load_split  # noqa: E402
from facetune.data.prepare import ensure_prepared  # noqa: E402
from facetune.predict import Predictor  # noqa: E402
from facetune.release.card import figures_line  # noqa: E402
from facetune.release.evaluation import group_metrics  # noqa: E402
from facetune.storage import ResultsStore  # noqa: E402
from facetune.tasks import TASKS  # noqa: E402

ENGINES = ("torch", "onnxruntime", "int8")
MODELS = ("ensemble", "fast")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the default data)")
    parser.add_argument("--work", default="runs/bench-fast", help="where a raw source is prepared")
    parser.add_argument("--faces", type=int, default=2000, help="test faces timed")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per model and engine (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def predictor_on(which: str, engine: str) -> tuple[Predictor, str]:
    predictor = Predictor.pretrained(device="cpu", which=which)
    line = "engine: torch" if engine == "torch" else predictor.use_onnxruntime(int8=engine == "int8")
    return predictor, line


def combined(predictor: Predictor, images: torch.Tensor, batch_size: int) -> tuple[np.ndarray, dict[str, slice]]:
    """The model's raw outputs in one (N, outputs) array, in TASKS order, and each task's columns of it."""
    outputs = predictor.raw_outputs(images, batch_size)
    widths = np.cumsum([0] + [outputs[name].shape[1] for name in TASKS])
    columns = {name: slice(int(widths[i]), int(widths[i + 1])) for i, name in enumerate(TASKS)}
    return np.concatenate([outputs[name] for name in TASKS], axis=1), columns


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    prepared = ensure_prepared(args.data, ResultsStore(Path(args.work)))
    test = load_split(prepared, "test")
    images = test.images()
    timed = images[: args.faces]
    labels = {name: np.asarray(test.labels(name)) for name in TASKS}
    rows = []
    for which in MODELS:
        for engine in ENGINES:
            predictor, line = predictor_on(which, engine)
            if engine == "int8" and predictor.engine != "onnxruntime int8":
                rows.append({"model": which, "engine": engine, "note": line})
                print(f"{which:8s} {engine:11s} not run: {line}", flush=True)
                continue
            combined(predictor, timed[: args.batch_size], args.batch_size)  # warm-up
            seconds = []
            for _ in range(args.runs):
                started = time.perf_counter()
                combined(predictor, timed, args.batch_size)
                seconds.append(time.perf_counter() - started)
            outputs, slices = combined(predictor, images, args.batch_size)
            figures = group_metrics(outputs, labels, lambda out: {n: out[:, s] for n, s in slices.items()})["overall"]
            row = {"model": which, "engine": engine, "tta_flip": predictor.tta_flip, "note": line,
                   "faces_per_second": len(timed) / statistics.median(seconds), "seconds": seconds,
                   "test": {n: {k: v for k, v in f.items() if k != "interval"} for n, f in figures.items()}}
            rows.append(row)
            print(f"{which:8s} {engine:11s} {row['faces_per_second']:7.0f} faces/s  test {figures_line(figures)}  ({line})",
                  flush=True)
    by = {(r["model"], r["engine"]): r for r in rows if "faces_per_second" in r}
    print(f"\n{len(timed)} test faces, {args.threads} threads, median of {args.runs} runs; ratio to the ensemble on the same engine:")
    for engine in ENGINES:
        if ("fast", engine) in by and ("ensemble", engine) in by:
            print(f"  {engine:11s} fast / ensemble = {by['fast', engine]['faces_per_second'] / by['ensemble', engine]['faces_per_second']:.1f}x")
    for which in MODELS:
        if (which, "int8") in by and (which, "onnxruntime") in by:
            print(f"  {which:8s} int8 / onnxruntime = "
                  f"{by[which, 'int8']['faces_per_second'] / by[which, 'onnxruntime']['faces_per_second']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
