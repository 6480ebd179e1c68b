"""Predicting gathered inputs: choose the local path or the Ray Data path, run it, build the table."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from facetune.predict.inputs import Inputs
from facetune.predict.local import local_raw_outputs
from facetune.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, ProgressCallback
from facetune.predict.table import PredictionResult, prediction_frame

#: Below this many inputs the Ray path's start (an actor pool loading the models) outweighs a
#: cluster's extra workers.
RAY_MIN_IMAGES = 1000
#: From this many inputs the onnxruntime engine (a second or two to export each network) pays off.
ONNXRUNTIME_MIN_IMAGES = 200
#: int8: onnxruntime with the networks quantised where `facetune quantize` judged them within tolerance.
ENGINES = ("auto", "torch", "onnxruntime", "int8")


def chooses_onnxruntime(num_inputs: int, engine: str = "auto") -> bool:
    """Whether the networks run on onnxruntime: asked for, or (auto) ONNXRUNTIME_MIN_IMAGES inputs or more."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return engine in ("onnxruntime", "int8") or (engine == "auto" and num_inputs >= ONNXRUNTIME_MIN_IMAGES)


def chooses_ray(num_inputs: int, cluster_cpus: float | None = None) -> bool:
    """The automatic choice: Ray Data only for more than RAY_MIN_IMAGES inputs on an attached Ray
    cluster with more CPUs than this machine (`cluster_cpus`, None when no cluster is attached).

    On a single node the local path is the faster one at every size measured (bench/predict.py:
    its threaded decode overlaps inference, while the Ray path pays for an actor pool, block
    transfers and per-actor decoding on the same cores).
    """
    return num_inputs > RAY_MIN_IMAGES and cluster_cpus is not None and cluster_cpus > (os.cpu_count() or 1)


def attached_cluster_cpus() -> float | None:
    """CPUs of the Ray cluster this process is connected to or pointed at ($RAY_ADDRESS, CPUs
    unknown until connected, so counted as more than this machine's), None otherwise."""
    ray = sys.modules.get("ray")  # never imported here just to find out: Ray's import is slow
    if ray is not None and ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 0))
    return float("inf") if os.environ.get("RAY_ADDRESS") else None


def predict_inputs(
    predictor: Predictor,
    inputs: Inputs,
    use_ray: bool | None = None,
    num_workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    engine: str = "auto",
) -> PredictionResult:
    """Predict on gathered inputs (image files or decoded faces), locally or with Ray Data
    (`use_ray` None: chooses_ray decides for the attached cluster, if any), with the networks on
    torch or onnxruntime (`engine`, see chooses_onnxruntime; the same outputs within 1e-4).
    Rows keep input order; unreadable files are rejects."""
    if chooses_onnxruntime(len(inputs), engine):
        predictor.use_onnxruntime(int8=engine == "int8")
    if use_ray is None:
        use_ray = chooses_ray(len(inputs), attached_cluster_cpus())
    if use_ray and len(inputs):
        from facetune.predict.batch import ray_raw_outputs  # imports Ray, only when it is used

        positions, outputs, decode_rejects = ray_raw_outputs(
            predictor, inputs, num_workers=num_workers, batch_size=batch_size, progress=progress
        )
    else:
        positions, outputs, decode_rejects = local_raw_outputs(predictor, inputs, batch_size, progress)
    sources = [inputs.sources[i] for i in positions]
    frame = prediction_frame(predictor.tasks, sources, outputs, index=positions)
    return PredictionResult(frame, list(inputs.rejects) + decode_rejects, outputs)


def predict_images(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike[str]],
    use_ray: bool | None = None,
    num_workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    engine: str = "auto",
) -> PredictionResult:
    """Predict on image files (any size, colour or gray); unreadable files become rejects."""
    inputs = Inputs(sources=[str(p) for p in paths], paths=[Path(p) for p in paths])
    return predict_inputs(predictor, inputs, use_ray=use_ray, num_workers=num_workers,
                          batch_size=batch_size, progress=progress, engine=engine)
