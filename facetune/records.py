"""The facts every module shares, stated once: labels and their ranges, class names, splits, the
image layout, the names of the files in a prepared folder and in a results folder, and the
records written to disk.

Each record (SummaryEntry, SweepRecord, PreparedManifest) is written with `to_dict` and read
back with `from_dict` by the same class, so a reader accepts exactly what the writer writes:
an unknown key is refused with a one-line error naming the file and the key.
No heavy imports here: data, models, tuning, results and predict all import this module.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from facetune.errors import RecordFormatError, path_text
from facetune.settings import DataNotFoundError

# ---- labels -----------------------------------------------------------------------------------

#: The three labels of a face; each is also the name of the task that predicts it.
TASK_NAMES: tuple[str, ...] = ("age", "gender", "ethnicity")
#: The `task` of a model that answers every task from one forward pass (the multitask family).
MULTITASK = "all"
#: Ages are whole years in UTKFace.
MAX_AGE = 116
GENDER_NAMES: tuple[str, ...] = ("male", "female")
ETHNICITY_NAMES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
CLASS_NAMES: dict[str, tuple[str, ...]] = {"age": (), "gender": GENDER_NAMES, "ethnicity": ETHNICITY_NAMES}
#: Inclusive range of every label.
LABEL_RANGES: dict[str, tuple[int, int]] = {
    "age": (0, MAX_AGE),
    "gender": (0, len(GENDER_NAMES) - 1),
    "ethnicity": (0, len(ETHNICITY_NAMES) - 1),
}
SPLITS: tuple[str, ...] = ("train", "val", "test")

# ---- images -----------------------------------------------------------------------------------

GRAY_CHANNELS = 1
COLOR_CHANNELS = 3
#: The sides a prepared face may have: below MIN_IMAGE_SIZE a face is mostly interpolation (the
#: smallest image accepted, facetune.data.images.MIN_SIDE), above MAX_IMAGE_SIZE the models'
#: memory grows past what this project's machines train.
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 256


@dataclass(frozen=True)
class InputSpec:
    """The layout of the faces a prepared folder holds and a model takes: `size` x `size` pixels
    of `channels` (1 gray, 3 RGB) uint8, stored channel-first and row-major as `pixels` values.

    A property of the prepared data: prepare writes it into the manifest, the builders take it
    from the model context, a checkpoint records it.
    """

    size: int
    channels: int

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and MIN_IMAGE_SIZE <= self.size <= MAX_IMAGE_SIZE):
            raise ValueError(f"image size {self.size!r}: must be a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
        if self.channels not in (GRAY_CHANNELS, COLOR_CHANNELS):
            raise ValueError(f"channels {self.channels!r}: must be {GRAY_CHANNELS} (gray) or {COLOR_CHANNELS} (colour)")

    @classmethod
    def gray(cls, size: int) -> InputSpec:
        return cls(size, GRAY_CHANNELS)

    @classmethod
    def color(cls, size: int) -> InputSpec:
        return cls(size, COLOR_CHANNELS)

    @property
    def is_color(self) -> bool:
        return self.channels == COLOR_CHANNELS

    @property
    def pixels(self) -> int:
        """Values per face: channels x size x size."""
        return self.channels * self.size * self.size

    @property
    def shape(self) -> tuple[int, int, int]:
        """One face as a model takes it: (channels, size, size)."""
        return (self.channels, self.size, self.size)

    def describe(self) -> str:
        """"48x48 gray", "64x64 colour": for messages."""
        return f"{self.size}x{self.size} {'colour' if self.is_color else 'gray'}"

    @property
    def slug(self) -> str:
        """"48-gray", "64-color": for folder names."""
        return f"{self.size}-{'color' if self.is_color else 'gray'}"

    def to_dict(self) -> dict[str, int]:
        return {"size": self.size, "channels": self.channels}

    @classmethod
    def from_dict(cls, data: Any, source: str = "input_spec") -> InputSpec:
        """The spec from `data` as read from `source`; a malformed entry is a one-line RecordFormatError."""
        try:
            return record_from_dict(cls, data, source)
        except RecordFormatError:
            raise
        except (TypeError, ValueError) as err:  # a value out of range, as the file's error
            raise RecordFormatError(f"{source}: {err}") from None


def input_spec_from(data: Any, source: str = "input_spec") -> InputSpec:
    """An InputSpec given as itself, as its dict, or absent (None: DEFAULT_INPUT_SPEC, the layout of
    everything written before specs were recorded)."""
    if data is None:
        return DEFAULT_INPUT_SPEC
    return data if isinstance(data, InputSpec) else InputSpec.from_dict(data, source)


#: The study's layout, and that of the Kaggle CSV: 48x48 gray. The one place this size is stated.
DEFAULT_INPUT_SPEC = InputSpec(48, GRAY_CHANNELS)
#: The Kaggle CSV's faces are always in the default layout (2304 values a row).
CSV_INPUT_SPEC = DEFAULT_INPUT_SPEC
#: The default layout's side and values per face: the Kaggle CSV's row parser (which reads that
#: layout only) and the tests' synthetic faces. Everything else takes a spec.
IMAGE_SIZE = DEFAULT_INPUT_SPEC.size
NUM_PIXELS = DEFAULT_INPUT_SPEC.pixels

# ---- a prepared folder (output of `facetune prepare`) -------------------------------------------

#: Version 2 names every non-data file with a leading "_", which Parquet readers skip.
PREPARED_FORMAT = "facetune-prepared/2"
PARQUET_PATTERN = "part-*.parquet"
PREPARED_MANIFEST = "_manifest.json"
PREPARED_FIGURES_DIR = "_figures"
#: The manifest name of format 1 (manifest.json and figures/ beside the Parquet files).
OLD_PREPARED_MANIFEST = "manifest.json"


def parquet_file_name(number: int) -> str:
    """The name of the `number`-th data file of a prepared folder (matches PARQUET_PATTERN)."""
    return f"part-{number:05d}.parquet"


def is_prepared_dir(path: str | os.PathLike[str]) -> bool:
    """True when `path` holds a dataset written by this version of `facetune prepare`."""
    try:
        manifest = json.loads((Path(path) / PREPARED_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == PREPARED_FORMAT


def is_old_prepared_dir(path: str | os.PathLike[str]) -> bool:
    """True when `path` holds a dataset in the format-1 layout (manifest.json beside the Parquet files)."""
    directory = Path(path)
    return (directory / OLD_PREPARED_MANIFEST).is_file() and any(directory.glob(PARQUET_PATTERN))


def is_any_prepared_dir(path: str | os.PathLike[str]) -> bool:
    """A prepared folder of this layout or the old one: what prepare may replace, and what readers
    hand to require_prepared_dir (which asks for the old one to be prepared again)."""
    return is_prepared_dir(path) or is_old_prepared_dir(path)


def require_prepared_dir(path: str | os.PathLike[str]) -> Path:
    """`path` when it is a prepared folder of this version; else a one-line DataNotFoundError."""
    directory = Path(path)
    if is_prepared_dir(directory):
        return directory
    if is_old_prepared_dir(directory):
        raise DataNotFoundError(
            f"{path_text(directory)}: prepared by an older facetune (it holds {OLD_PREPARED_MANIFEST}); "
            f"run `facetune prepare SOURCE --out {path_text(directory)}` again"
        )
    raise DataNotFoundError(
        f"no prepared data in {path_text(directory)} (no {PREPARED_MANIFEST}); "
        f"run `facetune prepare SOURCE --out {path_text(directory)}` first"
    )


# ---- a results folder (output of a sweep) -------------------------------------------------------

SUMMARY_FILE = "summary.json"
SWEEP_FILE = "sweep.json"
TUNE_DIR = "tune"
#: The one Tune experiment (inside TUNE_DIR) that searches all combinations from one pool of slots.
POOL_EXPERIMENT = "sweep"
#: When each trial held a slot: [{combination, trial_id, start, end, status}] (facetune.tuning.pool.TrialTime).
TRIAL_TIMES_FILE = "trial_times.json"
PCA_DIR = "pca"
PCA_PARAMS_FILE = "pca.npz"
PCA_INFO_FILE = "pca.json"
#: The folder a raw source is prepared into, inside RESULTS (or a release's --work).
PREPARED_DIR = "data"
#: The files of one combination's folder <family>_<task>/.
BEST_CONFIG_FILE = "best_config.json"
HISTORY_FILE = "history.csv"
TEST_METRICS_FILE = "test_metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
TRIALS_FILE = "trials.csv"
MODEL_WEIGHTS_FILE = "model.pt"
MODEL_CONFIG_FILE = "model_config.json"
#: In a model's folder: the activation ranges its int8 network is quantised with, and their verdict on test.
INT8_RANGES_FILE = "int8_ranges.json"
ENSEMBLE_CONFIG_FILE = "ensemble.json"
#: A multitask ensemble's stacked heads (linear layers over its members' joined trunk features).
STACKED_HEADS_FILE = "stacked_heads.pt"


def combination_name(family: str, task: str) -> str:
    """The folder (and results.csv) name of a family x task combination: "cnn_gender"."""
    return f"{family}_{task}"


def split_combination_name(name: str) -> tuple[str, str]:
    """"pca_dnn_gender" -> ("pca_dnn", "gender"): the task is the part after the last underscore."""
    family, _, task = name.rpartition("_")
    if not family or task not in (*TASK_NAMES, MULTITASK):
        raise ValueError(f"not a combination name: {name!r} (expected <family>_<task>, e.g. cnn_gender)")
    return family, task


# ---- records ----------------------------------------------------------------------------------

Record = TypeVar("Record")


def record_from_dict(cls: type[Record], data: Any, source: str) -> Record:
    """Build dataclass `cls` from `data` as read from `source` (a file name, for the error)."""
    if not isinstance(data, dict):
        raise RecordFormatError(f"{source}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise RecordFormatError(f"{source}: unknown key {unknown[0]!r} (not written by this facetune)")
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise RecordFormatError(f"{source}: key {missing[0]!r} missing")
    return cls(**data)


def record_to_dict(record: Any) -> dict[str, Any]:
    """The record as JSON-ready data; optional fields left unset (None) are not written."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
            if not (getattr(record, f.name) is None and f.default is None)}


