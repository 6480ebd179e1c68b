"""Write an output folder as a whole: refuse unrelated folders, replace our own atomically.

The new content is written into a hidden sibling (`.NAME.partial-PID-*`) and swapped in with
two renames at the end, so a run killed while writing leaves the previous folder untouched
(and the partial one is removed by the next run). Should a run die between the two renames,
the previous folder waits as `.NAME.old-PID-*` and the next run puts it back first.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from facetune.errors import OutputError, path_text


def check_output_dir(
    out: Path, inputs: list[Path], overwrite: bool, is_ours: Callable[[Path], bool], what: str = "output"
) -> None:
    """Raise OutputError, before any work, when `out` cannot or must not be replaced.

    Refused: a file; a folder that is, holds or lies inside an input; a non-empty folder that
    `is_ours` does not recognise, unless `overwrite`.
    """
    recover_interrupted(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {path_text(out)}: exists and is a file, not a folder")
    target = out.resolve()
    for source in inputs:
        resolved = source.resolve()
        if target == resolved or target in resolved.parents or (resolved.is_dir() and resolved in target.parents):
            raise OutputError(f"--out {path_text(out)}: overlaps the input {path_text(source)}; choose a separate folder")
    if out.is_dir() and any(out.iterdir()) and not is_ours(out) and not overwrite:
        raise OutputError(
            f"--out {path_text(out)}: folder is not empty and holds no {what}; "
            "pass --overwrite to replace it, or choose another folder"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--out {path_text(out)}: cannot create its parent folder ({err.strerror or err})") from None
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"--out {path_text(out)}: its parent folder is not writable")


@contextlib.contextmanager
def replaced_atomically(out: Path) -> Iterator[Path]:
    """Yield an empty folder beside `out`; when the block succeeds it becomes `out`, else it is removed."""
    _remove_stale_partials(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield work
        _swap_in(work, out)
    except OSError as err:  # disk full, permissions changed underneath: the old content is still there
        shutil.rmtree(work, ignore_errors=True)
        kept = "the previous content is kept" if out.exists() else "nothing was written"
        raise OutputError(f"--out {path_text(out)}: writing failed ({err.strerror or err}); {kept}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def recover_interrupted(out: Path) -> None:
    """Put back the previous `out` when a run died between its two renames."""
    if out.exists() or not out.parent.is_dir():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        olds[-1].rename(out)


def _swap_in(work: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        old.rmdir()  # only the unique name is wanted; rename needs it free
        out.rename(old)
    try:
        work.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_partials(out: Path) -> None:
    """Remove partial folders left by killed runs (those whose process is gone)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.removeprefix(f".{out.name}.partial-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
