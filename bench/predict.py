"""Benchmark: batch prediction on image files, facetune's two paths against the old plain loop, one run.

    python bench/predict.py [--models RESULTS_DIR] [--images FOLDER] [--sizes 300,1000,3000,20000] [--repeats 3]

For every size in --sizes it times, on the first N files of --images (default: the shared
UTKFace folder; sizes past its end reuse its files):

- baseline: the plain loop `facetune predict` ran before the local path was reworked, kept here
  (only here) as the reference: decode one batch of files after the other in this thread, then
  predict the batch;
- local: facetune.predict.run.predict_images(use_ray=False) (threaded decode overlapping inference,
  the networks on onnxruntime as predict runs them from a few hundred inputs on);
- ray: the same with use_ray=True (one actor pool that decodes and predicts);
- auto: the path the automatic choice takes here (chooses_ray with the attached Ray cluster),

and prints images/s, each path's ratio to the baseline, and auto against the faster path. Sizes up
to 3,000 take the median of --repeats runs; larger sizes run once. Ray starts once before timing
(its start-up is printed apart); the actor pool starts inside each timed Ray run, as for a user.
Every file is read once before timing so that the first path timed does not pay for a cold disk.
Last, detection: predict_photos(mode="detect") on --detect-images files (images/s and faces/s) and
find_faces on skimage's astronaut photo and a composite scene.

Models: the sweep's best per task with --models, else the shipped models (Predictor.pretrained,
flip averaging on, as `facetune predict` uses them). Without the image folder, synthetic faces
are written as JPEGs into a temp dir.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without installing
sys.path.insert(0, str(REPO_ROOT / "tests"))  # synthetic faces when the shared data is absent

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facetune.models.inference import predict_outputs  # noqa: E402
from facetune.models.multitask import TaskView, network_of  # noqa: E402
from facetune.predict.inputs import Reject, decode_images  # noqa: E402
from facetune.predict.predictor import Predictor, pixels_to_tensor  # noqa: E402
from facetune.predict.run import RAY_MIN_IMAGES, attached_cluster_cpus, chooses_ray, predict_images  # noqa: E402
from facetune.predict.table import prediction_frame  # noqa: E402
from facetune.ray_session import ray_session  # noqa: E402

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "UTKFace"
#: Sizes above this run once (the 20,000-image runs take minutes on a loaded machine).
REPEATED_UP_TO = 3000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a sweep's results dir (default: the shipped models)")
    parser.add_argument("--family", help="with --models: this family's checkpoints")
    parser.add_argument("--study-family", help="instead: untrained models of this family's study architectures "
                        "(raycfg/models/paper.yaml, e.g. cnn); throughput does not depend on the weights")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of face images")
    parser.add_argument("--sizes", default="300,1000,3000,20000", help="image counts to time (first N by name)")
    parser.add_argument("--detect-images", type=int, default=100, help="files for the detection timing (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, help="Ray Data predictor actors (default: predict's own)")
    parser.add_argument("--cpus", type=int, help="CPUs for the local Ray instance (default: all)")
    parser.add_argument("--no-ray", action="store_true", help="time the baseline and the local path only (no Ray start)")
    return parser.parse_args()


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


def study_models(family: str, out: Path) -> dict[str, Path]:
    """Untrained models of the study's architectures, saved as a sweep would save them."""
    from facetune.models import build_model, make_context, save_model
    from facetune.tuning.presets import load_preset
    from facetune.tasks import TASKS

    preset = load_preset("paper")[family]
    model_dirs = {}
    for task_name in TASKS:
        context = make_context(task_name, [13.0, 53.0])  # any age scale: timing only
        if family == "pca_dnn":
            context["n_components"] = 500  # the study's PCA size; zero buffers are fine for timing
        model = build_model(family, preset[task_name]["arch"], task_name, context)
        model_dirs[task_name] = out / f"{family}_{task_name}"
        save_model(model, model_dirs[task_name], family=family, task=task_name, arch=preset[task_name]["arch"])
    return model_dirs


def baseline_loop(predictor: Predictor, files: list[Path], batch_size: int) -> int:
    """The plain loop as `facetune predict` ran it before (kept as the reference): serial decode
    per batch, then the batch's forward pass in the default (contiguous) memory format, one pass
    per distinct network, then the table. Returns the number of rows."""
    networks = {}  # the old inference: each network in contiguous format, on its own copy
    for task, task_model in predictor.models.items():
        network = network_of(task_model.module)
        if id(network) not in networks:
            networks[id(network)] = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
    positions, chunks, rejects = [], {task: [] for task in predictor.tasks}, []
    for start in range(0, len(files), batch_size):
        stop = min(start + batch_size, len(files))
        pixels, ok, reasons = decode_images(files[start:stop])
        rejects += [Reject(str(files[start + i]), reasons[i]) for i in np.flatnonzero(~ok)]
        positions.append(start + np.flatnonzero(ok))
        images, shared = pixels_to_tensor(pixels[ok]), {}
        for task, task_model in predictor.models.items():
            module = task_model.module
            key = id(network_of(module))
            if key not in shared:
                shared[key] = predict_outputs(networks[key], images, batch_size, predictor.tta_flip)
            chunks[task].append(shared[key][:, module.columns] if isinstance(module, TaskView) else shared[key])
    kept = np.concatenate(positions)
    outputs = {task: np.concatenate(parts) for task, parts in chunks.items()}
    return len(prediction_frame(predictor.tasks, [str(files[i]) for i in kept], outputs, index=kept))


def rate(run: Callable[[], int], expected: int) -> float:
    started = time.perf_counter()
    count = run()
    seconds = time.perf_counter() - started
    if count != expected:
        raise RuntimeError(f"predicted {count} of {expected} images")
    return count / seconds


