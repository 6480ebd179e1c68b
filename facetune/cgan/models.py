"""Generators and discriminators of the conditional GAN, registered by name.

Every network takes the age in years (a float tensor (N,)) and rescales it itself, with the
centre/scale held as buffers, so a saved state dict is all `generate` needs. Images live in
[-1, 1] inside the GAN (tanh output); `to_unit` maps them back to the project's [0, 1].
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from facetune.records import DEFAULT_INPUT_SPEC

#: The CGAN trains on the study's layout (its grids render whatever images they are given).
SIDE, CHANNELS = DEFAULT_INPUT_SPEC.size, DEFAULT_INPUT_SPEC.channels

GENERATORS: dict[str, Callable[..., nn.Module]] = {}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {}


def register_generator(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        GENERATORS[name] = builder
        return builder

    return decorator


def register_discriminator(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        DISCRIMINATORS[name] = builder
        return builder

    return decorator


def _lookup(registry: dict[str, Callable[..., nn.Module]], kind: str, what: str) -> Callable[..., nn.Module]:
    if kind not in registry:
        raise ValueError(f"unknown {what} arch {kind!r}; known: {sorted(registry)}")
    return registry[kind]


def build_generator(model_config: dict[str, Any]) -> nn.Module:
    """Build the generator named by model_config["generator"]["arch"] (see raycfg/cgan.yaml presets)."""
    spec = dict(model_config["generator"])
    builder = _lookup(GENERATORS, spec.pop("arch"), "generator")
    return builder(noise_dim=model_config["noise_dim"], age_scaling=model_config["age_scaling"], **spec)


def build_discriminator(model_config: dict[str, Any]) -> nn.Module:
    """Build the discriminator named by model_config["discriminator"]["arch"]."""
    spec = dict(model_config["discriminator"])
    builder = _lookup(DISCRIMINATORS, spec.pop("arch"), "discriminator")
    return builder(age_scaling=model_config["age_scaling"], **spec)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """GAN images in [-1, 1] -> the project's [0, 1] layout."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """The project's [0, 1] images -> the GAN's [-1, 1]."""
    return images * 2.0 - 1.0


class AgeConditioned(nn.Module):
    """Base for networks conditioned on age: years -> a roughly standardised scalar."""

    def __init__(self, age_scaling: dict[str, float]) -> None:
        super().__init__()
        self.register_buffer("age_center", torch.tensor(float(age_scaling["center"])))
        self.register_buffer("age_scale", torch.tensor(float(age_scaling["scale"])))

    def scaled_age(self, age_years: torch.Tensor) -> torch.Tensor:
        return ((age_years.float() - self.age_center) / self.age_scale).unsqueeze(1)


# --- paper preset ------------------------------------------------------------------------------


class PaperGenerator(AgeConditioned):
    """The study's generator: [noise, age] -> dense 128x12x12 -> 2 upsamplings, convs of 128, 64, 1."""

    def __init__(self, noise_dim: int, age_scaling: dict[str, float], channels: tuple[int, int] = (128, 64)) -> None:
        super().__init__(age_scaling)
        self.noise_dim = noise_dim
        first, second = channels
        start = SIDE // 4
        self.project = nn.Sequential(nn.Linear(noise_dim + 1, first * start * start), nn.LeakyReLU(0.2))
        self.unflatten = nn.Unflatten(1, (first, start, start))
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(first, first, 3, padding=1),
            nn.BatchNorm2d(first),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(first, second, 3, padding=1),
            nn.BatchNorm2d(second),
            nn.LeakyReLU(0.2),
            nn.Conv2d(second, CHANNELS, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor, age_years: torch.Tensor) -> torch.Tensor:
        features = self.project(torch.cat([noise, self.scaled_age(age_years)], dim=1))
        return self.body(self.unflatten(features))


