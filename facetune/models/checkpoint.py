"""Saving a trained model as a state_dict plus the JSON that rebuilds it, and loading it back."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from facetune.json_files import write_json
from facetune.models.ensemble import assemble_ensemble, read_ensemble_config
from facetune.models.registry import build_model
from facetune.records import (
    DEFAULT_INPUT_SPEC,
    ENSEMBLE_CONFIG_FILE,
    MODEL_CONFIG_FILE,
    MODEL_WEIGHTS_FILE,
    STACKED_HEADS_FILE,
    input_spec_from,
)
from facetune.tasks import MULTITASK, Task, get_task


def num_parameters(model: nn.Module) -> int:
    """Trainable parameters only: the PCA and target-scale buffers are not counted."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def save_model(
    model: nn.Module,
    out_dir: str | Path,
    *,
    family: str,
    task: "Task | str",
    arch: dict,
    context_meta: dict | None = None,
    weights_dtype: torch.dtype | None = None,
) -> None:
    """Write out_dir/model.pt (a plain state_dict) and out_dir/model_config.json.

    `context_meta` defaults to what the model recorded itself (e.g. pca_dnn's n_components);
    it holds only sizes, the data-derived values travel as buffers in the state_dict.
    `weights_dtype` (e.g. torch.float16) stores the floating-point tensors in that type, to halve a
    shipped file; load_model casts them back to the model's own type. The faces' layout the model
    takes (its `input_spec`) is recorded as "input_spec", so a loader knows how to convert faces.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(getattr(model, "context_meta", {}) if context_meta is None else context_meta)
    # Row-major strides: a model trained channels_last would otherwise store its conv weights in that
    # layout, so saving the same weights again after a reload (a release reusing a shipped member)
    # would write other bytes and change the file's sha256.
    state = {name: tensor.detach().cpu().clone(memory_format=torch.contiguous_format) for name, tensor in model.state_dict().items()}
    if weights_dtype is not None:
        state = {name: tensor.to(weights_dtype) if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    torch.save(state, out / MODEL_WEIGHTS_FILE)
    config = {
        "family": family,
        "task": MULTITASK if task == MULTITASK else get_task(task).name,
        "arch": arch,
        "context_meta": meta,
        "num_parameters": num_parameters(model),
        "input_spec": getattr(model, "input_spec", DEFAULT_INPUT_SPEC).to_dict(),
    }
    write_json(out / MODEL_CONFIG_FILE, config, sort_keys=True)


def load_model(out_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from out_dir/model_config.json, load model.pt into it, return it in eval mode.

    The model is built for the recorded "input_spec" (its `input_spec` attribute; a checkpoint
    written before specs were recorded takes 48x48 gray, and its returned config says so).
    A folder written as an ensemble (ensemble.json) loads as one Ensemble module.
    """
    out = Path(out_dir)
    if (out / ENSEMBLE_CONFIG_FILE).is_file():
        config = read_ensemble_config(out)
        members = [load_model(out / member["dir"], map_location) for member in config["members"]]
        stacked_path = out / STACKED_HEADS_FILE
        if config.get("stacked_heads") and not stacked_path.is_file():
            raise FileNotFoundError(f"not a saved facetune model: {stacked_path} is missing")
        stacked = torch.load(stacked_path, map_location="cpu", weights_only=True) if config.get("stacked_heads") else None
        return assemble_ensemble(config, members, stacked).to(map_location).eval(), config
    config_path, weights_path = out / MODEL_CONFIG_FILE, out / MODEL_WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"not a saved facetune model: {path} is missing")
    config = json.loads(config_path.read_text())
    spec = input_spec_from(config.get("input_spec"), f"{config_path}: input_spec")
    config.setdefault("input_spec", spec.to_dict())
    context = {**(config.get("context_meta") or {}), "input_spec": spec}
    model = build_model(config["family"], config["arch"], config["task"], context=context)
    state = torch.load(weights_path, map_location=map_location, weights_only=True)
    # strict: a mismatch means the config does not describe these weights. load_state_dict copies
    # into the model's own float32 tensors, so weights stored as float16 come back as float32.
    model.load_state_dict(state)
    model.to(map_location)
    return model.eval(), config
