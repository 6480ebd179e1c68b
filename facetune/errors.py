"""The error contract of every `facetune` command: user errors and their exit codes.

A user error is raised as a FacetuneError (or a subclass) carrying one line that names the
input and the reason; `facetune.cli.main` prints it as `facetune COMMAND: message` on stderr and
returns the error's exit code. Anything else escaping a command is a bug and keeps its traceback.
"""
from __future__ import annotations

import os

#: Exit codes, documented in README ("Exit codes").
EXIT_OK = 0
EXIT_BUG = 1  # an unexpected exception (Python's own exit code for an uncaught error)
EXIT_USAGE = 2  # bad arguments, or an input path that is missing or of the wrong kind (argparse uses 2 too)
EXIT_NO_DATA = 3  # the input exists but nothing usable came out of it (all rows/images rejected, corrupt file)
EXIT_OUTPUT = 4  # the output location is refused (would overwrite an input or unrelated files) or unwritable
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE, as a shell reports it)

#: Longest message printed; anything longer is cut so one bad input cannot flood the terminal.
MAX_MESSAGE = 600


class FacetuneError(Exception):
    """A user error: `str(err)` is the one-line message, `exit_code` the documented exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(one_line(message))
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(FacetuneError):
    """Bad arguments or a missing / wrong-kind input path."""

    exit_code = EXIT_USAGE


class InvalidInputError(UsageError, ValueError):
    """A usage error that Python callers may also catch as ValueError."""


class InputNotFoundError(UsageError, FileNotFoundError):
    """A missing input path; Python callers may also catch it as FileNotFoundError."""


class NoDataError(FacetuneError):
    """The input was read but yielded nothing usable."""

    exit_code = EXIT_NO_DATA


class RecordFormatError(NoDataError, ValueError):
    """A facetune file (summary.json, sweep.json, a manifest) holds what its writer never writes."""


class OutputError(FacetuneError):
    """The output location is refused or cannot be written."""

    exit_code = EXIT_OUTPUT


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """`text` as one printable line: control and undecodable characters escaped, long text cut."""
    line = " ".join(str(text).split("\n"))
    line = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_os_error(err: OSError) -> str:
    """'PATH: reason' for an OSError, without Python's '[Errno N]' prefix."""
    reason = err.strerror or str(err)
    return f"{err.filename}: {reason}" if err.filename else reason


def path_text(path: str | os.PathLike[str]) -> str:
    """A path for a message, escaped so odd bytes in file names stay printable."""
    return one_line(os.fspath(path), limit=300)
