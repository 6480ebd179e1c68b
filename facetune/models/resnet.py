"""The `resnet` family: a residual network sized for small faces (the data's layout, 48x48 gray by default).

A 3x3 stride-1 stem and no early pooling keep the full resolution in the first stage
(ImageNet-style 7x7/2 stems with a max-pool would throw away three quarters of a small face);
each later stage halves the side with a strided block.
"""
from __future__ import annotations

import torch
from torch import nn

from facetune.models.registry import FaceModel, activation, check_arch_keys, context_spec, output_size, register_family
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec
from facetune.tasks import Task

DEFAULTS: dict = {
    "widths": [32, 64, 128, 256],  # channels per stage
    "blocks": [1, 1, 2, 1],  # residual blocks per stage
    "squeeze_excitation": False,
    "dropout": 0.0,  # before the head
    "activation": "relu",
}


class SqueezeExcitation(nn.Module):
    """Channel gating from globally pooled features (Hu et al. 2018), reduction 8."""

    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        hidden = max(channels // 8, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), activation(act), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str, squeeze_excitation: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            activation(act),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcitation(out_channels, act) if squeeze_excitation else nn.Identity(),
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()
        self.out_act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.body(x) + self.shortcut(x))


def resnet_trunk(arch: dict, spec: InputSpec = DEFAULT_INPUT_SPEC) -> tuple[nn.Sequential, int]:
    """(features: image -> pooled vector, its width) for a resnet `arch` (defaults filled in) on faces of `spec`."""
    check_arch_keys("resnet", arch, set(DEFAULTS))
    a = {**DEFAULTS, **arch}
    widths, blocks = [int(w) for w in a["widths"]], [int(b) for b in a["blocks"]]
    if not widths or len(widths) != len(blocks) or min(widths) < 1 or min(blocks) < 1:
        raise ValueError(f"resnet: widths {widths} and blocks {blocks} need the same non-zero length and positive values")
    if spec.size // 2 ** (len(widths) - 1) < 1:
        raise ValueError(f"resnet: {len(widths)} stages shrink a {spec.size}px image below 1px")
    layers: list[nn.Module] = [
        nn.Conv2d(spec.channels, widths[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        activation(a["activation"]),
    ]
    in_channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(BasicBlock(in_channels, width, stride, a["activation"], bool(a["squeeze_excitation"])))
            in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), in_channels


@register_family("resnet", DEFAULTS)
def build_resnet(arch: dict, task: Task, context: dict) -> nn.Module:
    features, width = resnet_trunk(arch, context_spec(context))
    dropout = float({**DEFAULTS, **arch}["dropout"])
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, output_size(task, context)))
    return FaceModel(features, head, task, context)
