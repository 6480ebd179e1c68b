"""The smoke sweep runs every family's combinations and leaves the documented results layout."""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch

from facetune.models import load_model
from facetune.models.multitask import TaskView
from facetune.records import (
    IMAGE_SIZE,
    MULTITASK,
    NUM_PIXELS,
    POOL_EXPERIMENT,
    TASK_NAMES,
    TRIAL_TIMES_FILE,
    TUNE_DIR,
    combination_name,
)
from facetune.tasks import TASKS
from facetune.tuning.profiles import combinations, load_profile
from facetune.tuning.retention import KEPT_DIR
from facetune.tuning.sweep import SweepExistsError, result_tasks, run_sweep

pytestmark = pytest.mark.slow  # the smoke sweep of every family on Ray Tune (minutes)

SMOKE_PAIRS = combinations(load_profile("smoke"))
COMBINATIONS = {(f, t) for f, task in SMOKE_PAIRS for t in result_tasks(task)}
METRIC_NAMES = {
    "age": {"mae", "mse", "rmse", "r2"},
    "gender": {"accuracy", "balanced_accuracy", "roc_auc", "f1"},
    "ethnicity": {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc"},
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, prepared_data, ray_session):
    """(results dir, summary, what the sweep printed)."""
    results = tmp_path_factory.mktemp("smoke_results")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        summary = [entry.to_dict() for entry in run_sweep("smoke", prepared_data, results)]
    return results, summary, console.getvalue()


@pytest.fixture(scope="module")
def smoke_results(smoke_run):
    return smoke_run[:2]


def test_the_console_has_one_line_per_finished_trial_and_no_tune_tables(smoke_run):
    console = smoke_run[2]
    trial_lines = re.findall(r"^\[facetune\] (\w+) \d+/\d+ trial \w+: .* -> val_\w+ [-\d.e]+, \d+ epochs, ",
                             console, flags=re.MULTILINE)
    assert sorted(set(trial_lines)) == sorted(f"{f}_{t}" for f, t in SMOKE_PAIRS)
    sizes = load_profile("smoke")["num_samples"]
    assert len(trial_lines) == sum(sizes[f] for f, _ in SMOKE_PAIRS)  # one line per trial
    assert "Trial status" not in console and "Current time" not in console


def test_all_combinations_share_one_experiment_and_start_in_the_sweeps_order(smoke_results):
    results, _ = smoke_results
    assert [p.name for p in (results / TUNE_DIR).iterdir() if p.is_dir()] == [POOL_EXPERIMENT]
    times = json.loads((results / TRIAL_TIMES_FILE).read_text())
    sizes = load_profile("smoke")["num_samples"]
    assert len(times) == sum(sizes[f] for f, _ in SMOKE_PAIRS)  # every trial, once
    order = [combination_name(f, t) for f, t in SMOKE_PAIRS]
    by_start = [entry["combination"] for entry in sorted(times, key=lambda entry: entry["start"])]
    assert [order.index(name) for name in by_start] == sorted(order.index(name) for name in by_start)


def test_each_trial_keeps_only_the_checkpoint_tune_names_and_no_copies(smoke_results):
    results, _ = smoke_results
    trial_dirs = sorted(path.parent for path in (results / TUNE_DIR / POOL_EXPERIMENT).glob("*/params.json"))
    sizes = load_profile("smoke")["num_samples"]
    assert len(trial_dirs) == sum(sizes[f] for f, _ in SMOKE_PAIRS)
    for trial_dir in trial_dirs:  # a checkpoint per epoch was written: the last epoch's stays
        last_epoch = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])["training_iteration"]
        assert [path.name for path in trial_dir.glob("checkpoint_*")] == [f"checkpoint_{last_epoch - 1:06d}"]
        assert not (trial_dir / KEPT_DIR).exists()


def test_without_the_pool_each_combination_is_its_own_experiment(tmp_path, prepared_data, ray_session):
    profile = {**load_profile("smoke"), "slot_pool": False}
    summary = run_sweep(profile, prepared_data, tmp_path, only=["dnn/age", "dnn/gender"])
    assert [(e.family, e.task) for e in summary] == [("dnn", "age"), ("dnn", "gender")]
    assert sorted(p.name for p in (tmp_path / TUNE_DIR).iterdir() if p.is_dir()) == ["dnn_age", "dnn_gender"]


