"""Results locations that may be a local path or a URI (s3://, gs://...) via pyarrow's filesystems."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from facetune.json_files import json_text, write_json


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def filesystem_and_path(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding `location` (a local path or a URI) and the path within it."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(str(location))
    return pafs.LocalFileSystem(), str(Path(location).resolve())


class ResultsStore:
    """Writes and reads files under a results root, local or remote.

    Local roots are written in place. Remote roots are staged in a local folder and uploaded
    with `pyarrow.fs.copy_files` once a unit of work (a combination's export) is complete, so a
    reader never sees a half-written combination.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = str(root).rstrip("/")
        self.remote = is_uri(self.root)
        self._fs, self._base = filesystem_and_path(self.root)
        if self.remote:
            self._staging = Path(tempfile.mkdtemp(prefix="facetune-results-"))
        else:
            self._staging = Path(self._base)
            self._staging.mkdir(parents=True, exist_ok=True)

    def local_dir(self, relative: str = "") -> Path:
        """A local folder whose contents `publish(relative)` makes visible under the root."""
        path = self._staging / relative if relative else self._staging
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, relative: str) -> None:
        """Upload the staged `relative` folder (no-op for a local root)."""
        if self.remote:
            target = f"{self._base}/{relative}"
            self._fs.create_dir(target, recursive=True)  # object stores ignore it; local and HDFS need it
            pafs.copy_files(str(self._staging / relative), target, destination_filesystem=self._fs)

    def write_json(self, relative: str, payload: Any) -> None:
        if self.remote:
            target = f"{self._base}/{relative}"
            self._fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with self._fs.open_output_stream(target) as stream:  # object stores publish whole objects
                stream.write(json_text(payload).encode())
        else:
            write_json(self._staging / relative, payload)  # atomic: a killed driver never leaves half a summary

    def read_json(self, relative: str, default: Any = None) -> Any:
        path = f"{self._base}/{relative}"
        if self._fs.get_file_info(path).type == pafs.FileType.NotFound:
            return default
        with self._fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())

    def child(self, relative: str) -> str:
        """The location (path or URI) of `relative` under the root."""
        return f"{self.root}/{relative}"
