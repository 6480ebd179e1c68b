"""Turn a face source (Kaggle CSV or UTKFace folder) into a prepared directory.

DIR/part-*.parquet   one row per accepted face (schema in docs/design.md), sorted by split so
                     readers of one split can skip the other row groups
DIR/_manifest.json   counts, every rejected row with its reason, duplicates, split histograms
DIR/_figures/*.png   ethnicity, gender and age distributions (the study's Figs. 1-3)

The Parquet files sit directly in DIR and every other name starts with "_", which Parquet
readers skip: `pandas.read_parquet(DIR)`, `pyarrow.dataset.dataset(DIR)` and
`ray.data.read_parquet(DIR)` read the folder as one dataset with no flags.
(File names: facetune.records.)
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facetune.data.figures import write_figures
from facetune.data.ingest import IngestResult, Rejected, ingest
from facetune.data.outdir import check_output_dir, replaced_atomically
from facetune.data.split import HASH_NAME, assign_splits, content_hashes, duplicate_stats
from facetune.errors import InvalidInputError, NoDataError, UsageError
from facetune.json_files import write_json
from facetune.records import (
    DEFAULT_INPUT_SPEC,
    LABEL_RANGES,
    PARQUET_PATTERN,
    PREPARED_DIR,
    PREPARED_FIGURES_DIR,
    PREPARED_MANIFEST,
    SPLITS,
    InputSpec,
    PreparedManifest,
    is_any_prepared_dir,
    is_prepared_dir,
    parquet_file_name,
    require_prepared_dir,
)
from facetune.settings import DataNotFoundError, require_data_path

if TYPE_CHECKING:
    from facetune.storage import ResultsStore

ROWS_PER_FILE = 8192
ROWS_PER_GROUP = 2048


def parquet_schema(spec: InputSpec = DEFAULT_INPUT_SPEC) -> pa.Schema:
    """The Parquet schema of a prepared folder whose faces are in `spec`'s layout (spec.pixels values a row)."""
    return pa.schema(
        [
            ("pixels", pa.list_(pa.uint8(), spec.pixels)),
            ("age", pa.int64()),
            ("gender", pa.int64()),
            ("ethnicity", pa.int64()),
            ("split", pa.string()),
            ("source", pa.string()),
            ("content_hash", pa.string()),
        ]
    )


AGE_BIN_YEARS = 10


#: numpy's seeds are unsigned 32-bit.
MAX_SEED = 2**32 - 1


class BadRowError(NoDataError, ValueError):
    """--strict found a bad input row; the message names it and says why (exit code 3)."""

    def __init__(self, rejected: Rejected, total_rejected: int) -> None:
        super().__init__(
            f"bad row {rejected.source}: {rejected.reason} ({total_rejected} bad row(s) in all; "
            "run without --strict to skip and report them)"
        )
        self.rejected = rejected


def check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed}: must be a whole number from 0 to {MAX_SEED}")
    return seed


