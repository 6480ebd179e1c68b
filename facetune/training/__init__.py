"""Plain-PyTorch training: the fit/evaluate loop and batch augmentation (no Ray imports)."""
from facetune.training.loop import (
    EpochReport,
    FitResult,
    TrainConfig,
    evaluate,
    fit,
    predict_outputs,
    seed_everything,
)

__all__ = ["EpochReport", "FitResult", "TrainConfig", "evaluate", "fit", "predict_outputs", "seed_everything"]
