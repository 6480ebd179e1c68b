"""Looking inside the models: PCA variance, reconstructions and eigenfaces; CNN filters and activations.

Faces, components and first-layer filters of colour models are drawn in colour (RGB); a figure
that mixes them with one-channel maps draws those through its colormap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from facetune.models.pca import PCAParams, components_for_ratio, reconstruct
from facetune.records import COLOR_CHANNELS, DEFAULT_INPUT_SPEC, InputSpec
from facetune.results.figures import save

VARIANCE_RATIOS = (0.90, 0.95, 0.99)


def _normalised(image: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """One image scaled to [0, 1] on its own range (filters and components have no common scale).

    `symmetric` keeps 0 at 0.5, for signed images shown with a diverging colormap.
    """
    image = np.asarray(image, dtype=np.float32)
    if symmetric:
        return 0.5 + 0.5 * image / max(float(np.abs(image).max()), 1e-12)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _displayed(face: np.ndarray) -> np.ndarray:
    """A (C, S, S) channel-first face as imshow takes it: (S, S) for one channel, (S, S, 3) for RGB."""
    face = np.asarray(face, dtype=np.float32)
    return face.transpose(1, 2, 0) if face.shape[0] == COLOR_CHANNELS else face.reshape(face.shape[-2:])


def _mosaic(images: list[np.ndarray | None], columns: int, pad: int = 1) -> np.ndarray:
    """Same-sized 2-D (or (H, W, 3) RGB) images tiled row by row, NaN (white for RGB) between and
    where an image is None (drawn blank).

    One imshow of a mosaic draws far faster than one axes per small image.
    """
    sample = next(i for i in images if i is not None)
    height, width = sample.shape[:2]
    rows = -(-len(images) // columns)
    mosaic = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad, *sample.shape[2:]),
                     1.0 if sample.ndim == 3 else np.nan, np.float32)
    for index, image in enumerate(images):
        if image is not None:
            r, c = divmod(index, columns)
            mosaic[r * (height + pad): r * (height + pad) + height, c * (width + pad): c * (width + pad) + width] = image
    return mosaic


def _upsampled(image: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour enlargement to side x side, so every layer's maps tile at the same size."""
    factor = max(side // image.shape[0], 1)
    return np.kron(image, np.ones((factor, factor), np.float32))


def _mosaic_figure(rows: list[list[np.ndarray | None]], row_labels: list[str], cmap: str, cell: float,
                   title: str = "") -> Figure:
    """One axes per row of equal-sized images, each row labelled on its left. When any image is RGB,
    the one-channel images are drawn through `cmap` so that every row is RGB."""
    if any(image is not None and image.ndim == 3 for row in rows for image in row):
        colour = colormaps[cmap]
        rows = [[image if image is None or image.ndim == 3 else colour(np.clip(image, 0, 1))[..., :3].astype(np.float32)
                 for image in row] for row in rows]
    columns = max(len(r) for r in rows)
    figure = Figure(figsize=(cell * columns + 1.2, cell * len(rows) + 0.5), layout="constrained")
    for index, (row, label) in enumerate(zip(rows, row_labels)):
        ax = figure.add_subplot(len(rows), 1, index + 1)
        padded = row + [None] * (columns - len(row))
        ax.imshow(_mosaic(padded, columns), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=7)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def pca_variance_figure(params: PCAParams, path: Path) -> Path:
    """Cumulative explained variance, with the component counts for 90/95/99% marked (when reached)."""
    cumulative = np.cumsum(params.explained_variance_ratio, dtype=np.float64)
    figure = Figure(figsize=(6, 3.2), layout="constrained")
    ax = figure.add_subplot(1, 1, 1)
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative)
    for ratio, color in zip(VARIANCE_RATIOS, ("tab:green", "tab:orange", "tab:red")):
        try:
            k = components_for_ratio(params, ratio)
        except ValueError:
            ax.axhline(ratio, color=color, linestyle=":", linewidth=1, label=f"{ratio:.0%}: not reached")
            continue
        ax.axvline(k, color=color, linestyle="--", linewidth=1, label=f"{ratio:.0%}: {k} components")
    ax.set(xlabel="components", ylabel="cumulative explained variance", ylim=(0, 1.01),
           title=f"PCA: {params.n_components} components explain {cumulative[-1]:.1%}")
    ax.legend(fontsize=8, loc="lower right")
    return save(figure, path)


