"""Model families (cnn, dnn, pca_dnn, resnet, multitask), their registry, PCA and checkpoints.

Importing this package registers the built-in families.
"""
from facetune.models import cnn as _cnn  # noqa: F401  (registers "cnn")
from facetune.models import mlp as _mlp  # noqa: F401  (registers "dnn" and "pca_dnn")
from facetune.models import multitask as _multitask  # noqa: F401  (registers "multitask")
from facetune.models import resnet as _resnet  # noqa: F401  (registers "resnet")
from facetune.models.checkpoint import load_model, num_parameters, save_model
from facetune.models.registry import build_model, families, make_context, register_family

__all__ = ["build_model", "families", "load_model", "make_context", "num_parameters", "register_family", "save_model"]
