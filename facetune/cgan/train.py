"""The conditional GAN's Ray Train loop (one function per worker) and the driver that runs it.

Data-parallel: each worker reads its shard of the train split's Ray Dataset; generator and
discriminator are wrapped in DDP by `ray.train.torch.prepare_model` (gloo on CPU, nccl on GPU).
Rank 0 checkpoints every epoch (both networks, both optimisers, the EMA generator, the history)
and writes the sample grid, history.csv and metrics.json; a restarted worker group resumes
from `ray.train.get_checkpoint()`.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from facetune.cgan import metrics as quality
from facetune.cgan.generate import (
    GENERATOR_FILE,
    STATE_FILE,
    age_grid_images,
    fixed_noise,
    generator_payload,
    save_age_grid,
)
from facetune.cgan.losses import get_loss
from facetune.cgan.models import build_discriminator, build_generator, to_signed

RUN_NAME = "cgan"
TRAIN_STORAGE = "ray_train"  # Ray Train's run storage under the results dir


class InjectedFailure(RuntimeError):
    """Raised on purpose (config `fail_at`) to exercise recovery from a worker failure."""


# --- the per-worker loop -----------------------------------------------------------------------


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


def ema_average_fn(decay: float):
    """EMA update with a warm-up: decay ramps as (1+n)/(10+n) up to `decay`, so early samples are
    not dominated by the random initial weights (a fixed 0.999 needs thousands of steps)."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return averaged * rate + current * (1.0 - rate)

    return average


def _mean_across_workers(values: dict[str, float], device: torch.device) -> dict[str, float]:
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return dict(zip(values, tensor.tolist()))


class _Evaluator:
    """Rank 0's per-epoch outputs: the fixed-noise grid and the quality metrics."""

    def __init__(self, config: dict[str, Any]) -> None:
        from facetune.data.loading import load_split
        from facetune.models import load_model

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
        save_age_grid(grid, len(self.grid_ages), self.results / "samples" / f"epoch_{epoch:03d}.png")
        return quality.quality_metrics(generator, self.regressor, self.reference, self.noise_dim, self.seed)


def _write_progress(results: Path, config: dict[str, Any], history: list[dict[str, Any]]) -> None:
    pd.DataFrame(history).to_csv(results / "history.csv", index=False)
    summary = {"profile": config["profile"], "preset": config["preset"], "epochs_done": history[-1]["epoch"],
               "epochs": config["epochs"], "final": history[-1], "history": history}
    (results / "metrics.json").write_text(json.dumps(summary, indent=2))


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker function: train the cGAN for config["epochs"] epochs, resuming if a checkpoint exists."""
    torch.set_num_threads(int(config["torch_threads"]))
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    optim = config["optim"]
    loss = get_loss(optim["loss"])

    torch.manual_seed(config["seed"])  # identical initial weights on every rank
    generator = build_generator(config["model"])
    discriminator = build_discriminator(config["model"])
    state = _load_state(ray.train.get_checkpoint())
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
    generator = ray.train.torch.prepare_model(generator)
    discriminator = ray.train.torch.prepare_model(discriminator)
    bare_generator = getattr(generator, "module", generator)  # DDP wraps only with >1 worker
    bare_discriminator = getattr(discriminator, "module", discriminator)

    betas = tuple(optim["betas"])
    opt_g = torch.optim.Adam(generator.parameters(), lr=optim["lr_g"], betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=optim["lr_d"], betas=betas)
    ema = None
    if optim.get("ema_decay"):
        ema = AveragedModel(bare_generator, avg_fn=ema_average_fn(optim["ema_decay"]), use_buffers=True)
    history: list[dict[str, Any]] = []
    resumes: list[int] = []
    done = 0
    if state is not None:
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history, done = list(state["history"]), int(state["epoch"])
        resumes = list(state["resumes"]) + [done]

    evaluator = _Evaluator(config) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(done + 1, config["epochs"] + 1):
        torch.manual_seed(config["seed"] * 1000 + rank + 7919 * epoch)  # fresh, reproducible noise per epoch
        generator.train()
        discriminator.train()
        sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        steps, images_seen, started = 0, 0, time.perf_counter()
        batches = shard.iter_torch_batches(
            batch_size=config["batch_size"], drop_last=True, device=device,
            local_shuffle_buffer_size=config["shuffle_buffer"], local_shuffle_seed=config["seed"] + epoch,
        )
        for step, batch in enumerate(batches):
            if step == config.get("max_steps_per_epoch"):
                break  # every worker stops at the same step, so DDP stays in lock-step
            _maybe_fail(config.get("fail_at"), rank, epoch, step)
            real = to_signed(batch["image"].float())
            real_ages = batch["age"].float()
            # Condition fakes on the batch's own ages, shuffled: the real age distribution.
            fake_ages = real_ages[torch.randperm(len(real_ages), device=device)]
            noise = torch.randn(len(real), bare_generator.noise_dim, device=device)
            fake = generator(noise, fake_ages)

            # Discriminator: real and fake in one forward, so DDP reduces once.
            scores = discriminator(torch.cat([real, fake.detach()]), torch.cat([real_ages, fake_ages]))
            real_scores, fake_scores = scores.split(len(real))
            d_loss = loss.discriminator(real_scores, fake_scores)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # Generator: through the bare discriminator with its weights frozen, so only G's
            # gradients are computed and reduced.
            bare_discriminator.requires_grad_(False)
            g_loss = loss.generator(bare_discriminator(fake, fake_ages))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            bare_discriminator.requires_grad_(True)
            if ema is not None:
                ema.update_parameters(bare_generator)

            sums["d_loss"] += d_loss.item()
            sums["g_loss"] += g_loss.item()
            sums["d_real"] += real_scores.mean().item()
            sums["d_fake"] += fake_scores.mean().item()
            steps += 1
            images_seen += len(real)
        if steps == 0:
            raise ValueError(f"rank {rank}: shard has fewer rows than batch_size={config['batch_size']}")
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {"epoch": epoch, **_mean_across_workers({k: v / steps for k, v in sums.items()}, device)}
        row["steps_per_worker"] = steps
        row["epoch_seconds"] = seconds
        row["images_per_second"] = _mean_across_workers({"ips": images_seen / seconds}, device)["ips"] * context.get_world_size()

        if evaluator is None:
            ray.train.report(row, checkpoint=None)
            continue
        sampler = ema.module if ema is not None else bare_generator
        row.update(evaluator(sampler, epoch))
        history.append(row)
        _write_progress(evaluator.results, config, history)
        state = {
            "generator": bare_generator.state_dict(),
            "discriminator": bare_discriminator.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch,
            "history": history,
            "resumes": resumes,
            "config": config,
        }
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
        datasets={"train": read_split_dataset(config["data_dir"], "train")},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the run under {run_dir(results)} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        export_generator(directory, results / GENERATOR_FILE)
    return dict(result.metrics or {})
