"""A release in another layout (issue 40, part 2): train-release takes --size/--color for a raw
source, and the model card names the members' faces from their spec, not a fixed 48x48 gray."""
from __future__ import annotations

import json

from facetune.cli import build_parser
from facetune.commands.prepare import requested_spec
from facetune.records import DEFAULT_INPUT_SPEC, InputSpec
from facetune.release.card import model_card
from facetune.release.paths import METRICS_FILE, PRETRAINED_DIR
from facetune.release.train import release_splits


def test_train_release_asks_for_a_colour_layout_only_when_told():
    parser = build_parser()
    assert requested_spec(parser.parse_args(["train-release", "--size", "64", "--color"])) == InputSpec.color(64)
    assert requested_spec(parser.parse_args(["train-release"])) is None


def test_a_raw_folder_is_prepared_in_the_layout_the_release_asks_for(utkface_folder, tmp_path, no_figures):
    splits, record = release_splits(utkface_folder, tmp_path, None, InputSpec.color(64))
    assert splits["train"].spec == InputSpec.color(64)
    assert record["input_spec"] == {"size": 64, "channels": 3}


def test_the_card_names_the_members_faces_from_their_spec():
    metrics = json.loads((PRETRAINED_DIR / METRICS_FILE).read_text())
    assert "from a 48x48 grayscale face crop" in model_card(PRETRAINED_DIR, metrics)
    metrics["data"]["input_spec"] = InputSpec.color(64).to_dict()
    card = model_card(PRETRAINED_DIR, metrics)
    assert "from a 64x64 colour face crop" in card and DEFAULT_INPUT_SPEC.describe() not in card
    assert "grayscale" not in card
