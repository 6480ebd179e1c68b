"""The Ray Data path: one actor pool that decodes and predicts (one GPU per actor when present).

Actors load the models once from the same model directories as the driver's Predictor and call
the same `Predictor.raw_outputs`, so the Ray path gives the numbers of the local path. Each actor
decodes its own blocks of file paths (a few threads, as the local path does): one stage instead
of decode tasks feeding actors, so decoded pixels never travel through the object store, and
blocks are large so that per-block scheduling stays small next to the work.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from ray.data.extensions import ArrowTensorArray

from facetune.predict.faces import Faces
from facetune.predict.inputs import Inputs, Reject, decode_images, decode_threads
from facetune.predict.predictor import DEFAULT_BATCH_SIZE, Predictor, ProgressCallback
from facetune.ray_session import ray_session
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec

#: Most rows per Ray Data block (fewer when needed to give every actor a few blocks).
ROWS_PER_BLOCK = 2048
#: Blocks per actor at least, so that the pool shares the work evenly and progress moves.
BLOCKS_PER_ACTOR = 2
#: Decoding threads in a CPU actor: it holds one core; a second thread covers disk waits.
CPU_ACTOR_DECODE_THREADS = 2


class PredictBatch:
    """Ray Data actor: holds the models; decodes a block's files (when given paths) and returns
    each task's raw outputs, with NaN rows and a reason for the files that could not be read."""

    def __init__(self, model_dirs: dict[str, str], batch_size: int, tta_flip: bool = False,
                 onnxruntime: bool = False, int8: bool = False, pixels_spec: dict | None = None) -> None:
        on_gpu = torch.cuda.is_available()
        # CPU actors share the node's cores; one torch thread each avoids oversubscription.
        if not on_gpu:
            torch.set_num_threads(1)
        self.decode_threads = decode_threads() if on_gpu else CPU_ACTOR_DECODE_THREADS
        self.predictor = Predictor.from_model_dirs(model_dirs, tta_flip=tta_flip)
        if onnxruntime:  # the driver's predictor runs on it: the same engine here
            self.predictor.use_onnxruntime(int8=int8)
        self.batch_size = batch_size
        #: The layout of a table's `pixels` column (paths are decoded to the models' own specs).
        self.pixels_spec = InputSpec.from_dict(pixels_spec) if pixels_spec else DEFAULT_INPUT_SPEC

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "path" in batch:
            faces, readable, reasons = decode_images(list(batch["path"]), self.decode_threads, self.predictor.input_specs)
        else:
            faces = Faces.from_pixels(batch["pixels"], self.pixels_spec)
            readable, reasons = np.ones(len(batch["position"]), bool), [""] * len(batch["position"])
        result = {"position": batch["position"], "error": np.asarray(reasons, dtype=object)}
        outputs = self.predictor.raw_outputs(faces.select(readable), self.batch_size)
        for task, values in outputs.items():
            # Unreadable rows keep NaN outputs; the driver drops them by `error`.
            column = np.full((len(readable), values.shape[1]), np.nan, dtype=np.float32)
            column[readable] = values
            result[f"out_{task}"] = column
        return result


def _gpus_available() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


@contextlib.contextmanager
def _ray_progress_replaced_by(progress: ProgressCallback | None) -> Iterator[None]:
    """With a caller's progress display, switch Ray Data's own off (not both at once).

    A Dataset copies the DataContext when it is created, so this wraps the dataset's creation.
    Ray Data logs a hint whenever its bars are off; that hint is muted for the same span.
    """
    import ray.data

    if progress is None:
        yield
        return
    context = ray.data.DataContext.get_current()
    progress_logger = logging.getLogger("ray.data._internal.progress")
    saved_bars, saved_level = context.enable_progress_bars, progress_logger.level
    context.enable_progress_bars = False
    progress_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = saved_bars
        progress_logger.setLevel(saved_level)


def default_num_workers(gpus: float, cpus: float) -> int:
    """One actor per GPU; on CPUs one per core (each actor runs torch on one thread), at most 8."""
    if gpus >= 1:
        return int(gpus)
    return max(1, min(8, int(cpus)))


def _blocks(inputs: Inputs, rows_per_block: int) -> list[pa.Table]:
    """The inputs as Arrow tables of `rows_per_block` rows: position + path, or position + pixels."""
    tables = []
    for start in range(0, len(inputs), rows_per_block):
        stop = min(start + rows_per_block, len(inputs))
        position = pa.array(np.arange(start, stop, dtype=np.int64))
        if inputs.paths is not None:
            tables.append(pa.table({"position": position, "path": [str(p) for p in inputs.paths[start:stop]]}))
        else:
            # Ray's tensor column, so batches arrive as one (N, spec.pixels) array.
            pixels = ArrowTensorArray.from_numpy(np.ascontiguousarray(inputs.pixels[start:stop]).reshape(-1, inputs.spec.pixels))
            tables.append(pa.table({"position": position, "pixels": pixels}))
    return tables


def ray_raw_outputs(
    predictor: Predictor,
    inputs: Inputs,
    num_workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Reject]]:
    """Run `predictor` over `inputs` with Ray Data; returns (positions, task -> outputs, rejects).

    Positions index `inputs` and are sorted, so rows come back in input order.
    """
    import ray

    total = len(inputs)
    if total == 0:
        raise ValueError("no inputs to predict on")
    parts: list[dict[str, np.ndarray]] = []
    # The running Ray, $RAY_ADDRESS's cluster, or a private local one (never a stale recorded one).
    with ray_session(include_dashboard=False, configure_logging=False, log_to_driver=False), \
            _ray_progress_replaced_by(progress):
        gpus = _gpus_available()
        if num_workers is None:
            num_workers = default_num_workers(gpus, ray.available_resources().get("CPU", 1))
        rows_per_block = max(1, min(ROWS_PER_BLOCK, math.ceil(total / (BLOCKS_PER_ACTOR * num_workers))))
        dataset = ray.data.from_arrow(_blocks(inputs, rows_per_block)).map_batches(
            PredictBatch,
            fn_constructor_kwargs={
                "model_dirs": {t: str(d) for t, d in predictor.model_dirs.items()},
                "batch_size": batch_size,
                "tta_flip": predictor.tta_flip,
                "onnxruntime": predictor.engine != "torch",
                "int8": "int8" in predictor.engine,
                "pixels_spec": inputs.spec.to_dict(),
            },
            batch_size=rows_per_block,  # a whole block per call; raw_outputs batches the forward passes
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_gpus=1 if gpus >= 1 else 0,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            parts.append(batch)
            if progress is not None:
                progress(sum(len(p["position"]) for p in parts), total)
    return merged_blocks(parts, inputs.sources, predictor.tasks)


def merged_blocks(
    parts: list[dict[str, np.ndarray]], sources: list[str], tasks: tuple[str, ...]
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Reject]]:
    """The actors' output blocks (in any order) -> (positions, task -> outputs, rejects) in input order."""
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.argsort(merged["position"], kind="stable")
    merged = {key: values[order] for key, values in merged.items()}
    readable = np.asarray([not e for e in merged["error"]], dtype=bool)
    rejects = [
        Reject(sources[int(pos)], str(err))
        for pos, err in zip(merged["position"][~readable], merged["error"][~readable])
    ]
    outputs = {task: merged[f"out_{task}"][readable] for task in tasks}
    return merged["position"][readable], outputs, rejects

