"""One pool of trial slots for a whole sweep: all combinations in one Tune experiment.

Each (family, task) combination keeps what made it separate before (its metric and mode, its own
ASHA rungs, its number of trials, its best trial exported as soon as its last trial ends), but
its trials come from one queue, in the sweep's order, and take whichever slot frees first. A
single-trial combination or the tail of an ASHA search no longer leaves the rest of the cluster
idle, and Tune starts once per sweep instead of once per combination.

The pieces, each handed to one Tune experiment:
- `CombinationQueue` (the search algorithm): every combination's trial configs, sampled up front
  from its search space with a seed of its own, handed out in order;
- `PerCombinationScheduler`: one ASHA scheduler per combination, each on its own metric; the
  next trial to start is the oldest pending one (FIFO), whatever its combination;
- `SweepEvents` (a callback): tells the sweep when a trial starts and ends and when all of a
  combination's trials have ended.

Tune pickles the search algorithm, scheduler and callbacks with the experiment and brings them
back on restore, so they hold plain data only; the sweep's handlers (which hold the data and the
results store) are looked up through `active_handlers()`, set for the duration of `fit()`.
"""
from __future__ import annotations

import contextlib
import copy
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from facetune.tuning.space import combination_of


def sample_configs(space: dict[str, Any], num_trials: int, seed: int) -> list[dict[str, Any]]:
    """`num_trials` resolved configs drawn from `space` (a Tune param_space of distributions)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    return [next(generate_variants(space, random_state=rng))[1] for _ in range(num_trials)]


def combination_seed(name: str) -> int:
    """A stable per-combination sampling seed, so a profile draws the same configs every run."""
    return zlib.crc32(name.encode())


class CombinationQueue(Searcher):
    """Hands out the sweep's trial configs in order (combination by combination), then FINISHED."""

    def __init__(self, configs: Sequence[dict[str, Any]]) -> None:
        super().__init__(metric=None, mode=None)
        self.configs = [copy.deepcopy(c) for c in configs]
        self.created = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # every combination's metric lives in its own scheduler

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.created >= len(self.configs):
            return Searcher.FINISHED
        self.created += 1
        return copy.deepcopy(self.configs[self.created - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def get_state(self) -> dict[str, Any]:
        return {"configs": self.configs, "created": self.created}

    def set_state(self, state: dict[str, Any]) -> None:
        self.configs, self.created = state["configs"], state["created"]

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as stream:
            pickle.dump(self.get_state(), stream)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as stream:
            self.set_state(pickle.load(stream))


class PerCombinationScheduler(FIFOScheduler):
    """One scheduler per combination (early stopping on that combination's metric and rungs);
    trials start oldest first, whatever their combination."""

    def __init__(self, schedulers: dict[str, TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = schedulers

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _of(self, trial: Trial) -> TrialScheduler:
        return self.schedulers[combination_of(trial.config)]

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{name}: {scheduler.debug_string()}" for name, scheduler in self.schedulers.items())


@dataclass(frozen=True)
class TrialTime:
    """When one trial held a slot: from Tune starting it to its end (retries included)."""

    combination: str
    trial_id: str
    start: float  # time.time()
    end: float
    status: str   # TERMINATED or ERROR

    def to_dict(self) -> dict[str, Any]:
        return {"combination": self.combination, "trial_id": self.trial_id, "start": self.start,
                "end": self.end, "status": self.status}


@dataclass
class SweepHandlers:
    """What the sweep does when a combination's last trial ends, and with each trial's time."""

    #: (combination, its trials, every result each trial reported to this driver, by trial id)
    combination_done: Callable[[str, list[Trial], dict[str, list[dict[str, Any]]]], None]
    trial_ended: Callable[[TrialTime], None]


_active: SweepHandlers | None = None


def active_handlers() -> SweepHandlers | None:
    return _active


@contextlib.contextmanager
def sweep_handlers(handlers: SweepHandlers) -> Iterator[SweepHandlers]:
    """Make `handlers` the ones SweepEvents calls, for the duration of one experiment's fit()."""
    global _active
    if _active is not None:
        raise RuntimeError("a sweep is already running in this process; one at a time")
    _active = handlers
    try:
        yield handlers
    finally:
        _active = None


class SweepEvents(tune.Callback):
    """Reports trial times and finished combinations to the active SweepHandlers.

    It keeps every result each trial reports, because Tune writes a trial's result files on the
    driver and copies them to the experiment's storage only every few seconds: an export made
    the moment a combination ends would read them a result short. A finished combination is
    reported at the end of the controller step in which its last trial ended.
    """

    def __init__(self, trials_per_combination: dict[str, int]) -> None:
        self.trials_per_combination = dict(trials_per_combination)
        self.started: dict[str, float] = {}               # trial id -> first start in this driver
        self.results: dict[str, list[dict[str, Any]]] = {}  # trial id -> its reported results
        self.finished: list[str] = []                      # combinations to report at the end of this step

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        self.results.setdefault(trial.trial_id, []).append(
            {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))})

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._ended(trials, trial, Trial.TERMINATED)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._ended(trials, trial, Trial.ERROR)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._report_finished(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._report_finished(trials)

    def _ended(self, trials: list, trial: Trial, status: str) -> None:
        handlers = active_handlers()
        if handlers is None:
            return
        name = combination_of(trial.config)
        now = time.time()
        handlers.trial_ended(TrialTime(name, trial.trial_id, self.started.get(trial.trial_id, now), now, status))
        # `trial` may not carry its final status yet when Tune calls back.
        ended = [t for t in trials if combination_of(t.config) == name
                 and (t is trial or t.status in (Trial.TERMINATED, Trial.ERROR))]
        if len(ended) >= self.trials_per_combination.get(name, 0) and name not in self.finished:
            self.finished.append(name)

    def _report_finished(self, trials: list) -> None:
        handlers = active_handlers()
        while self.finished and handlers is not None:
            name = self.finished.pop(0)
            mine = [t for t in trials if combination_of(t.config) == name]
            handlers.combination_done(name, mine, {t.trial_id: self.results.get(t.trial_id, []) for t in mine})


def results_of(trials: Sequence[Trial], reported: dict[str, list[dict[str, Any]]]) -> list[Any] | None:
    """The trials as ray.tune.Result objects, their histories from `reported` (SweepEvents);
    None when this driver did not see every epoch of them (a trial resumed from before a restart).
    A history keeps every report, replays too: export drops the superseded ones for every path."""
    import pandas as pd
    from ray.tune import Result

    results = []
    for trial in trials:
        history = reported.get(trial.trial_id, [])
        if history and min(int(row.get("training_iteration", 0)) for row in history) != 1:
            return None
        results.append(Result(
            # Result.config reads metrics["config"], as in the results Tune writes.
            metrics={**(history[-1] if history else {}), "config": trial.config}, checkpoint=trial.checkpoint,
            error=RuntimeError(f"trial {trial.trial_id} failed") if trial.status == Trial.ERROR else None,
            path=trial.path, metrics_dataframe=pd.DataFrame(history) if history else None,
        ))
    return results


def slot_occupancy(times: Sequence[TrialTime], slots: int, window: tuple[float, float] | None = None) -> float:
    """Fraction of the slot-seconds in `window` (default: first trial start to last trial end)
    that trials held: sum of trial durations / (slots x window length)."""
    if not times or slots < 1:
        return 0.0
    start, end = window or (min(t.start for t in times), max(t.end for t in times))
    if end <= start:
        return 0.0
    used = sum(max(0.0, min(t.end, end) - max(t.start, start)) for t in times)
    return used / (slots * (end - start))
