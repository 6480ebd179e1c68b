"""Read face data into arrays: a Kaggle-layout CSV (plain or .gz) or a folder of UTKFace images.

Both readers return an IngestResult: the accepted rows as arrays plus every rejected row with its
reason, so `rows_read == rows_written + rows_rejected` holds by construction.
"""
from __future__ import annotations

import gzip
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from facetune.data.images import ImageDecodeError, face_problem, load_face, resized_faces, uniform_rows
from facetune.data.pixel_text import concatenate_parsed, describe_bad_pixels, parse_pixel_array
from facetune.data.walk import walk_files
from facetune.errors import InvalidInputError, NoDataError
from facetune.progress import progress_bar
from facetune.records import CSV_INPUT_SPEC, DEFAULT_INPUT_SPEC, LABEL_RANGES, InputSpec, is_any_prepared_dir

CSV_COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
#: UTKFace names: [age]_[gender]_[race]_[datetime].jpg.chip.jpg. What follows the datetime is not
#: checked: real files carry stray characters there (e.g. '..._20170116220224657 .jpg.chip.jpg').
UTKFACE_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?P<ethnicity>\d+)_(?P<stamp>\d+)(?!\d)")
UTKFACE_NAME_HINT = "[age]_[gender]_[race]_[datetime].jpg.chip.jpg"


class SourceFormatError(NoDataError, ValueError):
    """The source exists but is not a usable CSV or UTKFace folder (one-line message, exit code 3)."""


@dataclass
class Rejected:
    """One input row that was not written, with a human reason. `index` is its position in the
    input (for a CSV: its line number)."""

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
    pixels: np.ndarray  # (N, spec.pixels) uint8, channel-first
    age: np.ndarray  # (N,) int64
    gender: np.ndarray  # (N,) int64
    ethnicity: np.ndarray  # (N,) int64
    names: np.ndarray  # (N,) object (str): file name or img_name
    rejected: list[Rejected] = field(default_factory=list)
    blank_lines: int = 0  # CSV blank lines: not rows, only counted
    spec: InputSpec = DEFAULT_INPUT_SPEC
    #: The faces in the default layout when `spec` is another (None: `pixels` are in it).
    default_pixels: np.ndarray | None = None

    @property
    def key_pixels(self) -> np.ndarray:
        """(N, 2304) uint8: the faces in the default layout, which content hashes and the split are
        computed from, so a face lands in the same split at every size and colour."""
        return self.pixels if self.default_pixels is None else self.default_pixels

    @property
    def rows_written(self) -> int:
        return len(self.age)


def detect_kind(source: Path) -> str:
    """'utkface' for a folder, 'csv' for a .csv / .csv.gz file; SourceFormatError otherwise."""
    if source.is_dir():
        if is_any_prepared_dir(source):
            raise SourceFormatError(f"{source} is already a prepared directory; use it directly")
        return "utkface"
    name = source.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise SourceFormatError(
        f"{source}: not a Kaggle CSV (.csv or .csv.gz) nor a folder of UTKFace images"
    )


def ingest(source: str | os.PathLike[str], progress: bool = True, spec: InputSpec = DEFAULT_INPUT_SPEC) -> IngestResult:
    """Read `source` (CSV or UTKFace folder, detected) into an IngestResult of faces in `spec`'s layout."""
    path = Path(source)
    if detect_kind(path) == "utkface":
        return read_utkface_folder(path, progress=progress, spec=spec)
    check_csv_spec(path, spec)
    return read_kaggle_csv(path, spec=spec)


def check_csv_spec(path: Path, spec: InputSpec) -> None:
    """A Kaggle CSV holds 48x48 gray faces: a smaller gray layout can be made from them, colour or a
    larger size cannot (one-line InvalidInputError naming the file)."""
    if spec.is_color or spec.size > CSV_INPUT_SPEC.size:
        raise InvalidInputError(
            f"{path}: a Kaggle CSV holds {CSV_INPUT_SPEC.describe()} faces, so it cannot be prepared as "
            f"{spec.describe()} (prepare a UTKFace image folder for that, or use a gray size up to {CSV_INPUT_SPEC.size})"
        )


