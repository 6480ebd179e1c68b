"""One pool of trial slots (facetune.tuning.pool): the queue, the per-combination scheduler, the
events the sweep exports from, and the occupancy figure. Tune's pieces are driven directly."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from facetune.tuning.pool import (
    CombinationQueue,
    PerCombinationScheduler,
    SweepEvents,
    SweepHandlers,
    TrialTime,
    results_of,
    sample_configs,
    slot_occupancy,
    sweep_handlers,
)
from facetune.tuning.space import param_space


def trial(family: str, task: str, number: int, status: str = "RUNNING") -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"{family}{task}{number}", status=status, checkpoint=None, path=f"/x/{number}",
                           config={"family": family, "task": task, "train": {"lr": 0.01}})


class Recorder(TrialScheduler):
    """A stand-in scheduler that remembers which trials it was told about."""

    def __init__(self, decision: str) -> None:
        self.decision, self.seen = decision, []

    def on_trial_add(self, tune_controller, trial):
        self.seen.append(("add", trial.trial_id))

    def on_trial_result(self, tune_controller, trial, result):
        self.seen.append(("result", trial.trial_id))
        return self.decision

    def on_trial_complete(self, tune_controller, trial, result):
        self.seen.append(("complete", trial.trial_id))


def test_the_queue_hands_out_configs_in_the_sweeps_order_then_finishes():
    queue = CombinationQueue([{"n": 1}, {"n": 2}])
    assert [queue.suggest("a"), queue.suggest("b"), queue.suggest("c")] == [{"n": 1}, {"n": 2}, Searcher.FINISHED]


def test_a_restored_queue_continues_where_the_saved_one_stopped(tmp_path):
    queue = CombinationQueue([{"n": 1}, {"n": 2}, {"n": 3}])
    queue.suggest("a")
    queue.save(str(tmp_path / "queue.pkl"))
    restored = CombinationQueue([])
    restored.restore(str(tmp_path / "queue.pkl"))
    assert restored.suggest("b") == {"n": 2}


def test_sampled_configs_are_drawn_from_the_space_and_repeat_with_the_seed():
    space = param_space({"family": "cnn", "task": "age", "train": {"epochs": 3}},
                        {"train.lr": {"loguniform": [1e-4, 1e-2]}, "arch.width": {"choice": [8, 16]}})
    first, again = sample_configs(space, 5, seed=7), sample_configs(space, 5, seed=7)
    assert first == again and len(first) == 5
    assert all(1e-4 <= c["train"]["lr"] <= 1e-2 and c["arch"]["width"] in (8, 16) and c["train"]["epochs"] == 3
               for c in first)
    assert len({c["train"]["lr"] for c in first}) == 5


def test_each_combination_is_scheduled_by_its_own_scheduler():
    age, gender = Recorder(TrialScheduler.STOP), Recorder(TrialScheduler.CONTINUE)
    scheduler = PerCombinationScheduler({"cnn_age": age, "dnn_gender": gender})
    a, g = trial("cnn", "age", 0), trial("dnn", "gender", 0)
    for one in (a, g):
        scheduler.on_trial_add(None, one)
    assert scheduler.on_trial_result(None, a, {"val_mae": 5.0}) == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, g, {"val_accuracy": 0.9}) == TrialScheduler.CONTINUE
    assert age.seen == [("add", a.trial_id), ("result", a.trial_id)]
    assert gender.seen == [("add", g.trial_id), ("result", g.trial_id)]


def test_the_oldest_pending_trial_starts_first_whatever_its_combination():
    scheduler = PerCombinationScheduler({"cnn_age": Recorder("x"), "dnn_gender": Recorder("x")})
    trials = [trial("cnn", "age", 0, "TERMINATED"), trial("dnn", "gender", 1, "PENDING"), trial("cnn", "age", 2, "PENDING")]
    assert scheduler.choose_trial_to_run(SimpleNamespace(get_trials=lambda: trials)) is trials[1]


def test_a_combination_is_reported_once_at_the_end_of_the_step_its_last_trial_ended_in():
    done, times = [], []
    events = SweepEvents({"cnn_age": 2, "dnn_gender": 1})
    a0, a1, g0 = trial("cnn", "age", 0), trial("cnn", "age", 1), trial("dnn", "gender", 0)
    everyone = [a0, a1, g0]
    with sweep_handlers(SweepHandlers(lambda name, trials, reported: done.append((name, len(trials), reported)),
                                      times.append)):
        for one in everyone:
            events.on_trial_start(0, everyone, one)
        events.on_trial_result(0, everyone, a0, {"training_iteration": 1, "val_mae": 9.0, "config": {}})
        events.on_trial_complete(0, everyone, a0)
        a0.status = "TERMINATED"
        events.on_step_end(0, everyone)
        assert done == []  # cnn_age has a trial still running
        events.on_trial_error(0, everyone, a1)
        assert done == []  # reported at the step's end, after Tune's own loggers have run
        events.on_step_end(0, everyone)
        events.on_step_end(0, everyone)
    assert [(name, n) for name, n, _ in done] == [("cnn_age", 2)]
    assert done[0][2][a0.trial_id] == [{"training_iteration": 1, "val_mae": 9.0}]  # scalars only
    assert [(t.trial_id, t.status) for t in times] == [(a0.trial_id, "TERMINATED"), (a1.trial_id, "ERROR")]
    assert all(t.end >= t.start for t in times)


def test_results_carry_each_trials_config_and_history():
    one = trial("cnn", "age", 0, "TERMINATED")
    history = [{"training_iteration": 1, "val_mae": 9.0}, {"training_iteration": 2, "val_mae": 7.0}]
    (result,) = results_of([one], {one.trial_id: history})
    assert result.config == one.config and result.error is None
    assert list(result.metrics_dataframe["val_mae"]) == [9.0, 7.0]


def test_results_are_not_built_from_a_history_that_misses_its_first_epochs():
    one = trial("cnn", "age", 0)
    assert results_of([one], {one.trial_id: [{"training_iteration": 4, "val_mae": 7.0}]}) is None


@pytest.mark.parametrize(("spans", "slots", "expected"), [
    ([(0, 10), (0, 5), (5, 10)], 2, 1.0),   # both slots busy throughout
    ([(0, 10)], 2, 0.5),                    # one of two slots idle
    ([(0, 4), (6, 10)], 1, 0.8),            # a 2 s gap between two trials
])
def test_slot_occupancy_is_used_slot_seconds_over_available_ones(spans, slots, expected):
    times = [TrialTime("cnn_age", str(i), float(start), float(end), "TERMINATED") for i, (start, end) in enumerate(spans)]
    assert slot_occupancy(times, slots) == pytest.approx(expected)


def test_each_trial_time_is_written_as_its_trial_ends_after_the_earlier_runs_rows(tmp_path):
    import json

    from facetune.records import TRIAL_TIMES_FILE
    from facetune.storage import ResultsStore
    from facetune.tuning.sweep import _SweepProgress

    earlier = {"combination": "cnn_age", "trial_id": "a", "start": 1.0, "end": 2.0, "status": "TERMINATED"}
    progress = _SweepProgress([], ResultsStore(tmp_path), None, None, [], earlier_times=[earlier])
    progress.trial_ended(TrialTime("dnn_gender", "b", 3.0, 5.0, "ERROR"))
    written = json.loads((tmp_path / TRIAL_TIMES_FILE).read_text())
    assert written == [earlier, {"combination": "dnn_gender", "trial_id": "b", "start": 3.0, "end": 5.0, "status": "ERROR"}]
