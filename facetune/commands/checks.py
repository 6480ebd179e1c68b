"""Checks shared by the commands that read a sweep's results or write one file.

They run before any heavy work (Ray, models, figures) and raise facetune.errors types, so
`tune`, `report` and `generate` refuse bad inputs and outputs with one line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from facetune.errors import InputNotFoundError, InvalidInputError, NoDataError, OutputError, UsageError, path_text
from facetune.records import SUMMARY_FILE, SWEEP_FILE, SummaryEntry, SweepRecord, summary_from_json


def read_sweep_record(results_dir: Path) -> SweepRecord:
    """RESULTS/sweep.json, for the commands that work on a finished sweep (one-line errors, exit 2)."""
    sweep_file = results_dir / SWEEP_FILE
    if not sweep_file.is_file():
        raise InputNotFoundError(f"{sweep_file} not found: RESULTS must be a sweep's results directory")
    try:
        return SweepRecord.from_dict(json.loads(sweep_file.read_text()), str(sweep_file))
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{sweep_file} is not valid JSON ({err.msg}, line {err.lineno})") from None


def read_sweep_summary(results: str) -> list[SummaryEntry]:
    """RESULTS/summary.json as a list of combination entries ([] when absent).

    Works on URIs too (through ResultsStore). A file that is not JSON, or not a list of
    the entries a sweep writes, is a NoDataError naming the file.
    """
    from facetune.storage import ResultsStore, is_uri

    where = f"{results}/{SUMMARY_FILE}"
    if not is_uri(str(results)) and not Path(results).exists():
        return []  # nothing to read, and nothing created just to look (a dry run writes nothing)
    try:
        summary = ResultsStore(results).read_json(SUMMARY_FILE, default=[])
    except (ValueError, UnicodeDecodeError) as err:
        raise NoDataError(f"{where}: corrupt ({err}); move it away or choose another results folder") from None
    except OSError as err:
        raise UsageError(f"{results}: cannot be read ({err.strerror or err})") from None
    return summary_from_json(summary, where)


def check_output_file(out: Path, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an output file path that is a folder, has an unusable suffix or cannot be created."""
    if out.is_dir():
        raise OutputError(f"--out {path_text(out)}: is a folder; give a file path")
    if suffixes and out.suffix.lower() not in suffixes:
        raise OutputError(f"--out {path_text(out)}: expected a {'/'.join(suffixes)} file name")
    check_writable_folder(out.parent, out)


def check_writable_folder(folder: Path, out: Path, option: str = "--out") -> None:
    """Create `folder` if needed; refuse (naming `option` `out`) when that fails or it is not writable."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {path_text(out)}: {path_text(folder)} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {path_text(out)}: cannot create {path_text(folder)} ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{option} {path_text(out)}: {path_text(folder)} is not writable")