# --------------------------------------------------------------------------------------------- CSV

#: Label columns a faces CSV may carry; predict reads CSVs without them (labels are optional there).
OPTIONAL_CSV_COLUMNS = ("age", "ethnicity", "gender", "img_name")
#: Bytes looked at to tell a text CSV from a binary file (an image, an archive) wearing a .csv name.
SNIFF_BYTES = 1 << 16


@dataclass
class CsvRows:
    """The data rows of a faces CSV: text columns, parsed pixels and each row's physical line.

    Lines that are not rows (a wrong number of fields) are in `malformed`; `blank` marks blank
    lines, which are not data and only counted. `problems` maps a row to why it is unusable
    (invalid UTF-8, bad or blank pixels).
    """

    table: pa.Table
    lines: np.ndarray
    pixels: np.ndarray
    problems: dict[int, str]
    malformed: list[Rejected]
    blank: np.ndarray

    @property
    def rows_read(self) -> int:
        return int(np.count_nonzero(~self.blank)) + len(self.malformed)

    def source(self, row: int, names: np.ndarray) -> str:
        return names[row] or f"line {self.lines[row]}"


def read_kaggle_csv(path: str | os.PathLike[str], threads: int = 2, spec: InputSpec = CSV_INPUT_SPEC) -> IngestResult:
    """Parse a Kaggle age_gender.csv (plain or .gz) with pyarrow and vectorised numpy; faces in
    `spec`'s layout (a smaller gray one is resized from the CSV's own, see check_csv_spec).

    Every column is read as text so that one bad value rejects its row, not the whole column;
    a malformed line (wrong field count, invalid UTF-8) is rejected alone, with its line number.
    """
    path = Path(path)
    rows = read_csv_rows(path, CSV_COLUMNS, threads=threads)
    table = rows.table
    names = _names(table)
    problems = dict(rows.problems)
    labels: dict[str, np.ndarray] = {}
    for column, (low, high) in LABEL_RANGES.items():
        values, bad_rows = _parse_label_column(table.column(column), low, high)
        labels[column] = values
        texts = table.column(column).take(pa.array(bad_rows, pa.int64())).to_pylist() if len(bad_rows) else []
        for row, text in zip(bad_rows.tolist(), texts):
            if not rows.blank[row]:
                problems.setdefault(row, describe_bad_label(column, text, low, high))
    keep = _keep_mask(rows, problems)
    rejected = _rejections(rows, problems, names)
    own = rows.pixels[keep]
    return IngestResult(
        source=str(path),
        kind="csv",
        rows_read=rows.rows_read,
        pixels=own if spec == CSV_INPUT_SPEC else resized_faces(own, CSV_INPUT_SPEC, spec),
        default_pixels=None if spec == CSV_INPUT_SPEC else own,
        spec=spec,
        age=labels["age"][keep],
        gender=labels["gender"][keep],
        ethnicity=labels["ethnicity"][keep],
        names=names[keep],
        rejected=rejected,
        blank_lines=int(rows.blank.sum()),
    )


@dataclass
class CsvFaces:
    """A faces CSV read for prediction: labels are optional (<NA> where missing or out of range)."""

    sources: list[str]
    pixels: np.ndarray
    labels: dict[str, list[int | None]]
    rejected: list[Rejected]


