"""A small but realistic results directory (docs/design.md, "Results directory") for report tests.

Models are real (tiny, untrained, saved with facetune.models.save_model), the PCA is really
fitted, and predictions/metrics come from running those models on faces, so every reader and
figure of facetune.results runs on the same kinds of objects a sweep writes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facetune.models import build_model, make_context, save_model
from facetune.models.pca import fit_pca, save_pca, summary
from facetune.results.collect import STUDY_FAMILIES
from facetune.records import (
    IMAGE_SIZE,
    PCA_DIR,
    PCA_INFO_FILE,
    PCA_PARAMS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    SummaryEntry,
    SweepRecord,
    combination_name,
    split_combination_name,
    summary_to_json,
)
from facetune.tasks import TASKS
from synthetic import make_faces

FAMILIES = STUDY_FAMILIES
ALL_COMBINATIONS = [combination_name(family, task) for task in TASKS for family in FAMILIES]
PCA_COMPONENTS = 16
ARCH = {
    "cnn": {"conv_channels": [4, 8, 8], "dense": [8]},
    "dnn": {"dense": [16, 8]},
    "pca_dnn": {"dense": [16, 8]},
}
#: Tuned keys per family, with the values the fixture's trials sample from.
SPACE = {
    "train.lr": [3e-4, 1e-3, 3e-3, 5e-4, 2e-3, 8e-4],
    "train.batch_size": [64, 128, 256, 64, 128, 256],
    "arch.dense": ["[16, 8]", "[32]", "[16, 8]", "[32]", "[16, 8]", "[32]"],
}


def _faces(data_dir: Path | None, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, test) faces: from the prepared data when given (so predictions match it), else synthetic."""
    if data_dir is not None:
        from facetune.data.loading import load_split

        def as_dict(split: str) -> dict[str, np.ndarray]:
            arrays = load_split(data_dir, split)
            return {"pixels": arrays.pixels, "age": arrays.age, "gender": arrays.gender,
                    "ethnicity": arrays.ethnicity, "source": arrays.source}

        return as_dict("train"), as_dict("test")
    faces = make_faces(220, seed=seed)
    faces["source"] = np.array([f"face_{i:04d}.jpg" for i in range(220)], dtype=object)
    return {k: v[:140] for k, v in faces.items()}, {k: v[140:] for k, v in faces.items()}


def _history(task: str, epochs: int, rng: np.random.Generator) -> pd.DataFrame:
    metric = TASKS[task].metric
    epoch = np.arange(1, epochs + 1)
    train_loss = 1.2 / epoch + rng.uniform(0, 0.05, epochs)
    frame = {"epoch": epoch, "train_loss": train_loss, "val_loss": train_loss + 0.1}
    if metric == "mae":
        frame |= {"train_mae": 18 / np.sqrt(epoch), "val_mae": 19 / np.sqrt(epoch)}
    else:
        frame |= {"train_accuracy": 1 - 0.5 / epoch, "val_accuracy": 0.95 - 0.5 / epoch}
    return pd.DataFrame(frame)


def _trials(family: str, task: str, rng: np.random.Generator) -> pd.DataFrame:
    spec = TASKS[task]
    scores = rng.uniform(6, 15, 6) if spec.mode == "min" else rng.uniform(0.4, 0.9, 6)
    frame = pd.DataFrame({"trial_id": [f"t{i:02d}" for i in range(6)], **SPACE})
    if family == "dnn":
        frame["arch.batch_norm"] = [True, False, True, False, True, False]
    frame[f"val_{spec.metric}"] = scores
    frame["epochs"] = [4, 2, 4, 3, 4, 1]
    frame["status"] = ["finished"] * 5 + ["error"]
    frame.loc[5, f"val_{spec.metric}"] = np.nan  # a failed trial reports no metric
    return frame


