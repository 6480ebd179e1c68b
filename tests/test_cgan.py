"""The conditional GAN's parts without Ray: networks, losses, metrics, configs, grids."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from facetune.cgan.generate import GENERATOR_FILE, generator_payload, grid_size, load_generator, parse_ages
from facetune.cgan.job import find_age_model, resolve_config
from facetune.cgan.losses import get_loss
from facetune.cgan.metrics import frechet_distance, quality_metrics, real_reference
from facetune.cgan.models import build_discriminator, build_generator
from facetune.cgan.step import ema_rate
from facetune.cli import main as cli_main


@pytest.mark.parametrize("preset", ["paper", "strong"])
def test_preset_networks_map_noise_and_age_to_48px_faces_and_scores(preset):
    model = resolve_config("smoke", {"preset": preset})["model"]
    generator, discriminator = build_generator(model), build_discriminator(model)
    ages = torch.tensor([1.0, 25.0, 60.0, 116.0])
    faces = generator(torch.randn(4, model["noise_dim"]), ages)
    assert faces.shape == (4, 1, 48, 48)
    assert faces.min() >= -1 and faces.max() <= 1
    assert discriminator(faces, ages).shape == (4,)


def test_paper_discriminator_sees_the_age_plane():
    model = resolve_config("smoke", {"preset": "paper"})["model"]
    discriminator = build_discriminator(model)
    assert discriminator.features[0].in_channels == 2  # image + age plane
    faces = torch.zeros(2, 1, 48, 48)
    young, old = discriminator(faces, torch.tensor([5.0, 5.0])), discriminator(faces, torch.tensor([80.0, 80.0]))
    assert not torch.allclose(young, old)


def test_unknown_generator_arch_is_a_clear_error():
    model = resolve_config("smoke")["model"]
    model["generator"] = {"arch": "nope"}
    with pytest.raises(ValueError, match="unknown generator arch 'nope'"):
        build_generator(model)


def test_profiles_resolve_to_a_preset_and_unknown_ones_fail():
    local = resolve_config("local")
    assert local["preset"] == "strong" and local["optim"]["loss"] == "hinge" and local["num_workers"] == 2
    assert resolve_config("gpu")["use_gpu"] is True
    with pytest.raises(ValueError, match="unknown cgan profile"):
        resolve_config("huge")


def test_hinge_loss_is_zero_once_scores_clear_the_margin():
    loss = get_loss("hinge")
    assert loss.discriminator(torch.full((3,), 2.0), torch.full((3,), -2.0)).item() == 0.0
    assert loss.discriminator(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(2.0)


def test_bce_discriminator_loss_falls_as_it_separates_real_from_fake():
    loss = get_loss("bce")
    confused = loss.discriminator(torch.zeros(4), torch.zeros(4))
    sure = loss.discriminator(torch.full((4,), 5.0), torch.full((4,), -5.0))
    assert sure < confused
    assert loss.generator(torch.full((4,), 5.0)) < loss.generator(torch.full((4,), -5.0))


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    features = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    near, far = frechet_distance(features, features + 0.5), frechet_distance(features, features + 2.0)
    assert near == pytest.approx(8 * 0.25, rel=1e-3) and far > near


class _BrightnessAge(nn.Module):
    """A stand-in regressor: age = 100 x mean brightness (its last Linear gives the features)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 1)
        with torch.no_grad():
            self.head.weight.fill_(100.0)
            self.head.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images.mean(dim=(1, 2, 3)).unsqueeze(1))


class _AgeToBrightness(nn.Module):
    """A stand-in generator that paints the requested age as brightness: perfectly age-consistent."""

    noise_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, noise: torch.Tensor, age_years: torch.Tensor) -> torch.Tensor:
        return (age_years / 100.0 * 2 - 1).view(-1, 1, 1, 1).expand(-1, 1, 48, 48) + 0 * self.unused


