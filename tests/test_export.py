"""What export (facetune.tuning.best_trial) makes of a combination's trial results before it writes
the best one: one report an epoch, and the best trial over every epoch it reported."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from facetune.tuning.best_trial import best_result, once_per_epoch, without_replayed_epochs


def history(*reports: tuple[int, float]) -> pd.DataFrame:
    return pd.DataFrame([{"training_iteration": i, "epoch": i, "val_mae": v} for i, v in reports])


def result(frame: pd.DataFrame | None, checkpoint: bool = True) -> SimpleNamespace:
    return SimpleNamespace(checkpoint=object() if checkpoint else None, metrics_dataframe=frame)


def test_an_epoch_replayed_after_a_resume_keeps_only_its_later_report():
    # Epoch 3 reached the driver, its node died before the checkpoint landed; resumed from epoch 2.
    kept = without_replayed_epochs(history((1, 9.0), (2, 8.0), (3, 7.5), (3, 7.0), (4, 6.0)))
    assert list(kept["training_iteration"]) == [1, 2, 3, 4]
    assert list(kept["val_mae"]) == [9.0, 8.0, 7.0, 6.0]


def test_reports_a_resume_from_further_back_superseded_are_all_dropped():
    kept = without_replayed_epochs(history((1, 9.0), (2, 8.0), (3, 7.5), (2, 7.9), (3, 7.0)))
    assert list(kept["val_mae"]) == [9.0, 7.9, 7.0]


def test_a_history_without_replays_is_kept_whole():
    frame = history(*[(i, 10.0 - i) for i in range(1, 6)])
    pd.testing.assert_frame_equal(without_replayed_epochs(frame), frame)


def test_once_per_epoch_leaves_the_result_it_was_given_as_it_was():
    original = result(history((1, 9.0), (2, 5.0), (2, 7.5)))
    kept = once_per_epoch(original)
    assert list(kept.metrics_dataframe["val_mae"]) == [9.0, 7.5]
    assert len(original.metrics_dataframe) == 3 and kept.checkpoint is original.checkpoint


def test_a_superseded_report_does_not_make_its_trial_the_best():
    # Trial a's 5.0 was reported, then replayed as 7.5: its weights never reached 5.0.
    replayed = result(history((1, 9.0), (2, 5.0), (2, 7.5), (3, 7.0)))
    steady = result(history((1, 8.0), (2, 6.0)))
    assert best_result([once_per_epoch(replayed), once_per_epoch(steady)], "val_mae", "min").metrics_dataframe["val_mae"].min() == 6.0


def test_the_best_result_is_chosen_over_every_epoch_ignoring_nan_and_trials_without_a_checkpoint():
    def of(values, checkpoint=True):
        return result(pd.DataFrame({"val_mae": values}), checkpoint)

    early_best, late, unsaved = of([5.0, 8.0]), of([np.nan, 6.0]), of([1.0], checkpoint=False)
    assert best_result([late, early_best, unsaved], "val_mae", "min") is early_best
    assert best_result([late, early_best], "val_mae", "max") is early_best
    assert best_result([unsaved, of([np.nan])], "val_mae", "min") is None
