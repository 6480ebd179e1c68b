"""The models shipped inside the package: present, documented, checksummed and usable with no sweep."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from facetune.cli import main
from facetune.predict import Predictor
from facetune.release.paths import CARD_FILE, PRETRAINED_DIR
from facetune.release.recipe import load_recipe
from facetune.release.card import DOCS_PAGE, card_checksums, docs_figures, figures_block_span, file_sha256, model_card, shipped_files

MAX_SHIPPED_BYTES = 30 * 1024 * 1024


def test_shipped_files_match_the_checksums_in_the_model_card():
    stated = card_checksums(PRETRAINED_DIR / CARD_FILE)
    assert set(stated) == set(shipped_files(PRETRAINED_DIR))
    for name, digest in stated.items():
        assert file_sha256(PRETRAINED_DIR / name) == digest, name


def test_shipped_models_fit_the_size_budget():
    total = sum(path.stat().st_size for path in PRETRAINED_DIR.rglob("*") if path.is_file())
    assert total <= MAX_SHIPPED_BYTES


def test_model_card_states_the_recipe_data_and_test_figures():
    card = (PRETRAINED_DIR / CARD_FILE).read_text()
    assert "python jobs/train_release.py" in card
    assert "train split only" in card
    assert "shrunk test build" not in card
    for group in ("ethnicity=White", "ethnicity=Others", "gender=female", "age=0-12", "age=60+"):
        assert group in card


def test_model_card_is_what_the_release_writes_from_metrics_json():
    metrics = json.loads((PRETRAINED_DIR / "metrics.json").read_text())
    assert (PRETRAINED_DIR / CARD_FILE).read_text() == model_card(PRETRAINED_DIR, metrics)


def test_model_card_gives_each_group_an_interval_and_the_worst_group_per_task():
    card = (PRETRAINED_DIR / CARD_FILE).read_text()
    assert "| ethnicity=Others | 153 | 4.40 [3.68, 5.16] |" in card
    for task in ("age", "gender", "ethnicity"):
        assert f"- {task}: worst group: " in card
    for watched in ("female recall", "male recall", "MAE 0-12", "MAE 60+"):
        assert f": {watched}: " in card


def test_shipped_recipe_is_the_one_in_raycfg():
    from facetune.config_keys import RELEASE, with_defaults

    metrics = json.loads((PRETRAINED_DIR / "metrics.json").read_text())
    # A key added to the recipe schema after the release was trained counts at its default.
    assert with_defaults(metrics["recipe"], RELEASE, "metrics.json") == load_recipe()


def test_the_docs_page_shows_the_shipped_models_figures():
    metrics = json.loads((PRETRAINED_DIR / "metrics.json").read_text())
    page, start, end = figures_block_span(Path(__file__).resolve().parents[1] / DOCS_PAGE)
    assert page[start:end] == f"\n{docs_figures(metrics)}\n", f"rerun `python jobs/train_release.py --docs {DOCS_PAGE}`"


def test_pretrained_predictor_answers_every_task_in_one_network():
    predictor = Predictor.pretrained(device="cpu")
    assert predictor.tasks == ("age", "gender", "ethnicity")
    assert len({id(m.module.model) for m in predictor.models.values()}) == 1
    frame = predictor.predict_array(np.full((2, 48, 48), 128, np.uint8))
    assert list(frame.columns[:3]) == ["source", "age", "age_std"]
    assert (frame["age_std"] > 0).all()


def test_predict_with_no_models_uses_the_shipped_ones(tmp_path, faces, capsys):
    image = tmp_path / "face.jpg"
    Image.fromarray(faces["pixels"][0].reshape(48, 48)).save(image)
    assert main(["predict", str(image)]) == 0
    printed = capsys.readouterr().out
    assert "face.jpg" in printed
    assert any(word in printed for word in ("male", "female"))
    assert any(word in printed for word in ("White", "Black", "Asian", "Indian", "Others"))


def test_predict_about_prints_the_model_card(capsys):
    assert main(["predict", "--about"]) == 0
    assert "facetune pretrained models" in capsys.readouterr().out


def test_predict_without_inputs_is_a_usage_error(capsys):
    assert main(["predict"]) == 2
    assert "INPUT" in capsys.readouterr().err


def test_family_needs_a_results_directory(tmp_path, faces, capsys):
    image = tmp_path / "face.png"
    Image.fromarray(faces["pixels"][0].reshape(48, 48)).save(image)
    assert main(["predict", str(image), "--family", "cnn"]) == 2
    assert "--models" in capsys.readouterr().err


def test_pretrained_predictor_carries_the_model_cards_figures():
    predictor = Predictor.pretrained(device="cpu")
    summary = predictor.models["gender"].summary
    assert 0.5 < summary["test"]["accuracy"] <= 1.0 and 0.5 < summary["val"]["accuracy"] <= 1.0
    assert summary["test"]["accuracy"] != Predictor.pretrained(device="cpu", tta_flip=False).models["gender"].summary["test"]["accuracy"]


def test_the_fast_model_ships_beside_the_ensemble_distilled_from_it():
    from facetune.release.card import teacher_digest
    from facetune.release.paths import STUDENT_DIR

    metrics = json.loads((STUDENT_DIR / "metrics.json").read_text())
    assert metrics["teacher"] == teacher_digest(PRETRAINED_DIR)
    assert not metrics["shrunk_for_test"]
    card = (PRETRAINED_DIR / CARD_FILE).read_text()
    assert "## The fast model (`--pretrained fast`)" in card and "distilled from another build" not in card
    for path in STUDENT_DIR.iterdir():
        assert f"| student/{path.name} | `{file_sha256(path)}` |" in card


def test_the_fast_model_is_one_network_answering_every_task_with_one_view():
    predictor = Predictor.pretrained(device="cpu", which="fast")
    assert len(predictor.networks()) == 1 and not predictor.tta_flip
    frame = predictor.predict_array(np.full((2, 48, 48), 128, np.uint8))
    assert list(frame["gender"].isin(["male", "female"])) == [True, True]
