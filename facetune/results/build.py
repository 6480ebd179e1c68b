"""Build the report of a results dir: collect, draw every figure, assemble sections, render."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import torch

from facetune.group_figures import metric_name, summary_lines
from facetune.groups import AGE_BAND_LABELS, ATTRIBUTES, MIN_GROUP_SIZE
from facetune.models import load_model
from facetune.models.pca import load_pca
from facetune.records import CSV_INPUT_SPEC, DEFAULT_INPUT_SPEC, InputSpec
from facetune.results import figures, inspect
from facetune.results.collect import SweepResults, collect_results, trial_columns
from facetune.results.compare import best_families, comparison_table, headline, results_rows
from facetune.results.fairness import fairness_gaps, group_metrics, task_summary
from facetune.results.labels import label_counts
from facetune.results.render import Bullets, Image, Report, Section, Table, Text, write_report
from facetune.results.study import STUDY_FILE, Study, load_study
from facetune.tasks import TASKS

if TYPE_CHECKING:
    from facetune.data.loading import SplitArrays

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
#: The study's reconstruction size; smaller PCAs (smoke sweeps) use all their components.
RECONSTRUCTION_COMPONENTS = 500
FACES_SHOWN = 8


class _FigureMaker:
    """Draws figures into OUT/figures, turning a failure into a visible note instead of a crash."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.skipped: list[str] = []

    def __call__(self, name: str, caption: str, draw: Callable[[Path], Path]) -> Image | Text:
        relative = Path(FIGURES_DIR) / f"{name}.png"
        try:
            draw(self.out_dir / relative)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
            note = f"{caption}: not drawn ({type(err).__name__}: {err})"
            log.warning(note)
            self.skipped.append(note)
            return Text(note)
        return Image(relative, caption)


def _test_faces(results: SweepResults) -> SplitArrays | None:
    """A few test-split faces (in the prepared data's layout) for reconstructions and activation maps."""
    if results.data_dir is None:
        return None
    from facetune.data.loading import load_split

    return load_split(results.data_dir, "test").head(FACES_SHOWN)


def _shown(value: object) -> str:
    return "—" if value is None else str(value)


def _overview(results: SweepResults, study: Study, rows: pd.DataFrame, make: _FigureMaker) -> Section:
    sweep = results.sweep
    finished, asked = len(results.combinations), len(results.requested)
    facts = [f"results: {results.root}"]
    if sweep is not None:
        facts += [f"profile: {_shown(sweep.profile)}; data: {sweep.data}",
                  f"started: {sweep.started}; ended: {_shown(sweep.ended)}"]
    facts.append(f"combinations finished: {finished} of {asked} asked for")
    blocks: list = [Bullets(facts)]
    if results.missing:
        blocks += [Text("Partial sweep. Missing combinations:"),
                   Bullets([f"{name}: {why}" for name, why in results.missing.items()])]
    problems = [f"{c.name}: {p}" for c in results.combinations.values() for p in c.problems]
    if problems or results.warnings:
        blocks += [Text("Problems found while reading the results:"), Bullets(results.warnings + problems)]
    bars = rows.assign(value=[r[f"test_{headline(r['task'])}"] for r in rows.to_dict("records")])
    targets = {task: goal.value for task, goal in study.targets.items()}
    reported = {name: entry["accuracy"] for name, entry in study.reported.items() if "accuracy" in entry}
    blocks.append(make("overview", "Test metric per family and task; dashed: target, dotted: the study",
                       lambda p: figures.overview_figure(bars[["family", "task", "value"]], targets, reported, p)))
    return Section("Overview", blocks)


def _comparison(rows: pd.DataFrame, study: Study) -> Section:
    return Section("Comparison", [
        Text(f"Test-split results of each combination's best trial, next to the study ({study.title}). "
             "★ marks the best family per task by its validation metric (the one predict picks); each task "
             f"ends with the project's target and the best public result on {CSV_INPUT_SPEC.describe()} faces; "
             "`input` is the layout of the faces each model took."),
        Table(comparison_table(rows, study)),
    ])


def _data_section(results: SweepResults, make: _FigureMaker) -> Section:
    predictions = next((c.predictions for c in results.combinations.values() if c.predictions is not None), None)
    counts, source = label_counts(results.data_dir, predictions)
    blocks: list = [Text(source)]
    if not counts.empty:
        blocks.append(make("labels", "Label distributions per split (age in bands)",
                           lambda p: figures.label_distribution_figure(counts, p)))
        wide = counts.pivot_table(index=["attribute", "label"], columns="split", values="count", sort=False).reset_index()
        blocks.append(Table(wide))
    return Section("Data", blocks)


