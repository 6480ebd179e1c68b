"""What `facetune predict` reads: image files and folders, a prepared Parquet dir, or a Kaggle CSV.

Images stay paths here and are decoded during prediction (in Ray Data workers for large inputs);
Parquet and CSV rows arrive already as faces in their table's layout (`Inputs.spec`). Labels are collected when the input carries
them (UTKFace file names, CSV columns, Parquet columns) so that `--evaluate` can score predictions.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from facetune.data.images import ImageDecodeError, load_faces
from facetune.data.ingest import SourceFormatError, parse_utkface_name, read_faces_csv
from facetune.data.loading import load_split, prepared_spec
from facetune.data.walk import NOT_A_REGULAR_FILE, walk_files
from facetune.errors import InputNotFoundError, InvalidInputError
from facetune.predict.faces import Faces
from facetune.records import CSV_INPUT_SPEC, DEFAULT_INPUT_SPEC, SPLITS, TASK_NAMES, InputSpec, is_any_prepared_dir


@dataclass(frozen=True)
class Reject:
    """An input that produced no prediction, and why."""

    source: str
    reason: str


#: Files taken from folders; other files there are reported as skipped (named files are always tried).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_COLUMNS = TASK_NAMES
#: Most decoding threads (see decode_threads).
DECODE_MAX_THREADS = 8


@dataclass
class Inputs:
    """Faces to predict on, either as image `paths` or as decoded `pixels` (N, spec.pixels) uint8
