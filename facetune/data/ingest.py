"""Read face data into arrays: a Kaggle-layout CSV (plain or .gz) or a folder of UTKFace images.

Both readers return an IngestResult: the accepted rows as arrays plus every rejected row with its
reason, so `rows_read == rows_written + rows_rejected` holds by construction.
"""
from __future__ import annotations

import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from facetune.data.images import NUM_PIXELS, ImageDecodeError, load_gray48

CSV_COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
LABEL_RANGES: dict[str, tuple[int, int]] = {"age": (0, 116), "gender": (0, 1), "ethnicity": (0, 4)}
#: UTKFace names: [age]_[gender]_[race]_[datetime].jpg.chip.jpg. What follows the datetime is not
#: checked: real files carry stray characters there (e.g. '..._20170116220224657 .jpg.chip.jpg').
UTKFACE_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?P<ethnicity>\d+)_(?P<stamp>\d+)(?!\d)")
UTKFACE_NAME_HINT = "[age]_[gender]_[race]_[datetime].jpg.chip.jpg"

_SPACE = np.zeros(256, dtype=bool)
_SPACE[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[ord("0") : ord("9") + 1] = True


class SourceFormatError(ValueError):
    """The source exists but is not a usable CSV or UTKFace folder (one-line message)."""


@dataclass
class Rejected:
    """One input row that was not written, with a human reason. `index` is its position in the input."""

    index: int
    source: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass
class IngestResult:
    """Accepted rows as arrays (row i of each array is one face) plus the rejected rows."""

    source: str
    kind: str  # "csv" or "utkface"
    rows_read: int
    pixels: np.ndarray  # (N, 2304) uint8
    age: np.ndarray  # (N,) int64
    gender: np.ndarray  # (N,) int64
    ethnicity: np.ndarray  # (N,) int64
    names: np.ndarray  # (N,) object (str): file name or img_name
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def rows_written(self) -> int:
        return len(self.age)


def detect_kind(source: Path) -> str:
    """'utkface' for a folder, 'csv' for a .csv / .csv.gz file; SourceFormatError otherwise."""
    if source.is_dir():
        return "utkface"
    name = source.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise SourceFormatError(
        f"{source}: not a Kaggle CSV (.csv or .csv.gz) nor a folder of UTKFace images"
    )


def ingest(source: str | os.PathLike[str], progress: bool = True) -> IngestResult:
    """Read `source` (CSV or UTKFace folder, detected) into an IngestResult."""
    path = Path(source)
    if detect_kind(path) == "utkface":
        return read_utkface_folder(path, progress=progress)
    return read_kaggle_csv(path)


# --------------------------------------------------------------------------------------------- CSV


def read_kaggle_csv(path: str | os.PathLike[str], threads: int = 2) -> IngestResult:
    """Parse a Kaggle age_gender.csv (plain or .gz) with pyarrow and vectorised numpy.

    Every column is read as text so that one bad value rejects its row, not the whole column.
    """
    path = Path(path)
    table = _read_csv_text_columns(path)
    rows = table.num_rows
    names = np.asarray(table.column("img_name").fill_null("").to_pylist(), dtype=object)
    problems: dict[int, str] = {}

    labels: dict[str, np.ndarray] = {}
    for column, (low, high) in LABEL_RANGES.items():
        values, bad_rows = _parse_label_column(table.column(column), low, high)
        labels[column] = values
        texts = table.column(column).take(pa.array(bad_rows, pa.int64())).to_pylist() if len(bad_rows) else []
        for row, text in zip(bad_rows.tolist(), texts):
            problems.setdefault(row, describe_bad_label(column, text, low, high))

    pixels, bad_pixel_rows = parse_pixel_column(table.column("pixels"), threads=threads)
    if len(bad_pixel_rows):
        texts = table.column("pixels").take(pa.array(bad_pixel_rows, pa.int64())).to_pylist()
        for row, text in zip(bad_pixel_rows.tolist(), texts):
            problems.setdefault(row, describe_bad_pixels(text))

    keep = np.ones(rows, dtype=bool)
    keep[list(problems)] = False
    rejected = [
        # CSV line numbers count the header, so row 0 is on line 2.
        Rejected(row, names[row] or f"line {row + 2}", f"line {row + 2}: {problems[row]}")
        for row in sorted(problems)
    ]
    return IngestResult(
        source=str(path),
        kind="csv",
        rows_read=rows,
        pixels=pixels[keep],
        age=labels["age"][keep],
        gender=labels["gender"][keep],
        ethnicity=labels["ethnicity"][keep],
        names=names[keep],
        rejected=rejected,
    )


def _read_csv_text_columns(path: Path) -> pa.Table:
    try:
        header = pa_csv.open_csv(path).schema.names
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceFormatError(f"{path}: cannot read as CSV ({err})") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise SourceFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the Kaggle layout {','.join(CSV_COLUMNS)}"
        )
    convert = pa_csv.ConvertOptions(
        column_types={c: pa.string() for c in CSV_COLUMNS},
        include_columns=list(CSV_COLUMNS),
        strings_can_be_null=True,
    )
    # Large blocks: fewer, bigger chunks for the numpy pixel parser.
    read = pa_csv.ReadOptions(block_size=16 << 20)
    try:
        return pa_csv.read_csv(path, read_options=read, convert_options=convert)
    except pa.ArrowInvalid as err:
        raise SourceFormatError(f"{path}: malformed CSV ({err})") from None


