"""Quality metrics of a conditional generator, judged by the project's own age regressor.

* Age consistency: MAE between the requested age and the age the regressor predicts for the
  generated face, with the regressor's MAE on real held-out faces (floor) and on the same
  generated faces scored against shuffled requested ages (ceiling) beside it.
* `cnn_frechet_distance`: a Fréchet distance between real and generated faces in the feature
  space of the regressor's penultimate layer. FID-style, but NOT Inception FID: the numbers are
  comparable only between runs judged by the same regressor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from torch import nn

from facetune.cgan.models import to_unit
from facetune.models.inference import predict_outputs


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last nn.Linear: its input is the penultimate-layer feature vector."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take features from")
    return linears[-1]


def predict_with_features(
    regressor: nn.Module, images: torch.Tensor, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Run the age regressor on (N,C,S,S) [0,1] images, converted to its own input spec when it takes
    another (images_in); return (ages (N,), penultimate features (N,F))."""
    from facetune.predict.faces import images_in  # loads pyarrow (the data loader): only when metrics run

    spec = getattr(regressor, "input_spec", None)  # a model that states none takes the images as they are
    if spec is not None:
        images = images_in(images, spec)
    captured: list[torch.Tensor] = []
    hook = last_linear(regressor).register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
    try:
        ages = predict_outputs(regressor, images, batch_size).reshape(-1)
    finally:
        hook.remove()
    features = torch.cat([c.flatten(1) for c in captured]).double().cpu().numpy()
    return ages.astype(np.float64), features


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets (scipy sqrtm)."""
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # Near-singular product: nudge both covariances, the usual remedy.
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


@dataclass
class RealReference:
    """What the metrics need from real held-out faces, computed once per run."""

    ages: np.ndarray  # (N,) true ages; also the requested ages for generated faces
    floor_mae: float  # regressor MAE on the real faces
    features: np.ndarray  # (N, F) penultimate features of the real faces


def real_reference(regressor: nn.Module, images: torch.Tensor, ages: np.ndarray) -> RealReference:
    predicted, features = predict_with_features(regressor, images)
    return RealReference(ages=np.asarray(ages, dtype=np.float64), floor_mae=float(np.abs(predicted - ages).mean()),
                         features=features)


@torch.no_grad()
def generate_faces(
    generator: nn.Module, ages: np.ndarray, noise_dim: int, seed: int, batch_size: int = 256
) -> torch.Tensor:
    """Generate one face per requested age with seeded noise; (N,C,S,S) in [0,1]."""
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(ages), noise_dim, generator=rng)
    device = next(generator.parameters()).device
    ages_tensor = torch.as_tensor(ages, dtype=torch.float32)
    faces = [
        to_unit(generator(noise[i : i + batch_size].to(device), ages_tensor[i : i + batch_size].to(device))).cpu()
        for i in range(0, len(ages), batch_size)
    ]
    return torch.cat(faces)


def quality_metrics(
    generator: nn.Module, regressor: nn.Module, reference: RealReference, noise_dim: int, seed: int = 0
) -> dict[str, float]:
    """Age consistency (with floor and shuffled-age ceiling) and the CNN Fréchet distance."""
    fakes = generate_faces(generator, reference.ages, noise_dim, seed)
    predicted, features = predict_with_features(regressor, fakes)
    shuffled = np.random.default_rng(seed).permutation(reference.ages)
    return {
        "age_mae_generated": float(np.abs(predicted - reference.ages).mean()),
        "age_mae_real_floor": reference.floor_mae,
        "age_mae_shuffled_ceiling": float(np.abs(predicted - shuffled).mean()),
        "frechet_distance_cnn": frechet_distance(reference.features, features),
    }
