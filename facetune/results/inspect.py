"""Looking inside the models: PCA variance, reconstructions and eigenfaces; CNN filters and activations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from facetune.models.pca import PCAParams, components_for_ratio, reconstruct
from facetune.records import IMAGE_SIZE
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


def _mosaic(images: list[np.ndarray | None], columns: int, pad: int = 1) -> np.ndarray:
    """Same-sized 2-D images tiled row by row, NaN between and where an image is None (drawn blank).

    One imshow of a mosaic draws far faster than one axes per small image.
    """
    height, width = next(i for i in images if i is not None).shape
    rows = -(-len(images) // columns)
    mosaic = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad), np.nan, np.float32)
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
    """One axes per row of equal-sized images, each row labelled on its left."""
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


def pca_reconstruction_figure(params: PCAParams, pixels: np.ndarray, n_components: int, path: Path) -> Path:
    """Originals (top row) above their reconstructions from the leading `n_components` (bottom row)."""
    k = min(n_components, params.n_components)
    originals = np.asarray(pixels, dtype=np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE) / 255.0
    rebuilt = reconstruct(params, np.asarray(pixels), k).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    # Same gray scale (pixel values in [0, 1]) for an original and its reconstruction.
    figure = _mosaic_figure([list(originals), list(rebuilt)], ["original", f"{k} components"], "gray", 1.0,
                            f"PCA reconstruction from {k} components")
    return save(figure, path)


def pca_components_figure(params: PCAParams, path: Path, count: int = 60, columns: int = 10) -> Path:
    """The first `count` principal components as 48x48 images (eigenfaces; red +, blue -)."""
    shown = [_normalised(c.reshape(IMAGE_SIZE, IMAGE_SIZE), symmetric=True) for c in params.components[:count]]
    rows = [shown[i: i + columns] for i in range(0, len(shown), columns)]
    labels = [f"PC {i + 1}-{i + len(row)}" for i, row in zip(range(0, len(shown), columns), rows)]
    figure = _mosaic_figure(rows, labels, "RdBu_r", 0.9, f"First {len(shown)} principal components")
    return save(figure, path)


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The model's 2-D convolutions in forward order (module registration order)."""
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def filters_figure(model: nn.Module, path: Path, layers: int = 3, count: int = 16) -> Path:
    """The first `count` filters of the first `layers` conv layers; deeper kernels averaged over input channels."""
    convs = conv_layers(model)[:layers]
    if not convs:
        raise ValueError("filters_figure: the model has no Conv2d layer")
    rows, labels = [], []
    for index, conv in enumerate(convs):
        kernels = conv.weight.detach().float().mean(dim=1)[:count].cpu().numpy()
        rows.append([_normalised(k) for k in kernels])
        labels.append(f"conv{index + 1}\n{conv.in_channels}->{conv.out_channels}")
    return save(_mosaic_figure(rows, labels, "gray", 0.45, "First filters per conv layer"), path)


def activations_figure(model: nn.Module, image: torch.Tensor, path: Path, count: int = 16) -> Path:
    """The first `count` channels of each conv layer's output for one face (1, 1, 48, 48) in [0, 1]."""
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
    face = image[0, 0].float().numpy()
    rows, labels = [], []
    for index, output in enumerate(captured):
        maps = output[0, :count].cpu().numpy()
        # The face leads each row so a reader can match map positions to the face.
        rows.append([face] + [_upsampled(_normalised(m), IMAGE_SIZE) for m in maps])
        labels.append(f"conv{index + 1}\n{maps.shape[1]}x{maps.shape[2]}")
    return save(_mosaic_figure(rows, labels, "viridis", 0.6, "Activation maps (face, then channels)"), path)
