"""facetune.results: reading a results dir and writing report.md / report.html / results.csv."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetune.cli import main as cli_main
from facetune.results import build_report, collect_results, load_study
from facetune.results.collect import trial_columns
from facetune.results.fairness import fairness_gaps
from facetune.records import PREPARED_MANIFEST, split_combination_name
from facetune.tasks import TASKS
from results_fixture import ALL_COMBINATIONS, build_results_dir

PARTIAL_DONE = ("cnn_gender", "pca_dnn_age")
PARTIAL_STARTED = ("dnn_age",)
MIN_GROUP = 5


@pytest.fixture(scope="module")
def full(tmp_path_factory, prepared_data) -> tuple[Path, dict[str, Path]]:
    results = build_results_dir(tmp_path_factory.mktemp("results") / "full", prepared_data)
    return results, build_report(results, results.parent / "report", min_group_size=MIN_GROUP)


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Two finished combinations, one started, six never run; no prepared data beside it."""
    omitted = tuple(n for n in ALL_COMBINATIONS if n not in PARTIAL_DONE + PARTIAL_STARTED)
    results = build_results_dir(tmp_path_factory.mktemp("results") / "partial", None, omit=omitted,
                                started=PARTIAL_STARTED)
    return results, build_report(results, results.parent / "report", min_group_size=MIN_GROUP)


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def first_table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in `text` as one {column: cell} dict per row."""
    lines = [line for line in text.split("\n\n| ", 1)[1].split("\n\n", 1)[0].splitlines()]
    lines[0] = "| " + lines[0]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split(" | ")]

    header = cells(lines[0])
    return [dict(zip(header, cells(line))) for line in lines[2:]]


def comparison_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The Comparison table as {combination (without the best mark): {column: cell}}."""
    return {row["combination"].replace(" ★ best", ""): row for row in first_table(section(markdown, "Comparison"))}


def test_comparison_table_shows_each_combinations_test_metric(full):
    results, paths = full
    rows = comparison_rows(paths["md"].read_text())
    for name in ALL_COMBINATIONS:
        task = split_combination_name(name)[1]
        value = json.loads((results / name / "test_metrics.json").read_text())[TASKS[task].metric]
        expected = f"MAE {value:.2f}" if task == "age" else f"{value:.2%}"
        assert rows[name]["test"] == expected, name


def test_comparison_table_marks_the_best_family_per_task_by_validation(full):
    results, paths = full
    markdown = paths["md"].read_text()
    summary = json.loads((results / "summary.json").read_text())
    for task, spec in TASKS.items():
        scores = {e["family"]: e["val"][spec.metric] for e in summary if e["task"] == task}
        top = (min if spec.mode == "min" else max)(scores.values())
        best = next(f for f, v in scores.items() if v == top)  # ties go to the first family
        marked = re.findall(rf"\| (\w+)_{task} ★ best \|", markdown)
        assert marked == [best], task


def test_comparison_table_shows_study_targets_and_public_reference(full):
    rows = comparison_rows(full[1]["md"].read_text())
    assert rows["cnn_gender"]["study"] == "88.56% acc., ROC AUC 0.96"
    assert rows["cnn_ethnicity"]["study"] == "76.82% acc."
    assert rows["dnn_gender"]["study"] == "near 50% acc."
    assert rows["gender: target"]["test"] == ">= 94.00%"
    assert rows["ethnicity: target"]["test"] == ">= 85.00%"
    assert rows["age: target"]["test"] == "<= MAE 5.00"
    assert rows["gender: best public 48x48 result"]["test"] == "89.00%"
    assert rows["ethnicity: best public 48x48 result"]["test"] == "76.50%"
    assert rows["age: best public 48x48 result"]["test"] == "MAE 6.70"


def test_comparison_table_lists_parameters_and_tuned_hyperparameters(full):
    results, paths = full
    rows = comparison_rows(paths["md"].read_text())
    config = json.loads((results / "cnn_gender" / "model_config.json").read_text())
    best = json.loads((results / "cnn_gender" / "best_config.json").read_text())
    assert rows["cnn_gender"]["params"] == f"{config['num_parameters']:,}"
    assert f"train.lr={best['train']['lr']:.3g}" in rows["cnn_gender"]["best hyperparameters"]
    assert "optimizer" not in rows["cnn_gender"]["best hyperparameters"]  # fixed, not tuned


def test_results_csv_has_one_row_per_combination_with_its_numbers(full):
    results, paths = full
    frame = pd.read_csv(paths["csv"]).set_index("combination")
    assert sorted(frame.index) == sorted(ALL_COMBINATIONS)
    summary = {f"{e['family']}_{e['task']}": e for e in json.loads((results / "summary.json").read_text())}
    for name, entry in summary.items():
        for metric, value in entry["test"].items():
            assert frame.loc[name, f"test_{metric}"] == pytest.approx(value, nan_ok=True), (name, metric)
        assert frame.loc[name, "num_parameters"] == entry["num_parameters"]
        assert frame.loc[name, "train_seconds"] == pytest.approx(entry["train_seconds"])
    assert (frame["status"] == "finished").all()
    assert frame["best_family_for_task"].sum() == 3


