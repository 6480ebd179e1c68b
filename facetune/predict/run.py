"""Predicting gathered inputs: choose the local path or the Ray Data path, run it, build the table."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from facetune.predict.inputs import Inputs
from facetune.predict.local import local_raw_outputs
from facetune.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, ProgressCallback
from facetune.predict.table import PredictionResult, prediction_frame

#: Inputs with more images than this run as Ray Data batch inference unless told otherwise.
RAY_MIN_IMAGES = 1000


def chooses_ray(num_inputs: int) -> bool:
    """The automatic choice between the two paths."""
    return num_inputs > RAY_MIN_IMAGES


def predict_inputs(
    predictor: Predictor,
    inputs: Inputs,
    use_ray: bool | None = None,
    num_workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> PredictionResult:
    """Predict on gathered inputs (image files or decoded faces), locally or with Ray Data
    (`use_ray` None: chooses_ray decides). Rows keep input order; unreadable files are rejects."""
    if use_ray is None:
        use_ray = chooses_ray(len(inputs))
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
) -> PredictionResult:
    """Predict on image files (any size, colour or gray); unreadable files become rejects."""
    inputs = Inputs(sources=[str(p) for p in paths], paths=[Path(p) for p in paths])
    return predict_inputs(predictor, inputs, use_ray=use_ray, num_workers=num_workers,
                          batch_size=batch_size, progress=progress)
