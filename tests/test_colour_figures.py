"""The report's figures and table follow the faces' spec (issue 40, part 2): colour faces, components
and first-layer filters are drawn in colour; the comparison table names each model's input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from facetune.models import build_model, make_context
from facetune.models.pca import fit_pca
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec
from facetune.results import inspect
from facetune.results.compare import comparison_table
from facetune.results.study import load_study

COLOUR = InputSpec.color(40)


def reddish(n: int, spec: InputSpec) -> np.ndarray:
    """(n, spec.pixels) uint8 faces whose red channel is bright and blue dark."""
    base = np.random.default_rng(0).integers(80, 250, (n, spec.size, spec.size), dtype=np.uint8)
    channels = [base, base // 3, base // 8] if spec.is_color else [base]
    return np.stack(channels, axis=1).reshape(n, spec.pixels)


def colourful_share(path) -> float:
    """Share of the figure's pixels whose channels differ by more than 40 levels (not gray)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 40).mean())


def test_pca_reconstructions_of_colour_faces_are_drawn_in_colour(tmp_path):
    faces = {spec: reddish(12, spec) for spec in (COLOUR, DEFAULT_INPUT_SPEC)}
    shares = {}
    for spec, pixels in faces.items():
        params = fit_pca(pixels, n_components=6)
        path = inspect.pca_reconstruction_figure(params, pixels[:4], 6, tmp_path / f"{spec.slug}.png", spec)
        shares[spec] = colourful_share(path)
    assert shares[COLOUR] > 0.05 and shares[DEFAULT_INPUT_SPEC] < 0.01


def test_pca_components_of_colour_faces_are_colour_images(tmp_path):
    params = fit_pca(reddish(12, COLOUR), n_components=4)
    path = inspect.pca_components_figure(params, tmp_path / "components.png", count=4, columns=4, spec=COLOUR)
    assert colourful_share(path) > 0.05


def test_a_colour_cnn_shows_its_rgb_filters_and_activations_on_a_colour_face(tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn", {"conv_channels": [4, 8], "dense": [8]}, "gender",
                        make_context("gender", input_spec=COLOUR)).eval()
    face = torch.from_numpy(reddish(1, COLOUR).astype(np.float32) / 255.0).reshape(1, *COLOUR.shape)
    assert inspect.filters_figure(model, tmp_path / "filters.png").is_file()
    path = inspect.activations_figure(model, face, tmp_path / "activations.png")
    assert colourful_share(path) > 0.05


def test_the_comparison_table_names_each_models_input_spec():
    rows = pd.DataFrame([{"combination": "cnn_gender", "task": "gender", "status": "finished", "test_accuracy": 0.9,
                          "input_spec": COLOUR.describe(), "num_parameters": 10, "num_trials": 1, "train_seconds": 60.0,
                          "best_hyperparameters": "", "best_family_for_task": True, "study_reported": "",
                          "meets_target": None, "epochs": 1, "best_epoch": 1, "missing_reason": ""}])
    table = comparison_table(rows, load_study())
    assert table.loc[table["combination"].str.startswith("cnn_gender"), "input"].tolist() == ["40x40 colour"]
