"""Parsing the CSV's `pixels` column (2,304 space-separated values 0..255 a face) into uint8 arrays,
vectorised over Arrow chunks, and saying in words what is wrong with a row that does not parse."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facetune.records import NUM_PIXELS

#: One pixel as the Kaggle CSV writes it: 1-3 ASCII digits.
PIXEL_TOKEN = re.compile(r"[0-9]{1,3}")


def parse_pixel_column(column: pa.ChunkedArray | pa.Array, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Parse a text column of 2304 space-separated 0..255 integers per row.

    Returns ((rows, 2304) uint8 with zeros in bad rows, sorted indices of bad rows). The work is
    done on the raw UTF-8 bytes of each Arrow chunk with numpy (no Python loop per row); chunks
    run on a thread pool because numpy releases the GIL.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        parsed = list(pool.map(parse_pixel_array, chunks))
    return concatenate_parsed(parsed, [len(chunk) for chunk in chunks])


def parse_pixel_array(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(chunk), NUM_PIXELS), dtype=np.uint8)
    return out, _parse_pixel_chunk(chunk, out)


def concatenate_parsed(parsed: list[tuple[np.ndarray, np.ndarray]], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
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


def describe_bad_pixels(text: str | None) -> str:
    """Say why one pixel field is unusable (called only for rows the vectorised parser flagged)."""
    if text is None or not text.strip():
        return "pixels missing"
    tokens = [token for token in text.split(" ") if token]  # the parser splits on spaces only
    for position, token in enumerate(tokens):
        if PIXEL_TOKEN.fullmatch(token):
            if int(token) > 255:
                return f"pixel value {token} at position {position} is outside 0..255"
            continue
        if token.lstrip("+-").isdigit() and token.lstrip("+-").isascii():
            return f"pixel value {token[:20]!r} at position {position} is not written as a plain 0..255 integer"
        return f"non-numeric pixel value {token[:20]!r} at position {position}"
    if len(tokens) != NUM_PIXELS:
        return f"{len(tokens)} pixel values, expected {NUM_PIXELS}"
    return f"pixels are not {NUM_PIXELS} plain 0..255 integers separated by spaces"

