"""Label counts of the prepared data, per split, for the report's "Data" section.

Preferred source: the prepared dir's manifest (per-split histograms, facetune.records.PreparedManifest).
Without prepared data, the true labels in a test_predictions.csv (test only).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from facetune.groups import age_bands
from facetune.records import PREPARED_MANIFEST, SPLITS, TASK_NAMES, PreparedManifest
from facetune.tasks import TASKS

COLUMNS = ["split", "attribute", "label", "count"]


def _counts_from_labels(split: str, age: np.ndarray, gender: np.ndarray, ethnicity: np.ndarray) -> list[dict]:
    rows = []
    bands = pd.Series(age_bands(age)).value_counts(sort=False)
    rows += [{"split": split, "attribute": "age_band", "label": str(b), "count": int(n)} for b, n in bands.items()]
    for attribute, codes in (("gender", gender), ("ethnicity", ethnicity)):
        names = TASKS[attribute].class_names
        counts = np.bincount(np.asarray(codes, dtype=int), minlength=len(names))
        rows += [{"split": split, "attribute": attribute, "label": names[i], "count": int(c)} for i, c in enumerate(counts)]
    return rows


def _expand(histogram: dict[str, int]) -> np.ndarray:
    """A manifest histogram ({"0": n, ...} or, for age, {"0-9": n, ...}) -> one value per face, for re-binning."""
    # Keys are label codes ("0") or age bins ("20-29"): a bin's start stands for its faces.
    values = [int(str(k).split("-")[0]) for k in histogram]
    return np.repeat(values, [int(v) for v in histogram.values()])


def counts_from_manifest(manifest: PreparedManifest) -> pd.DataFrame:
    """Per-split label counts from a manifest's histograms (manifest.splits[split][label])."""
    rows = []
    for split in SPLITS:
        labels = {name: _expand(manifest.splits[split][name]) for name in TASK_NAMES}
        rows += _counts_from_labels(split, labels["age"], labels["gender"], labels["ethnicity"])
    return pd.DataFrame(rows, columns=COLUMNS)


def label_counts(data_dir: Path | None, predictions: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """(counts with columns split/attribute/label/count, a sentence saying where they come from)."""
    if data_dir is not None:
        return counts_from_manifest(PreparedManifest.read(data_dir)), f"Label counts from {data_dir / PREPARED_MANIFEST}."
    if predictions is not None:
        rows = _counts_from_labels("test", predictions["age"].to_numpy(), predictions["gender"].to_numpy(),
                                   predictions["ethnicity"].to_numpy())
        return (pd.DataFrame(rows, columns=COLUMNS),
                "Prepared data not available: test-split label counts from test_predictions.csv only.")
    return pd.DataFrame(columns=COLUMNS), "No label counts: neither the prepared data nor test predictions are available."
