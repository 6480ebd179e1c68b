"""The colour trial of issue 40 (raycfg/release_color.yaml): what a 64x64 colour epoch costs
against a 48x48 gray one here, and the trial member's val figures against the shipped seed-0 member's.

    python bench/color_trial.py --time-epochs [--batches 30] [--runs 3]
    python bench/color_trial.py --data-color runs/color/data-64-color --work runs/color/work
    python bench/color_trial.py --short 8 --data-gray runs/data --work runs/color/short

--time-epochs trains the recipe's member (its train keys: bf16 where the CPU has it, channels-last,
the augmentation) on random faces of each layout for --batches batches, --runs times alternating
the layouts, and scales the median to one epoch of the train split. The comparison resumes the
trial's finished training (nothing is trained again), evaluates it on val with flip averaging,
evaluates the shipped seed-0 member the same way on the gray val split, checks that both val
splits hold the same faces (by file name), and applies the rule written in the recipe. --short N
is a cheaper signal, not the judgement: the member's first stage cut to N epochs (cosine schedule
over N), trained from the same seed on each layout, both evaluated on val the same way.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facetune.data.loading import load_split  # noqa: E402
from facetune.data.prepare import ensure_prepared  # noqa: E402
from facetune.models import build_model, load_model, make_context  # noqa: E402
from facetune.records import DEFAULT_INPUT_SPEC, MULTITASK, SPLITS, InputSpec  # noqa: E402
from facetune.release.card import figures_line  # noqa: E402
from facetune.release.evaluation import evaluate  # noqa: E402
from facetune.release.paths import MEMBERS_DIR, PRETRAINED_DIR  # noqa: E402
from facetune.release.members import train_member  # noqa: E402
from facetune.release.recipe import load_recipe, member_recipes  # noqa: E402
from facetune.release.train import train_release  # noqa: E402
from facetune.storage import ResultsStore  # noqa: E402
from facetune.training.augment import augment_batch  # noqa: E402
from facetune.training.fit_parts import bf16_supported, make_optimizer  # noqa: E402
from facetune.training.loop import Objective, TrainConfig  # noqa: E402

RECIPE = REPO_ROOT / "raycfg" / "release_color.yaml"
COLOR = InputSpec.color(64)
#: The rule of raycfg/release_color.yaml: (gender points, ethnicity points, age MAE years) the colour member must reach.
RULE = {"gender_points": 0.3, "ethnicity_points": 0.5, "age_mae_years": 0.0}
TRAIN_FACES = 17_080  # the train split of the shared data


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-epochs", action="store_true", help="time a training epoch of each layout")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-color", default="runs/color/data-64-color", help="the trial's prepared colour data")
    parser.add_argument("--data-gray", default=None, help="the shipped members' data (default: the default data)")
    parser.add_argument("--work", default="runs/color/work", help="the trial's --work")
    parser.add_argument("--short", type=int, metavar="EPOCHS", help="train the member's first stage for EPOCHS on each layout")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def batch_seconds(spec: InputSpec, member: dict, batches: int) -> float:
    """Seconds per training batch of the recipe's member on random faces of `spec`'s layout."""
    cfg = TrainConfig.from_dict(member["train"])
    rng = np.random.default_rng(0)
    model = build_model(member["family"], member["arch"], MULTITASK,
                        make_context(MULTITASK, np.arange(0, 117), loss=cfg.loss, input_spec=spec)).train()
    model.to(memory_format=torch.channels_last)
    objective, optimizer = Objective(model, MULTITASK, cfg), make_optimizer(model, cfg)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported(torch.device("cpu")))
    generator = torch.Generator().manual_seed(1)
    faces = torch.from_numpy(rng.random((cfg.batch_size, *spec.shape), np.float32))
    labels = {"age": torch.from_numpy(rng.integers(0, 100, cfg.batch_size)),
              "gender": torch.from_numpy(rng.integers(0, 2, cfg.batch_size)),
              "ethnicity": torch.from_numpy(rng.integers(0, 5, cfg.batch_size))}
    started = None
    for step in range(batches + 2):  # two warm-up steps
        if step == 2:
            started = time.perf_counter()
        x = augment_batch(faces, cfg.augment, generator, cfg.color_jitter, cfg.affine_probability)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(x)
        loss = objective.loss(outputs.float(), labels, {})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / batches


def time_epochs(args: argparse.Namespace) -> dict:
    member = member_recipes(load_recipe(RECIPE))[0]
    torch.set_num_threads(2)
    per_batch = {DEFAULT_INPUT_SPEC.describe(): [], COLOR.describe(): []}
    for _ in range(args.runs):
        for spec in (DEFAULT_INPUT_SPEC, COLOR):
            per_batch[spec.describe()].append(batch_seconds(spec, member, args.batches))
    batches = -(-TRAIN_FACES // member["train"]["batch_size"])
    epochs = {name: statistics.median(values) * batches for name, values in per_batch.items()}
    gray, colour = epochs[DEFAULT_INPUT_SPEC.describe()], epochs[COLOR.describe()]
    print(f"one training epoch of the member ({batches} batches, median of {args.runs} runs of {args.batches}; "
          f"the validation pass not included): {DEFAULT_INPUT_SPEC.describe()} {gray:.0f} s, {COLOR.describe()} "
          f"{colour:.0f} s ({colour / gray:.2f}x)")
    return {"epoch_seconds": epochs, "ratio": colour / gray, "batch_seconds": per_batch}


def compare(args: argparse.Namespace) -> dict:
    trial = train_release(args.data_color, args.work, recipe_path=RECIPE, val_only=True, log=lambda line: None)
    colour = trial["members"]["0"]["overall"]
    gray_data = ensure_prepared(args.data_gray, ResultsStore(Path(args.work) / "gray"))
    gray_val, colour_val = load_split(gray_data, "val"), load_split(args.data_color, "val")
    same_faces = sorted(s.removesuffix(".chip.jpg") for s in colour_val.source) == sorted(gray_val.source)
    shipped, _ = load_model(PRETRAINED_DIR / MEMBERS_DIR / "seed-0")
    gray = evaluate(shipped, gray_val, True)["overall"]
    gains = {"gender_points": (colour["gender"]["accuracy"] - gray["gender"]["accuracy"]) * 100,
             "ethnicity_points": (colour["ethnicity"]["accuracy"] - gray["ethnicity"]["accuracy"]) * 100,
             "age_mae_years": colour["age"]["mae"] - gray["age"]["mae"]}
    holds = (gains["gender_points"] >= RULE["gender_points"] and gains["ethnicity_points"] >= RULE["ethnicity_points"]
             and gains["age_mae_years"] <= RULE["age_mae_years"])
    print(f"val faces: {len(colour_val)} colour, {len(gray_val)} gray, the same faces by name: {same_faces}")
    print(f"shipped seed-0 member, 48x48 gray, flip averaging: {figures_line(gray)}")
    print(f"trial seed-0 member, 64x64 colour, flip averaging: {figures_line(colour)}")
    print(f"colour - gray: gender {gains['gender_points']:+.2f} points, ethnicity {gains['ethnicity_points']:+.2f} points, "
          f"age MAE {gains['age_mae_years']:+.3f} years; rule {RULE}: {'holds' if holds else 'does not hold'}")
    return {"same_faces": same_faces, "gray": gray, "colour": colour, "gains": gains, "rule": RULE, "holds": holds}


def short_pair(args: argparse.Namespace) -> dict:
    member = {**member_recipes(load_recipe(RECIPE))[0], "finetune": None}
    torch.set_num_threads(2)
    figures, faces = {}, {}
    for name, data in (("48x48 gray", args.data_gray), ("64x64 colour", args.data_color)):
        work = Path(args.work) / name.replace(" ", "-")
        prepared = ensure_prepared(data, ResultsStore(work))
        splits = {split: load_split(prepared, split) for split in SPLITS}
        model, fitted = train_member(member, splits, work, args.short, None, lambda line: print(line, flush=True),
                                     torch.device("cpu"))
        figures[name] = evaluate(model, splits["val"], True)["overall"] | {"best_epoch": fitted["best_epoch"],
                                                                            "train_seconds": fitted["train_seconds"]}
        faces[name] = sorted(str(source).removesuffix(".chip.jpg") for source in splits["val"].source)
        print(f"{name}, {args.short} epochs (best {fitted['best_epoch']}), val, flip averaging: "
              f"{figures_line(figures[name])}", flush=True)
    gray, colour = figures.values()
    print(f"the same val faces by name: {faces['48x48 gray'] == faces['64x64 colour']}; colour - gray: gender "
          f"{(colour['gender']['accuracy'] - gray['gender']['accuracy']) * 100:+.2f} points, ethnicity "
          f"{(colour['ethnicity']['accuracy'] - gray['ethnicity']['accuracy']) * 100:+.2f} points, age MAE "
          f"{colour['age']['mae'] - gray['age']['mae']:+.3f} years")
    return figures


def main() -> int:
    args = parse_args()
    result = time_epochs(args) if args.time_epochs else short_pair(args) if args.short else compare(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
