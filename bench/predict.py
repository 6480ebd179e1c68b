"""Benchmark: facetune's batch prediction (Ray Data) against a plain torch loop, same images, one run.

    python bench/predict.py [--models RESULTS_DIR] [--images FOLDER] [--sizes 300,1000,3000,20000] [--repeats 3]

Both sides decode the same JPEG/PNG files with facetune.data.images.load_gray48 and run every
task's model on batches of --batch-size faces. The plain loop does it in this process; facetune
runs facetune.predict.predict_images(use_ray=True): decode tasks plus an actor pool. Ray is started once
before timing (its start-up is printed separately); the actor pool starts inside each timed run,
as it does for a user. For every size in --sizes (one run prints them all) it times the plain
loop, facetune's local path (use_ray=False) and its Ray Data path, and reports which path the
automatic choice (RAY_MIN_IMAGES) takes, how close that is to the faster one, and the chosen
path's speed over the plain loop. Last, detection throughput: find_faces(mode="detect") on
skimage's astronaut photo (512x512) and on a 400x300 composite scene.

Without --models, untrained models of the study's architectures (raycfg/models/paper.yaml) are
built into a temp dir: throughput does not depend on the weights. Without the shared UTKFace
folder, synthetic faces are written as JPEGs into a temp dir.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without installing
sys.path.insert(0, str(REPO_ROOT / "tests"))  # synthetic faces when the shared data is absent

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facetune.data.images import load_gray48  # noqa: E402
from facetune.predict.batch import ray_connection  # noqa: E402
from facetune.predict.predictor import Predictor, pixels_to_tensor  # noqa: E402
from facetune.predict.run import RAY_MIN_IMAGES, predict_images  # noqa: E402

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "UTKFace"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a sweep's results dir (default: untrained study models)")
    parser.add_argument("--family", default="cnn", help="family of the built models, or to pick in --models")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of face images")
    parser.add_argument("--sizes", default="300,1000,3000,20000", help="image counts to time (first N by name)")
    parser.add_argument("--detect-images", type=int, default=20, help="photos for the detection timing (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, help="Ray Data predictor actors (default: predict's own)")
    parser.add_argument("--cpus", type=int, help="CPUs for the local Ray instance (default: all)")
    return parser.parse_args()


def study_models(family: str, out: Path) -> dict[str, Path]:
    """Untrained models of the study's architectures, saved as a sweep would save them."""
    from facetune.models import build_model, save_model
    from facetune.models.presets import load_preset
    from facetune.tasks import TASKS

    preset = load_preset("paper")[family]
    model_dirs = {}
    for task_name, task in TASKS.items():
        arch = preset[task_name]["arch"]
        context: dict = {"target_mean": 33.0, "target_std": 20.0} if task.kind == "regression" else {}
        if family == "pca_dnn":
            context["n_components"] = 500  # the study's PCA size; zero buffers are fine for timing
        model = build_model(family, arch, task_name, context)
        save_model(model, out / f"{family}_{task_name}", family=family, task=task_name, arch=arch)
        model_dirs[task_name] = out / f"{family}_{task_name}"
    return model_dirs


def image_files(folder: Path, limit: int, scratch: Path) -> list[Path]:
    """Up to `limit` face files from `folder` (first by name), else synthetic JPEGs."""
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
        if files:
            return files
    from synthetic import make_faces, write_utkface_folder

    print(f"{folder} not found or empty: using {limit} synthetic JPEGs", file=sys.stderr)
    write_utkface_folder(scratch / "faces", make_faces(limit, seed=0))
    return sorted((scratch / "faces").iterdir())


@torch.no_grad()
def plain_torch_loop(models: list[torch.nn.Module], files: list[Path], batch_size: int) -> int:
    """Decode, stack, forward: what a user writes by hand. Returns the number of faces predicted."""
    done = 0
    for start in range(0, len(files), batch_size):
        batch = np.stack([load_gray48(f) for f in files[start : start + batch_size]])
        images = pixels_to_tensor(batch)
        for model in models:
            model(images)
        done += len(batch)
    return done


def timed(run) -> tuple[float, int]:
    started = time.perf_counter()
    count = run()
    return time.perf_counter() - started, count


def time_paths(predictor: Predictor, modules: list, files: list[Path], args: argparse.Namespace) -> dict[str, float]:
    """Median images/s of the plain loop and of facetune's local and Ray paths on `files`."""
    runs: dict[str, list[float]] = {"plain": [], "local": [], "ray": []}
    for _ in range(args.repeats):
        seconds, count = timed(lambda: plain_torch_loop(modules, files, args.batch_size))
        runs["plain"].append(count / seconds)
        for path, use_ray in (("local", False), ("ray", True)):
            seconds, count = timed(lambda: len(predict_images(
                predictor, files, use_ray=use_ray, num_workers=args.workers, batch_size=args.batch_size).predictions))
            if count != len(files):
                raise RuntimeError(f"facetune predicted {count} of {len(files)} images")
            runs[path].append(count / seconds)
    return {name: statistics.median(values) for name, values in runs.items()}


def detection_throughput(count: int) -> None:
    """find_faces(mode="detect") per second on a real photo and on a composite scene."""
    import skimage.data

    from facetune.predict.faces import find_faces
    from scenes import background_photos, make_scene

    rng = np.random.default_rng(0)
    face = skimage.data.astronaut()[69:160, 178:270]
    photos = {"astronaut 512x512": skimage.data.astronaut(),
              "composite 400x300": make_scene(rng, background_photos(), [face], [0])[0]}
    for name, photo in photos.items():
        seconds, _ = timed(lambda: [find_faces(photo, "detect") for _ in range(count)])
        print(f"detection ({name}): {count / seconds:.1f} images/s (detect + align + crop, 1 process)")


def main() -> int:
    args = parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="facetune-bench-predict-") as scratch:
        scratch = Path(scratch)
        if args.models:
            predictor = Predictor.from_results(args.models, family=args.family, device="cpu")
        else:
            predictor = Predictor.from_model_dirs(study_models(args.family, scratch / "models"), device="cpu")
        all_files = image_files(args.images, max(sizes), scratch)
        modules = [m.module for m in predictor.models.values()]
        print(f"models: {', '.join(f'{t}={m.family}' for t, m in predictor.models.items())}, "
              f"torch threads: {torch.get_num_threads()}, auto: Ray above {RAY_MIN_IMAGES} images")

        started = time.perf_counter()
        with ray_connection(num_cpus=args.cpus):
            print(f"ray start-up: {time.perf_counter() - started:.1f} s (not counted)")
            print(f"{'images':>7} {'plain':>7} {'local':>7} {'ray':>7}  auto   auto/faster  auto/plain  (images/s, "
                  f"median of {args.repeats})")
            for size in sizes:
                # Sizes past the folder reuse its files: decode and predict cost the same.
                files = [all_files[i % len(all_files)] for i in range(size)]
                rates = time_paths(predictor, modules, files, args)
                auto = "ray" if size > RAY_MIN_IMAGES else "local"
                print(f"{size:>7} {rates['plain']:>7.0f} {rates['local']:>7.0f} {rates['ray']:>7.0f}  {auto:<5}  "
                      f"{rates[auto] / max(rates['local'], rates['ray']):>10.2f}  {rates[auto] / rates['plain']:>10.2f}",
                      flush=True)
    if args.detect_images:
        detection_throughput(args.detect_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