def _task_sections(results: SweepResults, make: _FigureMaker) -> list[Section]:
    sections = []
    for task in TASKS:
        combos = [c for c in results.combinations.values() if c.task == task]
        sections.append(Section(f"Best trials: {task}", [] if combos else [Text(f"No finished {task} combination.")]))
        for combo in combos:
            blocks: list = []
            if combo.history is not None:
                blocks.append(make(f"{combo.name}_curves", f"{combo.name}: training and validation curves",
                                   lambda p, c=combo: figures.curves_figure(c.history, c.task, c.name, p)))
            else:
                blocks.append(Text("No history.csv: curves not drawn."))
            if combo.predictions is None:
                blocks.append(Text("No test_predictions.csv: prediction figures not drawn."))
            elif task == "age":
                blocks.append(make(f"{combo.name}_age", f"{combo.name}: predicted vs true age, MAE per age band",
                                   lambda p, c=combo: figures.age_figure(c.predictions, c.name, p)))
            else:
                blocks.append(make(f"{combo.name}_confusion", f"{combo.name}: confusion matrix (row-normalised)",
                                   lambda p, c=combo: figures.confusion_figure(c.predictions, c.task, c.name, p)))
                blocks.append(make(f"{combo.name}_roc", f"{combo.name}: ROC curves with AUC",
                                   lambda p, c=combo: figures.roc_figure(c.predictions, c.task, c.name, p)))
            sections.append(Section(combo.name, blocks, level=3))
    return sections


def _pca_section(results: SweepResults, faces: SplitArrays | None, make: _FigureMaker) -> Section:
    if results.pca_npz is None:
        return Section("PCA", [Text("No pca/pca.npz in the results: the sweep ran no pca_dnn combination yet.")])

    params = load_pca(results.pca_npz)
    blocks: list = []
    if results.pca_info:
        needed = results.pca_info.get("components_for_variance", {})
        blocks.append(Bullets([f"{params.n_components} components, explaining "
                               f"{float(np.sum(params.explained_variance_ratio)):.1%} of the pixel variance"]
                              + [f"{ratio} of the variance: " + (f"{k} components" if k is not None else "not reached")
                                 for ratio, k in needed.items()]))
    blocks.append(make("pca_variance", "Cumulative explained variance; 90/95/99% marked",
                       lambda p: inspect.pca_variance_figure(params, p)))
    k = min(RECONSTRUCTION_COMPONENTS, params.n_components)
    if faces is not None:
        blocks.append(make("pca_reconstruction", f"Test faces and their reconstructions from {k} components",
                           lambda p: inspect.pca_reconstruction_figure(params, faces.pixels, k, p, faces.spec)))
    else:
        blocks.append(Text("Prepared data not available: reconstructions not drawn."))
    blocks.append(make("pca_components", "The first 60 principal components (eigenfaces)",
                       lambda p: inspect.pca_components_figure(params, p, spec=_pca_spec(params, faces))))
    return Section("PCA", blocks)


def _pca_spec(params, faces: SplitArrays | None) -> InputSpec:
    """The layout PCA components are images of: the data's when it matches their length, else the default."""
    if faces is not None and faces.spec.pixels == params.components.shape[1]:
        return faces.spec
    return DEFAULT_INPUT_SPEC


def _cnn_section(results: SweepResults, faces: SplitArrays | None, make: _FigureMaker) -> Section:
    blocks: list = []
    for task in TASKS:
        combo = results.get("cnn", task)
        if combo is None or not combo.has_model:
            blocks.append(Text(f"cnn_{task}: no saved model, nothing to inspect."))
            continue
        model, _ = load_model(combo.directory)
        blocks.append(make(f"cnn_{task}_filters", f"cnn_{task}: first 16 filters of conv layers 1-3 "
                           "(deeper layers averaged over input channels)",
                           lambda p, m=model: inspect.filters_figure(m, p)))
        if faces is not None:
            from facetune.predict.faces import Faces  # pyarrow (the data loader), only with faces to show

            # The face in the model's own layout (the report's data may be prepared in another).
            face = Faces.from_pixels(faces.pixels[:1], faces.spec).images(model.input_spec)
            blocks.append(make(f"cnn_{task}_activations", f"cnn_{task}: one test face and the first 16 "
                               "output channels of each conv layer",
                               lambda p, m=model, x=face: inspect.activations_figure(m, x, p)))
        else:
            blocks.append(Text(f"cnn_{task}: prepared data not available, activation maps not drawn."))
    return Section("Inside the CNNs", blocks)


