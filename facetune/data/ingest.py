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
from typing import Iterable, Iterator

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
        if (source / "manifest.json").exists() and any(source.glob("part-*.parquet")):
            raise SourceFormatError(f"{source} is already a prepared directory (it holds manifest.json); use it directly")
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
    reader = _open_csv_text_columns(path)
    batches: list[pa.RecordBatch] = []
    parsing = []
    # Arrow decompresses and splits the file ahead in its own threads while numpy (which
    # releases the GIL) parses the pixels of the batches already read.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        try:
            for batch in reader:
                batches.append(batch)
                parsing.append(pool.submit(_parse_pixel_array, batch.column("pixels")))
        except pa.ArrowInvalid as err:
            raise SourceFormatError(f"{path}: malformed CSV ({err})") from None
        parsed = [job.result() for job in parsing]
    table = pa.Table.from_batches(batches, schema=reader.schema)
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

    pixels, bad_pixel_rows = _concatenate_parsed(parsed, [len(batch) for batch in batches])
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


def _open_csv_text_columns(path: Path) -> pa_csv.CSVStreamingReader:
    """A streaming reader of the five Kaggle columns, all as text, after checking the header."""
    convert = pa_csv.ConvertOptions(
        column_types={c: pa.string() for c in CSV_COLUMNS},
        include_columns=list(CSV_COLUMNS),
        include_missing_columns=True,  # so a missing column is reported below, by name
        strings_can_be_null=True,
    )
    # Large blocks: fewer, bigger batches for the numpy pixel parser.
    read = pa_csv.ReadOptions(block_size=8 << 20)
    try:
        reader = pa_csv.open_csv(path, read_options=read, convert_options=convert)
        header = pa_csv.open_csv(path).schema.names
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceFormatError(f"{path}: cannot read as CSV ({err})") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise SourceFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the Kaggle layout {','.join(CSV_COLUMNS)}"
        )
    return reader


