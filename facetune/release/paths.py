"""Where the shipped models and their files live: the one place predict, serve and export learn it."""
from __future__ import annotations

from pathlib import Path

from facetune.records import ENSEMBLE_CONFIG_FILE, MODEL_CONFIG_FILE

#: Where the shipped models live inside the installed package.
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
MEMBERS_DIR = "members"
#: The distilled model shipped beside the ensemble, inside the release folder.
STUDENT_DIR_NAME = "student"
STUDENT_DIR = PRETRAINED_DIR / STUDENT_DIR_NAME
#: The shipped models a user picks by name (predict/serve/export's --pretrained, Predictor.pretrained).
PRETRAINED_CHOICES: tuple[str, ...] = ("ensemble", "fast")


def pretrained_folder(which: str) -> Path:
    """The folder of the shipped model named `which` (one of PRETRAINED_CHOICES), found at call time."""
    if which not in PRETRAINED_CHOICES:
        raise ValueError(f"pretrained model {which!r}: choose one of {list(PRETRAINED_CHOICES)}")
    return PRETRAINED_DIR if which == "ensemble" else PRETRAINED_DIR / STUDENT_DIR_NAME


def shipped_models_present(release_dir: Path | None = None) -> bool:
    """Whether `release_dir` (default: the package's pretrained/) holds a loadable release."""
    folder = PRETRAINED_DIR if release_dir is None else Path(release_dir)
    return (folder / ENSEMBLE_CONFIG_FILE).is_file() or (folder / MODEL_CONFIG_FILE).is_file()
