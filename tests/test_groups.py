"""One definition of the groups figures are given for, and their 95% bootstrap intervals."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetune.group_figures import bootstrap_interval, format_figure, group_table, summary
from facetune.groups import AGE_BAND_LABELS, age_bands, group_masks

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "facetune"
BAND_LABEL = re.compile(r"^(age=)?\d{1,2}(-\d{1,3}|\+)$")


def test_age_bands_keep_children_and_teenagers_apart_then_decades_to_an_open_60_band():
    bands = age_bands(np.array([0, 12, 13, 19, 20, 59, 60, 116]))
    assert list(bands) == ["0-12", "0-12", "13-19", "13-19", "20-29", "50-59", "60+", "60+"]
    assert AGE_BAND_LABELS == ("0-12", "13-19", "20-29", "30-39", "40-49", "50-59", "60+")


def test_no_module_but_groups_defines_age_bands():
    """Band labels listed, or a name of bands (or their width) assigned, anywhere else would be a second definition."""
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if path.name == "groups.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):  # a list of band labels
                found += [f"{path.name}:{node.lineno} {e.value!r}" for e in node.elts
                          if isinstance(e, ast.Constant) and isinstance(e.value, str) and BAND_LABEL.match(e.value)]
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            found += [f"{path.name}:{node.lineno} {t.id}" for t in targets if isinstance(t, ast.Name) and t.id.isupper() and "BAND" in t.id]
    assert found == []


def test_group_masks_name_every_group_of_every_attribute():
    masks = group_masks({"age": np.array([5, 70]), "gender": np.array([0, 1]), "ethnicity": np.array([0, 4])})
    assert masks["age=0-12"].tolist() == [True, False] and masks["age=60+"].tolist() == [False, True]
    assert masks["gender=female"].tolist() == [False, True] and masks["ethnicity=Others"].tolist() == [False, True]
    assert len(masks) == 5 + 2 + 7


def test_the_interval_brackets_the_mean_and_narrows_with_more_faces():
    rng = np.random.default_rng(1)
    few, many = rng.random(30) < 0.8, rng.random(3000) < 0.8
    (low_few, high_few), (low_many, high_many) = bootstrap_interval(few), bootstrap_interval(many)
    assert low_few < few.mean() < high_few and low_many < many.mean() < high_many
    assert high_many - low_many < (high_few - low_few) / 5


def test_the_interval_is_seeded():
    scores = np.random.default_rng(2).random(100)
    assert bootstrap_interval(scores) == bootstrap_interval(scores)


def test_a_single_face_has_no_interval():
    assert all(np.isnan(bootstrap_interval(np.array([1.0]))))


def _table(values: dict[str, list[float]]) -> pd.DataFrame:
    return group_table(np.concatenate(list(values.values())),
                       {name: np.arange(sum(map(len, list(values.values())[:i])), sum(map(len, list(values.values())[:i + 1])))
                        for i, name in enumerate(values)})


def test_the_summary_ranks_only_groups_big_enough_and_marks_the_rest():
    table = _table({"gender=female": [1.0] * 40 + [0.0] * 10, "gender=male": [1.0] * 30 + [0.0] * 20,
                    "age=60+": [0.0] * 5})
    result = summary(table, "gender", min_group_size=30)
    assert (result["worst"]["group"], result["best"]["group"]) == ("gender=male", "gender=female")
    assert result["gap"] == pytest.approx(0.2)
    assert result["worst"]["low"] < 0.6 < result["worst"]["high"]
    assert result["unranked"] == [("age=60+", 5)]
    assert result["watched"]["female recall"]["value"] == pytest.approx(0.8)
    assert format_figure("gender", table.iloc[2]) == "0.00% [0.00%, 0.00%] (n < 30, unranked)"


def test_the_age_summary_gives_childrens_and_over_60s_mae():
    table = _table({"age=0-12": [1.0, 2.0, 3.0] * 20, "age=60+": [6.0, 8.0] * 20})
    watched = summary(table, "age")["watched"]
    assert watched["MAE 0-12"]["value"] == pytest.approx(2.0) and watched["MAE 60+"]["value"] == pytest.approx(7.0)