class JsonRecord:
    """to_dict / from_dict for a dataclass record stored in the file named FILE."""

    FILE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    @classmethod
    def from_dict(cls: type[Record], data: Any, source: str | None = None) -> Record:
        """The record from `data` as read from `source` (default: its FILE name, for errors)."""
        return record_from_dict(cls, data, source or cls.FILE)


@dataclass
class SummaryEntry(JsonRecord):
    """One finished combination in RESULTS/summary.json: a sweep's best trial or an ensemble."""

    FILE: ClassVar[str] = SUMMARY_FILE

    family: str
    task: str
    val: dict[str, float]
    test: dict[str, float]
    checkpoint: str  # relative to RESULTS, e.g. "cnn_gender/model.pt"
    num_parameters: int
    best_config: dict[str, Any] | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    train_seconds: float | None = None
    test_seconds: float | None = None
    num_trials: int | None = None
    trial_id: str | None = None
    #: Ensembles only (facetune.tuning.ensemble_selection).
    members: list[dict[str, Any]] | None = None
    num_candidates: int | None = None
    best_single_trial: str | None = None
    #: Final fits only (facetune.tuning.final_fit): the family that was retrained, and on what.
    base_family: str | None = None
    trained_on: str | None = None

    @property
    def name(self) -> str:
        return combination_name(self.family, self.task)