def _parse_label_column(column: pa.ChunkedArray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Integers of a text column and the row indices that are not integers in low..high."""
    text = pc.utf8_trim_whitespace(column)
    is_int = pc.fill_null(pc.match_substring_regex(text, r"^[+-]?\d{1,18}$"), False)
    values = pc.cast(pc.if_else(is_int, text, "-1"), pa.int64()).to_numpy()
    good = is_int.to_numpy(zero_copy_only=False) & (values >= low) & (values <= high)
    return values, np.flatnonzero(~good)


def parse_pixel_column(column: pa.ChunkedArray, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Parse a text column of 2304 space-separated 0..255 integers per row.

    Returns ((rows, 2304) uint8 with zeros in bad rows, indices of bad rows). The work is done on
    the raw UTF-8 bytes of each Arrow chunk with numpy (no Python loop per row); chunks run on a
    thread pool because numpy releases the GIL.
    """
    out = np.zeros((len(column), NUM_PIXELS), dtype=np.uint8)
    starts = np.cumsum([0] + [len(chunk) for chunk in column.chunks])
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        bad_parts = list(
            pool.map(
                lambda item: _parse_pixel_chunk(item[1], out[starts[item[0]] : starts[item[0] + 1]]),
                enumerate(column.chunks),
            )
        )
    bad = [part + starts[i] for i, part in enumerate(bad_parts)]
    return out, (np.concatenate(bad) if bad else np.empty(0, np.int64)).astype(np.int64)


def _parse_pixel_chunk(chunk: pa.Array, out: np.ndarray) -> np.ndarray:
    """Fill `out` from one Arrow string chunk; return the chunk-local indices of bad rows."""
    rows = len(chunk)
    if rows == 0:
        return np.empty(0, np.int64)
    chunk = chunk.cast(pa.large_string())
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[chunk.offset : chunk.offset + rows + 1]
    base = offsets[0]
    text = np.frombuffer(data_buf, dtype=np.uint8)[base : offsets[-1]] if data_buf is not None else np.empty(0, np.uint8)
    row_starts = offsets[:-1] - base
    bad = np.zeros(rows, dtype=bool)
    if chunk.null_count:
        bad |= chunk.is_null().to_numpy(zero_copy_only=False)

    # A token starts at a non-space byte after a space byte or at a row start (rows are glued
    # together without separators in the Arrow data buffer); it ends symmetrically.
    solid = ~_SPACE[text]
    begins = solid.copy()
    begins[1:] &= ~solid[:-1]
    ends = solid.copy()
    ends[:-1] &= ~solid[1:]
    row_starts_in = row_starts[row_starts < len(text)]
    begins[row_starts_in] = solid[row_starts_in]
    row_last = offsets[1:] - base - 1
    row_last = row_last[(row_last >= 0) & (row_last >= row_starts)]
    ends[row_last] = solid[row_last]
    token_begin = np.flatnonzero(begins)
    token_end = np.flatnonzero(ends) + 1
    del begins, ends

    # Any byte that is neither space nor digit (letters, '-', '.') marks its row bad.
    odd_bytes = np.flatnonzero(solid & ~_DIGIT[text])
    del solid
    if len(odd_bytes):
        bad[np.searchsorted(row_starts, odd_bytes, side="right") - 1] = True

    counts = np.diff(np.searchsorted(token_begin, np.append(row_starts, len(text))))
    bad |= counts != NUM_PIXELS
    length = token_end - token_begin
    long_tokens = np.flatnonzero(length > 3)
    if len(long_tokens):
        bad[np.searchsorted(row_starts, token_begin[long_tokens], side="right") - 1] = True

    # Value of each token of up to 3 digits: ones + tens + hundreds, read from its last byte back.
    last = token_end - 1
    value = text[last].astype(np.int16) - ord("0")
    for place, scale in ((2, 10), (3, 100)):
        has = np.flatnonzero(length >= place)
        value[has] += scale * (text[last[has] - (place - 1)].astype(np.int16) - ord("0"))
    over = np.flatnonzero(value > 255)
    if len(over):
        bad[np.searchsorted(row_starts, token_begin[over], side="right") - 1] = True

    good_rows = np.flatnonzero(~bad)
    if len(good_rows):
        # Tokens of the good rows, in order: each good row owns exactly 2304 consecutive tokens.
        first_token = np.searchsorted(token_begin, row_starts[good_rows])
        token_index = first_token[:, None] + np.arange(NUM_PIXELS)
        out[good_rows] = value[token_index].astype(np.uint8)
    return np.flatnonzero(bad)


def describe_bad_label(column: str, text: str | None, low: int, high: int) -> str:
    """Say why one label field is unusable (called only for rows already flagged)."""
    if text is None or not text.strip():
        return f"{column} missing"
    try:
        return f"{column} {int(text)} is outside {low}..{high}"
    except ValueError:
        return f"{column} {text.strip()[:20]!r} is not an integer"


def describe_bad_pixels(text: str | None) -> str:
    """Say why one pixel field is unusable (called only for rows the vectorised parser flagged)."""
    if text is None or not text.strip():
        return "pixels missing"
    tokens = text.split()
    for position, token in enumerate(tokens):
        if not token.lstrip("+-").isdigit():
            return f"non-numeric pixel value {token[:20]!r} at position {position}"
        if not 0 <= int(token) <= 255:
            return f"pixel value {token} at position {position} is outside 0..255"
        if len(token) > 3:
            return f"pixel value {token!r} at position {position} is not written as a plain 0..255 integer"
    return f"{len(tokens)} pixel values, expected {NUM_PIXELS}"


# ------------------------------------------------------------------------------------ UTKFace folder


def parse_utkface_name(name: str) -> dict[str, int]:
    """Labels from a UTKFace file name, or ValueError with a reason naming the file."""
    match = UTKFACE_NAME.match(name)
    if match is None:
        raise ValueError(f"{name}: file name does not match {UTKFACE_NAME_HINT}")
    labels = {key: int(match[key]) for key in LABEL_RANGES}
    for key, (low, high) in LABEL_RANGES.items():
        if not low <= labels[key] <= high:
            raise ValueError(f"{name}: {key} {labels[key]} is outside {low}..{high}")
    return labels


def read_utkface_folder(folder: str | os.PathLike[str], progress: bool = True, threads: int = 4) -> IngestResult:
    """Decode every file in `folder` (not recursive) as a labelled UTKFace image."""
    folder = Path(folder)
    files = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
    if not files:
        raise SourceFormatError(f"{folder}: folder holds no files (expected UTKFace images {UTKFACE_NAME_HINT})")

    def decode(name: str) -> tuple[dict[str, int], np.ndarray] | str:
        try:
            labels = parse_utkface_name(name)
            return labels, load_gray48(folder / name)
        except ImageDecodeError as err:
            return f"{name}: {err.reason}"
        except ValueError as err:
            return str(err)

    pixels = np.zeros((len(files), NUM_PIXELS), dtype=np.uint8)
    labels = np.zeros((len(files), 3), dtype=np.int64)
    keep = np.zeros(len(files), dtype=bool)
    rejected: list[Rejected] = []
    # PIL releases the GIL while decoding, so threads overlap the JPEG work on few cores.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(decode, files, chunksize=64)
        for index, outcome in enumerate(_with_progress(results, len(files), "decoding images", progress)):
            if isinstance(outcome, str):
                rejected.append(Rejected(index, files[index], outcome))
                continue
            found, image = outcome
            pixels[index] = image.reshape(-1)
            labels[index] = (found["age"], found["gender"], found["ethnicity"])
            keep[index] = True
    return IngestResult(
        source=str(folder),
        kind="utkface",
        rows_read=len(files),
        pixels=pixels[keep],
        age=labels[keep, 0],
        gender=labels[keep, 1],
        ethnicity=labels[keep, 2],
        names=np.asarray(files, dtype=object)[keep],
        rejected=rejected,
    )


def _with_progress(items: Iterable, total: int, what: str, enabled: bool, every_s: float = 2.0) -> Iterator:
    """Yield `items`, printing 'what: done/total' to stderr at most every `every_s` seconds."""
    started = last = time.monotonic()
    done = 0
    for done, item in enumerate(items, start=1):
        now = time.monotonic()
        if enabled and now - last >= every_s:
            print(f"{what}: {done}/{total} ({done / (now - started):.0f}/s)", file=sys.stderr, flush=True)
            last = now
        yield item
    if enabled and time.monotonic() - started >= every_s:
        print(f"{what}: {done}/{total} done", file=sys.stderr, flush=True)
