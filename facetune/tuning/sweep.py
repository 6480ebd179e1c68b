"""The sweep: every (family, task) combination searched with Ray Tune, best trials exported.

All combinations run as one Tune experiment from one pool of trial slots (facetune.tuning.pool):
each keeps its own metric, early-stopping rungs and trial count, its trials start in the sweep's
order, and a slot one combination leaves idle goes to the next. Each combination's best trials
are exported as soon as its last trial ends. The profile's `slot_pool: false` runs one
experiment per combination in turn instead. The train/val data is put in the object store once
and shared by every trial.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facetune.data.loading import load_split
from facetune.data.prepare import ensure_prepared, planned_spec
from facetune.models.pca import fit_pca, load_pca, save_pca, summary
from facetune.ray_session import ray_session
from facetune.records import (
    MULTITASK,
    PCA_DIR,
    PCA_INFO_FILE,
    PCA_PARAMS_FILE,
    POOL_EXPERIMENT,
    SUMMARY_FILE,
    SWEEP_FILE,
    TASK_NAMES,
    TRIAL_TIMES_FILE,
    TUNE_DIR,
    SummaryEntry,
    SweepRecord,
    combination_name,
    summary_from_json,
    summary_to_json,
)
from facetune.settings import require_data_path
from facetune.storage import ResultsStore
from facetune.tuning.best_trial import export_best
from facetune.tuning.console import TrialLines
from facetune.tuning.plan import CombinationPlan, SweepPlan, local_cpus, plan_sweep
from facetune.tuning.pool import (
    CombinationQueue,
    PerCombinationScheduler,
    SweepEvents,
    SweepHandlers,
    TrialTime,
    results_of,
    sweep_handlers,
)
from facetune.tuning.profiles import load_profile, profile_source, resolve_profile
from facetune.tuning.retention import CheckpointKeeper, keep_latest_checkpoints, restore_kept_checkpoints
from facetune.tuning.space import combination_of
from facetune.tuning.trainable import SweepData, run_trial


class SweepExistsError(RuntimeError):
    """The results location already holds a sweep and --resume was not given."""


def run_sweep(
    profile: str | dict[str, Any] | SweepPlan,
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

    `profile` is a profile name or dict (checked whole here, see facetune.tuning.plan) or a
    plan already checked. `data` is a prepared Parquet folder, or a raw source (Kaggle CSV / UTKFace folder) that is
    prepared into RESULTS/data first. `storage` is Tune's experiment storage (default
    RESULTS/tune). Ray comes from facetune.ray_session: the one already initialised, the cluster
    at `address` or $RAY_ADDRESS, else a private local instance shut down at the end.
    The console gets a line per finished trial (facetune.tuning.console); `verbose` adds Tune's
    own trial tables.
    """
    import ray

    plan = profile if isinstance(profile, SweepPlan) else _plan(profile, only, address, data)
    profile, pairs = plan.profile, plan.pairs
    store = ResultsStore(results)
    summary = summary_from_json(store.read_json(SUMMARY_FILE, default=[]) or [])
    if summary and not resume:
        raise SweepExistsError(f"{results} already holds a sweep ({len(summary)} combinations done); "
                               "pass --resume to continue it or choose another --results")
    storage = storage or _default_storage(store)
    require_data_path(data)  # fail with one line before starting anything
    # Save Tune's experiment state often, so a killed driver loses little (default: adaptive, >= 10 s).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # With every combination in one experiment, trials checkpoint (and so force a snapshot) several
    # times in 5 s; a local snapshot takes milliseconds, so Tune's warning about it is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    ray_in_use = contextlib.ExitStack()  # closed in `finally` below, rather than a `with` around it all
    ray_in_use.enter_context(ray_session(address))
    try:
        prepared = ensure_prepared(data, store, plan.input_spec)
        record = SweepRecord(
            profile=profile["name"], data=str(prepared), storage=storage,
            combinations=[combination_name(f, t) for f, task in pairs for t in result_tasks(task)],
            started=time.strftime("%Y-%m-%dT%H:%M:%S"), resumed=resume,
        )
        store.write_json(SWEEP_FILE, record.to_dict())
        sweep_data = load_sweep_data(prepared, profile, store, need_pca=any(f == "pca_dnn" for f, _ in pairs))
        data_ref = ray.put(sweep_data)

        test_split = load_split(prepared, "test")
        gpu_fraction = _gpu_fraction(profile, use_gpu)
        done = {(entry.family, entry.task) for entry in summary}
        to_run = []
        for family, task in pairs:
            if all((family, t) in done for t in result_tasks(task)):
                print(f"[facetune] {combination_name(family, task)}: already finished, skipped", flush=True)
            else:
                to_run.append((family, task))
        # A resumed sweep keeps the rows of the runs before it (each row is written as its trial ends).
        earlier_times = store.read_json(TRIAL_TIMES_FILE, default=[]) if resume else []
        progress = _SweepProgress(summary, store, sweep_data, test_split, record.combinations, earlier_times)
        # One experiment for all (one pool of slots), or one per combination in turn.
        groups = [(POOL_EXPERIMENT, to_run)] if profile["slot_pool"] else \
            [(combination_name(*pair), [pair]) for pair in to_run]
        for experiment_name, group in groups:
            if group:
                chosen = [c for c in plan.combinations if (c.family, c.task) in group]
                _run_experiment(experiment_name, chosen, plan, data_ref, storage, resume, gpu_fraction,
                                verbose, progress)
        summary = progress.summary
        record.ended, record.combinations_finished = time.strftime("%Y-%m-%dT%H:%M:%S"), len(summary)
        store.write_json(SWEEP_FILE, record.to_dict())
        return summary
    finally:
        ray_in_use.close()