in the layout `spec` (a table's; each model is given them converted to its own spec).

    `labels` (when known) has one row per input, columns age/gender/ethnicity, with <NA> where
    an input's label is unknown. `rejects` are inputs dropped before prediction, with reasons.
    """

    sources: list[str]
    paths: list[Path] | None = None
    pixels: np.ndarray | None = None
    labels: pd.DataFrame | None = None
    rejects: list[Reject] = field(default_factory=list)
    spec: InputSpec = DEFAULT_INPUT_SPEC

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.pixels is None):
            raise ValueError("Inputs holds either image paths or pixels, exactly one of them")
        held = len(self.paths) if self.paths is not None else len(self.pixels)
        if held != len(self.sources):
            raise ValueError(f"{len(self.sources)} sources for {held} inputs")
        if self.labels is not None and len(self.labels) != held:
            raise ValueError(f"{len(self.labels)} label rows for {held} inputs")

    def __len__(self) -> int:
        return len(self.sources)


def is_kaggle_csv(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".csv", ".csv.gz"))


def gather_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    split: str | None = None,
    with_labels: bool = False,
) -> Inputs:
    """Resolve command-line INPUTs into one Inputs.

    Image files and folders may be mixed freely; a prepared Parquet dir or a Kaggle CSV is a
    table of faces and may be combined only with others of its kind (the two kinds are decoded
    differently). `split` selects one split of prepared Parquet dirs; `with_labels` parses labels.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InvalidInputError("no INPUT given: pass image files, folders, a prepared Parquet dir or a Kaggle CSV")
    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        raise InputNotFoundError(f"input not found: {', '.join(missing)}")
    tables = [p for p in paths if is_any_prepared_dir(p) or is_kaggle_csv(p)]
    if tables and len(tables) != len(paths):
        raise InvalidInputError(
            "INPUTs mix image files/folders with Parquet dirs or CSV files; predict them in separate runs"
        )
    if split is not None and not all(is_any_prepared_dir(p) for p in paths):
        raise InvalidInputError("--split applies to prepared Parquet directories only")
    if tables:
        parts = [_table_inputs(p, split) for p in paths]
        specs = {part.spec for part in parts if len(part)}
        if len(specs) > 1:
            raise InvalidInputError(
                f"INPUTs hold faces of different layouts ({', '.join(sorted(s.describe() for s in specs))}); "
                "predict them in separate runs")
        return Inputs(
            spec=specs.pop() if specs else DEFAULT_INPUT_SPEC,
            sources=[s for part in parts for s in part.sources],
            pixels=np.concatenate([part.pixels for part in parts]),
            labels=pd.concat([part.labels for part in parts], ignore_index=True),
            rejects=[r for part in parts for r in part.rejects],
        )
    files, skipped = list_image_files(paths)
    return Inputs(
        sources=[str(f) for f in files],
        paths=files,
        labels=labels_from_names(files) if with_labels else None,
        rejects=skipped,
    )


def list_image_files(paths: Sequence[Path]) -> tuple[list[Path], list[Reject]]:
    """Named files as given; folders walked recursively (sorted) for JPEG/PNG files.

    Everything else found is returned as a reject with its reason (other files, broken symlinks,
    symlink loops, an empty folder), so nothing vanishes silently.
    """
    files: list[Path] = []
    skipped: list[Reject] = []
    for path in paths:
        if path.exists() and not path.is_dir() and not path.is_file():
            skipped.append(Reject(str(path), NOT_A_REGULAR_FILE))  # never opened: a FIFO would block
            continue
        if not path.is_dir():
            files.append(path)  # a broken named symlink fails to decode, with its reason
            continue
        listing = walk_files(path)
        skipped += [Reject(str(where), reason) for where, reason in listing.skipped]
        for found in listing.files:
            if found.suffix.lower() in IMAGE_SUFFIXES:
                files.append(found)
            else:
                skipped.append(Reject(str(found), f"skipped: not a {'/'.join(IMAGE_SUFFIXES)} file"))
        if not listing.files and not listing.skipped:
            skipped.append(Reject(str(path), "empty folder: no files to predict on"))
    return files, skipped


def labels_from_names(files: Sequence[Path]) -> pd.DataFrame:
    """UTKFace labels parsed from file names; <NA> for names that do not follow the scheme."""
    rows = []
    for file in files:
        try:
            rows.append(parse_utkface_name(file.name))
        except ValueError:
            rows.append({})
    return pd.DataFrame(rows, columns=list(LABEL_COLUMNS)).astype("Int64")


def _table_inputs(path: Path, split: str | None) -> Inputs:
    if is_any_prepared_dir(path):
        return _prepared_inputs(path, split)
    try:
        faces = read_faces_csv(path)
    except SourceFormatError as err:
        # A CSV that cannot be read at all is one reject, so the other INPUTs still get answers.
        return _no_faces(path, str(err).removeprefix(f"{path}: "))
    return Inputs(
        spec=CSV_INPUT_SPEC,
        sources=faces.sources,
        pixels=faces.pixels,
        labels=pd.DataFrame(faces.labels, columns=list(LABEL_COLUMNS)).astype("Int64"),
        rejects=[Reject(f"{path}:{r.source}", r.reason) for r in faces.rejected],
    )


def _prepared_inputs(path: Path, split: str | None) -> Inputs:
    if split is not None and split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    try:
        arrays = [load_split(path, s) for s in ([split] if split else SPLITS)]
    except (OSError, ValueError, KeyError) as err:
        return _no_faces(path, f"unreadable prepared dataset ({err})")
    if not any(len(a.source) for a in arrays):
        return _no_faces(path, f"prepared dataset holds no faces{f' in split {split}' if split else ''}")
    spec = prepared_spec(path)
    return Inputs(
        spec=spec,
        sources=[str(s) for a in arrays for s in a.source],
        pixels=np.concatenate([a.pixels for a in arrays]).astype(np.uint8, copy=False).reshape(-1, spec.pixels),
        labels=pd.DataFrame(
            {c: np.concatenate([getattr(a, c) for a in arrays]) for c in LABEL_COLUMNS}
        ).astype("Int64"),
    )


def _no_faces(path: Path, reason: str) -> Inputs:
    """An input table that yields no face: no rows, one reject saying why."""
    return Inputs(
        sources=[],
        pixels=np.zeros((0, DEFAULT_INPUT_SPEC.pixels), np.uint8),
        labels=pd.DataFrame({c: [] for c in LABEL_COLUMNS}).astype("Int64"),
        rejects=[Reject(str(path), reason)],
    )


def decode_threads() -> int:
    """Threads that decode image files: one per core (PIL and file reads release the GIL); more
    would take cores from the forward passes that run beside them."""
    return min(DECODE_MAX_THREADS, os.cpu_count() or 1)


def decode_images(
    paths: Sequence[str | os.PathLike[str]], threads: int = 1, specs: Sequence[InputSpec] = (DEFAULT_INPUT_SPEC,)
) -> tuple[Faces, np.ndarray, list[str]]:
    """Decode files exactly as training did, each to every layout of `specs` from its own pixels:
    (Faces, (N,) bool ok, (N,) reason or ""); unreadable files' rows are zeros.

    With `threads` > 1 a thread pool decodes them (same result, same order).
    """
    def one(path: str | os.PathLike[str]) -> tuple[dict | None, str]:
        return _decode_one(path, specs)

    if threads > 1 and len(paths) > 1:
        with ThreadPoolExecutor(min(threads, len(paths))) as pool:
            return _stacked(list(pool.map(one, paths)), specs)
    return _stacked([one(path) for path in paths], specs)


def iter_decoded(
    paths: Sequence[str | os.PathLike[str]], chunk: int, threads: int | None = None,
    specs: Sequence[InputSpec] = (DEFAULT_INPUT_SPEC,),
) -> Iterator[tuple[int, Faces, np.ndarray, list[str]]]:
    """(start, faces, ok, reasons) as decode_images gives them, for consecutive chunks of `paths`.

    A thread pool decodes the files of the next chunk while the consumer works on the current
    one (inference), so the two overlap and at most two chunks are held in memory.
    """
    starts = iter(range(0, len(paths), chunk))
    with ThreadPoolExecutor(threads or decode_threads()) as pool:
        pending: deque[tuple[int, list[Future]]] = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append((start, [pool.submit(_decode_one, path, specs) for path in paths[start : start + chunk]]))

        submit_next()
        while pending:
            submit_next()
            start, futures = pending.popleft()
            yield (start, *_stacked([future.result() for future in futures], specs))


def _decode_one(path: str | os.PathLike[str], specs: Sequence[InputSpec]) -> tuple[dict | None, str]:
    try:
        return load_faces(path, specs), ""
    except ImageDecodeError as err:
        return None, err.reason


def _stacked(decoded: Sequence[tuple[dict | None, str]], specs: Sequence[InputSpec]) -> tuple[Faces, np.ndarray, list[str]]:
    layouts = {spec: np.zeros((len(decoded), spec.pixels), dtype=np.uint8) for spec in specs}
    for i, (faces, _) in enumerate(decoded):
        if faces is not None:
            for spec, face in faces.items():
                layouts[spec][i] = face.reshape(-1)
    return Faces(layouts), np.asarray([faces is not None for faces, _ in decoded], dtype=bool), [r for _, r in decoded]