def _fairness_section(results: SweepResults, min_group_size: int, make: _FigureMaker) -> list[Section]:
    sections = [Section("Fairness", [Text(
        f"Test metric per group of the faces' true ethnicity, gender and age band (ages {', '.join(AGE_BAND_LABELS)}: "
        "the model card's bands, which replaced this report's decades), each with its 95% bootstrap interval "
        f"[low, high] over the group's test faces. Best and worst are ranked among groups of at least {min_group_size} "
        "test faces; smaller groups are listed as unranked.")])]
    for task in TASKS:
        combos = {c.family: c for c in results.combinations.values() if c.task == task and c.predictions is not None}
        if not combos:
            sections.append(Section(f"Fairness: {task}", [Text(f"No {task} test predictions.")], level=3))
            continue
        per_family = {family: {a: group_metrics(c.predictions, task, a) for a in ATTRIBUTES} for family, c in combos.items()}
        wide = []
        for attribute in ATTRIBUTES:
            frame = None
            for family, groups in per_family.items():
                part = groups[attribute].rename(columns={"value": family, "low": f"{family} low", "high": f"{family} high"})
                frame = part if frame is None else frame.merge(part.drop(columns="n"), on="group")
            wide.append(frame.assign(attribute=attribute))
        figures_columns = [f"{family}{end}" for family in per_family for end in ("", " low", " high")]
        table = pd.concat(wide)[["attribute", "group", "n", *figures_columns]]
        gaps = pd.concat([fairness_gaps(c.predictions, task, min_group_size).assign(family=f) for f, c in combos.items()])
        gaps = gaps[["family", "attribute", "metric", "worst_group", "worst", "worst_low", "worst_high", "best_group", "best",
                     "gap", "unranked"]]
        in_words = [f"{family}: {line}" for family, c in combos.items()
                    for line in summary_lines(task, task_summary(c.predictions, task, min_group_size))]
        sections.append(Section(f"Fairness: {task}", [
            Table(table, f"{task}: test {metric_name(task)} per group and family, with 95% intervals"),
            Table(gaps, f"{task}: worst group (with its 95% interval) and its gap to the best"),
            Bullets(in_words),
            make(f"fairness_{task}", f"{task}: test {metric_name(task)} per group",
                 lambda p, g=per_family, t=task: figures.fairness_figure(g, t, p)),
        ], level=3))
    return sections


def _search_section(results: SweepResults, make: _FigureMaker) -> list[Section]:
    sections = [Section("Search insight", [Text(
        "Validation metric of every trial against each tuned hyperparameter (best trial in red). A best trial "
        "at the edge of a range suggests widening the search space there.")])]
    for combo in results.combinations.values():
        if combo.trials is None:
            sections.append(Section(f"Search: {combo.name}", [Text("No trials.csv.")], level=3))
            continue
        blocks: list = []
        try:
            metric_column, tuned = trial_columns(combo.trials, combo.metric_column)
        except ValueError as err:
            sections.append(Section(f"Search: {combo.name}", [Text(f"trials.csv not usable: {err}")], level=3))
            continue
        scored = combo.trials[combo.trials[metric_column].notna()]
        dropped = len(combo.trials) - len(scored)
        if dropped:
            blocks.append(Text(f"{dropped} of {len(combo.trials)} trials have no {metric_column} (failed or stopped "
                               "before the first report) and are not plotted."))
        if scored.empty or not tuned:
            blocks.append(Text("Nothing to plot: " + ("no scored trial." if scored.empty else "no tuned hyperparameter.")))
        else:
            blocks.append(make(f"{combo.name}_search", f"{combo.name}: {metric_column} vs tuned hyperparameters",
                               lambda p, s=scored, m=metric_column, h=tuned, c=combo:
                               figures.search_figure(s.reset_index(drop=True), m, h, TASKS[c.task].mode, c.name, p)))
        sections.append(Section(f"Search: {combo.name}", blocks, level=3))
    return sections


def build_report(results_dir: str | Path, out_dir: str | Path | None = None, *, study_file: str | Path = STUDY_FILE,
                 min_group_size: int = MIN_GROUP_SIZE) -> dict[str, Path]:
    """Write OUT/report.md, OUT/report.html, OUT/results.csv and OUT/figures/*.png; return their paths.

    OUT defaults to RESULTS_DIR/report. Works on partial sweeps: the report lists what is missing.
    """
    results = collect_results(results_dir)
    out = Path(out_dir) if out_dir is not None else results.root / "report"
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (out / FIGURES_DIR).glob("*.png"):  # a rerun must not leave figures of a previous report
        stale.unlink()
    study = load_study(study_file)
    rows = results_rows(results, study)
    make = _FigureMaker(out)
    faces = _test_faces(results)
    sections = [_overview(results, study, rows, make), _comparison(rows, study), _data_section(results, make)]
    sections += _task_sections(results, make)
    sections.append(_pca_section(results, faces, make))
    sections.append(_cnn_section(results, faces, make))
    sections += _fairness_section(results, min_group_size, make)
    sections += _search_section(results, make)
    if make.skipped:
        sections.append(Section("Figures not drawn", [Bullets(make.skipped)]))
    best = best_families(results)
    title = "facetune sweep report" + (f" — best: {', '.join(f'{t} {f}' for t, f in best.items())}" if best else "")
    paths = write_report(Report(title, sections), out, rows)
    paths["figures"] = out / FIGURES_DIR
    return paths
