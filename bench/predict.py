"""Benchmark: facetune's batch prediction (Ray Data) against a plain torch loop, same images, one run.

    python bench/predict.py [--models RESULTS_DIR] [--images FOLDER] [--limit 1000] [--repeats 3]

Both sides decode the same JPEG/PNG files with facetune.data.images.load_gray48 and run every
task's model on batches of --batch-size faces. The plain loop does it in this process; facetune
runs Predictor.predict_images(use_ray=True): decode tasks plus an actor pool. Ray is started once
before timing (its start-up is printed separately); the actor pool starts inside each timed run,
as it does for a user. Prints the median images/s of --repeats runs for both and the ratio.

Without --models, untrained models of the study's architectures (raycfg/models/paper.yaml) are
built into a temp dir: throughput does not depend on the weights. Without the shared UTKFace
folder, synthetic faces are written as JPEGs into a temp dir.
"""
from __future__ import annotations

import argparse
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
from throughput import print_throughput_ratio  # noqa: E402  (bench/ is on sys.path as the script's folder)

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "UTKFace"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a sweep's results dir (default: untrained study models)")
    parser.add_argument("--family", default="cnn", help="family of the built models, or to pick in --models")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of face images")
    parser.add_argument("--limit", type=int, default=1000, help="images to predict on (first N by name)")
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


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="facetune-bench-predict-") as scratch:
        scratch = Path(scratch)
        if args.models:
            predictor = Predictor.from_results(args.models, family=args.family, device="cpu")
        else:
            predictor = Predictor.from_model_dirs(study_models(args.family, scratch / "models"), device="cpu")
        files = image_files(args.images, args.limit, scratch)
        modules = [m.module for m in predictor.models.values()]
        print(f"{len(files)} images, models: {', '.join(f'{t}={m.family}' for t, m in predictor.models.items())}, "
              f"torch threads: {torch.get_num_threads()}")

        started = time.perf_counter()
        with ray_connection(num_cpus=args.cpus):
            print(f"ray start-up: {time.perf_counter() - started:.1f} s (not counted)")
            plain, batched = [], []
            for repeat in range(args.repeats):
                seconds, count = timed(lambda: plain_torch_loop(modules, files, args.batch_size))
                plain.append(count / seconds)
                seconds, count = timed(
                    lambda: len(predictor.predict_images(files, use_ray=True, num_workers=args.workers,
                                                         batch_size=args.batch_size).predictions)
                )
                if count != len(files):
                    raise RuntimeError(f"facetune predicted {count} of {len(files)} images")
                batched.append(count / seconds)
                print(f"run {repeat + 1}: plain {plain[-1]:.0f} img/s, facetune {batched[-1]:.0f} img/s")
    print_throughput_ratio(("plain", plain), ("facetune", batched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