def _parse_label_column(column: pa.ChunkedArray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Integers of a text column and the row indices that are not integers in low..high."""
    try:  # the common case: every value is an integer, one cast does it
        values = pc.cast(column, pa.int64())
        is_int = pc.is_valid(values).to_numpy(zero_copy_only=False)
        values = values.fill_null(low - 1).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        text = pc.utf8_trim_whitespace(column)
        matches = pc.fill_null(pc.match_substring_regex(text, r"^[+-]?\d{1,18}$"), False)
        values = pc.cast(pc.if_else(matches, text, "-1"), pa.int64()).to_numpy()
        is_int = matches.to_numpy(zero_copy_only=False)
    good = is_int & (values >= low) & (values <= high)
    return values, np.flatnonzero(~good)


def parse_pixel_column(column: pa.ChunkedArray | pa.Array, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Parse a text column of 2304 space-separated 0..255 integers per row.

    Returns ((rows, 2304) uint8 with zeros in bad rows, sorted indices of bad rows). The work is
    done on the raw UTF-8 bytes of each Arrow chunk with numpy (no Python loop per row); chunks
    run on a thread pool because numpy releases the GIL.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        parsed = list(pool.map(_parse_pixel_array, chunks))
    return _concatenate_parsed(parsed, [len(chunk) for chunk in chunks])


def _parse_pixel_array(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(chunk), NUM_PIXELS), dtype=np.uint8)
    return out, _parse_pixel_chunk(chunk, out)


def _concatenate_parsed(parsed: list[tuple[np.ndarray, np.ndarray]], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Join per-chunk (pixels, chunk-local bad rows) into whole-column results."""
    if not parsed:
        return np.zeros((0, NUM_PIXELS), np.uint8), np.empty(0, np.int64)
    starts = np.cumsum([0, *sizes[:-1]])
    bad = np.concatenate([rows.astype(np.int64) + start for (_, rows), start in zip(parsed, starts)])
    return np.concatenate([pixels for pixels, _ in parsed]), bad


def _parse_pixel_chunk(chunk: pa.Array, out: np.ndarray, spaces_normalised: bool = False) -> np.ndarray:
    """Fill `out` from one Arrow string chunk; return the chunk-local indices of bad rows.

    Arrow stores the rows' text back to back in one buffer. A valid row is 2304 tokens of 1-3
    digits separated by single spaces, so every token but a row's last ends just before a space:
    find the spaces once, read each token's (up to) three digits just before them, and check
    lengths and counts per row. Work is a handful of whole-array numpy passes per chunk.
    """
    rows = len(chunk)
    bad = np.zeros(rows, dtype=bool)
    if rows == 0:
        return np.flatnonzero(bad)
    offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[chunk.offset : chunk.offset + rows + 1].astype(np.int64)
    text = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]] if data_buf else np.empty(0, np.uint8)
    row_start, row_end = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    if chunk.null_count:
        bad |= chunk.is_null().to_numpy(zero_copy_only=False)
    bad |= row_end == row_start

    # Digit values, shifted 3 bytes right so padded[pos], padded[pos+1], padded[pos+2] are the
    # bytes 3, 2 and 1 places before position pos without index arithmetic or wrap-around.
    padded = np.zeros(len(text) + 3, dtype=np.uint8)
    digit = padded[3:]
    np.subtract(text, ord("0"), out=digit)  # uint8 wrap-around: non-digits become > 9
    space = text == ord(" ")
    if np.count_nonzero(digit > 9) != np.count_nonzero(space):
        odd = np.flatnonzero((digit > 9) & ~space)  # letters, '-', '.', tabs...
        bad[np.searchsorted(row_start, odd, side="right") - 1] = True

    spaces = np.flatnonzero(space)
    del space
    first_space = np.searchsorted(spaces, row_start)  # index of each row's first space
    end_space = np.searchsorted(spaces, row_end)
    bad |= end_space - first_space != NUM_PIXELS - 1

    # Tokens ending at a space start after the previous space, or at their row's start.
    length = np.empty_like(spaces)
    if len(spaces):
        length[0] = spaces[0] + 1
        np.subtract(spaces[1:], spaces[:-1], out=length[1:])
        length -= 1
        has_space = end_space > first_space
        length[first_space[has_space]] = spaces[first_space[has_space]] - row_start[has_space]
    # Only 0 (empty), 1-3 and "too long" matter; small unsigned lengths keep the passes below cheap.
    length = np.minimum(length, 4).astype(np.uint8) if len(length) else length.astype(np.uint8)
    value = _token_values(padded, spaces, length)

    # Each row's last token runs from its last space (or its start) to its end.
    after_last_space = spaces[np.maximum(end_space - 1, 0)] + 1 if len(spaces) else row_start
    last_begin = np.where(end_space > first_space, after_last_space, row_start)
    last_length = row_end - last_begin
    last_value = _token_values(padded, row_end, last_length)
    if not spaces_normalised and ((length == 0).any() or (last_length[row_end > row_start] == 0).any()):
        # Leading, trailing or repeated spaces (rare): collapse them with Arrow, then parse again.
        collapsed = pc.replace_substring_regex(pc.utf8_trim(chunk, " "), " {2,}", " ")
        return _parse_pixel_chunk(collapsed, out, spaces_normalised=True)
    bad |= (last_length < 1) | (last_length > 3) | (last_value > 255)

    odd_tokens = np.flatnonzero(((length - np.uint8(1)) > 2) | (value > 255))  # uint8: 0 wraps to 255
    if len(odd_tokens):
        bad[np.searchsorted(row_start, spaces[odd_tokens], side="right") - 1] = True

    if not bad.any():  # the common case: the tokens are exactly rows x 2303, in order
        out[:, : NUM_PIXELS - 1] = value.reshape(rows, NUM_PIXELS - 1)
        out[:, NUM_PIXELS - 1] = last_value
        return np.flatnonzero(bad)
    good = np.flatnonzero(~bad)
    if len(good):
        token_index = first_space[good][:, None] + np.arange(NUM_PIXELS - 1)
        out[good, : NUM_PIXELS - 1] = value[token_index]
        out[good, NUM_PIXELS - 1] = last_value[good]
    return np.flatnonzero(bad)


def _token_values(padded: np.ndarray, ends: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Integer value of the tokens of 1-3 digits ending just before `ends` (longer ones: garbage,
    rejected by their length). `padded` holds digit values shifted right by 3 bytes."""
    value = padded[2:][ends].astype(np.int16)
    value += (length >= 2) * (10 * padded[1:][ends].astype(np.int16))
    value += (length >= 3) * (100 * padded[ends].astype(np.int16))
    return value


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
    tokens = [token for token in text.split(" ") if token]  # the parser splits on spaces only
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