def prepare(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    seed: int = 0,
    strict: bool = False,
    progress: bool = False,
    overwrite: bool = False,
    spec: InputSpec = DEFAULT_INPUT_SPEC,
) -> dict:
    """Ingest `source`, split it, write `out`; return the manifest (also in out/_manifest.json).

    The faces are written in `spec`'s layout (default 48x48 gray, for every source); a Kaggle CSV
    cannot give colour or more than its 48x48 (InvalidInputError, before anything is read).
    Content hashes, and so the split, come from the default-layout faces at every spec.

    Arguments and `out` are checked before any reading: a file, a folder overlapping the source
    or a non-empty folder that is not a prepared dataset (unless `overwrite`) is refused with
    OutputError. Raises DataNotFoundError when `source` is missing, SourceFormatError when it is
    not a usable CSV/folder, BadRowError (with strict=True) at the first bad row and NoDataError
    when no row is usable, all before writing anything. A previous dataset in `out` is replaced
    atomically: until the new one is complete, the old one stays readable.
    """
    started = time.monotonic()
    check_seed(seed)
    source_path = require_data_path(source)
    out_dir = Path(out)
    check_output_dir(out_dir, [source_path], overwrite, is_any_prepared_dir, what=f"prepared dataset ({PREPARED_MANIFEST})")
    result = ingest(source_path, progress=progress, spec=spec)
    if strict and result.rejected:
        raise BadRowError(result.rejected[0], len(result.rejected))
    if result.rows_read == 0:
        raise NoDataError(f"{source_path}: no rows (the file holds a header only)")
    if result.rows_written == 0:
        first = f"; first: {result.rejected[0].reason}" if result.rejected else ""
        raise NoDataError(f"{source_path}: no usable rows ({result.rows_read} read, {len(result.rejected)} rejected{first})")

    hashes = content_hashes(result.key_pixels)
    splits = assign_splits(hashes, result.ethnicity, result.gender, seed=seed)
    _check_groups_within_one_split(hashes, splits)
    duplicates = duplicate_stats(hashes, result.age, result.gender, result.ethnicity)

    with replaced_atomically(out_dir) as work:
        parquet_files = write_parquet(result, splits, hashes, work)
        figures = write_figures(result.age, result.gender, result.ethnicity, work / PREPARED_FIGURES_DIR)
        manifest = PreparedManifest(
            source=str(source_path),
            source_kind=result.kind,
            seed=seed,
            rows_read=result.rows_read,
            rows_written=result.rows_written,
            rows_rejected=len(result.rejected),
            rejected=[r.as_dict() for r in result.rejected],
            blank_lines=result.blank_lines,
            duplicate_groups=duplicates.groups,
            duplicate_rows=duplicates.rows,
            conflicting_label_groups=duplicates.conflicting_label_groups,
            content_hash=HASH_NAME if spec == DEFAULT_INPUT_SPEC else f"{HASH_NAME} of the face at {DEFAULT_INPUT_SPEC.describe()}",
            splits=split_summary(result, splits),
            parquet_files=[p.name for p in parquet_files],
            figures=[p.relative_to(work).as_posix() for p in figures],
            seconds=round(time.monotonic() - started, 2),
            input_spec=spec.to_dict(),
        ).to_dict()
        # The invariant the manifest promises; a failure here is a bug in ingest, not bad data.
        assert manifest["rows_read"] == manifest["rows_written"] + manifest["rows_rejected"], manifest
        write_json(work / PREPARED_MANIFEST, manifest)
    return manifest


def _check_groups_within_one_split(hashes: np.ndarray, splits: np.ndarray) -> None:
    pairs = {(h, s) for h, s in zip(hashes.tolist(), splits.tolist())}
    if len(pairs) != len(set(hashes.tolist())):
        raise AssertionError("a content_hash landed in two splits")


def write_parquet(result: IngestResult, splits: np.ndarray, hashes: np.ndarray, out_dir: Path) -> list[Path]:
    """Write the accepted rows, ordered train/val/test, as out_dir/part-NNNNN.parquet."""
    for stale in out_dir.glob(PARQUET_PATTERN):  # a previous, larger run must not leave parts behind
        stale.unlink()
    order = np.argsort(np.searchsorted(np.asarray(SPLITS), splits.astype(str)), kind="stable")
    flat = pa.array(np.ascontiguousarray(result.pixels[order]).reshape(-1), type=pa.uint8())
    table = pa.table(
        {
            "pixels": pa.FixedSizeListArray.from_arrays(flat, result.spec.pixels),
            "age": pa.array(result.age[order], pa.int64()),
            "gender": pa.array(result.gender[order], pa.int64()),
            "ethnicity": pa.array(result.ethnicity[order], pa.int64()),
            "split": pa.array(splits[order].astype(str), pa.string()),
            "source": pa.array(result.names[order].astype(str), pa.string()),
            "content_hash": pa.array(hashes[order].astype(str), pa.string()),
        },
        schema=parquet_schema(result.spec),
    )
    paths = []
    for number, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
        path = out_dir / parquet_file_name(number)
        pq.write_table(table.slice(start, ROWS_PER_FILE), path, row_group_size=ROWS_PER_GROUP)
        paths.append(path)
    return paths


