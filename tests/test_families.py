"""Families come from the model registry: registering one with a search space is the whole job."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from torch import nn

import results_fixture
from facetune.config_files import RAYCFG_ENV
from facetune.models import registry
from facetune.models.registry import output_size, register_family
from facetune.results.build import build_report
from facetune.results.collect import collect_results
from facetune.records import NUM_PIXELS, TASK_NAMES, combination_name
from facetune.tuning.profiles import combinations, load_profile

REPO_RAYCFG = Path(__file__).resolve().parents[1] / "raycfg"
TOY_PROFILE = """\
description: the toy family only
combinations: all
num_samples: {toy: 1}
max_epochs: {toy: 1}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
trial_resources: {cpu: 1, gpu: 0}
"""


def _linear(arch: dict, task, context: dict) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(NUM_PIXELS, output_size(task, context)))


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """A registered family "toy" with raycfg/search/toy.yaml in a copy of raycfg/ ($FACETUNE_RAYCFG)."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    register_family("toy")(_linear)
    raycfg = tmp_path / "raycfg"
    shutil.copytree(REPO_RAYCFG, raycfg)
    (raycfg / "search" / "toy.yaml").write_text("defaults:\n  arch: {}\n  train: {lr: 1.0e-3}\nspace: {}\n")
    (raycfg / "profiles" / "toy.yaml").write_text(TOY_PROFILE)
    monkeypatch.setenv(RAYCFG_ENV, str(raycfg))
    monkeypatch.setitem(results_fixture.ARCH, "toy", {})
    return raycfg


def test_a_registered_family_with_a_search_space_is_swept_for_every_task(toy_family):
    assert combinations(load_profile("toy")) == [("toy", task) for task in TASK_NAMES]


def test_a_registered_family_without_a_search_space_is_not_sweepable(toy_family):
    (toy_family / "search" / "toy.yaml").unlink()
    with pytest.raises(ValueError, match="sizes 'toy', which is not a sweepable family"):
        combinations(load_profile("toy"))


def test_the_multitask_family_is_one_combination_for_all_tasks():
    pairs = combinations(load_profile("smoke"))
    assert ("multitask", "all") in pairs and not any(f == "multitask" and t != "all" for f, t in pairs)


def test_a_new_family_reaches_the_results_collection_and_the_report(toy_family, tmp_path):
    root = results_fixture.build_results_dir(tmp_path / "results", omit=tuple(results_fixture.ALL_COMBINATIONS))
    train, test = results_fixture._faces(None, seed=0)
    entries = [results_fixture._write_combination(root, "toy", task, train, test, None, seed=i)
               for i, task in enumerate(TASK_NAMES)]
    names = [combination_name("toy", task) for task in TASK_NAMES]
    results_fixture.write_sweep_files(root, entries, names, tmp_path / "no-data")

    results = collect_results(root)
    assert list(results.combinations) == names and not results.missing

    paths = build_report(root, tmp_path / "report")
    markdown = paths["md"].read_text()
    for name in names:
        assert f"| {name}" in markdown
