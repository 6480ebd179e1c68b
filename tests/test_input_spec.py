"""Image size and colour are properties of the data (issue 40): prepare writes them, every family
builds for them, training and checkpoints carry them, and nothing else states the 48."""
from __future__ import annotations

import io
import json
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facetune
from facetune.data.loading import load_split, prepared_spec
from facetune.data.prepare import ensure_prepared, prepare
from facetune.errors import InvalidInputError
from facetune.models import build_model, load_model, make_context, save_model
from facetune.models.pca import fit_pca
from facetune.records import DEFAULT_INPUT_SPEC, PREPARED_MANIFEST, SPLITS, InputSpec, PreparedManifest
from facetune.storage import ResultsStore
from facetune.tasks import MULTITASK
from facetune.training.augment import augment_batch
from facetune.training.loop import TrainConfig, fit
from synthetic import SIZE
from test_prepare import run_cli

SPECS = [InputSpec.gray(48), InputSpec.color(64), InputSpec.color(40)]
SMALL_ARCH = {
    "cnn": {"conv_channels": [4, 8], "dense": [8]},
    "dnn": {"dense": [8]},
    "pca_dnn": {"dense": [8]},
    "resnet": {"widths": [4, 8], "blocks": [1, 1]},
    "multitask": {"trunk": "resnet", "trunk_arch": {"widths": [4, 8], "blocks": [1, 1]}},
}


def test_the_default_spec_is_48_gray_and_round_trips_as_a_dict():
    assert DEFAULT_INPUT_SPEC == InputSpec.gray(48) and DEFAULT_INPUT_SPEC.pixels == 2304
    assert InputSpec.color(64).shape == (3, 64, 64) and InputSpec.color(64).pixels == 3 * 64 * 64
    assert InputSpec.from_dict(InputSpec.color(64).to_dict()) == InputSpec.color(64)


@pytest.mark.parametrize("family", sorted(SMALL_ARCH))
@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.slug)
def test_every_family_builds_trains_and_reloads_for_the_spec(family, spec, tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, spec.pixels), dtype=np.uint8)
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).reshape(-1, *spec.shape)
    labels = {"age": torch.tensor(rng.integers(1, 90, 8)), "gender": torch.tensor(rng.integers(0, 2, 8)),
              "ethnicity": torch.tensor(rng.integers(0, 5, 8))}
    task = MULTITASK if family == "multitask" else "ethnicity"
    pca = fit_pca(pixels, n_components=4) if family == "pca_dnn" else None
    context = make_context(task, labels["age"].numpy(), pca=pca, input_spec=spec)
    model = build_model(family, SMALL_ARCH[family], task, context)
    before = [p.detach().clone() for p in model.parameters()]

    # One optimisation step (8 faces, one batch), with the augmentations that touch every channel.
    config = TrainConfig(epochs=1, batch_size=8, augment="flip_affine", color_jitter=0.2, patience=0)
    fit(model, task, x, labels if task == MULTITASK else labels[task], None, None, config)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    model.eval()
    save_model(model, tmp_path, family=family, task=task, arch=SMALL_ARCH[family])
    loaded, config_read = load_model(tmp_path)
    assert loaded.input_spec == spec
    assert InputSpec.from_dict(config_read["input_spec"]) == spec
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_checkpoint_without_a_spec_loads_as_48_gray(tmp_path):
    model = build_model("cnn", SMALL_ARCH["cnn"], "gender", {})
    save_model(model, tmp_path, family="cnn", task="gender", arch=SMALL_ARCH["cnn"])
    config_path = tmp_path / "model_config.json"
    config = json.loads(config_path.read_text())
    del config["input_spec"]
    config_path.write_text(json.dumps(config))
    loaded, config_read = load_model(tmp_path)
    assert loaded.input_spec == DEFAULT_INPUT_SPEC and config_read["input_spec"] == {"size": 48, "channels": 1}


def test_pca_dnn_refuses_more_components_than_the_face_has_values():
    tiny = InputSpec.gray(16)
    with pytest.raises(ValueError, match="257 components is more than the 256 pixel values"):
        build_model("pca_dnn", SMALL_ARCH["pca_dnn"], "gender", {"n_components": 257, "input_spec": tiny})


def test_augmentation_keeps_every_channel_of_a_colour_batch():
    x = torch.rand(6, 3, 40, 40)
    out = augment_batch(x, "flip_affine", torch.Generator().manual_seed(0), jitter=0.2)
    assert out.shape == x.shape
    # The channels are moved together: a flipped red channel is not the green one.
    assert not torch.equal(out[:, 0], out[:, 1])


