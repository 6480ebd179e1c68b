"""The `cnn` family: conv blocks (convs then 2x2 max-pool) followed by dense layers."""
from __future__ import annotations

from torch import nn

from facetune.models.registry import (
    FaceModel,
    activation,
    check_arch_keys,
    context_spec,
    dense_stack,
    output_size,
    per_layer,
    register_family,
)
from facetune.tasks import Task

DEFAULTS: dict = {
    "conv_channels": [32, 64, 64],
    "convs_per_block": 1,
    "kernel_size": 3,
    "conv_dropout": 0.0,
    "dense": [128],
    "dense_dropout": 0.0,
    "activation": "relu",
    "batch_norm": False,
    "global_pool": False,
}


@register_family("cnn", DEFAULTS)
def build_cnn(arch: dict, task: Task, context: dict) -> nn.Module:
    check_arch_keys("cnn", arch, set(DEFAULTS))
    a = {**DEFAULTS, **arch}
    channels = [int(c) for c in a["conv_channels"]]
    if not channels:
        raise ValueError("cnn: conv_channels needs at least one block")
    spec = context_spec(context)
    side = spec.size // 2 ** len(channels)
    if side < 1:
        raise ValueError(f"cnn: {len(channels)} max-pool blocks shrink a {spec.size}px image below 1px")
    conv_dropouts = per_layer(a["conv_dropout"], len(channels), "cnn conv_dropout")
    dense_dropouts = per_layer(a["dense_dropout"], len(a["dense"]), "cnn dense_dropout")

    layers: list[nn.Module] = []
    in_channels = spec.channels
    for out_channels, rate in zip(channels, conv_dropouts):
        for _ in range(int(a["convs_per_block"])):
            # "same" padding keeps the size so only the pools shrink it (S -> S/2 -> S/4 ...).
            # The conv bias is redundant before batch norm.
            layers.append(nn.Conv2d(in_channels, out_channels, int(a["kernel_size"]), padding="same", bias=not a["batch_norm"]))
            if a["batch_norm"]:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(activation(a["activation"]))
            in_channels = out_channels
        layers.append(nn.MaxPool2d(2))
        if rate > 0:
            layers.append(nn.Dropout(rate))
    if a["global_pool"]:
        layers.append(nn.AdaptiveAvgPool2d(1))
        flat = in_channels
    else:
        flat = in_channels * side * side
    layers.append(nn.Flatten())

    hidden = dense_stack(flat, a["dense"], dense_dropouts, a["activation"], bool(a["batch_norm"]))
    last = int(a["dense"][-1]) if a["dense"] else flat
    head = nn.Sequential(hidden, nn.Linear(last, output_size(task, context)))
    return FaceModel(nn.Sequential(*layers), head, task, context)
