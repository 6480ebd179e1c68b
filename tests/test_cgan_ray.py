"""The conditional GAN on Ray Train: 2 CPU workers on the synthetic prepared data.

One smoke run (through `facetune train-cgan`) is shared by the tests that read its outputs;
the failure-recovery test runs its own, and the --resume test continues a copy of the smoke run.
"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

from facetune.cgan.generate import GENERATOR_FILE, STATE_FILE, grid_size
from facetune.cgan.job import AGE_MODEL_DIR, resolve_config
from facetune.cgan.train import run_dir, run_training
from facetune.cli import main as cli_main

pytestmark = pytest.mark.slow  # Ray Train runs of the CGAN (minutes on 2 cores)

QUALITY_KEYS = ("age_mae_generated", "age_mae_real_floor", "age_mae_shuffled_ceiling", "frechet_distance_cnn")


@pytest.fixture(scope="module")
def smoke_run(ray_session, prepared_data, tmp_path_factory):
    results = tmp_path_factory.mktemp("cgan_smoke")
    code = cli_main(["train-cgan", "--profile", "smoke", "--data", str(prepared_data), "--results", str(results)])
    assert code == 0
    return results




def _config(prepared_data, results, age_model_dir, **overrides) -> dict:
    config = resolve_config("smoke", overrides)
    config.update(data_dir=str(prepared_data), results_dir=str(results), age_model_dir=str(age_model_dir))
    return config


def test_smoke_run_checkpoints_every_epoch_with_both_networks_and_optimisers(smoke_run):
    state = torch.load(sorted(run_dir(smoke_run).glob(f"epoch_*/{STATE_FILE}"))[-1], weights_only=True)
    assert state["epoch"] == 2
    assert {"generator", "discriminator", "opt_g", "opt_d", "config"} <= set(state)
    assert (smoke_run / GENERATOR_FILE).is_file()


def test_smoke_run_writes_a_sample_grid_each_epoch(smoke_run):
    grids = sorted((smoke_run / "samples").glob("epoch_*.png"))
    assert [g.name for g in grids] == ["epoch_001.png", "epoch_002.png"]
    with Image.open(grids[-1]) as image:
        assert (image.height, image.width) == grid_size(rows=3, columns=10)


def test_smoke_run_logs_the_quality_metrics_per_epoch(smoke_run):
    summary = json.loads((smoke_run / "metrics.json").read_text())
    assert [row["epoch"] for row in summary["history"]] == [1, 2]
    for key in QUALITY_KEYS:
        assert math.isfinite(summary["final"][key]), key
    assert (smoke_run / "history.csv").read_text().startswith("epoch,")
    assert (smoke_run / AGE_MODEL_DIR / "model_config.json").is_file()  # the fallback regressor


def test_generate_from_the_smoke_run_gives_the_expected_grid(smoke_run, tmp_path):
    out = tmp_path / "grid.png"
    assert cli_main(["generate", "--checkpoint", str(smoke_run / GENERATOR_FILE), "--ages", "21-30", "--n", "8",
                     "--seed", "3", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert (image.height, image.width) == grid_size(rows=8, columns=10)


def test_a_second_run_into_the_same_results_needs_resume(smoke_run, prepared_data):
    config = _config(prepared_data, smoke_run, smoke_run / AGE_MODEL_DIR)
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(config)


def test_a_worker_failing_mid_epoch_resumes_from_the_last_checkpoint(smoke_run, prepared_data, tmp_path):
    marker = tmp_path / "failed_once"
    results = tmp_path / "results"
    fail_at = {"rank": 1, "epoch": 2, "step": 1, "marker": str(marker)}
    # The strong preset, so the EMA generator goes through the checkpoint and back too.
    config = _config(prepared_data, results, smoke_run / AGE_MODEL_DIR, preset="strong", fail_at=fail_at, max_failures=1)
    final = run_training(config)
    assert marker.exists()  # the failure really happened
    state = torch.load(sorted(run_dir(results).glob(f"epoch_*/{STATE_FILE}"))[-1], weights_only=True)
    assert state["epoch"] == 2 and final["epoch"] == 2
    assert state["resumes"] == [1]  # restarted after epoch 1's checkpoint, not from scratch
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert state["ema"]["n_averaged"] > 0


def test_resume_continues_a_stopped_run(smoke_run, prepared_data, tmp_path):
    # A copy of the finished 2-epoch smoke run, continued to 3 epochs.
    results = tmp_path / "results"
    shutil.copytree(smoke_run, results)
    final = run_training(_config(prepared_data, results, results / AGE_MODEL_DIR, epochs=3), resume=True)
    state = torch.load(sorted(run_dir(results).glob(f"epoch_*/{STATE_FILE}"))[-1], weights_only=True)
    assert final["epoch"] == 3 and state["resumes"] == [2]
    assert [row["epoch"] for row in json.loads((results / "metrics.json").read_text())["history"]] == [1, 2, 3]