def time_paths(predictor: Predictor, files: list[Path], repeats: int, args: argparse.Namespace,
               with_ray: bool) -> dict[str, float]:
    """Median images/s of the baseline loop and of facetune's local and (`with_ray`) Ray paths on `files`."""
    paths = (("local", False), ("ray", True))[: 2 if with_ray else 1]
    runs: dict[str, list[float]] = {"baseline": [], **{name: [] for name, _ in paths}}
    for _ in range(repeats):
        runs["baseline"].append(rate(lambda: baseline_loop(predictor, files, args.batch_size), len(files)))
        for path, use_ray in paths:
            runs[path].append(rate(lambda: len(predict_images(
                predictor, files, use_ray=use_ray, num_workers=args.workers, batch_size=args.batch_size
            ).predictions), len(files)))
    return {name: statistics.median(values) for name, values in runs.items()}


def detection_throughput(predictor: Predictor, files: list[Path], args: argparse.Namespace) -> None:
    """`--faces detect` on real files (images/s, faces/s), and find_faces on two larger photos."""
    import skimage.data

    from facetune.predict.face_detection import find_faces
    from facetune.predict.photos import predict_photos
    from scenes import background_photos, make_scene

    started = time.perf_counter()
    result = predict_photos(predictor, files, "detect", args.batch_size)
    seconds = time.perf_counter() - started
    print(f"detection (--faces detect, {len(files)} files of {args.images.name}): {len(files) / seconds:.1f} images/s, "
          f"{len(result.predictions) / seconds:.1f} faces/s ({len(result.predictions)} faces found)")
    rng = np.random.default_rng(0)
    face = skimage.data.astronaut()[69:160, 178:270]
    photos = {"astronaut 512x512": skimage.data.astronaut(),
              "composite 400x300": make_scene(rng, background_photos(), [face], [0])[0]}
    count = 20
    for name, photo in photos.items():
        started = time.perf_counter()
        found = sum(len(find_faces(photo, "detect")) for _ in range(count))
        seconds = time.perf_counter() - started
        print(f"detection ({name}): {count / seconds:.1f} images/s, {found / seconds:.1f} faces/s "
              f"(detect + align + crop, 1 process)")


def warm_page_cache(files: list[Path]) -> None:
    for path in dict.fromkeys(files):
        path.read_bytes()


def main() -> int:
    args = parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="facetune-bench-predict-") as scratch:
        if args.models:
            predictor = Predictor.from_results(args.models, family=args.family, device="cpu")
            which = f"the sweep's best in {args.models}"
        elif args.study_family:
            predictor = Predictor.from_model_dirs(study_models(args.study_family, Path(scratch) / "models"), device="cpu")
            which = f"untrained study {args.study_family} models"
        else:
            predictor = Predictor.pretrained(device="cpu")
            which = "the shipped models (Predictor.pretrained)"
        started = time.perf_counter()
        engine = predictor.use_onnxruntime()  # what predict does from ONNXRUNTIME_MIN_IMAGES inputs on
        print(f"{engine} (twins built in {time.perf_counter() - started:.1f} s, not counted; the baseline runs torch)")
        all_files = image_files(args.images, max(sizes), Path(scratch))
        warm_page_cache(all_files)
        print(f"models: {which}: {', '.join(f'{t}={m.family}' for t, m in predictor.models.items())}, "
              f"flip averaging {'on' if predictor.tta_flip else 'off'}, torch threads: {torch.get_num_threads()}, "
              f"images: {args.images if all_files[0].parent == args.images else 'synthetic'}")

        with contextlib.ExitStack() as ray_in_use:
            started = time.perf_counter()
            try:
                if args.no_ray:
                    raise RuntimeError("--no-ray")
                ray_in_use.enter_context(ray_session(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False))
                cluster_cpus = attached_cluster_cpus()
                print(f"ray start-up: {time.perf_counter() - started:.1f} s (not counted); cluster CPUs: {cluster_cpus:g}")
            except Exception as err:  # noqa: BLE001 - an overloaded machine: still time the other paths
                cluster_cpus = None
                print(f"ray did not start ({str(err).splitlines()[0]}): the Ray path is not timed")
            print(f"auto takes Ray above {RAY_MIN_IMAGES} images only on a cluster with more CPUs than this machine")
            print(f"{'images':>7} {'baseline':>9} {'local':>7} {'ray':>7}  {'local/base':>10} {'ray/base':>9}  "
                  f"auto   auto/faster  auto/base   (images/s; median of {args.repeats} up to {REPEATED_UP_TO}, else 1 run)")
            for size in sizes:
                files = [all_files[i % len(all_files)] for i in range(size)]
                rates = time_paths(predictor, files, args.repeats if size <= REPEATED_UP_TO else 1,
                                   args, with_ray=cluster_cpus is not None)
                auto = "ray" if chooses_ray(size, cluster_cpus) else "local"
                base, faster = rates["baseline"], max(rates["local"], rates.get("ray", 0.0))
                ray_cells = (f"{rates['ray']:>7.0f}", f"{rates['ray'] / base:>9.2f}") if "ray" in rates else (f"{'-':>7}", f"{'-':>9}")
                print(f"{size:>7} {base:>9.0f} {rates['local']:>7.0f} {ray_cells[0]}  "
                      f"{rates['local'] / base:>10.2f} {ray_cells[1]}  {auto:<5}  "
                      f"{rates[auto] / faster:>10.2f}  {rates[auto] / base:>9.2f}", flush=True)
        if args.detect_images:
            detection_throughput(predictor, all_files[: args.detect_images], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
