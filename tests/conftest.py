"""Shared fixtures: synthetic inputs in both layouts and a prepared dataset built from them."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_faces, write_kaggle_csv, write_utkface_folder  # noqa: E402


# Tests run on 2 cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def faces() -> dict:
    return make_faces(400, seed=0)


@pytest.fixture(scope="session")
def kaggle_csv(tmp_path_factory, faces) -> Path:
    return write_kaggle_csv(tmp_path_factory.mktemp("csv") / "age_gender.csv", faces)


@pytest.fixture(scope="session")
def utkface_folder(tmp_path_factory, faces) -> Path:
    subset = {k: v[:60] for k, v in faces.items()}
    return write_utkface_folder(tmp_path_factory.mktemp("utk") / "UTKFace", subset)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory, kaggle_csv) -> Path:
    """A prepared Parquet dataset (400 synthetic faces, 80/10/10) shared by the whole session."""
    from facetune.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(kaggle_csv, out, seed=0)
    return out


#: Fixtures that train a model or start Ray: a test using one is `slow` (pytest_collection_modifyitems).
SLOW_FIXTURES = frozenset({"ray_session", "tiny_release", "tiny_finetuned", "task_member_release", "tiny_student"})


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def train_tiny_release(tmp_path_factory, prepared_data):
    """A function training a small release from a recipe dict on the prepared data:
    {"root", "recipe" (its YAML file), "out", "metrics", "log" (lines), "data"}."""
    import yaml

    from facetune.release.train import train_release

    def train(recipe: dict, name: str) -> dict:
        root = tmp_path_factory.mktemp(name)
        path = root / "release.yaml"
        path.write_text(yaml.safe_dump(recipe))
        lines: list[str] = []
        metrics = train_release(prepared_data, root / "work", root / "out", path, log=lines.append)
        return {"root": root, "recipe": path, "out": root / "out", "metrics": metrics, "log": lines, "data": prepared_data}

    return train


@pytest.fixture
def no_figures(monkeypatch):
    """Skip prepare's label figures (tested in test_prepare) where they would only slow a test down."""
    monkeypatch.setattr("facetune.data.prepare.write_figures", lambda *args: [])


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray instance for the tests that need it, shut down by its own handle."""
    import ray

    # address="local": never join another Ray instance running on this machine.
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                       configure_logging=False)
    try:
        yield context
    finally:
        ray.shutdown()
