"""The conditional GAN's Ray Train loop (one function per worker) and the driver that runs it.

The loop wraps `facetune.cgan.step.GanTrainer` (the step and the epoch in plain PyTorch) with
what Ray adds. Data-parallel: each worker reads its shard of the train split's Ray Dataset;
generator and discriminator are wrapped in DDP by `ray.train.torch.prepare_model` (gloo on CPU,
nccl on GPU).
Rank 0 checkpoints every epoch (both networks, both optimisers, the EMA generator, the history)
and writes the sample grid, history.csv and metrics.json; a restarted worker group resumes
from `ray.train.get_checkpoint()`.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.experimental import tqdm_ray
from torch import nn

from facetune.cgan import metrics as quality
from facetune.cgan.generate import (
    GENERATOR_FILE,
    STATE_FILE,
    age_grid_images,
    fixed_noise,
    generator_payload,
    save_age_grid,
)
from facetune.cgan.step import GanTrainer
from facetune.models import load_model

RUN_NAME = "cgan"
TRAIN_STORAGE = "ray_train"  # Ray Train's run storage under the results dir


class InjectedFailure(RuntimeError):
    """Raised on purpose (config `fail_at`) to exercise recovery from a worker failure."""


# --- the per-worker loop -----------------------------------------------------------------------


def steps_per_epoch(config: dict[str, Any]) -> int:
    """Steps each worker takes in an epoch: its share of the (limited) train split in full batches."""
    from facetune.data.loading import split_rows

    rows = split_rows(config["data_dir"], "train")
    if config["row_limit"]:
        rows = min(rows, int(config["row_limit"]))
    steps = rows // config["num_workers"] // config["batch_size"]
    return min(steps, config["max_steps_per_epoch"]) if config.get("max_steps_per_epoch") else steps



def _maybe_fail(fail_at: dict | None, rank: int, epoch: int, step: int) -> None:
    """Fail once at (rank, epoch, step); the marker file keeps the restarted workers from failing again."""
    if not fail_at or (rank, epoch, step) != (fail_at["rank"], fail_at["epoch"], fail_at["step"]):
        return
    marker = Path(fail_at["marker"])
    if marker.exists():
        return
    marker.write_text(f"failed rank {rank} epoch {epoch} step {step}\n")
    raise InjectedFailure(f"injected failure on rank {rank} in epoch {epoch} at step {step}")


def _load_state(checkpoint: ray.train.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


class _Evaluator:
    """Rank 0's per-epoch outputs: the fixed-noise grid and the quality metrics."""

    def __init__(self, config: dict[str, Any]) -> None:
        from facetune.data.loading import load_split

        self.results = Path(config["results_dir"])
        self.noise_dim = config["model"]["noise_dim"]
        grid = config["grid"]
        self.grid_ages = list(grid["ages"])
        self.grid_noise = fixed_noise(grid["rows"], self.noise_dim, grid["seed"])
        self.seed = config["seed"]
        self.regressor, _ = load_model(config["age_model_dir"])
        held_out = load_split(config["data_dir"], config["eval_split"])
        rng = np.random.default_rng(config["seed"])
        chosen = np.sort(rng.permutation(len(held_out))[: config["eval_samples"]])
        images = held_out.images()[torch.as_tensor(chosen)]
        self.reference = quality.real_reference(self.regressor, images, held_out.age[chosen].astype(np.float64))

    def __call__(self, generator: nn.Module, epoch: int) -> dict[str, float]:
        grid = age_grid_images(generator, self.grid_noise, self.grid_ages)
        save_age_grid(grid, self.grid_ages, self.results / "samples" / f"epoch_{epoch:03d}.png")
        return quality.quality_metrics(generator, self.regressor, self.reference, self.noise_dim, self.seed)


