"""Batched inference without gradients: the one forward loop behind training's evaluation, the
Predictor (so predict and serve), ensembles' member outputs and the GAN metrics."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _each(x, apply):
    """`apply` to a tensor, or to each tensor of a batch per spec (an ensemble of mixed specs)."""
    return {key: apply(value) for key, value in x.items()} if isinstance(x, Mapping) else apply(x)


def forward_views(model: nn.Module, batch, tta_flip: bool) -> torch.Tensor:
    """model(batch) as float, or with `tta_flip` the mean of it and model(batch mirrored left-right).
    `batch` is a tensor, or a mapping of tensors (every one mirrored)."""
    out = model(batch).float()
    if tta_flip:
        out = 0.5 * (out + model(_each(batch, lambda t: torch.flip(t, dims=[3]))).float())
    return out


def predict_outputs(model: nn.Module, x: torch.Tensor | np.ndarray | Mapping, batch_size: int = 512, tta_flip: bool = False,
                    channels_last: bool = False) -> np.ndarray:
    """Raw model outputs (N, num_outputs) as float32 NumPy, in eval mode without gradients.

    Batches go to the model's device one at a time and come back to the CPU; the model's
    train/eval mode is restored afterwards. `tta_flip` averages the outputs of each image and
    its mirror image (faces are near-symmetric, so the two views' errors are partly independent).
    `x` may be a mapping spec -> faces (the same faces in each spec, for an ensemble whose members
    take different specs: facetune.models.ensemble.member_input). `channels_last` feeds batches in that memory format (for a model converted to it: oneDNN's
    convolutions run 1.7x faster that way on CPU, with the same float32 arithmetic).
    """
    x = _each(x, lambda t: torch.from_numpy(t) if isinstance(t, np.ndarray) else t)
    length = len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)
    if not length:
        raise ValueError("predict_outputs: empty input")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
            outputs = [forward_views(model, _each(x, lambda t: t[i : i + batch_size].to(device, memory_format=memory_format)),
                                     tta_flip).cpu()
                       for i in range(0, length, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outputs).numpy()
