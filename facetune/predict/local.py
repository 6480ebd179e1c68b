"""The local path: predict gathered inputs in this process.

Image files are decoded by a thread pool one batch ahead of inference
(facetune.predict.inputs.iter_decoded), so decoding and the forward passes overlap.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from facetune.predict.faces import Faces
from facetune.predict.inputs import Inputs, Reject, iter_decoded
from facetune.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, ProgressCallback
from facetune.tasks import TASKS


def local_raw_outputs(
    predictor: Predictor,
    inputs: Inputs,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Reject]]:
    """(positions of the predicted inputs, task -> raw outputs in that order, rejects)."""
    total = len(inputs)
    kept: list[np.ndarray] = []
    rejects: list[Reject] = []

    def readable_batches() -> Iterator[tuple[int, Faces]]:
        if inputs.pixels is not None:  # decoded faces: every row is readable
            decoded: Iterable = ((start, Faces.from_pixels(inputs.pixels[start : start + batch_size], inputs.spec),
                                  np.ones(min(batch_size, total - start), bool), None)
                                 for start in range(0, total, batch_size))
        else:  # files: decoded to every layout the models take, each from the file's own pixels
            decoded = iter_decoded(inputs.paths, batch_size, threads, predictor.input_specs)
        for start, faces, ok, reasons in decoded:
            rejects.extend(Reject(inputs.sources[start + i], reasons[i]) for i in np.flatnonzero(~ok))
            kept.append(start + np.flatnonzero(ok))
            yield start + len(ok), faces if ok.all() else faces.select(ok)

    outputs = predict_batches(predictor, readable_batches(), total, progress)
    return (np.concatenate(kept) if kept else np.zeros(0, np.int64)), outputs, rejects


def predict_batches(predictor: Predictor, batches: Iterable[tuple[int, Faces]], total: int,
                    progress: ProgressCallback | None = None) -> dict[str, np.ndarray]:
    """task -> raw outputs of every (done, faces) batch in turn; progress(done, total) after each."""
    parts: dict[str, list[np.ndarray]] = {task: [] for task in predictor.tasks}
    for done, faces in batches:
        for task, values in predictor.raw_outputs(faces, max(1, len(faces))).items():
            parts[task].append(values)
        if progress is not None:
            progress(done, total)
    return {
        task: np.concatenate(values) if values else np.zeros((0, TASKS[task].num_outputs), np.float32)
        for task, values in parts.items()
    }
