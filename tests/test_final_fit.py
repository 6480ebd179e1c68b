"""Final fit: the chosen configuration retrained on train+val, tested once, never chosen by validation."""
from __future__ import annotations

import json

import pytest

from facetune.cli import main
from facetune.data.loading import load_split
from facetune.predict.choice import choose_best, read_summary
from facetune.predict.predictor import Predictor
from facetune.records import SummaryEntry, SweepRecord
from facetune.tuning.final_fit import FINAL_FIT_FAMILY, TRAINED_ON, final_fit

SMALL_CNN = {"conv_channels": [4, 8], "dense": [16], "batch_norm": True}


def write_sweep(results, prepared, task: str = "gender") -> None:
    """sweep.json and a one-entry summary.json as a sweep writes them, for a tiny CNN's best trial."""
    config = {"family": "cnn", "task": task, "arch": SMALL_CNN, "max_epochs": 3,
              "train": {"epochs": 3, "batch_size": 64, "lr": 0.003, "seed": 0}}
    entry = SummaryEntry(family="cnn", task=task, best_config=config, val={"accuracy": 0.7}, test={"accuracy": 0.5},
                         epochs=3, best_epoch=2, train_seconds=1.0, test_seconds=0.1, checkpoint=f"cnn_{task}/model.pt",
                         num_parameters=1, num_trials=1, trial_id="t1")
    record = SweepRecord(profile="test", data=str(prepared), storage=str(results / "tune"),
                         combinations=[f"cnn_{task}"], started="2026-11-29T00:00:00")
    (results / "sweep.json").write_text(json.dumps(record.to_dict()))
    (results / "summary.json").write_text(json.dumps([entry.to_dict()]))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, prepared_data):
    """A one-combination sweep's results after one final fit of gender."""
    results = tmp_path_factory.mktemp("results")
    write_sweep(results, prepared_data)
    lines: list[str] = []
    [entry] = final_fit(results, ["gender"], log=lines.append)
    return {"results": results, "entry": entry, "log": lines}


def test_the_chosen_config_is_retrained_on_train_and_val_for_its_best_epoch_count(fitted, prepared_data):
    results, entry, lines = fitted["results"], fitted["entry"], fitted["log"]
    pooled = len(load_split(prepared_data, "train")) + len(load_split(prepared_data, "val"))
    assert any(f"2 epochs on {pooled:,} train+val faces" in line for line in lines)
    assert entry.family == FINAL_FIT_FAMILY and entry.base_family == "cnn"
    assert entry.trained_on == TRAINED_ON and entry.epochs == 2
    assert 0.0 <= entry.test["accuracy"] <= 1.0
    assert (results / "final_fit_gender" / "model.pt").is_file()


def test_the_summary_keeps_the_sweeps_entry_beside_the_final_fit(fitted):
    families = [e["family"] for e in read_summary(fitted["results"])]
    assert families == ["cnn", FINAL_FIT_FAMILY]


def test_validation_never_chooses_a_model_that_was_trained_on_it(fitted):
    entries = read_summary(fitted["results"])
    assert choose_best(entries)["gender"]["family"] == "cnn"
    assert choose_best(entries, FINAL_FIT_FAMILY)["gender"]["trained_on"] == TRAINED_ON


def test_predict_uses_the_final_fit_when_asked_for_it(fitted):
    predictor = Predictor.from_results(fitted["results"], family=FINAL_FIT_FAMILY)
    assert predictor.model_dirs["gender"].name == "final_fit_gender"


def test_a_rerun_replaces_the_previous_final_fit(fitted):
    results = fitted["results"]
    final_fit(results, ["gender"], log=lambda line: None)
    assert [e["family"] for e in read_summary(results)].count(FINAL_FIT_FAMILY) == 1


def test_the_command_needs_a_sweeps_results_directory(tmp_path, capsys):
    assert main(["final-fit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sweep.json not found" in err and len(err.strip().splitlines()) == 1


def test_the_command_says_when_the_sweeps_data_is_gone(tmp_path, capsys):
    write_sweep(tmp_path, tmp_path / "gone")
    assert main(["final-fit", str(tmp_path)]) == 2
    assert "prepared data" in capsys.readouterr().err


def test_the_report_reads_a_final_fit_as_a_complete_combination(fitted):
    from facetune.results.collect import collect_results

    combination = next(c for c in collect_results(fitted["results"]).combinations.values() if c.family == FINAL_FIT_FAMILY)
    assert combination.problems == [] and combination.predictions is not None and combination.trials is None
