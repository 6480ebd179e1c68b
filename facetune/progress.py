"""Progress bars for long work in this process (e.g. decoding a folder in prepare): tqdm on stderr.

One place decides how they look: redrawn in place on a terminal; in a log (not a terminal) a
new state at most every LOG_EVERY_S seconds, so job logs stay short. Work that ends sooner than
that (or a second on a terminal) draws no bar at all, so quick runs print only their results. (Work inside Ray workers,
such as the CGAN's epochs, draws with Ray's tqdm_ray, which the driver renders.)
"""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

LOG_EVERY_S = 10.0
T = TypeVar("T")


def progress_bar(items: Iterable[T] | None = None, *, total: int | None = None, what: str, unit: str = "it",
                 enabled: bool = True) -> tqdm:
    """A tqdm bar over `items` (or updated by hand with `.update(n)` when `items` is None)."""
    terminal = sys.stderr.isatty()
    every_s = 0.2 if terminal else LOG_EVERY_S
    return tqdm(items, total=total, desc=what, unit=unit, disable=not enabled, file=sys.stderr,
                delay=1.0 if terminal else LOG_EVERY_S, mininterval=every_s, dynamic_ncols=terminal,
                ascii=not terminal)
