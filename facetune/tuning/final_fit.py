"""Final fit: each task's chosen configuration retrained on train+val, then tested once.

The sweep chose a configuration and its epoch count on val. A final fit spends val on training as
well (12% more faces) for exactly that many epochs, so nothing is left to check it on but test.
Its models are written into the results directory as family `final_fit` (the trained family is
in `base_family`), beside the sweep's own models: `report` shows both and says which saw val,
and `predict --models RESULTS --family final_fit` uses them. They are never chosen by validation
(their val figures are the sweep trial's, from before val was trained on).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from facetune.json_files import write_json
from facetune.models import build_model, save_model
from facetune.models.multitask import TaskView
from facetune.models.pca import load_pca
from facetune.models.registry import is_multitask_family
from facetune.records import (
    BEST_CONFIG_FILE,
    HISTORY_FILE,
    MODEL_WEIGHTS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    TEST_METRICS_FILE,
    TEST_PREDICTIONS_FILE,
    SummaryEntry,
    SweepRecord,
    summary_to_json,
)
from facetune.tasks import MULTITASK, TASKS
from facetune.training.loop import TrainConfig, evaluate, fit, seed_everything
from facetune.tuning.best_trial import write_predictions
from facetune.tuning.ensemble_selection import ENSEMBLE_FAMILY
from facetune.tuning.trainable import SweepData, model_context, pixels_to_device, trial_labels

FINAL_FIT_FAMILY = "final_fit"
#: What a final-fit entry's `trained_on` says (the sweep's own entries were trained on train only).
TRAINED_ON = "train+val"


def final_fit(results: str | os.PathLike[str], tasks: Sequence[str] = tuple(TASKS),
              log: Callable[[str], None] = print) -> list[SummaryEntry]:
    """Retrain the validation-chosen entry of each task in `tasks` on train+val; returns the new summary entries."""
    import torch

    from facetune.data.loading import load_split
    from facetune.predict.choice import choose_best, read_summary

    root = Path(results)
    summary = read_summary(root)
    sweep = SweepRecord.from_dict(json.loads((root / SWEEP_FILE).read_text()), str(root / SWEEP_FILE))
    sweep_entries = [e for e in summary if e.get("family") not in (ENSEMBLE_FAMILY, FINAL_FIT_FAMILY)]
    chosen = {task: entry for task, entry in choose_best(sweep_entries).items() if task in tasks}

    prepared = Path(sweep.data)
    train, val, test = (load_split(prepared, name) for name in ("train", "val", "test"))
    pooled_labels = {name: np.concatenate([train.labels(name), val.labels(name)]) for name in TASKS}
    pooled_x = pixels_to_device(np.concatenate([train.pixels, val.pixels]), "cpu", train.spec)
    ages = pooled_labels["age"]
    # Only what model_context reads: the ages that set the age scaling (and the PCA, below).
    data = SweepData(train_pixels=np.empty((0, 0), np.uint8), train_labels={"age": ages},
                     val_pixels=np.empty((0, 0), np.uint8), val_labels={}, spec=train.spec)
    test_x = pixels_to_device(test.pixels, "cpu", test.spec)

    trained: dict[str, tuple[torch.nn.Module, float]] = {}  # one training per distinct trial (a multitask one serves 3 tasks)
    entries = []
    for task_name, entry in chosen.items():
        family, config = entry["family"], entry["best_config"]
        model_task = MULTITASK if is_multitask_family(family) else task_name
        if entry["trial_id"] not in trained:
            cfg = TrainConfig.from_dict({**config["train"], "epochs": int(entry["best_epoch"])})
            if "pca_dnn" in (family, config["arch"].get("trunk")):
                data.pca = load_pca(root / "pca" / "pca.npz")  # the sweep's PCA, fitted on train
            seed_everything(cfg.seed)
            model = build_model(family, config["arch"], model_task, model_context(model_task, family, data, cfg.loss))
            log(f"[facetune] final fit {family}/{model_task}: {cfg.epochs} epochs on {len(pooled_x):,} train+val faces")
            result = fit(model, model_task, pooled_x, trial_labels(pooled_labels, model_task, "cpu"), None, None, cfg)
            trained[entry["trial_id"]] = (model.eval(), result)
        model, result = trained[entry["trial_id"]]
        seconds = result.train_seconds
        out = root / f"{FINAL_FIT_FAMILY}_{task_name}"
        save_model(model, out, family=family, task=model_task, arch=config["arch"])
        task = TASKS[task_name]
        module = TaskView(model, task_name) if model_task == MULTITASK else model
        started = time.perf_counter()
        test_metrics, outputs = evaluate(module, task, test_x, torch.tensor(test.labels(task_name), dtype=torch.int64),
                                   tta_flip=bool(config["train"].get("tta_flip", False)))
        # The combination files the report reads (no trials.csv: nothing was searched here).
        write_json(out / BEST_CONFIG_FILE, config)
        write_json(out / TEST_METRICS_FILE, {k: float(v) for k, v in test_metrics.items()})
        write_predictions(out / TEST_PREDICTIONS_FILE, task, test, outputs)
        pd.DataFrame(result.history).to_csv(out / HISTORY_FILE, index=False)
        final = SummaryEntry(
            family=FINAL_FIT_FAMILY, base_family=family, task=task_name, trained_on=TRAINED_ON,
            best_config=config, val=entry["val"], test={k: float(v) for k, v in test_metrics.items()},
            epochs=int(entry["best_epoch"]), best_epoch=int(entry["best_epoch"]), train_seconds=seconds,
            test_seconds=time.perf_counter() - started, checkpoint=f"{out.name}/{MODEL_WEIGHTS_FILE}",
            num_parameters=int(sum(p.numel() for p in model.parameters())), trial_id=entry["trial_id"],
        )
        log(f"[facetune] final fit {task_name}: test {task.metric} {final.test[task.metric]:.4f} "
            f"(the sweep's model, trained on train only: {entry['test'][task.metric]:.4f})")
        entries.append(final)
    kept = [SummaryEntry.from_dict(e) for e in summary if not (e["family"] == FINAL_FIT_FAMILY and e["task"] in chosen)]
    (root / SUMMARY_FILE).write_text(json.dumps(summary_to_json(kept + entries), indent=2) + "\n")
    return entries