def test_age_consistency_of_a_perfect_generator_is_far_below_the_shuffled_ceiling():
    ages = np.random.default_rng(0).integers(1, 90, 200).astype(float)
    real = (torch.as_tensor(ages, dtype=torch.float32) / 100.0).view(-1, 1, 1, 1).expand(-1, 1, 48, 48)
    reference = real_reference(_BrightnessAge(), real, ages)
    metrics = quality_metrics(_AgeToBrightness(), _BrightnessAge(), reference, noise_dim=4)
    assert metrics["age_mae_real_floor"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["age_mae_generated"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["age_mae_shuffled_ceiling"] > 15
    assert metrics["frechet_distance_cnn"] == pytest.approx(0.0, abs=1e-3)


def test_parse_ages_reads_ranges_and_lists_and_rejects_nonsense():
    assert parse_ages("21-30") == list(range(21, 31))
    assert parse_ages("20, 40,60") == [20, 40, 60]
    for bad in ("", "a-b", "100-130"):
        with pytest.raises(ValueError):
            parse_ages(bad)


def test_generate_writes_a_grid_of_n_rows_by_one_column_per_age(tmp_path):
    model = resolve_config("smoke", {"preset": "strong"})["model"]
    generator = build_generator(model)
    torch.save({"model": model, "generator": generator.state_dict(), "epoch": 0}, tmp_path / GENERATOR_FILE)
    out = tmp_path / "grid.png"
    code = cli_main(["generate", "--checkpoint", str(tmp_path), "--ages", "21-30", "--n", "3", "--seed", "5", "--out", str(out)])
    assert code == 0
    with Image.open(out) as image:
        assert (image.height, image.width) == grid_size(rows=3, columns=10)
        assert (image.height, image.width) == (166, 502)


def test_age_model_must_be_an_age_regressor(tmp_path):
    (tmp_path / "cnn_age").mkdir()
    (tmp_path / "cnn_age" / "model_config.json").write_text('{"task": "age"}')
    assert find_age_model(tmp_path) == tmp_path / "cnn_age"
    (tmp_path / "model_config.json").write_text('{"task": "gender"}')
    with pytest.raises(ValueError, match="not an age regressor"):
        find_age_model(tmp_path)


def test_ema_copies_the_generator_first_then_follows_it_closely_then_at_the_configured_decay():
    assert ema_rate(0.999, 0) == 0.0
    assert ema_rate(0.999, 1) == pytest.approx(2 / 11)
    assert ema_rate(0.999, 100_000) == pytest.approx(0.999)


def test_the_exported_generator_is_the_ema_copy_when_one_is_kept(tmp_path):
    from torch.optim.swa_utils import AveragedModel

    config = resolve_config("smoke", {"preset": "strong"})
    generator = build_generator(config["model"])
    ema = AveragedModel(generator, use_buffers=True)
    with torch.no_grad():
        for parameter in ema.module.parameters():
            parameter.fill_(0.5)
    state = {"generator": generator.state_dict(), "ema": ema.state_dict(), "epoch": 3, "config": config}
    torch.save(state, tmp_path / "cgan_state.pt")
    loaded, _ = load_generator(tmp_path)  # a Ray Train checkpoint dir
    assert all(torch.all(p == 0.5) for p in loaded.parameters())
    assert generator_payload(state)["epoch"] == 3


def test_an_age_grid_names_each_columns_age_above_it_in_any_spec(tmp_path):
    import json

    import numpy as np

    from facetune.cgan.generate import AGES_KEY, CAPTION_HEIGHT, save_age_grid

    ages = [20, 40, 60]
    colour = torch.full((2 * len(ages), 3, 40, 40), 0.5)  # two rows of 40x40 colour faces
    out = save_age_grid(colour, ages, tmp_path / "grid.png")
    with Image.open(out) as image:
        assert (image.height, image.width) == grid_size(rows=2, columns=3, side=40)
        assert json.loads(image.info[AGES_KEY]) == ages
        band = np.asarray(image.convert("L"))[:CAPTION_HEIGHT]
    # Ink above every column: a label is drawn over each one.
    for column in range(len(ages)):
        left = 2 + column * 42
        assert band[:, left : left + 40].min() < 128
