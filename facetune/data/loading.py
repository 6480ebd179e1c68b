"""Read a prepared directory for training: per split, a Ray Dataset or in-memory arrays.

This is the only way other modules read prepared data (contract in docs/design.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_ds
import torch

from facetune.records import (
    DEFAULT_INPUT_SPEC,
    PARQUET_PATTERN,
    SPLITS,
    TASK_NAMES,
    InputSpec,
    PreparedManifest,
    require_prepared_dir,
)
from facetune.settings import DataNotFoundError

if TYPE_CHECKING:
    import ray.data


@dataclass
class SplitArrays:
    """One split fully in memory; row i of every array is the same face."""

    pixels: np.ndarray  # (N, spec.pixels) uint8, channel-first
    age: np.ndarray  # (N,) int64
    gender: np.ndarray  # (N,) int64
    ethnicity: np.ndarray  # (N,) int64
    source: np.ndarray  # (N,) object (str)
    spec: InputSpec = DEFAULT_INPUT_SPEC

    def __len__(self) -> int:
        return len(self.age)

    def images(self) -> torch.Tensor:
        """(N, C, S, S) float32 in [0, 1], C and S from `spec`."""
        return torch.from_numpy(pixels_to_images(self.pixels, self.spec))

    def head(self, n: int) -> "SplitArrays":
        """The first `n` rows (a quick run on part of a split)."""
        return SplitArrays(self.pixels[:n], self.age[:n], self.gender[:n], self.ethnicity[:n], self.source[:n], self.spec)

    def labels(self, task: str) -> np.ndarray:
        """The (N,) int64 target of `task` ("age", "gender" or "ethnicity")."""
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
        return getattr(self, task)


def pixels_to_images(pixels: np.ndarray, spec: InputSpec = DEFAULT_INPUT_SPEC) -> np.ndarray:
    """(N, spec.pixels) uint8 -> (N, C, S, S) float32 in [0, 1]."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != spec.pixels:
        raise ValueError(f"expected pixels of shape (N, {spec.pixels}) ({spec.describe()}), got {pixels.shape}")
    return (pixels.astype(np.float32) / 255.0).reshape(-1, *spec.shape)


def prepared_spec(data_dir: str | os.PathLike[str]) -> InputSpec:
    """The layout of a prepared folder's faces (from its manifest; 48x48 gray when it predates specs)."""
    return PreparedManifest.read(data_dir).spec


def parquet_files(data_dir: str | os.PathLike[str]) -> list[Path]:
    """The Parquet parts of a prepared directory, or DataNotFoundError saying what to run."""
    directory = require_prepared_dir(data_dir)
    files = sorted(directory.glob(PARQUET_PATTERN))
    if not files:
        raise DataNotFoundError(f"no prepared data in {directory} (no {PARQUET_PATTERN}); "
                                f"run `facetune prepare SOURCE --out {directory}` again")
    return files


def open_parquet_dataset(data_dir: str | os.PathLike[str]) -> pa_ds.Dataset:
    """All splits of a prepared directory as one pyarrow Dataset."""
    return pa_ds.dataset([str(p) for p in parquet_files(data_dir)], format="parquet")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def load_split(data_dir: str | os.PathLike[str], split: str) -> SplitArrays:
    """Read one split into memory with pyarrow (no Ray); row groups of other splits are skipped."""
    _check_split(split)
    spec = prepared_spec(data_dir)
    table = open_parquet_dataset(data_dir).to_table(
        columns=["pixels", *TASK_NAMES, "source"], filter=pa_ds.field("split") == split
    )
    return SplitArrays(
        pixels=_fixed_size_lists_to_numpy(table.column("pixels"), spec),
        age=table.column("age").to_numpy(),
        gender=table.column("gender").to_numpy(),
        ethnicity=table.column("ethnicity").to_numpy(),
        source=np.asarray(table.column("source").to_pylist(), dtype=object),
        spec=spec,
    )


def split_rows(data_dir: str | os.PathLike[str], split: str) -> int:
    """How many faces `split` holds, from the prepared dir's manifest (no data read)."""
    _check_split(split)
    return int(PreparedManifest.read(data_dir).splits[split]["rows"])


def _fixed_size_lists_to_numpy(column: pa.ChunkedArray, spec: InputSpec) -> np.ndarray:
    """fixed_size_list<uint8>[spec.pixels] -> (N, spec.pixels) uint8 without a Python loop per row."""
    if column.num_chunks == 0 or len(column) == 0:
        return np.zeros((0, spec.pixels), dtype=np.uint8)
    flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks])
    return flat.to_numpy(zero_copy_only=False).reshape(-1, spec.pixels)


def _batch_to_training(batch: dict[str, np.ndarray], spec: InputSpec = DEFAULT_INPUT_SPEC) -> dict[str, np.ndarray]:
    # Ray hands fixed-size lists over as an object array of per-row arrays; stack them once.
    pixels = np.stack(batch["pixels"]) if len(batch["pixels"]) else np.zeros((0, spec.pixels), np.uint8)
    out = {"image": pixels_to_images(pixels, spec)}
    out.update({name: np.asarray(batch[name], dtype=np.int64) for name in TASK_NAMES})
    return out


def read_split_dataset(data_dir: str | os.PathLike[str], split: str) -> "ray.data.Dataset":
    """One split as a Ray Dataset whose batches hold "image" float32 (N, C, S, S) in [0,1] and
    "age", "gender", "ethnicity" int64 (N,); use `iter_torch_batches` for tensors."""
    import ray.data
    from ray.data.expressions import col

    _check_split(split)
    spec = prepared_spec(data_dir)
    paths = [str(p) for p in parquet_files(data_dir)]
    dataset = ray.data.read_parquet(paths).select_columns(["pixels", "split", *TASK_NAMES])
    dataset = dataset.filter(expr=col("split") == split)
    return dataset.map_batches(partial(_batch_to_training, spec=spec), batch_format="numpy")
