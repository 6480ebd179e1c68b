"""Stacked heads: a logistic regression over an ensemble's joined trunk features, fitted after its members.

Each member's trunk sees a face a little differently; one linear classifier over all their
features side by side can weigh those views, where averaging the members' own heads cannot.
The regression is fitted on the members' training faces (flip-averaged features, no augmentation)
with sklearn, and folded, standardisation included, into one nn.Linear per task, so the shipped
ensemble needs nothing but torch to run it (and exports to ONNX like any linear layer).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from facetune.models.inference import predict_outputs


def joined_features(members: Sequence[nn.Module], x: torch.Tensor | np.ndarray, channels_last: bool = True) -> np.ndarray:
    """(N, sum of trunk widths): every member's flip-averaged trunk features, side by side.

    With `channels_last` each member's trunk is converted to that memory format in place (same
    values, faster CPU convolutions), as the Predictor does."""
    parts = []
    for member in members:
        trunk = member.features.to(memory_format=torch.channels_last) if channels_last else member.features
        parts.append(predict_outputs(trunk, x, tta_flip=True, channels_last=channels_last))
    return np.concatenate(parts, axis=1)


def fit_stacked_head(features: np.ndarray, labels: np.ndarray, num_classes: int, c: float) -> tuple[nn.Linear, float]:
    """(head, training accuracy): L2-regularised logistic regression (sklearn's C = `c`) on
    standardised `features`, as one linear layer on the raw features giving class logits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if c <= 0:
        raise ValueError(f"stacked head: c must be positive, got {c}")
    labels = np.asarray(labels)
    present = np.unique(labels).tolist()
    if present != list(range(num_classes)):
        raise ValueError(f"stacked head: the training labels must hold every class 0..{num_classes - 1}, got {present}")
    scaler = StandardScaler().fit(features)
    regression = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(features), labels)
    if num_classes == 2:
        # sklearn's binary model gives one logit z for class 1; logits (-z/2, z/2) have softmax = sigmoid(z).
        coef = np.concatenate([-regression.coef_, regression.coef_]) / 2
        intercept = np.concatenate([-regression.intercept_, regression.intercept_]) / 2
    else:
        coef, intercept = regression.coef_, regression.intercept_
    # w . (f - mean) / scale + b  ==  (w / scale) . f + (b - w . (mean / scale))
    weight = coef / scaler.scale_
    bias = intercept - coef @ (scaler.mean_ / scaler.scale_)
    head = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    accuracy = float((regression.predict(scaler.transform(features)) == labels).mean())
    return head, accuracy
