"""List every file under a folder, recursively, and say why anything else was passed over.

Shared by prepare (UTKFace folders, distributed as part1/part2/part3) and predict (image
folders), so both see the same files and neither loses an entry without a word. Symlinks are
followed; a folder reached twice (a symlink loop, or two links to one folder) is listed once.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

#: Why a FIFO, socket or device is passed over: reading one could block forever or never end.
NOT_A_REGULAR_FILE = "not a regular file (a FIFO, socket or device)"


@dataclass
class FolderListing:
    """`files`: regular files (sorted by path relative to the root). `skipped`: (path, reason)."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        """`path` relative to the root, with '/' separators (the `source` recorded for a file)."""
        return path.relative_to(self.root).as_posix()


def walk_files(root: str | os.PathLike[str]) -> FolderListing:
    """Every regular file under `root` (following symlinks), plus each skipped entry with its reason."""
    listing = FolderListing(Path(root))
    seen: set[tuple[int, int]] = set()
    pending = [listing.root]
    while pending:
        folder = pending.pop()
        try:
            info = folder.stat()
        except OSError as err:
            listing.skipped.append((folder, f"unreadable folder ({err.strerror or err})"))
            continue
        if (info.st_dev, info.st_ino) in seen:
            listing.skipped.append((folder, "skipped: folder already listed (a symlink loop or a second link to it)"))
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as err:
            listing.skipped.append((folder, f"unreadable folder ({err.strerror or err})"))
            continue
        for entry in entries:
            _sort_entry(Path(entry.path), listing, pending)
    listing.files.sort(key=listing.relative)
    listing.skipped.sort(key=lambda item: str(item[0]))
    return listing


def _sort_entry(path: Path, listing: FolderListing, pending: list[Path]) -> None:
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError as err:
        if path.is_symlink():
            reason = "symlink loop" if err.errno == errno.ELOOP else "broken symlink (its target does not exist)"
        else:
            reason = f"unreadable ({err.strerror or err})"
        listing.skipped.append((path, reason))
        return
    if stat.S_ISDIR(mode):
        pending.append(path)
    elif stat.S_ISREG(mode):
        listing.files.append(path)
    else:
        listing.skipped.append((path, NOT_A_REGULAR_FILE))
