"""The Ray Tune trial: one (family, task, hyperparameters) trained by the plain PyTorch loop.

The data arrives through Ray's object store (put once per sweep by the driver); the trial
moves it to its device once, reports every epoch with a checkpoint that holds the whole
training state, and resumes from Tune's checkpoint after a failure or a restored sweep.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facetune.records import DEFAULT_INPUT_SPEC, InputSpec

if TYPE_CHECKING:
    import torch

#: File inside every trial checkpoint; the full training state (model, optimiser, best weights...).
STATE_FILE = "training_state.pt"


@dataclass
class SweepData:
    """What every trial of a sweep needs, put in the object store once."""

    train_pixels: np.ndarray  # (N, spec.pixels) uint8
    train_labels: dict[str, np.ndarray]
    val_pixels: np.ndarray
    val_labels: dict[str, np.ndarray]
    pca: Any = None  # facetune.models.pca.PCAParams when a pca_dnn combination is in the sweep
    age_stats: dict[str, float] = field(default_factory=dict)
    #: The faces' layout (the prepared folder's), which every trial's model is built for.
    spec: InputSpec = DEFAULT_INPUT_SPEC


def model_context(task_name: str, family: str, data: SweepData, loss: str | None = None) -> dict[str, Any]:
    """The build-time context a family needs beyond its arch (facetune.models.make_context):
    age scaling and age bins for age or MULTITASK (`loss` is the trial's train.loss), the PCA,
    and the data's InputSpec."""
    from facetune.models import make_context
    from facetune.models.registry import is_multitask_family

    uses_pca = family == "pca_dnn" or (is_multitask_family(family) and data.pca is not None)
    return make_context(task_name, data.train_labels["age"], pca=data.pca if uses_pca else None, loss=loss,
                        input_spec=data.spec)


def trial_labels(labels: dict[str, np.ndarray], task_name: str, device: Any) -> Any:
    """The label tensor of `task_name`, or {task: tensor} for a multitask trial."""
    import torch

    from facetune.tasks import MULTITASK

    # Arrays from the object store are read-only views; torch wants its own (small) copy.
    if task_name == MULTITASK:
        return {name: torch.tensor(values, dtype=torch.int64, device=device) for name, values in labels.items()}
    return torch.tensor(labels[task_name], dtype=torch.int64, device=device)


def pixels_to_device(pixels: np.ndarray, device: Any, spec: InputSpec = DEFAULT_INPUT_SPEC) -> torch.Tensor:
    """(N, spec.pixels) uint8 -> (N, C, S, S) float32 in [0, 1] on `device`, converted once."""
    import torch

    from facetune.data.loading import pixels_to_images

    return torch.from_numpy(pixels_to_images(pixels, spec)).to(device)


def run_trial(config: dict[str, Any], data_ref: list) -> None:
    """Tune function trainable. `data_ref` is a one-element list holding the SweepData ObjectRef."""
    import ray
    import torch
    from ray import tune

    from facetune.models import build_model
    from facetune.training.loop import TrainConfig, fit

    # Ray logs a line per saved checkpoint, i.e. per trial epoch: noise in the sweep's console.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    data: SweepData = ray.get(data_ref[0])
    family, task = config["family"], config["task"]
    torch.set_num_threads(int(config["torch_threads"]))  # set by the plan from the profile
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train_x = pixels_to_device(data.train_pixels, device, data.spec)
    val_x = pixels_to_device(data.val_pixels, device, data.spec)
    train_y = trial_labels(data.train_labels, task, device)
    val_y = trial_labels(data.val_labels, task, device)

    train_cfg = TrainConfig.from_dict({**config["train"], "epochs": int(config["max_epochs"])})
    model = build_model(family, config["arch"], task, model_context(task, family, data, train_cfg.loss)).to(device)

    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            # Our own checkpoint, written below: it holds RNG states, so not weights-only.
            resume_state = torch.load(Path(directory) / STATE_FILE, map_location=device, weights_only=False)

    node_id = ray.get_runtime_context().get_node_id()

    def report_epoch(report: Any) -> None:
        metrics = {**report.metrics, "epoch": report.epoch, "is_best": bool(report.is_best), "node_id": node_id}
        with tempfile.TemporaryDirectory() as directory:
            torch.save(report.training_state(), Path(directory) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    fit(model, task, train_x, train_y, val_x, val_y, train_cfg, on_epoch=report_epoch, resume_state=resume_state)


def load_training_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Read a trial checkpoint's training state on the CPU."""
    import torch

    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=False)
