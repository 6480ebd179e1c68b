"""Report figures drawn from a sweep's tables (history, predictions, trials, label counts).

Figures are built on matplotlib.figure.Figure (Agg canvas, no pyplot state), so drawing is
thread-safe and needs no display. Each function writes one PNG and returns its path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, confusion_matrix, roc_curve

from facetune.group_figures import lower_is_better, metric_name
from facetune.results.fairness import group_metrics
from facetune.tasks import TASKS

#: Modest resolution keeps the self-contained HTML small (the report embeds every PNG).
DPI = 80
FAMILY_COLORS = {"cnn": "tab:blue", "dnn": "tab:orange", "pca_dnn": "tab:green"}


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Constrained layout fits labels in one draw; bbox_inches="tight" would draw twice.
    figure.savefig(path, dpi=DPI)
    return path


def _prob_columns(predictions: pd.DataFrame, num_classes: int) -> np.ndarray:
    columns = [f"prob_{c}" for c in range(num_classes)]
    absent = [c for c in columns if c not in predictions]
    if absent:
        raise ValueError(f"test_predictions.csv lacks {absent}; a classifier needs prob_0..prob_{num_classes - 1}")
    return predictions[columns].to_numpy(float)


def overview_figure(table: pd.DataFrame, targets: Mapping[str, float], reported: Mapping[str, float], path: Path) -> Path:
    """One panel per task: the test metric of each family, the target and the study's figure as lines.

    `table` has columns family, task, value (the task's headline metric; NaN when missing);
    `targets` / `reported` map task or "family_task" to values.
    """
    tasks = list(TASKS)
    figure = Figure(figsize=(10, 3.2), layout="constrained")
    for i, task in enumerate(tasks):
        ax = figure.add_subplot(1, len(tasks), i + 1)
        rows = table[table["task"] == task]
        families = list(rows["family"])
        values = rows["value"].to_numpy(float)
        ax.bar(families, np.nan_to_num(values), color=[FAMILY_COLORS.get(f, "gray") for f in families])
        for x, (family, value) in enumerate(zip(families, values)):
            label = "missing" if np.isnan(value) else (f"{value:.2f}" if task == "age" else f"{value:.1%}")
            ax.annotate(label, (x, 0 if np.isnan(value) else value), ha="center", va="bottom", fontsize=8)
            study_value = reported.get(f"{family}_{task}")
            if study_value is not None:
                ax.plot([x - 0.4, x + 0.4], [study_value] * 2, color="black", linestyle=":", linewidth=2)
        if task in targets:
            ax.axhline(targets[task], color="tab:red", linestyle="--", linewidth=1, label="target")
        ax.set_title(f"{task}: test {metric_name(task).upper() if task == 'age' else 'accuracy'}")
        ax.set_ylim(0, 1.1 if task != "age" else 1.15 * max(np.nanmax(np.append(values, 0)), targets.get(task, 0), 1))
    figure.axes[0].plot([], [], color="black", linestyle=":", label="study")
    figure.legend(*figure.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    return save(figure, path)


def curves_figure(history: pd.DataFrame, task: str, title: str, path: Path) -> Path:
    """Train/val loss per epoch, and train/val of the task's metric (accuracy or MAE) when logged."""
    metric = TASKS[task].metric
    figure = Figure(figsize=(9, 3), layout="constrained")
    ax_loss = figure.add_subplot(1, 2, 1)
    for column, style in (("train_loss", "-"), ("val_loss", "--")):
        if column in history:
            ax_loss.plot(history["epoch"], history[column], style, label=column.replace("_", " "))
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.legend(fontsize=8)
    ax_metric = figure.add_subplot(1, 2, 2)
    logged = [c for c in (f"train_{metric}", f"val_{metric}") if c in history]
    for column in logged:
        ax_metric.plot(history["epoch"], history[column], "-" if column.startswith("train") else "--",
                       label=column.replace("_", " "))
    ax_metric.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_metric.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}" if logged else f"{metric} not logged")
    if logged:
        ax_metric.legend(fontsize=8)
    return save(figure, path)


def age_figure(predictions: pd.DataFrame, title: str, path: Path) -> Path:
    """Predicted vs true age with the identity line, and the MAE per age band (n per bar)."""
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    ax = figure.add_subplot(1, 2, 1)
    y_true, y_pred = predictions["y_true"].to_numpy(float), predictions["y_pred"].to_numpy(float)
    ax.scatter(y_true, y_pred, s=4, alpha=0.4)
    top = max(y_true.max(), y_pred.max(), 1.0)
    ax.plot([0, top], [0, top], color="black", linewidth=1, label="identity")
    ax.set(xlabel="true age", ylabel="predicted age", title=f"{title}: predicted vs true")
    ax.legend(fontsize=8)
    bands = group_metrics(predictions, "age", "age_band")
    ax_band = figure.add_subplot(1, 2, 2)
    positions = np.arange(len(bands))
    ax_band.bar(positions, bands["value"].fillna(0))
    ax_band.set_xticks(positions, [f"{g}\nn={n}" for g, n in zip(bands["group"], bands["n"])], fontsize=6)
    ax_band.set(xlabel="age band (test faces)", ylabel="MAE (years)", title="MAE per age band")
    return save(figure, path)