def pca_reconstruction_figure(params: PCAParams, pixels: np.ndarray, n_components: int, path: Path,
                              spec: InputSpec = DEFAULT_INPUT_SPEC) -> Path:
    """Originals (top row) above their reconstructions from the leading `n_components` (bottom row);
    `pixels` are (n, spec.pixels) uint8 faces in `spec`'s layout (colour drawn in colour)."""
    k = min(n_components, params.n_components)
    originals = np.asarray(pixels, dtype=np.float32).reshape(-1, *spec.shape) / 255.0
    rebuilt = np.clip(reconstruct(params, np.asarray(pixels), k).reshape(-1, *spec.shape), 0.0, 1.0)
    # Same scale (pixel values in [0, 1]) for an original and its reconstruction.
    figure = _mosaic_figure([[_displayed(f) for f in originals], [_displayed(f) for f in rebuilt]],
                            ["original", f"{k} components"], "gray", 1.0,
                            f"PCA reconstruction from {k} components")
    return save(figure, path)


def pca_components_figure(params: PCAParams, path: Path, count: int = 60, columns: int = 10,
                          spec: InputSpec = DEFAULT_INPUT_SPEC) -> Path:
    """The first `count` principal components as images of `spec`'s layout (eigenfaces; gray: red +,
    blue -; colour: each channel's sign around mid-gray)."""
    shown = [_displayed(_normalised(c.reshape(spec.shape), symmetric=True)) for c in params.components[:count]]
    rows = [shown[i: i + columns] for i in range(0, len(shown), columns)]
    labels = [f"PC {i + 1}-{i + len(row)}" for i, row in zip(range(0, len(shown), columns), rows)]
    figure = _mosaic_figure(rows, labels, "RdBu_r", 0.9, f"First {len(shown)} principal components")
    return save(figure, path)


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The model's 2-D convolutions in forward order (module registration order)."""
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def filters_figure(model: nn.Module, path: Path, layers: int = 3, count: int = 16) -> Path:
    """The first `count` filters of the first `layers` conv layers: a colour model's first layer in
    colour (its RGB kernels), other kernels averaged over their input channels."""
    convs = conv_layers(model)[:layers]
    if not convs:
        raise ValueError("filters_figure: the model has no Conv2d layer")
    rows, labels = [], []
    for index, conv in enumerate(convs):
        weight = conv.weight.detach().float()[:count].cpu().numpy()
        if index == 0 and conv.in_channels == COLOR_CHANNELS:  # the filters see the face's RGB directly
            rows.append([_displayed(_normalised(k)) for k in weight])
        else:
            rows.append([_normalised(k) for k in weight.mean(axis=1)])
        labels.append(f"conv{index + 1}\n{conv.in_channels}->{conv.out_channels}")
    return save(_mosaic_figure(rows, labels, "gray", 0.45, "First filters per conv layer"), path)


def activations_figure(model: nn.Module, image: torch.Tensor, path: Path, count: int = 16) -> Path:
    """The first `count` channels of each conv layer's output for one face (1, C, S, S) in [0, 1], in
    the model's own layout (a colour face is drawn in colour)."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError("activations_figure: the model has no Conv2d layer")
    captured: list[torch.Tensor] = []
    hooks = [conv.register_forward_hook(lambda _m, _i, output: captured.append(output.detach())) for conv in convs]
    try:
        with torch.no_grad():
            model.eval()(image.float())
    finally:
        for hook in hooks:
            hook.remove()
    face = _displayed(image[0].float().numpy())
    rows, labels = [], []
    for index, output in enumerate(captured):
        maps = output[0, :count].cpu().numpy()
        # The face leads each row so a reader can match map positions to the face.
        rows.append([face] + [_upsampled(_normalised(m), image.shape[-1]) for m in maps])
        labels.append(f"conv{index + 1}\n{maps.shape[1]}x{maps.shape[2]}")
    return save(_mosaic_figure(rows, labels, "viridis", 0.6, "Activation maps (face, then channels)"), path)
