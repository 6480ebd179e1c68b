"""The dense families: `dnn` on the raw pixels (C*S*S of the data's layout) and `pca_dnn` on PCA scores."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facetune.models.registry import (
    FaceModel,
    check_arch_keys,
    context_spec,
    dense_stack,
    output_size,
    per_layer,
    register_family,
)
from facetune.tasks import Task

DNN_DEFAULTS: dict = {"dense": [1024, 1024, 512, 256, 128], "dropout": 0.0, "activation": "relu", "batch_norm": False}
PCA_DNN_DEFAULTS: dict = {**DNN_DEFAULTS, "whiten": False}


class PCAProjection(nn.Module):
    """Flattened pixels -> (x - mean) @ components.T * scale, with the PCA as buffers.

    Buffers make a pca_dnn checkpoint self-contained (no pca.npz needed to predict) and keep
    the projection out of the optimiser: the PCA is fitted once, never trained.
    """

    def __init__(self, n_components: int, pixels: int, pca=None, whiten: bool = False) -> None:
        super().__init__()
        if n_components > pixels:
            raise ValueError(f"pca_dnn: {n_components} components is more than the {pixels} pixel values of a face")
        if pca is not None and pca.components.shape[1] != pixels:
            raise ValueError(f"pca_dnn: the PCA was fitted on {pca.components.shape[1]} pixel values, the faces have {pixels}")
        mean = np.zeros(pixels, np.float32)
        components = np.zeros((n_components, pixels), np.float32)
        scale = np.ones(n_components, np.float32)
        if pca is not None:
            mean, components = pca.mean, pca.components
            if whiten:
                # Unit-variance scores, as sklearn's whiten=True; the epsilon guards near-zero tails.
                scale = 1.0 / np.sqrt(pca.explained_variance.astype(np.float64) + 1e-8)
        # Copies (np.array): the PCA may live in Ray's read-only object store. Row-major, as a model
        # loaded from its checkpoint holds them, so both compute the projection alike to the last bit.
        self.register_buffer("mean", torch.from_numpy(np.array(mean, np.float32)))
        self.register_buffer("components", torch.from_numpy(np.array(components, np.float32, order="C")))
        self.register_buffer("scale", torch.from_numpy(np.array(scale, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.components.T * self.scale


def _dense_model(family: str, arch: dict, task: Task, context: dict, features: nn.Module, in_features: int, meta: dict) -> FaceModel:
    widths = [int(w) for w in arch["dense"]]
    hidden = dense_stack(in_features, widths, per_layer(arch["dropout"], len(widths), f"{family} dropout"), arch["activation"], bool(arch["batch_norm"]))
    head = nn.Sequential(hidden, nn.Linear(widths[-1] if widths else in_features, output_size(task, context)))
    return FaceModel(features, head, task, context, context_meta=meta)


@register_family("dnn", DNN_DEFAULTS)
def build_dnn(arch: dict, task: Task, context: dict) -> nn.Module:
    check_arch_keys("dnn", arch, set(DNN_DEFAULTS))
    return _dense_model("dnn", {**DNN_DEFAULTS, **arch}, task, context, nn.Flatten(), context_spec(context).pixels, {})


@register_family("pca_dnn", PCA_DNN_DEFAULTS)
def build_pca_dnn(arch: dict, task: Task, context: dict) -> nn.Module:
    check_arch_keys("pca_dnn", arch, set(PCA_DNN_DEFAULTS))
    a = {**PCA_DNN_DEFAULTS, **arch}
    pca = context.get("pca")
    if pca is not None:
        n_components = pca.n_components
    elif "n_components" in context:
        n_components = int(context["n_components"])  # rebuilding; the buffers come from the state_dict
    else:
        raise ValueError("pca_dnn needs context['pca'] (a fitted PCAParams) or context['n_components']")
    projection = PCAProjection(n_components, context_spec(context).pixels, pca, whiten=bool(a["whiten"]))
    return _dense_model("pca_dnn", a, task, context, projection, n_components, {"n_components": n_components})
