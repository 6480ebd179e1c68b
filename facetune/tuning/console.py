"""The sweep's console: one line per finished trial and a compact progress line per combination.

Tune's own tables (every trial's full config, every few seconds) run to about a thousand lines
for the `local` profile; the sweep runs Tune silent (`verbose=0`) with `TrialLines` as a
callback instead, and shows Tune's tables only under `--verbose`.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, TextIO

from ray import tune

from facetune.tuning.space import combination_of

PREFIX = "[facetune]"
#: Seconds between two progress lines of a running combination.
PROGRESS_EVERY_S = 30.0


def short_value(value: Any) -> str:
    """A hyperparameter value in a few characters: 0.0012 -> 1.2e-03, [256, 128] -> [256,128]."""
    if isinstance(value, float):
        return f"{value:.3g}" if 1e-2 <= abs(value) < 1e4 or value == 0 else f"{value:.1e}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(short_value(item) for item in value) + "]"
    return str(value)


def tuned_values(config: dict[str, Any], tuned_keys: list[str]) -> str:
    """`lr=1.2e-03 batch_size=64` for the tuned keys (dotted paths into the nested config)."""
    parts = []
    for key in tuned_keys:
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        parts.append(f"{key.rsplit('.', 1)[-1]}={short_value(value)}")
    return " ".join(parts)


def duration(seconds: float) -> str:
    """41 s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class TrialLines(tune.Callback):
    """Prints, for one combination, a line per finished trial (its tuned hyper-parameters, best
    metric, epochs and seconds) and, at most every PROGRESS_EVERY_S while it runs, a progress
    line: trials done and running, the best so far, elapsed time and an estimate; its totals when
    its last trial ends. The experiment may hold other combinations' trials too (the sweep's one
    pool of slots): this callback follows only its own."""

    def __init__(self, combination: str, metric: str, mode: str, num_trials: int, max_epochs: int,
                 tuned_keys: list[str], *, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.combination, self.metric, self.mode = combination, metric, mode
        self.num_trials, self.max_epochs, self.tuned_keys = num_trials, max_epochs, tuned_keys
        self.out, self.clock = out, clock
        self.started = clock()
        self.last_progress = self.started
        self.best: dict[str, float] = {}     # trial id -> its best metric so far
        self.epochs: dict[str, int] = {}     # trial id -> epochs reported
        self.seconds: dict[str, float] = {}  # trial id -> training seconds reported
        self.finished: set[str] = set()
        self.begun = False  # a trial of this combination has started

    def mine(self, trial: Any) -> bool:
        return combination_of(trial.config) == self.combination

    # --- Tune's hooks ---------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        # Called when the experiment starts, also when a restored one does (this callback comes
        # back unpickled with the experiment, so the clock restarts here).
        self.started = self.last_progress = self.clock()
        self.begun = False

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.mine(trial) and not self.begun:
            # Elapsed time and estimates count from this combination's first trial, not the sweep's.
            self.begun, self.started = True, self.clock()
            self.last_progress = self.started

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not self.mine(trial):
            return
        self.begun = True
        trial_id = trial.trial_id
        self.epochs[trial_id] = int(result.get("training_iteration", self.epochs.get(trial_id, 0)))
        self.seconds[trial_id] = float(result.get("time_total_s", self.seconds.get(trial_id, 0.0)))
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            kept = self.best.get(trial_id)
            self.best[trial_id] = value if kept is None else self._better(value, kept)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, failed=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.begun and not self.done and self.clock() - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = self.clock()
            self._print(self.progress_line(self.running(trials)))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.begun and not self.done:  # stopped before all its trials ended
            self._print(self.progress_line(running=0))

    @property
    def done(self) -> bool:
        return len(self.finished) >= self.num_trials

    def running(self, trials: list) -> int:
        return sum(1 for trial in trials if trial.status == "RUNNING" and self.mine(trial))

    def _ended(self, trials: list, trial: Any, failed: bool) -> None:
        if not self.mine(trial):
            return
        self.begun = True
        self.finished.add(trial.trial_id)
        self._print(self.trial_line(trial, failed=failed))
        if self.done:
            self._print(self.progress_line(running=0))

    # --- the lines ------------------------------------------------------------------------------

    def trial_line(self, trial: Any, failed: bool = False) -> str:
        trial_id = trial.trial_id
        best = self.best.get(trial_id)
        outcome = "failed" if failed else (f"{self.metric} {best:.4g}" if best is not None else "no metric")
        return (f"{PREFIX} {self.combination} {len(self.finished)}/{self.num_trials} trial {trial_id}: "
                f"{tuned_values(trial.config, self.tuned_keys)} -> {outcome}, "
                f"{self.epochs.get(trial_id, 0)} epochs, {duration(self.seconds.get(trial_id, 0.0))}")

    def progress_line(self, running: int) -> str:
        elapsed = self.clock() - self.started
        best = self.best_so_far()
        shown_best = f"best {self.metric} {best:.4g}" if best is not None else "no result yet"
        line = (f"{PREFIX} {self.combination}: {len(self.finished)}/{self.num_trials} trials done, {running} running, "
                f"{shown_best}, {duration(elapsed)} elapsed")
        return line if len(self.finished) == self.num_trials else f"{line}, {self.estimate(elapsed)}"

    def best_so_far(self) -> float | None:
        values = list(self.best.values())
        if not values:
            return None
        return min(values) if self.mode == "min" else max(values)

    def estimate(self, elapsed: float) -> str:
        """Time left if the unfinished trials run their full epochs at the pace so far (an upper
        bound: the scheduler stops some early)."""
        budget = self.num_trials * self.max_epochs
        done = sum(self.max_epochs if trial_id in self.finished else epochs for trial_id, epochs in self.epochs.items())
        done += self.max_epochs * len(self.finished - set(self.epochs))
        if done == 0:
            return "no estimate yet"
        return f"at most ~{duration(elapsed * (budget - min(done, budget)) / done)} left"

    def _better(self, a: float, b: float) -> float:
        return min(a, b) if self.mode == "min" else max(a, b)

    def _print(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

