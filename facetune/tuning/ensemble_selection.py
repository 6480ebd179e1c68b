"""Ensembles from a finished sweep: greedy selection over every trial that left a checkpoint.

Ensemble selection (Caruana et al. 2004): start from the best single model on validation and
repeatedly add, with replacement, the candidate that improves the validation metric most; stop
at `max_members` or when nothing improves. Starting from the best member and accepting only
improvements makes the ensemble at least as good as its best member on validation by
construction. The chosen ensemble is evaluated once on test and written into the results
folder as `ensemble_<task>/`, with a summary entry of family "ensemble".
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from facetune.json_files import write_json
from facetune.models import build_model, save_model
from facetune.models.ensemble import from_prediction_space, to_prediction_space, write_ensemble_config
from facetune.models.multitask import TaskView, network_of
from facetune.models.registry import age_distribution_context
from facetune.records import (
    ENSEMBLE_CONFIG_FILE,
    PCA_DIR,
    PCA_INFO_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    InputSpec,
    SummaryEntry,
    SweepRecord,
    summary_from_json,
    summary_to_json,
)
from facetune.tasks import MULTITASK, TASKS, Task
from facetune.training.loop import predict_outputs
from facetune.tuning.trainable import pixels_to_device

ENSEMBLE_FAMILY = "ensemble"
STATE_FILE = "training_state.pt"


@dataclass
class Candidate:
    """One trial's best weights, as a model for one task, with its outputs in prediction space."""

    name: str  # experiment/trial
    family: str
    task: str  # the task this candidate answers (a multitask trial gives one candidate per task)
    config: dict
    module: torch.nn.Module
    val: np.ndarray
    test: np.ndarray


def ensemble_metrics(task: Task, outputs: Sequence[np.ndarray], counts: Sequence[int], y: np.ndarray) -> dict[str, float]:
    """The task's metrics of the count-weighted mean of members' prediction-space outputs."""

    mean = sum(c * o for c, o in zip(counts, outputs)) / float(sum(counts))
    return {k: float(v) for k, v in task.metrics(y, from_prediction_space(torch.from_numpy(mean), task).numpy()).items()}


def combined_metric(task: Task, outputs: Sequence[np.ndarray], counts: Sequence[int], y: np.ndarray) -> float:
    return ensemble_metrics(task, outputs, counts, y)[task.metric]


def greedy_selection(task: Task, val_outputs: Sequence[np.ndarray], y_val: np.ndarray, max_members: int) -> tuple[list[int], float]:
    """(member indices with repeats, ensemble val metric): greedy forward selection with replacement.

    The first index is the best single candidate."""
    if not val_outputs:
        raise ValueError(f"{task.name}: no candidate models to ensemble")
    better = (lambda a, b: a < b) if task.mode == "min" else (lambda a, b: a > b)
    singles = [combined_metric(task, [o], [1], y_val) for o in val_outputs]
    best_single = int(np.argmin(singles) if task.mode == "min" else np.argmax(singles))
    chosen, score = [best_single], singles[best_single]
    while len(chosen) < max_members:
        counts = Counter(chosen)
        trial_scores = []
        for index in range(len(val_outputs)):
            trial = counts + Counter({index: 1})
            members = sorted(trial)
            trial_scores.append(combined_metric(task, [val_outputs[i] for i in members], [trial[i] for i in members], y_val))
        pick = int(np.argmin(trial_scores) if task.mode == "min" else np.argmax(trial_scores))
        if not better(trial_scores[pick], score):
            break
        chosen.append(pick)
        score = trial_scores[pick]
    return chosen, score


def _latest_checkpoint(trial_dir: Path) -> Path | None:
    checkpoints = sorted(trial_dir.glob(f"checkpoint_*/{STATE_FILE}"))
    return checkpoints[-1] if checkpoints else None