class PaperDiscriminator(AgeConditioned):
    """The study's discriminator: a 48x48x2 input (image + a plane holding the age), 4 stride-2 convs, 1 unit."""

    def __init__(self, age_scaling: dict[str, float], channels: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__(age_scaling)
        layers: list[nn.Module] = []
        in_channels = CHANNELS + 1  # the image and a plane holding the age
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        side = SIDE // 2 ** len(channels)
        self.out = nn.Linear(in_channels * side * side, 1)

    def forward(self, images: torch.Tensor, age_years: torch.Tensor) -> torch.Tensor:
        plane = self.scaled_age(age_years)[:, :, None, None].expand(-1, 1, SIDE, SIDE)
        return self.out(self.features(torch.cat([images, plane], dim=1))).squeeze(1)


# --- stronger preset ---------------------------------------------------------------------------


def _age_embedding(out_dim: int, hidden: int, normalise: Callable[[nn.Module], nn.Module] = lambda m: m) -> nn.Module:
    """A small MLP turning the scalar age into a vector, so conditioning can act on every channel."""
    return nn.Sequential(normalise(nn.Linear(1, hidden)), nn.LeakyReLU(0.2), normalise(nn.Linear(hidden, out_dim)))


class FiLMUpBlock(nn.Module):
    """Upsample x2, conv, batch norm whose scale and shift come from the age embedding (FiLM)."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, affine=False)
        self.film = nn.Linear(embed_dim, 2 * out_channels)

    def forward(self, x: torch.Tensor, age_embedding: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        gamma, beta = self.film(age_embedding).chunk(2, dim=1)
        return F.leaky_relu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None], 0.2)


class FiLMGenerator(AgeConditioned):
    """Age embedding fed to the input and to every block (FiLM); 6x6 -> 48x48 in three upsamplings."""

    def __init__(
        self,
        noise_dim: int,
        age_scaling: dict[str, float],
        channels: tuple[int, ...] = (256, 128, 64, 32),
        embed_dim: int = 64,
    ) -> None:
        super().__init__(age_scaling)
        self.noise_dim = noise_dim
        self.start = SIDE // 2 ** (len(channels) - 1)
        self.embed = _age_embedding(embed_dim, embed_dim)
        self.project = nn.Sequential(
            nn.Linear(noise_dim + embed_dim, channels[0] * self.start**2), nn.LeakyReLU(0.2)
        )
        self.channels0 = channels[0]
        self.blocks = nn.ModuleList(
            FiLMUpBlock(c_in, c_out, embed_dim) for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.to_image = nn.Sequential(nn.Conv2d(channels[-1], CHANNELS, 3, padding=1), nn.Tanh())

    def forward(self, noise: torch.Tensor, age_years: torch.Tensor) -> torch.Tensor:
        embedding = self.embed(self.scaled_age(age_years))
        x = self.project(torch.cat([noise, embedding], dim=1)).view(-1, self.channels0, self.start, self.start)
        for block in self.blocks:
            x = block(x, embedding)
        return self.to_image(x)


class ProjectionDiscriminator(AgeConditioned):
    """Spectrally normalised convs; score = linear(h) + <embed(age), h> (projection conditioning)."""

    def __init__(
        self,
        age_scaling: dict[str, float],
        channels: tuple[int, ...] = (32, 64, 128, 256),
        spectral: bool = True,
    ) -> None:
        super().__init__(age_scaling)
        normalise: Callable[[nn.Module], nn.Module] = spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = [normalise(nn.Conv2d(CHANNELS, channels[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        in_channels = channels[0]
        for out_channels in channels:
            layers += [normalise(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out = normalise(nn.Linear(in_channels, 1))
        self.embed = _age_embedding(in_channels, 64, normalise)

    def forward(self, images: torch.Tensor, age_years: torch.Tensor) -> torch.Tensor:
        h = self.features(images).sum(dim=(2, 3))
        projection = (self.embed(self.scaled_age(age_years)) * h).sum(dim=1)
        return self.out(h).squeeze(1) + projection


@register_generator("paper")
def _paper_generator(noise_dim: int, age_scaling: dict[str, float], channels: Sequence[int] = (128, 64)) -> nn.Module:
    return PaperGenerator(noise_dim, age_scaling, tuple(channels))


@register_discriminator("paper")
def _paper_discriminator(age_scaling: dict[str, float], channels: Sequence[int] = (32, 64, 128, 256)) -> nn.Module:
    return PaperDiscriminator(age_scaling, tuple(channels))


@register_generator("film")
def _film_generator(
    noise_dim: int, age_scaling: dict[str, float], channels: Sequence[int] = (256, 128, 64, 32), embed_dim: int = 64
) -> nn.Module:
    return FiLMGenerator(noise_dim, age_scaling, tuple(channels), embed_dim)


@register_discriminator("projection")
def _projection_discriminator(
    age_scaling: dict[str, float], channels: Sequence[int] = (32, 64, 128, 256), spectral_norm: bool = True
) -> nn.Module:
    return ProjectionDiscriminator(age_scaling, tuple(channels), spectral_norm)