def test_summary_has_one_entry_per_combination(smoke_results):
    results, summary = smoke_results
    on_disk = json.loads((results / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert {(e["family"], e["task"]) for e in on_disk} == COMBINATIONS
    # In the sweep's order, whichever combination finished first.
    assert [(e["family"], e["task"]) for e in on_disk] == [(f, t) for f, task in SMOKE_PAIRS for t in result_tasks(task)]


def test_summary_entries_carry_the_documented_fields(smoke_results):
    _, summary = smoke_results
    for entry in summary:
        assert {"family", "task", "best_config", "val", "test", "epochs", "train_seconds", "checkpoint"} <= set(entry)
        assert set(entry["test"]) == METRIC_NAMES[entry["task"]]
        assert METRIC_NAMES[entry["task"]] <= set(entry["val"])
        assert 1 <= entry["epochs"] <= 2


def test_each_combination_folder_holds_its_artifacts(smoke_results):
    results, summary = smoke_results
    for entry in summary:
        folder = results / f"{entry['family']}_{entry['task']}"
        for name in ("best_config.json", "history.csv", "test_metrics.json", "test_predictions.csv",
                     "model.pt", "model_config.json", "trials.csv"):
            assert (folder / name).is_file(), folder / name
        assert (results / entry["checkpoint"]).is_file()


def test_checkpoints_load_weights_only_and_rebuild_from_their_config(smoke_results):
    results, summary = smoke_results
    for entry in summary:
        state = torch.load(results / entry["checkpoint"], weights_only=True)
        model, config = load_model((results / entry["checkpoint"]).parent)
        multitask = entry["family"] == "multitask"
        assert config["family"] == entry["family"] and config["task"] == (MULTITASK if multitask else entry["task"])
        assert set(state) == set(model.state_dict())
        task_model = TaskView(model, entry["task"]) if multitask else model
        predicted = TASKS[entry["task"]].predict(task_model(torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE)))
        assert predicted["pred"].shape == (3,)


def test_test_predictions_list_every_test_face(smoke_results, prepared_data):
    import pandas as pd

    from facetune.data.loading import load_split

    results, _ = smoke_results
    test = load_split(prepared_data, "test")
    predictions = pd.read_csv(results / "cnn_ethnicity" / "test_predictions.csv")
    assert len(predictions) == len(test)
    assert {"source", "y_true", "y_pred", "prob_0", "prob_4"} <= set(predictions.columns)
    assert predictions[[f"prob_{i}" for i in range(5)]].sum(axis=1).round(4).eq(1).all()


def test_pca_is_fitted_once_and_saved(smoke_results):
    results, _ = smoke_results
    pca = json.loads((results / "pca" / "pca.json").read_text())
    assert pca["n_components"] == 16 and pca["fitted_on"] == "train split"
    assert set(pca["components_for_variance"]) == {"90%", "95%", "99%"}  # the keys the report reads
    assert (results / "pca" / "pca.npz").is_file()


def test_trials_table_lists_every_trial_with_its_hyperparameters(smoke_results):
    import pandas as pd

    results, _ = smoke_results
    trials = pd.read_csv(results / "cnn_gender" / "trials.csv")
    assert len(trials) == 2  # smoke: two CNN samples
    assert {"trial_id", "train.lr", "val_accuracy", "epochs", "status"} <= set(trials.columns)


def test_a_second_sweep_into_the_same_results_needs_resume(smoke_results, prepared_data):
    results, _ = smoke_results
    with pytest.raises(SweepExistsError, match="--resume"):
        run_sweep("smoke", prepared_data, results)


def test_resume_of_a_finished_sweep_redoes_nothing(smoke_results, prepared_data, capsys):
    results, summary = smoke_results
    again = run_sweep("smoke", prepared_data, results, resume=True)
    assert [entry.to_dict() for entry in again] == json.loads(json.dumps(summary))
    assert capsys.readouterr().out.count("already finished, skipped") == len(SMOKE_PAIRS)


def test_ensemble_from_the_sweep_is_chosen_by_predict_and_no_worse_on_validation(smoke_results, tmp_path_factory):
    import shutil

    from facetune.predict import Predictor
    from facetune.tasks import TASKS
    from facetune.tuning.ensemble_selection import build_ensembles

    source, _ = smoke_results
    results = tmp_path_factory.mktemp("ensemble") / "results"
    shutil.copytree(source, results)  # the module's other tests read the original
    sweep = json.loads((results / "sweep.json").read_text())
    sweep["storage"] = str(results / "tune")
    (results / "sweep.json").write_text(json.dumps(sweep))
    entries = {e.task: e.to_dict() for e in build_ensembles(results, max_members=3, log=lambda line: None)}
    assert set(entries) == set(TASKS)
    summary = json.loads((results / "summary.json").read_text())
    for task_name, task in TASKS.items():
        singles = [e["val"][task.metric] for e in summary if e["task"] == task_name and e["family"] != "ensemble"]
        best_single = min(singles) if task.mode == "min" else max(singles)
        value = entries[task_name]["val"][task.metric]
        assert (value <= best_single + 1e-6) if task.mode == "min" else (value >= best_single - 1e-6)
    for predictor in (Predictor.from_results(results), Predictor.from_model_dirs({"gender": results / "ensemble_gender"})):
        frame = predictor.predict_array(torch.zeros(3, NUM_PIXELS, dtype=torch.uint8).numpy())
        assert len(frame) == 3


@pytest.fixture(scope="module")
def multitask_results(tmp_path_factory, prepared_data, ray_session):
    results = tmp_path_factory.mktemp("multitask_results")
    return results, run_sweep("smoke", prepared_data, results, only=["multitask/all"])  # smoke: one trial


def test_the_multitask_search_gives_one_summary_row_per_task(multitask_results):
    results, summary = multitask_results
    on_disk = json.loads((results / "summary.json").read_text())
    assert [(e["family"], e["task"]) for e in on_disk] == [("multitask", task) for task in TASK_NAMES]
    for entry in summary:
        assert TASKS[entry.task].metric in entry.val and set(entry.test) == METRIC_NAMES[entry.task]
    assert json.loads((results / "sweep.json").read_text())["combinations"] == [f"multitask_{t}" for t in TASK_NAMES]


def test_one_multitask_trial_answers_every_task_from_one_checkpoint(multitask_results):
    from facetune.predict import Predictor

    results, summary = multitask_results
    assert {entry.checkpoint for entry in summary} == {"multitask_age/model.pt"}
    predictor = Predictor.from_results(results)
    assert set(predictor.model_dirs.values()) == {results / "multitask_age"}
    assert len(predictor.predict_array(torch.zeros(2, NUM_PIXELS, dtype=torch.uint8).numpy())) == 2