def trial_candidates(tune_dir: Path, pca_components: int | None, val_x: torch.Tensor, test_x: torch.Tensor,
                     log: Callable[[str], None] = print) -> list[Candidate]:
    """Every trial under Tune's storage with a checkpoint, rebuilt with its best weights."""

    candidates: list[Candidate] = []
    for params in sorted(tune_dir.glob("*/*/params.json")):
        trial_dir = params.parent
        state_path = _latest_checkpoint(trial_dir)
        if state_path is None:
            continue
        config = json.loads(params.read_text())
        family, task_name = config["family"], config["task"]
        # Buffers come from the weights; the faces' layout from the images the candidates are judged on.
        context: dict[str, Any] = {"target_mean": 0.0, "target_std": 1.0,
                                   "input_spec": InputSpec(size=int(val_x.shape[-1]), channels=int(val_x.shape[1]))}
        context |= age_distribution_context((config.get("train") or {}).get("loss")) if task_name in ("age", MULTITASK) else {}
        if pca_components:
            context["n_components"] = pca_components
        model = build_model(family, config["arch"], task_name, context)
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["best_state"])
        model.eval()
        tta = bool((config.get("train") or {}).get("tta_flip", False))
        for name in (TASKS if task_name == MULTITASK else [task_name]):
            module = TaskView(model, name) if task_name == MULTITASK else model
            val = to_prediction_space(torch.from_numpy(predict_outputs(module, val_x, tta_flip=tta)), TASKS[name]).numpy()
            test = to_prediction_space(torch.from_numpy(predict_outputs(module, test_x, tta_flip=tta)), TASKS[name]).numpy()
            candidates.append(Candidate(f"{trial_dir.parent.name}/{trial_dir.name}", family, name, config, module, val, test))
    log(f"[facetune] ensemble: {len(candidates)} candidate models from {tune_dir}")
    return candidates


def build_ensembles(results: str | Path, max_members: int = 5, tasks: Sequence[str] = tuple(TASKS),
                    log: Callable[[str], None] = print) -> list[SummaryEntry]:
    """Select, evaluate and write one ensemble per task into `results`; returns their summary entries."""
    from facetune.data.loading import load_split

    root = Path(results)
    sweep_path = root / SWEEP_FILE
    sweep = SweepRecord.from_dict(json.loads(sweep_path.read_text()), str(sweep_path))
    prepared = Path(sweep.data)
    tune_dir = Path(sweep.storage)
    pca_file = root / PCA_DIR / PCA_INFO_FILE
    pca_components = json.loads(pca_file.read_text()).get("n_components") if pca_file.is_file() else None
    val, test = load_split(prepared, "val"), load_split(prepared, "test")
    candidates = trial_candidates(tune_dir, pca_components, pixels_to_device(val.pixels, "cpu", val.spec),
                                  pixels_to_device(test.pixels, "cpu", test.spec), log)
    summary_path = root / SUMMARY_FILE
    summary = summary_from_json(json.loads(summary_path.read_text()), str(summary_path)) if summary_path.is_file() else []
    entries = []
    for task_name in tasks:
        task = TASKS[task_name]
        pool = [c for c in candidates if c.task == task_name]
        if not pool:
            log(f"[facetune] ensemble {task_name}: no trial with a checkpoint; skipped")
            continue
        chosen, val_score = greedy_selection(task, [c.val for c in pool], np.asarray(val.labels(task_name)), max_members)
        counts = Counter(chosen)
        members = sorted(counts)
        out = root / f"{ENSEMBLE_FAMILY}_{task_name}"
        member_rows = []
        for k, index in enumerate(members):
            candidate = pool[index]
            member_dir = out / "members" / str(k)
            network = network_of(candidate.module)
            save_model(network, member_dir, family=candidate.family, task=candidate.config["task"], arch=candidate.config["arch"])
            member_rows.append({"dir": f"members/{k}", "weight": counts[index] / len(chosen), "trial": candidate.name,
                                "family": candidate.family})
        weights = [counts[i] for i in members]
        test_metrics = ensemble_metrics(task, [pool[i].test for i in members], weights, np.asarray(test.labels(task_name)))
        val_metrics = ensemble_metrics(task, [pool[i].val for i in members], weights, np.asarray(val.labels(task_name)))
        best_single = pool[chosen[0]]
        entry = SummaryEntry(
            family=ENSEMBLE_FAMILY, task=task_name, val=val_metrics, test=test_metrics,
            members=member_rows, num_candidates=len(pool), best_single_trial=best_single.name,
            checkpoint=f"{out.name}/{ENSEMBLE_CONFIG_FILE}",
            num_parameters=int(sum(sum(p.numel() for p in pool[i].module.parameters()) for i in members)),
        )
        write_ensemble_config(out, task_name, member_rows, {"val": val_metrics, "test": test_metrics})
        log(f"[facetune] ensemble {task_name}: {len(members)} distinct members of {len(pool)} candidates, "
            f"val {task.metric} {val_score:.4f}, test {task.metric} {test_metrics[task.metric]:.4f}")
        summary = [e for e in summary if (e.family, e.task) != (ENSEMBLE_FAMILY, task_name)] + [entry]
        entries.append(entry)
    write_json(summary_path, summary_to_json(summary))
    return entries

