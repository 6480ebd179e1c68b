"""Tune overhead: training throughput of the study's gender CNN inside a Ray Tune trial vs a plain process.

Same data (the prepared train/val splits), same model, same epochs and torch threads, one run:

    python bench/overhead.py [--data PREPARED_OR_SOURCE] [--epochs 3] [--threads 2] [--repeats 3]

Prints the median images/s of the training epochs (the first epoch of each run is warm-up and
not counted) for both, and the ratio tune/plain (target >= 0.95).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from throughput import print_throughput_ratio  # noqa: E402  (bench/ is on sys.path as the script's folder)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the shared data)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median is reported")
    parser.add_argument("--limit", type=int, default=6000, help="train images used (keeps the bench short)")
    return parser.parse_args()


def trial_config(epochs: int, threads: int) -> dict:
    from facetune.tuning.presets import load_preset

    preset = load_preset("paper")["cnn"]["gender"]
    train = {**preset["train"], "patience": 0, "seed": 0}
    return {"family": "cnn", "task": "gender", "arch": preset["arch"], "train": train,
            "max_epochs": epochs, "torch_threads": threads}


def plain_throughput(config: dict, data) -> list[float]:
    """images/s per epoch of the loop in this process, no Ray."""
    from facetune.models import build_model
    from facetune.tasks import TASKS
    from facetune.training.loop import TrainConfig, fit
    from facetune.tuning.trainable import pixels_to_device

    torch.set_num_threads(config["torch_threads"])
    task = TASKS["gender"]
    model = build_model("cnn", config["arch"], task, {})
    rates: list[float] = []
    fit(model, task,
        pixels_to_device(data.train_pixels, "cpu"), torch.as_tensor(data.train_labels["gender"]),
        pixels_to_device(data.val_pixels, "cpu"), torch.as_tensor(data.val_labels["gender"]),
        TrainConfig.from_dict({**config["train"], "epochs": config["max_epochs"]}),
        on_epoch=lambda report: rates.append(report.metrics["images_per_second"]))
    return rates


def tune_throughput(config: dict, data_ref, storage: str) -> list[float]:
    """images/s per epoch of the same loop as a one-trial Ray Tune experiment."""
    from ray import tune

    from facetune.tuning.trainable import run_trial

    trainable = tune.with_resources(tune.with_parameters(run_trial, data_ref=[data_ref]),
                                    {"cpu": config["torch_threads"]})
    tuner = tune.Tuner(trainable, param_space=config,
                       run_config=tune.RunConfig(storage_path=storage, verbose=0))
    result = tuner.fit()[0]
    if result.error:
        raise RuntimeError(f"the Tune trial failed: {result.error}")
    return list(result.metrics_dataframe["images_per_second"])


def main() -> int:
    args = parse_args()
    import ray

    from facetune.data.prepare import ensure_prepared
    from facetune.storage import ResultsStore
    from facetune.tuning.sweep import load_sweep_data

    work = Path(tempfile.mkdtemp(prefix="facetune-bench-"))
    prepared = ensure_prepared(args.data, ResultsStore(work))
    data = load_sweep_data(prepared, {}, ResultsStore(work), need_pca=False)
    data.train_pixels = data.train_pixels[: args.limit]
    data.train_labels = {k: v[: args.limit] for k, v in data.train_labels.items()}
    config = trial_config(args.epochs, args.threads)
    print(f"bench/overhead: study gender CNN, {len(data.train_pixels)} train images, {args.epochs} epochs, "
          f"{args.threads} threads, {args.repeats} runs each")

    plain_runs, tune_runs = [], []
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    try:
        data_ref = ray.put(data)
        for repeat in range(args.repeats):
            # Alternate the two sides so drift on a shared machine hits both alike.
            plain_runs.append(statistics.median(plain_throughput(config, data)[1:] or [0.0]))
            tune_runs.append(statistics.median(tune_throughput(config, data_ref, str(work / f"tune{repeat}"))[1:]
                                               or [0.0]))
            print(f"  run {repeat + 1}: plain {plain_runs[-1]:.0f} img/s, tune {tune_runs[-1]:.0f} img/s", flush=True)
    finally:
        ray.shutdown()
    print_throughput_ratio(("plain", plain_runs), ("tune", tune_runs), target=0.95)
    return 0


if __name__ == "__main__":
    sys.exit(main())
