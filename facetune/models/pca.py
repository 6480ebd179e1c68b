"""PCA of the face pixels: fitted once on the train split, shared by every pca_dnn trial.

Pixels are scaled to [0, 1] before fitting so the PCA sees exactly what the models see.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PCAParams:
    mean: np.ndarray  # (P,) float32, in [0, 1] pixel units; P = the faces' InputSpec.pixels
    components: np.ndarray  # (k, P) float32, orthonormal rows
    explained_variance: np.ndarray  # (k,) float32
    explained_variance_ratio: np.ndarray  # (k,) float32

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])


def _scaled(pixels: np.ndarray) -> np.ndarray:
    """(N, P) uint8 -> float32 in [0, 1]; float input is taken as already in [0, 1]."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected pixels of shape (N, pixels per face), got {pixels.shape}")
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    return pixels.astype(np.float32)


def fit_pca(train_pixels: np.ndarray, n_components: int = 500, seed: int = 0) -> PCAParams:
    """Fit a randomized-solver PCA on the train pixels ((N, P) uint8, P values a face)."""
    if np.asarray(train_pixels).dtype != np.uint8:
        raise ValueError(f"fit_pca expects uint8 pixels (N, pixels per face), got {np.asarray(train_pixels).dtype}")
    x = _scaled(train_pixels)
    limit = min(x.shape)
    if n_components > limit:
        # Small (test) splits cannot support 500 components; say so rather than fail the sweep.
        log.warning("fit_pca: %d components asked but only %d samples x %d pixels; using %d", n_components, x.shape[0], x.shape[1], limit)
        n_components = limit
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed).fit(x)
    return PCAParams(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance=pca.explained_variance_.astype(np.float32),
        explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float32),
    )


def save_pca(params: PCAParams, path_npz: str | Path) -> None:
    path = Path(path_npz)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        mean=params.mean,
        components=params.components,
        explained_variance=params.explained_variance,
        explained_variance_ratio=params.explained_variance_ratio,
    )


def load_pca(path_npz: str | Path) -> PCAParams:
    with np.load(Path(path_npz)) as data:
        return PCAParams(
            mean=data["mean"],
            components=data["components"],
            explained_variance=data["explained_variance"],
            explained_variance_ratio=data["explained_variance_ratio"],
        )


def components_for_ratio(params: PCAParams, ratio: float) -> int:
    """The fewest leading components whose explained variance reaches `ratio` (0-1]."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    cumulative = np.cumsum(params.explained_variance_ratio, dtype=np.float64)
    reached = np.nonzero(cumulative >= ratio - 1e-9)[0]
    if len(reached) == 0:
        raise ValueError(f"the {params.n_components} fitted components explain only {cumulative[-1]:.4f} < {ratio}")
    return int(reached[0]) + 1


def summary(params: PCAParams, ratios: tuple[float, ...] = (0.90, 0.95, 0.99)) -> dict:
    """What pca.json records: size, total explained variance, components per variance ratio
    (None where the fitted components do not reach it)."""
    needed: dict[str, int | None] = {}
    for ratio in ratios:
        try:
            needed[f"{round(ratio * 100)}%"] = components_for_ratio(params, ratio)
        except ValueError:
            needed[f"{round(ratio * 100)}%"] = None
    return {
        "n_components": params.n_components,
        "explained_variance_total": float(np.sum(params.explained_variance_ratio, dtype=np.float64)),
        "components_for_variance": needed,
    }


def _leading(params: PCAParams, n_components: int | None) -> np.ndarray:
    k = params.n_components if n_components is None else int(n_components)
    if not 1 <= k <= params.n_components:
        raise ValueError(f"n_components must be in 1..{params.n_components}, got {k}")
    return params.components[:k]


def transform(params: PCAParams, pixels: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Pixels ((N, P) uint8, or float in [0, 1]) -> (N, k) float32 PCA scores."""
    return ((_scaled(pixels) - params.mean) @ _leading(params, n_components).T).astype(np.float32)


def reconstruct(params: PCAParams, pixels: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Project onto the leading components and back: (N, P) float32 in [0, 1]."""
    basis = _leading(params, n_components)
    scores = (_scaled(pixels) - params.mean) @ basis.T
    return np.clip(scores @ basis + params.mean, 0.0, 1.0).astype(np.float32)
