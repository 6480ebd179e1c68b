"""The study's DNN classifiers with its own loss and with softmax cross-entropy (docs/study-dnn.md).

    python bench/study_dnn.py --data PREPARED [--only dnn/gender ...] [--class-loss keras_bce ...] [--epochs N] [--seed S]

Trains each combination of the `paper` profile as it runs in a sweep (preset, epochs, patience,
500 PCA components, seed 0 unless --seed), once per `train.class_loss`, with the same override `--set
overrides.FAMILY.train.class_loss=...` makes, and prints its test-split figures: accuracy; the
majority-class rate (the test share of the train split's most common class), which a model that
has stopped learning reaches; the share of the class it predicts most; and Keras' "accuracy"
under a binary cross-entropy (binary_accuracy: each output unit thresholded at 0.5 against the
one-hot label), what the study's training logs would have shown. Plain PyTorch, no Ray.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

COMBINATIONS = ("dnn/gender", "dnn/ethnicity", "pca_dnn/gender", "pca_dnn/ethnicity")
CLASS_LOSSES = ("cross_entropy", "keras_bce")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared data folder (facetune prepare)")
    parser.add_argument("--only", nargs="+", default=list(COMBINATIONS), choices=COMBINATIONS)
    parser.add_argument("--class-loss", nargs="+", default=list(CLASS_LOSSES), dest="class_losses")
    parser.add_argument("--epochs", type=int, default=None, help="cap on the profile's max_epochs")
    parser.add_argument("--seed", type=int, default=0, help="train.seed: weight init, batch order")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser.parse_args()


def run(family: str, task: str, class_loss: str, splits: dict, pca, epochs: int | None, seed: int) -> dict[str, float]:
    """Test figures of one paper-profile combination trained with `class_loss`."""
    from facetune.models import build_model, make_context
    from facetune.training import TrainConfig, evaluate, fit, seed_everything
    from facetune.tuning.profiles import load_profile, per_family
    from facetune.tuning.space import combination_config

    profile = load_profile("paper", [f"overrides.{family}.train.class_loss={class_loss}", f"overrides.{family}.train.seed={seed}"])
    config, _ = combination_config(family, task, profile)
    max_epochs = int(per_family(profile, "max_epochs", family))
    cfg = TrainConfig.from_dict({**config["train"], "epochs": min(max_epochs, epochs or max_epochs)})
    train, val, test = splits["train"], splits["val"], splits["test"]
    seed_everything(cfg.seed)
    model = build_model(family, config["arch"], task, make_context(task, pca=pca if family == "pca_dnn" else None))
    started = time.perf_counter()
    result = fit(model, task, train.images(), torch.from_numpy(train.labels(task)), val.images(),
                 torch.from_numpy(val.labels(task)), cfg)
    metrics, outputs = evaluate(model, task, test.images(), test.labels(task))
    y = test.labels(task)
    majority = np.bincount(train.labels(task)).argmax()
    one_hot = np.eye(outputs.shape[1])[y]
    return {
        "accuracy": metrics["accuracy"],
        "majority_rate": float(np.mean(y == majority)),
        "top_predicted_share": float(np.bincount(outputs.argmax(1)).max() / len(y)),
        "keras_binary_accuracy": float(np.mean((outputs > 0.5) == one_hot)),
        "train_loss_first_last": (result.history[0]["train_loss"], result.history[-1]["train_loss"]),
        "epochs": (result.best_epoch, result.epochs_run),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from facetune.data.loading import load_split
    from facetune.models.pca import fit_pca
    from facetune.tuning.profiles import load_profile

    splits = {name: load_split(args.data, name) for name in ("train", "val", "test")}
    pca = None
    if any(c.startswith("pca_dnn/") for c in args.only):
        pca = fit_pca(splits["train"].pixels, n_components=int(load_profile("paper")["pca_components"]), seed=0)
    print("| combination | train.class_loss | seed | test accuracy | majority-class rate | most-predicted class share "
          "| Keras binary_accuracy | train loss, first/last epoch | best/run epochs | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for combination in args.only:
        family, task = combination.split("/")
        for class_loss in args.class_losses:
            r = run(family, task, class_loss, splits, pca, args.epochs, args.seed)
            print(f"| {combination} | {class_loss} | {args.seed} | {r['accuracy']:.2%} | {r['majority_rate']:.2%} "
                  f"| {r['top_predicted_share']:.2%} | {r['keras_binary_accuracy']:.2%} "
                  f"| {r['train_loss_first_last'][0]:.4f} / {r['train_loss_first_last'][1]:.4f} "
                  f"| {r['epochs'][0]}/{r['epochs'][1]} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
