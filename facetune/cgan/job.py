"""The train-cgan job: options, config resolution, the age regressor, and Ray start/stop.

Shared by `jobs/train_cgan.py` and `facetune train-cgan`, so both take the same options.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from facetune.config_files import config_path, deep_merge, load_yaml
from facetune.config_keys import CGAN_FILE, CGAN_RUN, apply_assignments, check
from facetune.errors import InputNotFoundError, InvalidInputError, UsageError
from facetune.ray_session import add_address_argument, check_address, ray_session
from facetune.records import MODEL_CONFIG_FILE
from facetune.settings import require_data_path

CONFIG_FILE = "cgan.yaml"
AGE_MODEL_DIR = "age_regressor"  # the fallback regressor's dir under RESULTS
SWEEP_AGE_MODEL = "cnn_age"      # the sweep's best age model under a sweep results dir


def profile_names(path: str = CONFIG_FILE) -> list[str]:
    return sorted(load_yaml(path)["profiles"])


def resolve_config(profile: str, overrides: dict[str, Any] | None = None, path: str = CONFIG_FILE,
                   assignments: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """raycfg/cgan.yaml defaults <- profile <- overrides <- `--set` assignments, with the named
    preset split into model/optim. Unknown keys anywhere fail here (facetune.config_keys)."""
    source = config_path(path)
    raw = load_yaml(source)
    check(raw, CGAN_FILE, str(source))
    if profile not in raw["profiles"]:
        raise InvalidInputError(f"unknown cgan profile {profile!r}; known: {sorted(raw['profiles'])}")
    check(overrides or {}, CGAN_RUN, "cgan overrides")
    config = deep_merge(deep_merge(raw["defaults"], raw["profiles"][profile]), overrides or {})
    config = apply_assignments(config, assignments, CGAN_RUN)
    check(config, CGAN_RUN, f"{source} with --set {' '.join(assignments)}" if assignments else str(source))
    preset_name = config["preset"]
    if preset_name not in raw["presets"]:
        raise InvalidInputError(f"profile {profile!r}: unknown preset {preset_name!r}; known: {sorted(raw['presets'])}")
    preset = raw["presets"][preset_name]
    config["profile"] = profile
    config["model"] = {
        "noise_dim": preset["noise_dim"],
        "generator": preset["generator"],
        "discriminator": preset["discriminator"],
        "age_scaling": raw["age_scaling"],
    }
    config["optim"] = {key: preset[key] for key in ("loss", "lr_g", "lr_d", "betas", "ema_decay")}
    return config


def find_age_model(path: str | os.PathLike[str]) -> Path:
    """A model dir (model_config.json) or a sweep results dir holding cnn_age/ -> the model dir."""
    path = Path(path)
    for candidate in (path, path / SWEEP_AGE_MODEL):
        config_file = candidate / MODEL_CONFIG_FILE
        if config_file.is_file():
            task = json.loads(config_file.read_text()).get("task")
            if task != "age":
                raise InvalidInputError(f"--age-model {candidate}: a {task!r} model, not an age regressor")
            return candidate
    raise InputNotFoundError(f"--age-model {path}: no model_config.json there nor in {path / SWEEP_AGE_MODEL}")


def train_fallback_age_model(data_dir: Path, out_dir: Path, spec: dict[str, Any], seed: int,
                             row_limit: int | None = None) -> Path:
    """Train the small age CNN the metrics need when no sweep result is given (plain PyTorch, no Ray),
    on the first `row_limit` train faces when given."""
    import numpy as np
    import torch

    from facetune.data.loading import load_split
    from facetune.models import build_model, make_context, save_model
    from facetune.tasks import TASKS
    from facetune.training.loop import TrainConfig, fit, seed_everything

    task = TASKS["age"]
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    if row_limit:
        train = train.head(int(row_limit))
    train_y = torch.as_tensor(np.array(train.labels("age")))  # a writable copy
    seed_everything(seed)
    model = build_model(spec["family"], spec["arch"], task, make_context(task, train_y))
    cfg = TrainConfig(epochs=spec["epochs"], batch_size=spec["batch_size"], lr=spec["lr"], seed=seed, patience=0)
    result = fit(model, task, train.images(), train_y, val.images(), torch.as_tensor(np.array(val.labels("age"))), cfg)
    save_model(model, out_dir, family=spec["family"], task=task, arch=spec["arch"])
    print(f"fallback age regressor: val MAE {result.best_metrics['val_mae']:.2f} years (epoch {result.best_epoch})")
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, choices=profile_names(), help="run profile from raycfg/cgan.yaml")
    parser.add_argument("--data", required=True, help="prepared data dir (output of `facetune prepare`)")
    parser.add_argument("--results", required=True, help="output dir: checkpoints, samples/, history.csv, generator.pt")
    parser.add_argument("--resume", action="store_true", help="continue the run stopped in --results")
    parser.add_argument(
        "--age-model", default=None,
        help="age regressor for the metrics: a sweep results dir (uses cnn_age/) or a model dir; "
        "default: train a small one into RESULTS/age_regressor",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epoch count (= --set epochs=N)")
    add_address_argument(parser)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a run setting of raycfg/cgan.yaml, e.g. batch_size=32 or grid.rows=4 (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Resolve the config, make sure an age regressor exists, run the training under Ray."""
    from facetune.cgan.train import check_run_state, run_training

    data_dir = require_data_path(args.data).resolve()
    results = Path(args.results).resolve()
    try:
        check_run_state(results, args.resume)
    except (FileExistsError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    assignments = [*args.set, *([f"epochs={args.epochs}"] if args.epochs else [])]
    config = resolve_config(args.profile, assignments=assignments)
    config.update(data_dir=str(data_dir), results_dir=str(results))
    check_address(args.address)  # before the fallback regressor's minutes of training
    if args.age_model:
        config["age_model_dir"] = str(find_age_model(args.age_model).resolve())
    else:
        fallback = results / AGE_MODEL_DIR
        if not (fallback / "model_config.json").is_file():
            print(f"training the fallback age regressor into {fallback}")
            train_fallback_age_model(data_dir, fallback, config["age_model"], config["seed"], config["row_limit"])
        config["age_model_dir"] = str(fallback)

    with ray_session(args.address):
        final = run_training(config, resume=args.resume)
    keys = ("epoch", "age_mae_generated", "age_mae_real_floor", "age_mae_shuffled_ceiling", "frechet_distance_cnn")
    print(json.dumps({key: final.get(key) for key in keys}, indent=2))
    print(f"generator: {results / 'generator.pt'}  samples: {results / 'samples'}")
    return 0
