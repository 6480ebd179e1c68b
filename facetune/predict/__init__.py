"""Predicting with a sweep's models (or the shipped ones): the Predictor API and batch inference.

    from facetune.predict import Predictor, predict_images
    predictor = Predictor.from_results("runs/results")          # best model per task (by val)
    result = predict_images(predictor, ["face.jpg", "other.png"])
    result.predictions   # DataFrame: source, age, gender, gender_prob_female, ethnicity, prob_*
    result.rejects       # [Reject(source, reason)] for unreadable files
    predictor.predict_array(pixels)  # faces in any one layout, uint8 or float in [0, 1]; each model gets its spec

Modules import one way: inputs -> table -> predictor (loading, choice.py picks the models)
-> local (this process) and batch (Ray Data) -> run (chooses the path) -> facetune.commands.predict.
"""
from facetune.predict.choice import choose_best, read_summary
from facetune.predict.evaluate import evaluate, format_evaluation
from facetune.predict.inputs import Inputs, Reject, gather_inputs
from facetune.predict.predictor import Predictor
from facetune.predict.run import RAY_MIN_IMAGES, predict_images, predict_inputs
from facetune.predict.table import PredictionResult, prediction_columns

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
    "predict_images",
    "predict_inputs",
    "prediction_columns",
    "read_summary",
]