def confusion_figure(predictions: pd.DataFrame, task: str, title: str, path: Path) -> Path:
    """Row-normalised confusion matrix (recall on the diagonal) with counts in each cell."""
    names = TASKS[task].class_names
    counts = confusion_matrix(predictions["y_true"], predictions["y_pred"], labels=list(range(len(names))))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(1.2 + 0.9 * len(names), 0.9 + 0.9 * len(names)), layout="constrained")
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rates[i, j]:.0%}\n{counts[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}: confusion")
    figure.colorbar(image, ax=ax, fraction=0.046)
    return save(figure, path)


def roc_figure(predictions: pd.DataFrame, task: str, title: str, path: Path) -> Path:
    """ROC curves with AUC: the positive class (female) for gender, one-vs-rest per class otherwise."""
    names = TASKS[task].class_names
    probs = _prob_columns(predictions, len(names))
    y_true = predictions["y_true"].to_numpy(int)
    classes = [1] if len(names) == 2 else list(range(len(names)))
    figure = Figure(figsize=(4.5, 4), layout="constrained")
    ax = figure.add_subplot(1, 1, 1)
    for c in classes:
        positive = y_true == c
        if positive.all() or not positive.any():
            ax.plot([], [], label=f"{names[c]}: AUC undefined (one class only)")
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, c])
        ax.plot(fpr, tpr, label=f"{names[c]}: AUC {auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    ax.legend(fontsize=7, loc="lower right")
    return save(figure, path)


def label_distribution_figure(counts: pd.DataFrame, path: Path) -> Path:
    """Bars of label counts per split; `counts` has columns split, attribute, label, count."""
    attributes = [a for a in ("age_band", "gender", "ethnicity") if a in set(counts["attribute"])]
    figure = Figure(figsize=(4 * len(attributes), 3.2), layout="constrained")
    for i, attribute in enumerate(attributes):
        ax = figure.add_subplot(1, len(attributes), i + 1)
        table = counts[counts["attribute"] == attribute].pivot_table(
            index="label", columns="split", values="count", aggfunc="sum", sort=False).fillna(0)
        splits = list(table.columns)
        width = 0.8 / max(len(splits), 1)
        for k, split in enumerate(splits):
            ax.bar(np.arange(len(table)) + k * width, table[split], width, label=split)
        ax.set_xticks(np.arange(len(table)) + width * (len(splits) - 1) / 2, table.index, rotation=45, fontsize=7)
        ax.set(title=attribute.replace("_", " "), ylabel="faces")
        ax.legend(fontsize=7)
    return save(figure, path)


def fairness_figure(groups_by_family: Mapping[str, Mapping[str, pd.DataFrame]], task: str, path: Path) -> Path:
    """Per attribute, the task's metric per group, one bar per family. Input: family -> attribute -> groups."""
    attributes = ("ethnicity", "gender", "age_band")
    figure = Figure(figsize=(13, 3.2), layout="constrained")
    families = list(groups_by_family)
    width = 0.8 / max(len(families), 1)
    for i, attribute in enumerate(attributes):
        ax = figure.add_subplot(1, len(attributes), i + 1)
        for k, family in enumerate(families):
            groups = groups_by_family[family][attribute]
            ax.bar(np.arange(len(groups)) + k * width, groups["value"].fillna(0), width, label=family,
                   color=FAMILY_COLORS.get(family, "gray"))
        labels = groups_by_family[families[0]][attribute]["group"] if families else []
        ax.set_xticks(np.arange(len(labels)) + width * (len(families) - 1) / 2, labels, rotation=45, fontsize=7)
        ax.set(title=f"{task} by {attribute.replace('_', ' ')}",
               ylabel="MAE (years)" if lower_is_better(task) else "accuracy")
        if not lower_is_better(task):
            ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    return save(figure, path)


def _numeric(values: pd.Series) -> pd.Series | None:
    """The column as floats if every value is a number (bools and lists stay categorical)."""
    if values.dtype == bool or values.dtype == object and values.map(lambda v: isinstance(v, bool)).any():
        return None
    converted = pd.to_numeric(values, errors="coerce")
    return converted if converted.notna().all() else None


def search_figure(trials: pd.DataFrame, metric_column: str, hyperparameters: Sequence[str], mode: str,
                  title: str, path: Path) -> Path:
    """The validation metric against each tuned hyperparameter, best trial in red.

    Numeric ones are scatter plots (log axis when they span a decade or more);
    categorical ones (choices of lists, booleans, names) are box plots with the trials on top.
    """
    columns = min(len(hyperparameters), 4)
    rows = -(-len(hyperparameters) // columns)
    figure = Figure(figsize=(3.3 * columns, 2.8 * rows), layout="constrained")
    scores = trials[metric_column].to_numpy(float)
    best = int(np.nanargmin(scores) if mode == "min" else np.nanargmax(scores))
    rng = np.random.default_rng(0)
    for i, name in enumerate(hyperparameters):
        ax = figure.add_subplot(rows, columns, i + 1)
        numeric = _numeric(trials[name])
        if numeric is not None and numeric.nunique() > 1:
            ax.scatter(numeric, scores, s=14, alpha=0.7)
            ax.scatter(numeric.iloc[best], scores[best], s=40, color="tab:red", label="best")
            if numeric.min() > 0 and numeric.max() / numeric.min() >= 10:
                ax.set_xscale("log")
        else:
            labels = trials[name].astype(str)
            categories = sorted(labels.unique())
            groups = [scores[(labels == c).to_numpy()] for c in categories]
            ax.boxplot(groups, positions=range(len(categories)), widths=0.5, showfliers=False)
            for x, values in enumerate(groups):
                ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.6, color="tab:blue")
            ax.scatter(categories.index(labels.iloc[best]), scores[best], s=40, color="tab:red", label="best")
            ax.set_xticks(range(len(categories)), categories, rotation=30, fontsize=7)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(metric_column, fontsize=8)
        ax.tick_params(labelsize=7)
    figure.axes[0].legend(fontsize=7)
    figure.suptitle(f"{title}: search ({len(trials)} trials)", fontsize=10)
    return save(figure, path)