def test_full_report_draws_every_figure_of_the_issue(full):
    figures = {p.stem for p in full[1]["figures"].glob("*.png")}
    expected = {"overview", "labels", "pca_variance", "pca_reconstruction", "pca_components"}
    expected |= {f"{n}_{kind}" for n in ALL_COMBINATIONS for kind in ("curves", "search")}
    expected |= {f"{f}_age_age" for f in ("cnn", "dnn", "pca_dnn")}
    expected |= {f"{f}_{t}_{kind}" for f in ("cnn", "dnn", "pca_dnn") for t in ("gender", "ethnicity")
                 for kind in ("confusion", "roc")}
    expected |= {f"cnn_{t}_{kind}" for t in TASKS for kind in ("filters", "activations")}
    expected |= {f"fairness_{t}" for t in TASKS}
    assert figures == expected
    assert "Figures not drawn" not in full[1]["md"].read_text()


@pytest.mark.parametrize("which", ["full", "partial"])
def test_every_figure_file_is_referenced_in_markdown_and_embedded_in_html(which, request):
    paths = request.getfixturevalue(which)[1]
    files = sorted(p.relative_to(paths["md"].parent).as_posix() for p in paths["figures"].glob("*.png"))
    markdown, page = paths["md"].read_text(), paths["html"].read_text()
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)) == files
    embedded = re.findall(r"<img src='data:image/png;base64,([^']+)'[^>]*data-file='([^']+)'", page)
    assert sorted(name for _, name in embedded) == files
    for data, name in embedded:
        assert base64.b64decode(data) == (paths["md"].parent / name).read_bytes()


def test_html_is_self_contained_and_under_15_mb(full):
    page = full[1]["html"].read_text()
    assert len(page.encode()) < 15 * 2**20
    assert not re.search(r"<img src='(?!data:)", page)


def test_data_section_reads_label_counts_from_the_manifest(full, prepared_data):
    markdown = full[1]["md"].read_text()
    assert f"Label counts from {prepared_data / PREPARED_MANIFEST}" in markdown
    manifest = json.loads((prepared_data / PREPARED_MANIFEST).read_text())
    rows = first_table(section(markdown, "Data"))
    total = sum(int(float(row["train"])) for row in rows if row["attribute"] == "gender")
    assert total == manifest["splits"]["train"]["rows"]


def test_partial_report_says_what_is_missing(partial):
    results, paths = partial
    markdown = paths["md"].read_text()
    assert "combinations finished: 2 of 9 asked for" in markdown
    assert "- dnn_age: started but not finished (directory present, no summary.json entry)" in markdown
    assert "- cnn_age: not run yet (no directory, no summary.json entry)" in markdown
    rows = comparison_rows(markdown)
    assert rows["dnn_age"]["test"].startswith("missing: started but not finished")
    frame = pd.read_csv(paths["csv"]).set_index("combination")
    assert sorted(frame.index) == sorted(ALL_COMBINATIONS)
    assert sorted(frame.index[frame["status"] == "finished"]) == sorted(PARTIAL_DONE)
    assert frame.loc["dnn_age", "missing_reason"].startswith("started but not finished")


def test_partial_report_without_prepared_data_falls_back_and_says_so(partial):
    results, paths = partial
    markdown = paths["md"].read_text()
    assert "test-split label counts from test_predictions.csv only" in markdown
    assert "Prepared data not available: reconstructions not drawn." in markdown
    assert "cnn_gender: prepared data not available, activation maps not drawn." in markdown
    figures = {p.stem for p in paths["figures"].glob("*.png")}
    assert "cnn_gender_filters" in figures and "cnn_age_filters" not in figures
    assert not any(name.startswith("dnn_age") for name in figures)


def test_fairness_gap_ranks_only_groups_big_enough():
    # Ethnicity 0: 4 of 4 right; 1: 2 of 4 right; 2: a single face, wrong (too small to rank).
    predictions = pd.DataFrame({
        "age": [20] * 9, "gender": [0] * 9, "ethnicity": [0, 0, 0, 0, 1, 1, 1, 1, 2],
        "y_true": [1] * 9, "y_pred": [1, 1, 1, 1, 1, 1, 0, 0, 0],
    })
    gaps = fairness_gaps(predictions, "gender", min_group_size=2).set_index("attribute")
    row = gaps.loc["ethnicity"]
    assert (row["best_group"], row["worst_group"]) == ("White", "Black")
    assert row["gap"] == pytest.approx(0.5)
    assert row["unranked"] == "Asian (n=1)"


def test_trial_columns_separate_metric_from_tuned_hyperparameters():
    trials = pd.DataFrame(columns=["trial_id", "train.lr", "arch.dense", "val_accuracy", "epochs", "status"])
    assert trial_columns(trials, "val_accuracy") == ("val_accuracy", ["train.lr", "arch.dense"])
    with pytest.raises(ValueError, match="val_mae"):
        trial_columns(trials, "val_mae")


def test_collect_refuses_a_directory_that_is_not_a_results_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a results directory"):
        collect_results(tmp_path)


def test_study_yaml_holds_the_studys_figures_and_targets():
    study = load_study()
    assert study.reported["cnn_gender"]["accuracy"] == pytest.approx(0.8856)
    assert study.reported["cnn_gender"]["roc_auc"] == pytest.approx(0.96)
    assert study.targets["age"].met_by(4.9) and not study.targets["age"].met_by(5.1)
    assert study.targets["gender"].met_by(0.95) and not study.targets["gender"].met_by(0.93)


def test_report_command_writes_the_report_and_fails_clearly_on_a_wrong_dir(partial, tmp_path, capsys):
    assert cli_main(["report", str(partial[0]), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "results.csv").is_file()
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not a results directory" in err and err.count("\n") == 1