def _plan(profile: str | dict[str, Any], only: list[str] | None, address: str | None,
          data: str | os.PathLike[str] | None) -> SweepPlan:
    loaded = load_profile(profile) if isinstance(profile, str) else resolve_profile(profile, "profile", "profile")
    source = profile_source(profile) if isinstance(profile, str) else "profile"
    return plan_sweep(loaded, source, only, cpus=local_cpus(address), input_spec=planned_spec(data))


def result_tasks(task: str) -> tuple[str, ...]:
    """The tasks a combination's search yields summary entries for: all three for MULTITASK."""
    return TASK_NAMES if task == MULTITASK else (task,)


def load_sweep_data(prepared: Path, profile: dict[str, Any], store: ResultsStore, need_pca: bool) -> SweepData:
    """Train and val splits as arrays (the first `row_limit` rows of each when the profile sets
    one), the age scaling and (once per sweep) the fitted PCA."""

    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    if profile["row_limit"]:
        train, val = train.head(int(profile["row_limit"])), val.head(int(profile["row_limit"]))
    labels = TASK_NAMES
    data = SweepData(
        train_pixels=train.pixels, train_labels={k: train.labels(k) for k in labels},
        val_pixels=val.pixels, val_labels={k: val.labels(k) for k in labels},
        age_stats={"target_mean": float(np.mean(train.age)), "target_std": float(np.std(train.age) or 1.0)},
        spec=train.spec,
    )
    if need_pca:
        data.pca = fitted_pca(train.pixels, int(profile["pca_components"]), store)
    return data


def fitted_pca(train_pixels: np.ndarray, n_components: int, store: ResultsStore) -> Any:
    """The sweep's PCA: loaded from RESULTS/pca when a resumed sweep already fitted it, else fitted now."""

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