def _write_combination(root: Path, family: str, task: str, train: dict, test: dict, pca, seed: int) -> SummaryEntry:
    spec = TASKS[task]
    name = combination_name(family, task)
    directory = root / name
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    context = make_context(task, train["age"] if spec.kind == "regression" else None, pca if family == "pca_dnn" else None)
    model = build_model(family, ARCH[family], task, context).eval()
    save_model(model, directory, family=family, task=task, arch=ARCH[family])

    images = torch.from_numpy(test["pixels"].reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32) / 255.0)
    with torch.no_grad():
        outputs = model(images)
    y_true = test[task]
    predicted = spec.predict(outputs)
    predictions = pd.DataFrame({key: test[key] for key in ("source", "age", "gender", "ethnicity")})
    predictions["y_true"], predictions["y_pred"] = y_true, predicted["pred"]
    for c in range(spec.num_outputs if spec.kind == "classification" else 0):
        predictions[f"prob_{c}"] = predicted["probs"][:, c]
    predictions.to_csv(directory / "test_predictions.csv", index=False)
    test_metrics = spec.metrics(y_true, outputs)
    (directory / "test_metrics.json").write_text(json.dumps(test_metrics))

    trials = _trials(family, task, rng)
    trials.to_csv(directory / "trials.csv", index=False)
    scores = trials[f"val_{spec.metric}"]
    best_row = trials.loc[scores.idxmin() if spec.mode == "min" else scores.idxmax()]
    best_config = {"family": family, "task": task, "arch": dict(ARCH[family], dense=json.loads(best_row["arch.dense"])),
                   "train": {"lr": float(best_row["train.lr"]), "batch_size": int(best_row["train.batch_size"]),
                             "optimizer": "adamw"}}
    if family == "dnn":
        best_config["arch"]["batch_norm"] = bool(best_row["arch.batch_norm"])
    (directory / "best_config.json").write_text(json.dumps(best_config))
    history = _history(task, int(best_row["epochs"]), rng)
    history.to_csv(directory / "history.csv", index=False)
    return SummaryEntry(
        family=family, task=task, best_config=best_config,
        val={spec.metric: float(best_row[f"val_{spec.metric}"])}, test=test_metrics,
        epochs=int(best_row["epochs"]), best_epoch=max(1, int(best_row["epochs"]) - 1), num_trials=len(trials),
        train_seconds=float(rng.uniform(20, 200)),
        checkpoint=f"{name}/model.pt", num_parameters=sum(p.numel() for p in model.parameters()),
    )


def build_results_dir(root: Path, data_dir: Path | None = None, *, omit: tuple[str, ...] = (),
                      started: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write a results dir under `root` with every combination except `omit`.

    Combinations in `started` get their directory (as a running sweep leaves it) but no summary entry.
    """
    root.mkdir(parents=True, exist_ok=True)
    train, test = _faces(data_dir, seed)
    pca = fit_pca(train["pixels"], n_components=PCA_COMPONENTS, seed=seed)
    save_pca(pca, root / PCA_DIR / PCA_PARAMS_FILE)
    (root / PCA_DIR / PCA_INFO_FILE).write_text(json.dumps(summary(pca)))
    entries = []
    for index, name in enumerate(ALL_COMBINATIONS):
        family, task = split_combination_name(name)
        if name in started:
            (root / name).mkdir()
        elif name not in omit:
            entries.append(_write_combination(root, family, task, train, test, pca, seed + index))
    write_sweep_files(root, entries, ALL_COMBINATIONS, data_dir or root / "no-prepared-data")
    return root


def write_sweep_files(root: Path, entries: list[SummaryEntry], combinations: list[str], data_dir: Path) -> None:
    """summary.json and sweep.json as the sweep writes them (facetune.records records)."""
    (root / SUMMARY_FILE).write_text(json.dumps(summary_to_json(entries), indent=1))
    sweep = SweepRecord(profile="fixture", data=str(data_dir), storage=str(root / "tune"),
                        combinations=list(combinations), started="2025-01-01T10:00:00")
    (root / SWEEP_FILE).write_text(json.dumps(sweep.to_dict()))
