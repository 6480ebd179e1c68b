"""The study's Figs. 1-3: ethnicity, gender and age distributions of a prepared dataset, as PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facetune.records import ETHNICITY_NAMES, GENDER_NAMES, MAX_AGE  # noqa: E402


def _bar_figure(counts: np.ndarray, names: tuple[str, ...], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(names, counts, color="tab:blue")
    total = max(int(counts.sum()), 1)
    ax.bar_label(bars, labels=[f"{c} ({100 * c / total:.1f}%)" for c in counts], fontsize=8)
    ax.set_title(title)
    ax.set_ylabel("images")
    ax.margins(y=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_figures(age: np.ndarray, gender: np.ndarray, ethnicity: np.ndarray, out_dir: Path) -> list[Path]:
    """Write ethnicity.png, gender.png and age.png into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(age)
    paths = [
        _bar_figure(
            np.bincount(ethnicity, minlength=len(ETHNICITY_NAMES)), ETHNICITY_NAMES,
            f"Fig. 1: ethnicity distribution (n={n})", out_dir / "ethnicity.png",
        ),
        _bar_figure(
            np.bincount(gender, minlength=len(GENDER_NAMES)), tuple(name.capitalize() for name in GENDER_NAMES),
            f"Fig. 2: gender distribution (n={n})", out_dir / "gender.png",
        ),
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(age, bins=np.arange(0, MAX_AGE + 2) - 0.5, color="tab:blue")
    ax.set_title(f"Fig. 3: age distribution (n={n})")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("images")
    ax.set_xlim(-1, MAX_AGE + 1)
    fig.tight_layout()
    fig.savefig(out_dir / "age.png", dpi=100)
    plt.close(fig)
    paths.append(out_dir / "age.png")
    return paths
