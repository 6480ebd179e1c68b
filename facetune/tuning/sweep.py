"""The sweep: every (family, task) combination searched with Ray Tune, best trials exported.

One Tune experiment per combination (each has its own metric and scheduler rungs), run one
after another; within a combination, trials run in parallel on whatever the cluster offers.
The train/val data is put in the object store once and shared by every trial.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from facetune.ray_session import ray_session
from facetune.schema import (
    MULTITASK,
    PCA_DIR,
    PCA_INFO_FILE,
    PCA_PARAMS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    TASK_NAMES,
    TUNE_DIR,
    SummaryEntry,
    SweepRecord,
    combination_name,
    is_any_prepared_dir,
    is_prepared_dir,
    require_prepared_dir,
    summary_from_json,
    summary_to_json,
)
from facetune.settings import require_data_path
from facetune.storage import ResultsStore
from facetune.tuning.export import MULTITASK_METRIC, MULTITASK_MODE, export_best, validation_metric
from facetune.tuning.profiles import combinations as profile_combinations
from facetune.tuning.profiles import check_combinations, load_profile, per_family, resolve_profile
from facetune.tuning.space import combination_config, param_space
from facetune.tuning.trainable import SweepData, run_trial

#: The folder the sweep prepares a raw source into, inside RESULTS.
PREPARED_DIR = "data"


class SweepExistsError(RuntimeError):
    """The results location already holds a sweep and --resume was not given."""


def run_sweep(
    profile: str | dict[str, Any],
    data: str | os.PathLike[str] | None,
    results: str | os.PathLike[str],
    *,
    resume: bool = False,
    storage: str | None = None,
    only: list[str] | None = None,
    use_gpu: str = "auto",
    address: str | None = None,
    verbose: bool = False,
) -> list[SummaryEntry]:
    """Run (or with `resume`, continue) a sweep; returns the summary entries (one per combination).

    `data` is a prepared Parquet folder, or a raw source (Kaggle CSV / UTKFace folder) that is
    prepared into RESULTS/data first. `storage` is Tune's experiment storage (default
    RESULTS/tune). Ray comes from facetune.ray_session: the one already initialised, the cluster
    at `address` or $RAY_ADDRESS, else a private local instance shut down at the end.
    The console gets a line per finished trial (facetune.tuning.console); `verbose` adds Tune's
    own trial tables.
    """
    import ray

    profile = load_profile(profile) if isinstance(profile, str) else resolve_profile(profile, "profile", "profile")
    pairs = profile_combinations(profile, only)
    check_combinations(profile, pairs)  # a config error fails here, before Ray starts
    store = ResultsStore(results)
    summary = summary_from_json(store.read_json(SUMMARY_FILE, default=[]) or [])
    if summary and not resume:
        raise SweepExistsError(f"{results} already holds a sweep ({len(summary)} combinations done); "
                               "pass --resume to continue it or choose another --results")
    storage = storage or _default_storage(store)
    require_data_path(data)  # fail with one line before starting anything
    # Save Tune's experiment state often, so a killed driver loses little (default: adaptive, >= 10 s).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")

    ray_in_use = contextlib.ExitStack()  # closed in `finally` below, rather than a `with` around it all
    ray_in_use.enter_context(ray_session(address))
    try:
        prepared = ensure_prepared(data, store)
        record = SweepRecord(
            profile=profile.get("name"), data=str(prepared), storage=storage,
            combinations=[combination_name(f, t) for f, task in pairs for t in result_tasks(task)],
            started=time.strftime("%Y-%m-%dT%H:%M:%S"), resumed=resume,
        )
        store.write_json(SWEEP_FILE, record.to_dict())
        sweep_data = load_sweep_data(prepared, profile, store, need_pca=any(f == "pca_dnn" for f, _ in pairs))
        data_ref = ray.put(sweep_data)
        from facetune.data.loading import load_split

        test_split = load_split(prepared, "test")
        gpu_fraction = _gpu_fraction(profile, use_gpu)
        for family, task in pairs:
            done = {(entry.family, entry.task) for entry in summary}
            if all((family, t) in done for t in result_tasks(task)):
                print(f"[facetune] {combination_name(family, task)}: already finished, skipped", flush=True)
                continue
            entries = _run_combination(family, task, profile, data_ref, sweep_data, test_split, store, storage,
                                       resume, gpu_fraction, verbose)
            if not entries:
                print(f"[facetune] {combination_name(family, task)}: no trial finished an epoch; "
                      "left out of the summary", file=sys.stderr, flush=True)
                continue
            finished = {(e.family, e.task) for e in entries}
            summary = [e for e in summary if (e.family, e.task) not in finished] + entries
            store.write_json(SUMMARY_FILE, summary_to_json(summary))
            for entry in entries:
                _print_entry(entry)
        record.ended, record.combinations_finished = time.strftime("%Y-%m-%dT%H:%M:%S"), len(summary)
        store.write_json(SWEEP_FILE, record.to_dict())
        return summary
    finally:
        ray_in_use.close()


def result_tasks(task: str) -> tuple[str, ...]:
    """The tasks a combination's search yields summary entries for: all three for MULTITASK."""
    return TASK_NAMES if task == MULTITASK else (task,)


def ensure_prepared(data: str | os.PathLike[str] | None, store: ResultsStore) -> Path:
    """A prepared Parquet folder: `data` itself, or `data` prepared into RESULTS/data (once)."""
    source = require_data_path(data)
    if is_any_prepared_dir(source):
        return require_prepared_dir(source)  # an old layout: one line saying to prepare it again
    target = store.local_dir(PREPARED_DIR)
    if is_prepared_dir(target):
        return target
    from facetune.data.prepare import prepare

    print(f"[facetune] preparing {source} into {target}", flush=True)
    prepare(source, target, seed=0)
    return target