def summary_from_json(data: Any, source: str = SUMMARY_FILE) -> list[SummaryEntry]:
    """The entries of a summary.json document (a list of SummaryEntry objects)."""
    if not isinstance(data, list):
        raise RecordFormatError(f"{source}: expected a list of combinations, got {type(data).__name__}")
    return [SummaryEntry.from_dict(item, source) for item in data]


def summary_to_json(entries: list[SummaryEntry]) -> list[dict[str, Any]]:
    return [entry.to_dict() for entry in entries]


@dataclass
class SweepRecord(JsonRecord):
    """RESULTS/sweep.json: what a sweep was asked to do, and when it started and ended."""

    FILE: ClassVar[str] = SWEEP_FILE

    profile: str | None
    data: str  # the prepared folder the sweep read
    storage: str  # Tune's experiment storage
    #: The combination folders the sweep produces (combination_name), in the order it runs them.
    combinations: list[str]
    started: str  # ISO time
    resumed: bool = False
    ended: str | None = None
    combinations_finished: int | None = None


@dataclass
class PreparedManifest(JsonRecord):
    """DIR/_manifest.json of a prepared folder: where the faces came from and what was kept."""

    FILE: ClassVar[str] = PREPARED_MANIFEST

    source: str
    source_kind: str  # "csv" | "utkface"
    seed: int
    rows_read: int
    rows_written: int
    rows_rejected: int
    rejected: list[dict[str, str]]  # {"source", "reason"} per rejected row
    blank_lines: int
    duplicate_groups: int
    duplicate_rows: int
    conflicting_label_groups: int
    content_hash: str  # how content_hash was computed
    splits: dict[str, dict[str, Any]]  # per split: rows, fraction and label histograms
    parquet_files: list[str]
    figures: list[str]  # relative to DIR
    seconds: float
    format: str = PREPARED_FORMAT
    #: InputSpec.to_dict() of the faces; absent in folders prepared before it was recorded (48 gray).
    input_spec: dict[str, int] | None = None

    @property
    def spec(self) -> InputSpec:
        """The layout of the folder's faces."""
        return input_spec_from(self.input_spec, f"{PREPARED_MANIFEST}: input_spec")

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> PreparedManifest:
        """The manifest of prepared folder `directory` (checked to be of this version first)."""
        path = require_prepared_dir(directory) / PREPARED_MANIFEST
        return cls.from_dict(json.loads(path.read_text()), path_text(path))
