"""Content hashes, duplicate statistics and the seeded 80/10/10 split.

The split is stratified by ethnicity x gender and grouped by content_hash, so identical faces
always share a split and test never holds a copy of a training image. sklearn offers either
stratified splits (train_test_split) or grouped stratified k-folds (StratifiedGroupKFold, seconds
on 21k groups and equal-sized folds only), not an unequal grouped stratified split, hence this
small allocation over shuffled groups.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from facetune.records import DEFAULT_INPUT_SPEC, SPLITS

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
#: Named in the manifest so readers know how content_hash was computed. Always of the face in the
#: default layout (facetune.data.ingest.IngestResult.key_pixels), so the split ignores size and colour.
HASH_NAME = f"blake2b-128 of the {DEFAULT_INPUT_SPEC.pixels} pixel bytes"


def content_hashes(pixels: np.ndarray) -> np.ndarray:
    """Hex digest of each row's pixel bytes, (N,) object; identical faces get identical hashes."""
    rows = np.ascontiguousarray(pixels, dtype=np.uint8)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows], dtype=object)


@dataclass(frozen=True)
class DuplicateStats:
    groups: int  # content hashes shared by more than one row
    rows: int  # rows in those groups
    conflicting_label_groups: int  # of those groups, how many disagree on (age, gender, ethnicity)


def duplicate_stats(hashes: np.ndarray, age: np.ndarray, gender: np.ndarray, ethnicity: np.ndarray) -> DuplicateStats:
    """Count groups of identical pixel content and those whose rows carry different labels."""
    _, group, sizes = np.unique(hashes.astype(str), return_inverse=True, return_counts=True)
    in_dup = sizes[group] > 1
    labels = np.stack([group, age, gender, ethnicity], axis=1)[in_dup]
    distinct_labels_per_group = np.unique(np.unique(labels, axis=0)[:, 0], return_counts=True)[1]
    return DuplicateStats(
        groups=int((sizes > 1).sum()),
        rows=int(in_dup.sum()),
        conflicting_label_groups=int((distinct_labels_per_group > 1).sum()),
    )


def assign_splits(
    hashes: np.ndarray,
    ethnicity: np.ndarray,
    gender: np.ndarray,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """Return (N,) object array of 'train' / 'val' / 'test', the same for the same inputs and seed.

    Groups (rows sharing a content hash) are ordered by hash, not by input order, so the split
    depends only on the data and the seed. Each group takes the stratum of its first row.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    unique, first_row, group, sizes = np.unique(
        hashes.astype(str), return_index=True, return_inverse=True, return_counts=True
    )
    stratum = (np.asarray(ethnicity) * 2 + np.asarray(gender))[first_row]
    # Boundaries on the cumulative share of a stratum's rows: [0, val_start) -> train, etc.
    bounds = np.cumsum(fractions)[:-1]
    rng = np.random.default_rng(seed)
    group_split = np.zeros(len(unique), dtype=np.int64)
    for value in np.unique(stratum):
        members = rng.permutation(np.flatnonzero(stratum == value))
        member_rows = sizes[members]
        # A group goes where the middle of its rows falls, so shares stay close for any sizes.
        middle = (np.cumsum(member_rows) - member_rows / 2) / member_rows.sum()
        group_split[members] = np.searchsorted(bounds, middle, side="right")
    return np.asarray(SPLITS, dtype=object)[group_split[group]]