class _SweepProgress:
    """The sweep's results as they come in: each combination exported once its last trial has
    ended (also mid-experiment, so a killed sweep keeps it), the summary rewritten each time."""

    def __init__(self, summary: list[SummaryEntry], store: ResultsStore, sweep_data: SweepData, test_split: Any,
                 order: list[str], earlier_times: list[dict] | None = None) -> None:
        self.summary, self.store, self.sweep_data, self.test_split = summary, store, sweep_data, test_split
        self.order = order  # combination folder names in the sweep's order: the summary keeps it
        self.exported: set[str] = {combination_name(e.family, e.task) for e in summary}
        self.trial_times: list[dict] = list(earlier_times or [])

    def trial_ended(self, time_held: TrialTime) -> None:
        """Record when a trial held its slot; the file is rewritten at once, so a killed sweep keeps it."""
        self.trial_times.append(time_held.to_dict())
        self.store.write_json(TRIAL_TIMES_FILE, self.trial_times)

    def is_exported(self, combination: CombinationPlan) -> bool:
        return all(combination_name(combination.family, t) in self.exported for t in result_tasks(combination.task))

    def export(self, combination: CombinationPlan, results: list[Any]) -> None:
        """Write `combination`'s best trial per task from `results` (its trials' ray.tune.Result) and the summary."""
        entries: list[SummaryEntry] = []
        checkpoint_of_trial: dict[str | None, str] = {}
        for task_name in result_tasks(combination.task):
            out_name = combination_name(combination.family, task_name)
            entry = export_best(results, combination.family, task_name, sorted(combination.space), self.sweep_data,
                                self.test_split, self.store.local_dir(out_name))
            if entry is not None:
                # A multitask trial best at several tasks: one checkpoint for all, so predict runs it once.
                entry.checkpoint = checkpoint_of_trial.setdefault(entry.trial_id, entry.checkpoint)
                self.store.publish(out_name)
                entries.append(entry)
        self.exported.update(combination_name(combination.family, t) for t in result_tasks(combination.task))
        if not entries:
            print(f"[facetune] {combination.name}: no trial finished an epoch; left out of the summary",
                  file=sys.stderr, flush=True)
            return
        finished = {(e.family, e.task) for e in entries}
        self.summary = [e for e in self.summary if (e.family, e.task) not in finished] + entries
        rank = {name: index for index, name in enumerate(self.order)}
        self.summary.sort(key=lambda e: rank.get(combination_name(e.family, e.task), len(rank)))
        self.store.write_json(SUMMARY_FILE, summary_to_json(self.summary))
        for entry in entries:
            _print_entry(entry)


def _run_experiment(experiment_name: str, group: list[CombinationPlan], plan: SweepPlan, data_ref: Any,
                    storage: str, resume: bool, gpu_fraction: float, verbose: bool,
                    progress: _SweepProgress) -> None:
    """One Tune experiment searching `group`'s combinations from one pool of trial slots; each
    combination's best trial per task exported as soon as its last trial has ended."""
    from ray import tune

    resources = {"cpu": float(plan.profile["trial_resources"]["cpu"]), "gpu": gpu_fraction}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data_ref=[data_ref]), resources)
    experiment = f"{storage.rstrip('/')}/{experiment_name}"
    if resume and tune.Tuner.can_restore(experiment):
        tuner = _restored_tuner(experiment, trainable, group, progress)
    else:
        tuner = _new_tuner(experiment_name, experiment, trainable, group, plan, storage, verbose)
    for c in group:
        if not progress.is_exported(c):
            print(f"[facetune] {c.name}: searching {len(c.space)} hyperparameters with {c.num_trials} trials, "
                  f"metric {c.metric} ({c.mode})", flush=True)
    _fit_exporting_as_combinations_end(tuner, group, progress)
    _export_leftovers(experiment, group, progress)


def _restored_tuner(experiment: str, trainable: Any, group: list[CombinationPlan], progress: _SweepProgress) -> Any:
    """The interrupted experiment's Tuner, with any checkpoint Tune deleted too early put back."""
    from ray import tune


    restored, lost = restore_kept_checkpoints(experiment)
    for path in restored:
        print(f"[facetune] {path}: put back from its kept copy (Tune had deleted it before the saved "
              "state moved on)", flush=True)
    for path in lost:
        print(f"[facetune] {path}: missing and no copy kept; Tune will fail its trial", flush=True)
    tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    started = {combination_of(result.config) for result in tuner.get_results() if result.config}
    for c in group:
        if c.name in started and not progress.is_exported(c):
            print(f"[facetune] {c.name}: resuming the interrupted search in {experiment}", flush=True)
    return tuner