def _write_progress(results: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
    pd.DataFrame(history).to_csv(results / "history.csv", index=False)
    summary = {"profile": config["profile"], "preset": config["preset"], "epochs_done": history[-1]["epoch"],
               "epochs": config["epochs"], "final": history[-1], "history": history}
    (results / "metrics.json").write_text(json.dumps(summary, indent=2))


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker function: train the cGAN for config["epochs"] epochs, resuming if a checkpoint exists."""
    torch.set_num_threads(int(config["torch_threads"]))
    rank = ray.train.get_context().get_world_rank()
    state = _load_state(ray.train.get_checkpoint())
    torch.manual_seed(config["seed"])  # identical initial weights on every rank
    gan = GanTrainer(config["model"], config["optim"], device=ray.train.torch.get_device(),
                     wrap=ray.train.torch.prepare_model, state=state)
    history: list[dict[str, Any]] = []
    resumes: list[int] = []
    done = 0
    if state is not None:
        history, done = list(state["history"]), int(state["epoch"])
        resumes = list(state["resumes"]) + [done]

    evaluator = _Evaluator(config) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(done + 1, config["epochs"] + 1):
        torch.manual_seed(config["seed"] * 1000 + rank + 7919 * epoch)  # fresh, reproducible noise per epoch
        batches = shard.iter_torch_batches(
            batch_size=config["batch_size"], drop_last=True, device=gan.device,
            local_shuffle_buffer_size=config["shuffle_buffer"], local_shuffle_seed=config["seed"] + epoch,
        )
        if rank == 0:  # one bar for the group, drawn by the driver (tqdm_ray)
            batches = tqdm_ray.tqdm(batches, desc=f"cgan epoch {epoch}/{config['epochs']}",
                                    total=steps_per_epoch(config), unit="step")
        metrics = gan.train_epoch(batches, max_steps=config.get("max_steps_per_epoch"),
                                  before_step=lambda step: _maybe_fail(config.get("fail_at"), rank, epoch, step))
        if rank == 0:
            batches.close()
        if metrics.steps == 0:
            raise ValueError(f"rank {rank}: shard has fewer rows than batch_size={config['batch_size']}")
        row: dict[str, Any] = {"epoch": epoch, **metrics.summary()}

        if evaluator is None:
            ray.train.report(row, checkpoint=None)
            continue
        row.update(evaluator(gan.sampler, epoch))
        history.append(row)
        _write_progress(evaluator.results, config, history)
        state = {**gan.state_dict(), "epoch": epoch, "history": history, "resumes": resumes, "config": config}
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / STATE_FILE)
            ray.train.report(
                row, checkpoint=ray.train.Checkpoint.from_directory(directory), checkpoint_dir_name=f"epoch_{epoch:04d}"
            )


# --- the driver ----------------------------------------------------------------------------------


def run_dir(results_dir: Path) -> Path:
    """Where Ray Train keeps this run (checkpoints and its resume snapshot)."""
    return results_dir / TRAIN_STORAGE / RUN_NAME


def check_run_state(results_dir: Path, resume: bool) -> None:
    """A fresh run must not silently continue an old one, and --resume needs a run to continue."""
    existing = run_dir(results_dir).exists()
    if existing and not resume:
        raise FileExistsError(f"{run_dir(results_dir)} already holds a run: pass --resume to continue it, or use new --results")
    if resume and not existing:
        raise FileNotFoundError(f"--resume: no run to continue under {run_dir(results_dir)}")


def export_generator(checkpoint_dir: str | Path, out: str | Path) -> Path:
    """Write the sampling generator (EMA copy when kept) of a training checkpoint to `out`."""
    state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=True)
    out = Path(out)
    torch.save(generator_payload(state), out)
    return out


def limited(dataset: Any, row_limit: int | None) -> Any:
    """The first `row_limit` rows of a Ray Dataset (all of them for None)."""
    return dataset.limit(int(row_limit)) if row_limit else dataset


def run_training(config: dict[str, Any], *, resume: bool = False) -> dict[str, Any]:
    """Run the TorchTrainer for a fully resolved config (see facetune.cgan.job); Ray must be initialised.

    Without `resume`, an existing run in the results dir is an error rather than a silent
    continuation; with it, Ray Train restores the run of the same name and storage path.
    Returns the final metrics; writes RESULTS/generator.pt.
    """
    from facetune.data.loading import read_split_dataset

    results = Path(config["results_dir"])
    check_run_state(results, resume)
    results.mkdir(parents=True, exist_ok=True)
    (results / "cgan_config.json").write_text(json.dumps(config, indent=2))

    trainer = ray.train.torch.TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=config["num_workers"],
            use_gpu=config["use_gpu"],
            resources_per_worker={"CPU": config["cpus_per_worker"]},  # use_gpu adds GPU: 1
        ),
        run_config=ray.train.RunConfig(
            name=RUN_NAME,
            storage_path=str((results / TRAIN_STORAGE).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=config["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config["keep_checkpoints"]),
        ),
        datasets={"train": limited(read_split_dataset(config["data_dir"], "train"), config["row_limit"])},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the run under {run_dir(results)} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        export_generator(directory, results / GENERATOR_FILE)
    return dict(result.metrics or {})