def read_faces_csv(path: str | os.PathLike[str], threads: int = 2) -> CsvFaces:
    """Read a CSV with a `pixels` column (label and img_name columns optional): one face per row.

    Only unusable pixels reject a row; a missing or out-of-range label just leaves that label
    unknown, because labels matter only when predictions are scored.
    """
    rows = read_csv_rows(Path(path), ("pixels",), optional=OPTIONAL_CSV_COLUMNS, threads=threads)
    table, names = rows.table, _names(rows.table)
    keep = _keep_mask(rows, rows.problems)
    labels: dict[str, list[int | None]] = {}
    for column, (low, high) in LABEL_RANGES.items():
        if column not in table.column_names:
            labels[column] = [None] * int(keep.sum())
            continue
        values, bad_rows = _parse_label_column(table.column(column), low, high)
        known = np.ones(len(values), dtype=bool)
        known[bad_rows] = False
        labels[column] = [int(v) if k else None for v, k in zip(values[keep], known[keep])]
    sources = [rows.source(row, names) for row in np.flatnonzero(keep)]
    return CsvFaces(sources, rows.pixels[keep], labels, _rejections(rows, rows.problems, names))


def read_csv_rows(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...] = (), threads: int = 2
) -> CsvRows:
    """Read the `required` (and present `optional`) columns of a CSV as text, pixels parsed.

    Raises SourceFormatError when the file is not a text CSV or lacks a required column.
    """
    header = _csv_header(path)
    missing = [c for c in required if c not in header]
    if missing:
        raise SourceFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the Kaggle layout {','.join(CSV_COLUMNS)}"
        )
    columns = [c for c in (*required, *optional) if c in header]
    table, parsed, skipped = _stream_csv(path, columns, threads, numbered=False)
    if any(number is None for number, _ in skipped):
        # Parallel parsing does not know line numbers; the (rare) file with malformed lines is read again.
        table, parsed, skipped = _stream_csv(path, columns, threads=1, numbered=True)
    pixels, bad_pixel_rows = concatenate_parsed([p for p, _ in parsed], [len(p[0]) for p, _ in parsed])
    problems: dict[int, str] = {}
    for _, batch_problems in parsed:
        problems.update(batch_problems)
    skipped_lines = np.asarray(sorted(number for number, _ in skipped), dtype=np.int64)
    lines = np.arange(2, 2 + table.num_rows + len(skipped_lines), dtype=np.int64)
    lines = lines[~np.isin(lines, skipped_lines)]
    blank = _blank_rows(table)
    blank[list(problems)] = False  # a row nulled for invalid UTF-8 was not blank
    bad_pixels = [row for row in bad_pixel_rows.tolist() if not blank[row] and row not in problems]
    if bad_pixels:
        texts = table.column("pixels").take(pa.array(bad_pixels, pa.int64())).to_pylist()
        problems.update({row: describe_bad_pixels(text) for row, text in zip(bad_pixels, texts)})
    for row in np.flatnonzero(uniform_rows(pixels) & ~blank).tolist():
        side = CSV_INPUT_SPEC.size
        problems.setdefault(row, face_problem(side, side, pixels[row].reshape(side, side)) or "image too uniform")
    malformed = [Rejected(number, f"line {number}", f"line {number}: {reason}") for number, reason in sorted(skipped)]
    return CsvRows(table, lines, pixels, problems, malformed, blank)


def _csv_header(path: Path) -> list[str]:
    """The header's column names, after checking the file is text (not an image named .csv)."""
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")) as handle:
            head = handle.read(SNIFF_BYTES)
    except (OSError, EOFError) as err:
        raise SourceFormatError(f"{path}: cannot read as CSV ({err.strerror or err})") from None
    if b"\x00" in head or head.startswith((b"\x89PNG", b"\xff\xd8", b"PK\x03\x04", b"\x1f\x8b")):
        raise SourceFormatError(f"{path}: not a text CSV (binary content; is it an image or an archive?)")
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceFormatError(f"{path}: the header line is not UTF-8 text") from None
    if not text.strip():
        raise SourceFormatError(f"{path}: empty file or empty header line; expected {','.join(CSV_COLUMNS)}")
    return [name.strip().strip('"') for name in text.split(",")]


