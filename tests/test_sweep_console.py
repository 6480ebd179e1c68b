"""The sweep's console (facetune.tuning.console): a line per finished trial, short progress lines."""
from __future__ import annotations

import io
from types import SimpleNamespace

from facetune.tuning.console import PROGRESS_EVERY_S, TrialLines, duration, short_value

TUNED = ["arch.dense", "train.batch_size", "train.lr"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trial(number: int, status: str = "RUNNING") -> SimpleNamespace:
    config = {"family": "cnn", "task": "age", "arch": {"dense": [256, 128], "conv_channels": [32, 64]},
              "train": {"lr": 0.00123, "batch_size": 64, "epochs": 20, "patience": 6}}
    return SimpleNamespace(trial_id=f"a1b2c_{number:05d}", config=config, status=status)


def console(mode: str = "min", num_trials: int = 4, max_epochs: int = 10) -> tuple[TrialLines, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    lines = TrialLines("cnn_age", "val_mae", mode, num_trials, max_epochs, TUNED, out=out, clock=clock)
    lines.setup()
    return lines, out, clock


def report(lines: TrialLines, one: SimpleNamespace, epoch: int, value: float, seconds: float) -> None:
    lines.on_trial_result(iteration=0, trials=[one], trial=one,
                          result={"val_mae": value, "training_iteration": epoch, "time_total_s": seconds})


def test_a_finished_trial_is_one_line_with_its_tuned_values_best_metric_epochs_and_seconds():
    lines, out, _ = console()
    one = trial(3)
    for epoch, value in enumerate([9.0, 7.5, 8.1], start=1):
        report(lines, one, epoch, value, seconds=14.0 * epoch)
    lines.on_trial_complete(iteration=0, trials=[one], trial=one)
    assert out.getvalue() == ("[facetune] cnn_age 1/4 trial a1b2c_00003: dense=[256,128] batch_size=64 lr=1.2e-03"
                              " -> val_mae 7.5, 3 epochs, 42 s\n")


def test_the_best_of_a_trial_follows_the_metrics_mode():
    lines, out, _ = console(mode="max")
    one = trial(0)
    for epoch, value in enumerate([0.71, 0.83, 0.80], start=1):
        report(lines, one, epoch, value, seconds=1.0)
    lines.on_trial_complete(iteration=0, trials=[one], trial=one)
    assert "-> val_mae 0.83," in out.getvalue()


def test_a_failed_trial_says_so():
    lines, out, _ = console()
    one = trial(1)
    lines.on_trial_error(iteration=0, trials=[one], trial=one)
    assert "trial a1b2c_00001: " in out.getvalue() and "-> failed, 0 epochs" in out.getvalue()


def test_progress_lines_come_at_most_every_interval_with_counts_best_elapsed_and_an_estimate():
    lines, out, clock = console(num_trials=4, max_epochs=10)
    first, second = trial(0), trial(1)
    report(lines, first, 10, 6.0, seconds=50.0)
    first.status = "TERMINATED"
    lines.on_trial_complete(iteration=0, trials=[first, second], trial=first)
    report(lines, second, 5, 8.0, seconds=25.0)
    out.truncate(0), out.seek(0)
    clock.now += PROGRESS_EVERY_S - 1
    lines.on_step_end(iteration=0, trials=[first, second])
    assert out.getvalue() == ""
    clock.now += 1  # 30 s in: 15 of the 40 epochs done, so at most 25 / 15 x 30 s = 50 s to go
    lines.on_step_end(iteration=0, trials=[first, second])
    assert out.getvalue() == ("[facetune] cnn_age: 1/4 trials done, 1 running, best val_mae 6, 30 s elapsed, "
                              "at most ~50 s left\n")


def test_the_end_of_a_combination_prints_its_totals_without_an_estimate():
    lines, out, clock = console(num_trials=1)
    one = trial(0)
    lines.on_trial_start(iteration=0, trials=[one], trial=one)
    report(lines, one, 2, 5.5, seconds=80.0)
    clock.now += 125
    lines.on_trial_complete(iteration=0, trials=[one], trial=one)
    assert out.getvalue().splitlines()[-1] == "[facetune] cnn_age: 1/1 trials done, 0 running, best val_mae 5.5, 2m05s elapsed"


def test_other_combinations_trials_in_the_same_experiment_are_not_counted():
    lines, out, clock = console(num_trials=2)
    other = SimpleNamespace(trial_id="ffff_00000", status="RUNNING",
                            config={"family": "dnn", "task": "gender", "arch": {}, "train": {}})
    lines.on_trial_start(iteration=0, trials=[other], trial=other)
    report(lines, other, 1, 0.9, seconds=5.0)
    lines.on_trial_complete(iteration=0, trials=[other], trial=other)
    clock.now += PROGRESS_EVERY_S
    lines.on_step_end(iteration=0, trials=[other])
    lines.on_experiment_end(trials=[other])
    assert out.getvalue() == ""  # nothing of this combination started


def test_elapsed_time_counts_from_the_combinations_first_trial():
    lines, out, clock = console(num_trials=2, max_epochs=10)
    clock.now += 600  # other combinations ran first
    first = trial(0)
    lines.on_trial_start(iteration=0, trials=[first], trial=first)
    report(lines, first, 5, 6.0, seconds=30.0)
    clock.now += PROGRESS_EVERY_S
    lines.on_step_end(iteration=0, trials=[first])
    assert ", 30 s elapsed," in out.getvalue()


def test_values_and_durations_are_short():
    assert [short_value(v) for v in (0.00123, 0.25, 64, [512, 128], "cosine")] == ["1.2e-03", "0.25", "64", "[512,128]", "cosine"]
    assert [duration(s) for s in (41.4, 185, 3720)] == ["41 s", "3m05s", "1h02m"]
