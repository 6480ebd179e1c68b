"""Release training on a GPU against the CPU: a release member's training images/s, and what a member costs.

    python bench/train_device.py [--device auto] [--faces 2048] [--epochs 3] [--threads N]

Trains the release recipe's member (raycfg/release.yaml: its trunk, batch size, augmentation, EMA,
precision and layout) and the `gpu` profile's widest multitask trunk (widths [64, 128, 256, 512],
blocks [2, 2, 2, 2]) with facetune's own fit(), as `train-release` does, on random faces: speed does
not depend on what the faces show, so no data is needed (a GPU machine can run it with nothing
carried). Each side trains `--epochs` epochs; the first is warm-up (cuDNN's algorithm search, the
allocator) and the median images/s of the others is reported.

The CPU side (all of this machine's cores unless --threads) is the baseline; with a GPU (`--device`,
default: the first GPU when there is one) each trunk's GPU/CPU ratio is printed, and the widest
trunk's cost against the release trunk's on every side. "member" is the projected training time of
one member at that speed: 17,080 train faces x the recipe's 40 epochs, validation not counted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from facetune.devices import describe_device, resolve_device  # noqa: E402
from facetune.errors import FacetuneError  # noqa: E402

TRAIN_FACES = 17_080  # the project's train split (seed 0)
WIDEST_TRUNK = {"widths": [64, 128, 256, 512], "blocks": [2, 2, 2, 2]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="the side compared with the CPU (default: auto)")
    parser.add_argument("--faces", type=int, default=2048, help="random faces per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per side; the first is warm-up")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the CPU side")
    args = parser.parse_args()
    if args.faces < 256 or args.epochs < 2 or args.threads < 1:
        parser.error("need --faces >= 256, --epochs >= 2 (one warm-up, one timed) and --threads >= 1")
    return args


def trunks() -> dict[str, tuple[dict, dict]]:
    """name -> (multitask arch, train keys): the release member, and the widest trunk with its training."""
    from facetune.release.recipe import load_recipe

    recipe = load_recipe()
    widest = {**recipe["arch"], "trunk_arch": {**recipe["arch"]["trunk_arch"], **WIDEST_TRUNK}}
    return {"release trunk": (recipe["arch"], recipe["train"]), "widest gpu-profile trunk": (widest, recipe["train"])}


def images_per_second(arch: dict, train_keys: dict, device: torch.device, faces: int, epochs: int) -> list[float]:
    """Training images/s of each epoch after the first, on `device`."""
    from facetune.models import build_model, make_context
    from facetune.tasks import MULTITASK, TASKS
    from facetune.training.loop import TrainConfig, fit, seed_everything

    seed_everything(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(faces + 256, 1, 48, 48, generator=generator)
    labels = {"age": torch.randint(1, 90, (faces + 256,), generator=generator),
              "gender": torch.randint(0, 2, (faces + 256,), generator=generator),
              "ethnicity": torch.randint(0, 5, (faces + 256,), generator=generator)}
    assert set(labels) == set(TASKS)
    cfg = TrainConfig.from_dict({**train_keys, "epochs": epochs, "patience": 0})
    model = build_model("multitask", arch, MULTITASK, make_context(MULTITASK, labels["age"][:faces], loss=cfg.loss))
    x, labels = x.to(device), {k: v.to(device) for k, v in labels.items()}
    result = fit(model, MULTITASK, x[:faces], {k: v[:faces] for k, v in labels.items()},
                 x[faces:], {k: v[faces:] for k, v in labels.items()}, cfg)
    return [epoch["images_per_second"] for epoch in result.history[1:]]


def main() -> int:
    args = parse_args()
    try:
        device = resolve_device(args.device)
    except FacetuneError as err:
        print(f"bench/train_device.py: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    sides = [torch.device("cpu")] + ([device] if device.type != "cpu" else [])
    names = {side: f"{describe_device(side)}" + (f", {args.threads} threads" if side.type == "cpu" else "") for side in sides}
    print(f"{args.faces} random faces an epoch, {args.epochs - 1} timed epoch(s) after one warm-up; member = "
          f"{TRAIN_FACES:,} faces x 40 epochs")
    medians: dict[tuple[str, torch.device], float] = {}
    for trunk, (arch, train_keys) in trunks().items():
        for side in sides:
            runs = images_per_second(arch, train_keys, side, args.faces, args.epochs)
            medians[trunk, side] = statistics.median(runs)
            minutes = TRAIN_FACES * 40 / medians[trunk, side] / 60
            print(f"{trunk:<25} {names[side]:<40} {medians[trunk, side]:9.0f} images/s   member {minutes:7.1f} min")
    release, widest = trunks()
    for side in sides:
        print(f"widest / release trunk cost on {names[side]}: {medians[release, side] / medians[widest, side]:.2f}x")
    if len(sides) == 1:
        print("no GPU here: the GPU/CPU ratio needs --device cuda on a GPU machine")
    for trunk in (release, widest):
        if len(sides) > 1:
            print(f"ratio {names[sides[1]]} / cpu, {trunk}: {medians[trunk, sides[1]] / medians[trunk, sides[0]]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