def _stream_csv(
    path: Path, columns: list[str], threads: int, numbered: bool
) -> tuple[pa.Table, list[tuple[tuple[np.ndarray, np.ndarray], dict[int, str]]], list[tuple[int | None, str]]]:
    """Stream the CSV: (text table, per batch ((pixels, bad rows), row problems), malformed lines)."""
    skipped: list[tuple[int | None, str]] = []

    def skip(row: pa_csv.InvalidRow) -> str:
        skipped.append((row.number, f"{row.actual_columns} field(s), expected {row.expected_columns}"))
        return "skip"

    batches: list[pa.RecordBatch] = []
    jobs = []
    offset = 0
    # Arrow decompresses and splits the file ahead in its own threads while numpy (which
    # releases the GIL) parses the pixels of the batches already read.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        try:
            for raw in _open_csv(path, columns, numbered, skip):
                batch, problems = _as_text(raw, offset)
                offset += batch.num_rows
                batches.append(batch)
                jobs.append((pool.submit(parse_pixel_array, batch.column("pixels")), problems))
        except (pa.ArrowInvalid, OSError, EOFError) as err:
            raise SourceFormatError(f"{path}: malformed CSV ({err})") from None
        parsed = [(job.result(), problems) for job, problems in jobs]
    schema = pa.schema([(c, pa.string()) for c in columns])
    return pa.Table.from_batches(batches, schema=schema), parsed, skipped


def _open_csv(path: Path, columns: list[str], numbered: bool, skip) -> pa_csv.CSVStreamingReader:
    return pa_csv.open_csv(
        path,
        # Large blocks: fewer, bigger batches for the numpy pixel parser. Line numbers of
        # malformed lines are known only when parsing on one thread.
        read_options=pa_csv.ReadOptions(block_size=8 << 20, use_threads=not numbered),
        # Blank lines stay rows (dropped later) so that row positions keep matching line numbers.
        # Quotes are not special: one stray quote would otherwise swallow every line after it into
        # one field. Quoted fields still work, their quotes are trimmed in _as_text.
        parse_options=pa_csv.ParseOptions(invalid_row_handler=skip, ignore_empty_lines=False, quote_char=False),
        convert_options=pa_csv.ConvertOptions(
            # Bytes first: one invalid UTF-8 byte then rejects its row, not the file.
            column_types={c: pa.binary() for c in columns}, include_columns=columns, strings_can_be_null=True
        ),
    )


def _as_text(batch: pa.RecordBatch, offset: int) -> tuple[pa.RecordBatch, dict[int, str]]:
    """The batch with text columns; rows holding invalid UTF-8 are nulled and reported (file-wide row numbers)."""
    problems: dict[int, str] = {}
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns):
        try:
            arrays.append(_unquoted(column.cast(pa.string())))
            continue
        except pa.ArrowInvalid:
            pass
        values = column.to_pylist()
        for row, value in enumerate(values):
            try:
                values[row] = value.decode("utf-8") if value is not None else None
            except UnicodeDecodeError:
                values[row] = None
                problems.setdefault(offset + row, f"invalid UTF-8 in {name}")
        arrays.append(_unquoted(pa.array(values, pa.string())))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), problems


def _unquoted(column: pa.Array) -> pa.Array:
    """`column` with the double quotes around quoted fields removed (rare: only when one starts with a quote)."""
    if pc.any(pc.starts_with(column, '"')).as_py():
        return pc.utf8_trim(column, '"')
    return column


def _blank_rows(table: pa.Table) -> np.ndarray:
    """Rows whose every field is empty: blank lines, which are not rows of data."""
    blank = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        blank &= column.is_null().to_numpy(zero_copy_only=False)
    return blank


def _names(table: pa.Table) -> np.ndarray:
    if "img_name" not in table.column_names:
        return np.full(table.num_rows, "", dtype=object)
    return np.asarray(table.column("img_name").fill_null("").to_pylist(), dtype=object)