def split_summary(result: IngestResult, splits: np.ndarray) -> dict[str, dict]:
    """Per split: row count, share of all rows, and histograms of gender, ethnicity and age (10-year bins)."""
    summary: dict[str, dict] = {}
    total = max(len(splits), 1)
    age_high = LABEL_RANGES["age"][1]
    for name in SPLITS:
        mask = splits == name
        age_bins = np.bincount(result.age[mask] // AGE_BIN_YEARS, minlength=age_high // AGE_BIN_YEARS + 1)
        summary[name] = {
            "rows": int(mask.sum()),
            "fraction": round(float(mask.sum()) / total, 4),
            "gender": _histogram(result.gender[mask], LABEL_RANGES["gender"][1]),
            "ethnicity": _histogram(result.ethnicity[mask], LABEL_RANGES["ethnicity"][1]),
            "age": {
                f"{b * AGE_BIN_YEARS}-{min((b + 1) * AGE_BIN_YEARS - 1, age_high)}": int(c)
                for b, c in enumerate(age_bins)
            },
        }
    return summary


def _histogram(values: np.ndarray, high: int) -> dict[str, int]:
    return {str(k): int(c) for k, c in enumerate(np.bincount(values, minlength=high + 1))}


def summary_lines(manifest: dict) -> list[str]:
    """A short human summary of a prepare run (printed at the end of `facetune prepare`)."""
    splits = manifest["splits"]
    lines = [
        f"read {manifest['rows_read']:,} rows from {manifest['source']} ({manifest['source_kind']}), "
        f"wrote {manifest['rows_written']:,}, rejected {manifest['rows_rejected']:,}",
        f"duplicates: {manifest['duplicate_groups']:,} groups of identical images "
        f"({manifest['duplicate_rows']:,} rows), {manifest['conflicting_label_groups']:,} with conflicting labels",
        "split: " + ", ".join(f"{name} {splits[name]['rows']:,} ({100 * splits[name]['fraction']:.1f}%)" for name in SPLITS)
        + f" (seed {manifest['seed']})",
        f"faces: {PreparedManifest.from_dict(manifest).spec.describe()}",
    ]
    shown = manifest["rejected"][:5]
    lines += [f"  rejected: {r['reason']}" if r["source"] in r["reason"] else f"  rejected {r['source']}: {r['reason']}" for r in shown]
    if manifest["rows_rejected"] > len(shown):
        lines.append(f"  ... {manifest['rows_rejected'] - len(shown)} more in {PREPARED_MANIFEST}")
    return lines


def prepared_dir_name(spec: InputSpec = DEFAULT_INPUT_SPEC) -> str:
    """The folder, inside RESULTS, a raw source is prepared into in `spec`'s layout: "data" for the
    default (as before specs existed), "data-64-color" for another, so specs never share one."""
    return PREPARED_DIR if spec == DEFAULT_INPUT_SPEC else f"{PREPARED_DIR}-{spec.slug}"


def planned_spec(data: str | os.PathLike[str] | None) -> InputSpec:
    """The layout `data` will be swept or trained in: a prepared folder's own, else the default
    (ensure_prepared prepares a raw source in it); the default too when `data` is not found (that
    is reported, with its reason, when it is read)."""
    try:
        source = require_data_path(data)
    except DataNotFoundError:
        return DEFAULT_INPUT_SPEC
    return PreparedManifest.read(source).spec if is_prepared_dir(source) else DEFAULT_INPUT_SPEC


def ensure_prepared(data: str | os.PathLike[str] | None, store: "ResultsStore", spec: InputSpec | None = None) -> Path:
    """A prepared Parquet folder: `data` itself, or `data` prepared into RESULTS/data (once).

    `spec`: the layout asked for (None: a prepared `data` as it is, a raw one in the default
    layout). A prepared `data` in another layout is refused with one line.
    """
    source = require_data_path(data)
    if is_any_prepared_dir(source):
        prepared = require_prepared_dir(source)  # an old layout: one line saying to prepare it again
        found = PreparedManifest.read(prepared).spec
        if spec is not None and found != spec:
            raise InvalidInputError(f"{source}: prepared as {found.describe()}, not the {spec.describe()} asked for; "
                                    f"prepare the raw source with that layout instead")
        return prepared
    spec = spec or DEFAULT_INPUT_SPEC
    target = store.local_dir(prepared_dir_name(spec))
    if is_prepared_dir(target) and PreparedManifest.read(target).spec == spec:
        return target
    print(f"[facetune] preparing {source} into {target} ({spec.describe()})", flush=True)
    prepare(source, target, seed=0, spec=spec)
    return target