def _new_tuner(experiment_name: str, experiment: str, trainable: Any, group: list[CombinationPlan], plan: SweepPlan,
               storage: str, verbose: bool) -> Any:
    """A Tuner running the plan's configs for `group`, in order, each combination under its own ASHA."""
    from ray import tune


    names = {c.name for c in group}
    configs = [config for c in group for config in c.configs]
    schedulers = {name: scheduler for name, scheduler in plan.schedulers().items() if name in names}
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=CombinationQueue(configs),
            scheduler=PerCombinationScheduler(schedulers),
            num_samples=len(configs),
            max_concurrent_trials=plan.profile["max_concurrent_trials"],
            # A finished trial's worker takes the next trial (same resources everywhere): no
            # process start and torch import between two trials on a slot.
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=experiment_name,
            storage_path=storage,
            # CheckpointKeeper keeps copies of what this deletes until the saved state has
            # moved past them, so a killed driver never leaves a trial without its checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=int(plan.profile["failure"]["max_failures"])),
            # Tune's tables repeat every trial's full config every few seconds; TrialLines
            # prints one line per finished trial instead (both under --verbose).
            verbose=2 if verbose else 0,
            callbacks=[TrialLines(c.name, c.metric, c.mode, c.num_trials, c.max_epochs, sorted(c.space))
                       for c in group]
            + [SweepEvents({c.name: c.num_trials for c in group}), CheckpointKeeper(experiment)],
        ),
    )


def _fit_exporting_as_combinations_end(tuner: Any, group: list[CombinationPlan], progress: _SweepProgress) -> None:
    """Run the experiment; each combination is exported (a test-set evaluation) as soon as its
    last trial ends, beside Tune's loop and one at a time, so the loop keeps starting trials."""

    combinations = {c.name: c for c in group}
    exports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facetune-export")
    pending: dict[str, Future] = {}

    def combination_done(name: str, trials: list, reported: dict[str, list[dict]]) -> None:
        combination = combinations.get(name)
        results = results_of(trials, reported)
        if combination is not None and results is not None and name not in pending \
                and not progress.is_exported(combination):
            pending[name] = exports.submit(progress.export, combination, results)

    try:
        with sweep_handlers(SweepHandlers(combination_done=combination_done, trial_ended=progress.trial_ended)):
            results = tuner.fit()
    finally:
        exports.shutdown(wait=True)
    for future in pending.values():
        future.result()  # an export's error, raised here
    keep_latest_checkpoints(results)  # every trial has ended: only the checkpoint Tune names stays


def _export_leftovers(experiment: str, group: list[CombinationPlan], progress: _SweepProgress) -> None:
    """Export the combinations not exported during the run: their trials resumed from before a
    restart, or all ended before it."""
    leftover = [c for c in group if not progress.is_exported(c)]
    if not leftover:
        return
    from ray.tune import ExperimentAnalysis, ResultGrid

    analysis = ExperimentAnalysis(experiment)
    for c in leftover:
        trials = [t for t in analysis.trials if combination_of(t.config) == c.name]
        progress.export(c, list(ResultGrid(ExperimentAnalysis(experiment, trials=trials))) if trials else [])


def trial_name(trial: Any) -> str:
    """A trial's name and folder: its combination and id ("cnn_age_8f3a1_00003")."""
    return f"{combination_of(trial.config)}_{trial.trial_id}"


def _default_storage(store: ResultsStore) -> str:
    return store.child(TUNE_DIR) if store.remote else str(store.local_dir(TUNE_DIR))


def _gpu_fraction(profile: dict[str, Any], use_gpu: str) -> float:
    """GPU share per trial: the profile's when GPUs are used, else 0 (CPU trials)."""
    import ray

    wanted = float(profile["trial_resources"]["gpu"])
    if use_gpu == "no":
        return 0.0
    if use_gpu == "yes":
        return wanted or 1.0
    return wanted if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _print_entry(entry: SummaryEntry) -> None:
    shown = ", ".join(f"{k}={v:.4g}" for k, v in entry.test.items())
    print(f"[facetune] {entry.family}/{entry.task}: test {shown} "
          f"({entry.epochs} epochs, {entry.num_trials} trials)", flush=True)