# ---- prepare ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reddish_folder(tmp_path_factory, faces) -> Path:
    """Twelve UTKFace-named 64x64 JPEGs whose red channel is the face and whose blue is a quarter of it."""
    folder = tmp_path_factory.mktemp("reddish") / "UTKFace"
    folder.mkdir()
    for i in range(12):
        face = Image.fromarray(faces["pixels"][i].reshape(SIZE, SIZE)).resize((64, 64), Image.Resampling.LANCZOS)
        red = np.asarray(face)
        rgb = np.stack([red, red // 2, red // 4], axis=-1)
        Image.fromarray(rgb, "RGB").save(folder / f"{30 + i}_{i % 2}_{i % 5}_2017{i:010d}.jpg.chip.jpg", quality=95)
    return folder


def test_prepare_writes_64_colour_faces_from_a_jpeg_folder(reddish_folder, tmp_path, no_figures):
    out = tmp_path / "utk64c"
    assert run_cli(["prepare", str(reddish_folder), "--out", str(out), "--size", "64", "--color"]) == 0
    assert PreparedManifest.read(out).input_spec == {"size": 64, "channels": 3}
    assert prepared_spec(out) == InputSpec.color(64)
    train = load_split(out, "train")
    assert train.spec == InputSpec.color(64)
    images = train.images()
    assert images.shape == (len(train), 3, 64, 64)
    # Channel-first RGB: red is the brightest channel and blue the darkest, as drawn.
    means = images.mean(dim=(0, 2, 3))
    assert means[0] > means[1] > means[2]


def test_a_face_keeps_its_split_at_every_size_and_colour(utkface_folder, tmp_path, no_figures):
    def split_of(spec: InputSpec) -> dict[str, str]:
        out = tmp_path / spec.slug
        prepare(utkface_folder, out, seed=3, spec=spec)
        return {name: split for split in SPLITS for name in load_split(out, split).source}

    gray = split_of(DEFAULT_INPUT_SPEC)
    assert len(gray) == 60 and split_of(InputSpec.color(64)) == gray


def test_the_default_prepare_is_48_gray(utkface_folder, tmp_path, no_figures):
    prepare(utkface_folder, tmp_path / "out")
    assert load_split(tmp_path / "out", "train").images().shape[1:] == (1, 48, 48)


def test_a_csv_refuses_colour_with_one_line_naming_it(kaggle_csv, tmp_path, capsys):
    assert run_cli(["prepare", str(kaggle_csv), "--out", str(tmp_path / "o"), "--color"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(kaggle_csv) in err and "cannot be prepared as 48x48 colour" in err
    assert not (tmp_path / "o").exists()


def test_a_csv_refuses_a_larger_size(kaggle_csv, tmp_path):
    with pytest.raises(InvalidInputError, match="cannot be prepared as 64x64 gray"):
        prepare(kaggle_csv, tmp_path / "o", spec=InputSpec.gray(64))


def test_a_csv_gives_a_smaller_gray_size(kaggle_csv, tmp_path, no_figures):
    prepare(kaggle_csv, tmp_path / "o", spec=InputSpec.gray(32))
    assert load_split(tmp_path / "o", "val").images().shape[1:] == (1, 32, 32)


def test_a_folder_prepared_before_specs_reads_as_48_gray(prepared_data, tmp_path):
    manifest = json.loads((prepared_data / PREPARED_MANIFEST).read_text())
    manifest.pop("input_spec", None)
    assert PreparedManifest.from_dict(manifest).spec == DEFAULT_INPUT_SPEC


def test_ensure_prepared_keeps_one_folder_per_spec(utkface_folder, tmp_path, no_figures):
    store = ResultsStore(tmp_path / "results")
    gray = ensure_prepared(utkface_folder, store)
    colour = ensure_prepared(utkface_folder, store, InputSpec.color(64))
    assert gray != colour
    assert (prepared_spec(gray), prepared_spec(colour)) == (DEFAULT_INPUT_SPEC, InputSpec.color(64))
    with pytest.raises(InvalidInputError, match="prepared as 64x64 colour, not the 48x48 gray asked for"):
        ensure_prepared(colour, store, DEFAULT_INPUT_SPEC)


# ---- the default size is stated once --------------------------------------------------------------

PACKAGE = Path(facetune.__file__).parent
#: The one place the default layout is stated.
SPEC_HOME = "records.py"
#: Code that still handles the default layout only: none since issue 40's part 2 (inference, export,
#: figures and the CGAN's grids follow each model's spec).
NOT_YET_PER_MODEL: tuple[str, ...] = ()
#: A single channel assumed: (N, 1, SIZE, SIZE) shapes, a one-channel first conv, `in_channels = 1`.
#: (Broadcast shapes such as (n, 1, 1, 1) are not images.)
ONE_CHANNEL = re.compile(r"\(\s*[\w.+-]+\s*,\s*1\s*,\s*(IMAGE_SIZE|\d{2,})\s*,|Conv2d\(\s*1\s*,|in_channels\s*=\s*1\b")


def _code_files() -> list[tuple[str, str]]:
    return [(path.relative_to(PACKAGE).as_posix(), path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_but_records_holds_the_literal_48():
    offenders = []
    for name, text in _code_files():
        if name == SPEC_HOME:
            continue
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NUMBER and token.string == "48":
                offenders.append(f"{name}:{token.start[0]}")
    assert offenders == []


def test_no_module_outside_the_default_only_ones_assumes_one_channel():
    for assumption in ("torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)", "nn.Conv2d(1, widths[0], 3)", "in_channels = 1"):
        assert ONE_CHANNEL.search(assumption), assumption
    assert not ONE_CHANNEL.search("shape = (n, 1, 1, 1)")
    offenders = [f"{name}: {match.group(0)}" for name, text in _code_files()
                 if name != SPEC_HOME and not (NOT_YET_PER_MODEL and name.startswith(NOT_YET_PER_MODEL))
                 for match in ONE_CHANNEL.finditer(text)]
    assert offenders == []
