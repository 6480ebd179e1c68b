"""Label counts of the prepared data, per split, for the report's "Data" section.

Preferred source: the prepared dir's manifest.json (per-split histograms). Without it, the
prepared Parquet itself; without that, the true labels in a test_predictions.csv (test only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetune.results.fairness import age_bands
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


def _expand(histogram: Any) -> np.ndarray | None:
    """A manifest histogram ({"0": n, ...}, {"0-9": n, ...} or [n0, n1, ...]) -> one value per face, for re-binning."""
    if isinstance(histogram, dict):
        # Keys are label codes ("0") or, for age, bins ("20-29"): a bin's start stands for its faces.
        values = [int(str(k).split("-")[0]) for k in histogram]
        return np.repeat(values, [int(v) for v in histogram.values()])
    if isinstance(histogram, list):
        return np.repeat(np.arange(len(histogram)), [int(v) for v in histogram])
    return None


def counts_from_manifest(manifest: dict) -> pd.DataFrame | None:
    """Per-split histograms from a manifest ({"splits": {split: {"age"|"gender"|"ethnicity": hist}}}), or None."""
    for key in ("label_histograms", "histograms", "label_counts", "splits"):
        per_split = manifest.get(key)
        if not isinstance(per_split, dict):
            continue
        rows = []
        for split, histograms in per_split.items():
            if not isinstance(histograms, dict):
                break
            labels = {name: _expand(histograms.get(name)) for name in ("age", "gender", "ethnicity")}
            if any(values is None for values in labels.values()):
                break
            rows += _counts_from_labels(split, labels["age"], labels["gender"], labels["ethnicity"])
        else:
            if rows:
                return pd.DataFrame(rows, columns=COLUMNS)
    return None


def label_counts(data_dir: Path | None, predictions: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """(counts with columns split/attribute/label/count, a sentence saying where they come from)."""
    if data_dir is not None:
        manifest_path = data_dir / "manifest.json"
        if manifest_path.is_file():
            counts = counts_from_manifest(json.loads(manifest_path.read_text()))
            if counts is not None:
                return counts, f"Label counts from {manifest_path}."
        from facetune.data.loading import SPLITS, load_split

        rows = []
        for split in SPLITS:
            arrays = load_split(data_dir, split)
            rows += _counts_from_labels(split, arrays.age, arrays.gender, arrays.ethnicity)
        return pd.DataFrame(rows, columns=COLUMNS), f"Label counts read from the prepared data in {data_dir}."
    if predictions is not None:
        rows = _counts_from_labels("test", predictions["age"].to_numpy(), predictions["gender"].to_numpy(),
                                   predictions["ethnicity"].to_numpy())
        return (pd.DataFrame(rows, columns=COLUMNS),
                "Prepared data not available: test-split label counts from test_predictions.csv only.")
    return pd.DataFrame(columns=COLUMNS), "No label counts: neither the prepared data nor test predictions are available."
