"""The groups every per-group figure is given for: ethnicity, gender and age band.

One definition, read by the model card, the sweep report and `predict --evaluate`, so that their
figures compare group by group. The age bands keep children (0-12) and teenagers (13-19) apart from
adults, whose faces age differently, then go by decades up to one open band from 60: UTKFace's
test split holds too few faces past 70 for a band of their own to say anything.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from facetune.tasks import TASKS

#: (first age, last age) of each band in years; None: no upper end.
AGE_BANDS: tuple[tuple[int, int | None], ...] = ((0, 12), (13, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, None))
#: What faces are grouped by: their true ethnicity, gender and age band, whatever the task.
ATTRIBUTES: tuple[str, ...] = ("ethnicity", "gender", "age_band")
#: A group is named `prefix=label` (ethnicity=White, gender=female, age=0-12).
_PREFIX = {"ethnicity": "ethnicity", "gender": "gender", "age_band": "age"}
#: Groups with fewer faces are shown and marked but never ranked as best or worst: a 95% interval on
#: a group of 30 faces already spans about +-15 points of accuracy.
MIN_GROUP_SIZE = 30


def band_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"


AGE_BAND_LABELS: tuple[str, ...] = tuple(band_label(low, high) for low, high in AGE_BANDS)
CHILDREN = band_label(*AGE_BANDS[0])
OVER_60 = band_label(*AGE_BANDS[-1])


def age_bands(ages: np.ndarray | pd.Series) -> pd.Categorical:
    """Ages in years -> ordered band labels (AGE_BAND_LABELS)."""
    starts = np.array([low for low, _ in AGE_BANDS])
    index = np.searchsorted(starts, np.asarray(ages, dtype=float), side="right") - 1
    return pd.Categorical.from_codes(np.maximum(index, 0), categories=list(AGE_BAND_LABELS), ordered=True)


def group_labels(attribute: str, values: np.ndarray | pd.Series) -> pd.Categorical:
    """Each face's group of `attribute`, from its true labels (ages for age_band, class codes otherwise)."""
    if attribute == "age_band":
        return age_bands(values)
    names = TASKS[attribute].class_names
    codes = np.asarray(values).astype(int)
    unknown = sorted(set(codes.tolist()) - set(range(len(names))))
    if unknown:
        raise ValueError(f"{attribute} codes {unknown} outside 0..{len(names) - 1}")
    return pd.Categorical.from_codes(codes, categories=list(names))


def label_column(attribute: str) -> str:
    """The label an attribute's groups come from (age_band: age)."""
    return "age" if attribute == "age_band" else attribute


def group_name(attribute: str, label: str) -> str:
    return f"{_PREFIX[attribute]}={label}"


def group_names() -> list[str]:
    """Every group's name, attribute by attribute, in the order figures are listed."""
    labels = {"ethnicity": TASKS["ethnicity"].class_names, "gender": TASKS["gender"].class_names, "age_band": AGE_BAND_LABELS}
    return [group_name(attribute, label) for attribute in ATTRIBUTES for label in labels[attribute]]


def group_masks(labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """group name -> which faces belong to it, for every group of every attribute (empty ones too)."""
    masks = {}
    for attribute in ATTRIBUTES:
        groups = group_labels(attribute, labels[label_column(attribute)])
        for label in groups.categories:
            masks[group_name(attribute, label)] = np.asarray(groups == label)
    return masks