def _keep_mask(rows: CsvRows, problems: dict[int, str]) -> np.ndarray:
    keep = ~rows.blank
    keep[list(problems)] = False
    return keep


def _rejections(rows: CsvRows, problems: dict[int, str], names: np.ndarray) -> list[Rejected]:
    """Every rejected row and malformed line, in file order, each reason naming its line."""
    found = [
        Rejected(int(rows.lines[row]), rows.source(row, names), f"line {rows.lines[row]}: {problems[row]}")
        for row in problems
    ]
    return sorted(found + rows.malformed, key=lambda r: r.index)


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


def describe_bad_label(column: str, text: str | None, low: int, high: int) -> str:
    """Say why one label field is unusable (called only for rows already flagged)."""
    if text is None or not text.strip():
        return f"{column} missing"
    try:
        return f"{column} {int(text)} is outside {low}..{high}"
    except ValueError:
        return f"{column} {text.strip()[:20]!r} is not an integer"


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


def read_utkface_folder(folder: str | os.PathLike[str], progress: bool = True, threads: int = 4,
                        spec: InputSpec = DEFAULT_INPUT_SPEC) -> IngestResult:
    """Decode every file under `folder` (recursively) as a labelled UTKFace image in `spec`'s layout.

    Labels come from each file's name; `source` is its path relative to `folder`. Entries that
    are not files (broken symlinks, symlink loops, unreadable folders) are rejected with a reason,
    so every entry found is counted in rows_read.
    """
    folder = Path(folder)
    listing = walk_files(folder)
    files = [listing.relative(path) for path in listing.files]
    if not files:
        found = f" ({len(listing.skipped)} entries, none a file)" if listing.skipped else ""
        raise SourceFormatError(f"{folder}: folder holds no files{found} (expected UTKFace images {UTKFACE_NAME_HINT})")

    def decode(relative: str) -> tuple[dict[str, int], tuple[np.ndarray, np.ndarray]] | str:
        name = relative.rsplit("/", 1)[-1]
        try:
            labels = parse_utkface_name(name)
            return labels, load_face(folder / relative, spec)
        except ImageDecodeError as err:
            return f"{relative}: {err.reason}"
        except ValueError as err:
            return f"{relative}: {str(err).removeprefix(name + ': ')}"

    pixels = np.zeros((len(files), spec.pixels), dtype=np.uint8)
    # The default-layout faces too, when `spec` is another (see IngestResult.key_pixels).
    default = None if spec == DEFAULT_INPUT_SPEC else np.zeros((len(files), DEFAULT_INPUT_SPEC.pixels), np.uint8)
    labels = np.zeros((len(files), 3), dtype=np.int64)
    keep = np.zeros(len(files), dtype=bool)
    rejected: list[Rejected] = []
    # PIL releases the GIL while decoding, so threads overlap the JPEG work on few cores.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(decode, files, chunksize=64)
        decoded = progress_bar(results, total=len(files), what="decoding images", unit="img", enabled=progress)
        for index, outcome in enumerate(decoded):
            if isinstance(outcome, str):
                rejected.append(Rejected(index, files[index], outcome))
                continue
            found, (image, gray) = outcome
            pixels[index] = image.reshape(-1)
            if default is not None:
                default[index] = gray.reshape(-1)
            labels[index] = (found["age"], found["gender"], found["ethnicity"])
            keep[index] = True
    for number, (path, reason) in enumerate(listing.skipped, start=len(files)):
        where = path.relative_to(folder).as_posix()
        rejected.append(Rejected(number, where, f"{where}: {reason}"))
    return IngestResult(
        source=str(folder),
        kind="utkface",
        rows_read=len(files) + len(listing.skipped),
        pixels=pixels[keep],
        age=labels[keep, 0],
        gender=labels[keep, 1],
        ethnicity=labels[keep, 2],
        names=np.asarray(files, dtype=object)[keep],
        rejected=rejected,
        spec=spec,
        default_pixels=None if default is None else default[keep],
    )
