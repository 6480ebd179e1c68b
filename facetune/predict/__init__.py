"""Predicting with a sweep's models: the Predictor API and Ray Data batch inference.

    from facetune.predict import Predictor
    predictor = Predictor.from_results("runs/results")          # best model per task (by val)
    result = predictor.predict_images(["face.jpg", "other.png"])
    result.predictions   # DataFrame: source, age, gender, gender_prob_female, ethnicity, prob_*
    result.rejects       # [Reject(source, reason)] for unreadable files
    predictor.predict_array(pixels)  # (N, 48, 48) / (N, 2304) uint8 or float in [0, 1]
"""
from facetune.predict.evaluate import evaluate, format_evaluation
from facetune.predict.inputs import Inputs, gather_inputs
from facetune.predict.predictor import (
    RAY_MIN_IMAGES,
    Predictor,
    PredictionResult,
    Reject,
    choose_best,
    prediction_columns,
    read_summary,
)

__all__ = [
    "RAY_MIN_IMAGES",
    "Inputs",
    "PredictionResult",
    "Predictor",
    "Reject",
    "choose_best",
    "evaluate",
    "format_evaluation",
    "gather_inputs",
    "prediction_columns",
    "read_summary",
]
