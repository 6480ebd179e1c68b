"""Where facetune looks for data and writes results, and the error when data is missing."""
from __future__ import annotations

import os
from pathlib import Path

from facetune.errors import InputNotFoundError

#: Environment variable naming the default data source (a Kaggle CSV, a UTKFace folder,
#: or a prepared Parquet directory).
DATA_ENV = "FACETUNE_DATA"
#: Beside a checkout, the project's shared data lives in ../shared/data.
DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"
DEFAULT_DATA_SOURCE = DEFAULT_DATA_ROOT / "age_gender.csv.gz"
DEFAULT_RESULTS = Path("runs") / "results"
#: Where `facetune tune --rehearse` writes, so a rehearsal never mixes with a real sweep's results.
DEFAULT_REHEARSAL_RESULTS = Path("runs") / "rehearsal"


class DataNotFoundError(InputNotFoundError):
    """Raised with a one-line, user-facing explanation when a data path does not exist (exit code 2)."""


def default_data_source() -> Path:
    """The data source used when none is given: $FACETUNE_DATA, else ../shared/data/age_gender.csv.gz."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else DEFAULT_DATA_SOURCE


def require_data_path(path: str | os.PathLike[str] | None) -> Path:
    """Return `path` (or the default source) as a Path, or raise DataNotFoundError saying what to do."""
    resolved = Path(path) if path is not None else default_data_source()
    if not resolved.exists():
        raise DataNotFoundError(
            f"data not found: {resolved} does not exist. Pass a Kaggle age_gender.csv(.gz), a UTKFace "
            f"image folder or a prepared directory, or set ${DATA_ENV} (default: {DEFAULT_DATA_SOURCE})."
        )
    return resolved