def load_sweep_data(prepared: Path, profile: dict[str, Any], store: ResultsStore, need_pca: bool) -> SweepData:
    """Train and val splits as arrays (the first `row_limit` rows of each when the profile sets
    one), the age scaling and (once per sweep) the fitted PCA."""
    from facetune.data.loading import load_split

    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    if profile.get("row_limit"):
        train, val = train.head(int(profile["row_limit"])), val.head(int(profile["row_limit"]))
    labels = TASK_NAMES
    data = SweepData(
        train_pixels=train.pixels, train_labels={k: train.labels(k) for k in labels},
        val_pixels=val.pixels, val_labels={k: val.labels(k) for k in labels},
        age_stats={"target_mean": float(np.mean(train.age)), "target_std": float(np.std(train.age) or 1.0)},
    )
    if need_pca:
        data.pca = fitted_pca(train.pixels, int(profile.get("pca_components", 500)), store)
    return data


def fitted_pca(train_pixels: np.ndarray, n_components: int, store: ResultsStore) -> Any:
    """The sweep's PCA: loaded from RESULTS/pca when a resumed sweep already fitted it, else fitted now."""
    from facetune.models.pca import fit_pca, load_pca, save_pca, summary

    folder = store.local_dir(PCA_DIR)
    npz = folder / PCA_PARAMS_FILE
    if npz.is_file():
        params = load_pca(npz)
        if params.components.shape[0] == n_components:
            return params
    started = time.perf_counter()
    params = fit_pca(train_pixels, n_components=n_components, seed=0)
    save_pca(params, npz)
    # The same record the report reads (facetune.models.pca.summary), plus how it was fitted.
    record = {**summary(params), "fit_seconds": time.perf_counter() - started, "fitted_on": "train split"}
    (folder / PCA_INFO_FILE).write_text(json.dumps(record, indent=2))
    store.publish(PCA_DIR)
    print(f"[facetune] PCA: {record['n_components']} components explain {record['explained_variance_total']:.1%} "
          "of the variance", flush=True)
    return params


def _run_combination(family: str, task: str, profile: dict[str, Any], data_ref: Any, sweep_data: SweepData,
                     test_split: Any, store: ResultsStore, storage: str, resume: bool,
                     gpu_fraction: float, verbose: bool) -> list[SummaryEntry]:
    """One Tune experiment; its best trial per task exported (three for a MULTITASK search)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from facetune.tasks import TASKS
    from facetune.tuning.console import TrialLines

    name = combination_name(family, task)
    metric, mode = (MULTITASK_METRIC, MULTITASK_MODE) if task == MULTITASK else \
        (validation_metric(family, task), TASKS[task].mode)
    base, space = combination_config(family, task, profile)
    max_epochs = int(per_family(profile, "max_epochs", family))
    base.update(max_epochs=max_epochs, torch_threads=int(profile.get("torch_threads", 1)))
    resources = {"cpu": float(profile["trial_resources"].get("cpu", 1)), "gpu": gpu_fraction}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data_ref=[data_ref]), resources)
    experiment = f"{storage.rstrip('/')}/{name}"
    num_trials = int(per_family(profile, "num_samples", family))

    if resume and tune.Tuner.can_restore(experiment):
        print(f"[facetune] {name}: resuming the interrupted search in {experiment}", flush=True)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        scheduler_cfg = dict(profile["scheduler"])
        if scheduler_cfg.pop("type", "asha") != "asha":
            raise ValueError("only the ASHA scheduler is configured in this version")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(base, space),
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode,
                num_samples=num_trials,
                max_concurrent_trials=profile.get("max_concurrent_trials"),
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs, **scheduler_cfg),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=int((profile.get("failure") or {}).get("max_failures", 2))),
                # Tune's tables repeat every trial's full config every few seconds; TrialLines
                # prints one line per finished trial instead (both under --verbose).
                verbose=2 if verbose else 0,
                callbacks=[TrialLines(name, metric, mode, num_trials, max_epochs, sorted(space))],
            ),
        )
    print(f"[facetune] {name}: searching {len(space)} hyperparameters, metric {metric} ({mode})", flush=True)
    grid = tuner.fit()
    entries: list[SummaryEntry] = []
    checkpoint_of_trial: dict[str | None, str] = {}
    for task_name in result_tasks(task):
        out_name = combination_name(family, task_name)
        entry = export_best(grid, family, task_name, sorted(space), sweep_data, test_split, store.local_dir(out_name))
        if entry is not None:
            # A multitask trial best at several tasks: one checkpoint for all, so predict runs it once.
            entry.checkpoint = checkpoint_of_trial.setdefault(entry.trial_id, entry.checkpoint)
            store.publish(out_name)
            entries.append(entry)
    return entries


def _default_storage(store: ResultsStore) -> str:
    return store.child(TUNE_DIR) if store.remote else str(store.local_dir(TUNE_DIR))


def _gpu_fraction(profile: dict[str, Any], use_gpu: str) -> float:
    """GPU share per trial: the profile's when GPUs are used, else 0 (CPU trials)."""
    import ray

    wanted = float(profile["trial_resources"].get("gpu", 0))
    if use_gpu == "no":
        return 0.0
    if use_gpu == "yes":
        return wanted or 1.0
    return wanted if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _print_entry(entry: SummaryEntry) -> None:
    shown = ", ".join(f"{k}={v:.4g}" for k, v in entry.test.items())
    print(f"[facetune] {entry.family}/{entry.task}: test {shown} "
          f"({entry.epochs} epochs, {entry.num_trials} trials)", flush=True)
