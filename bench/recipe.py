"""Recipe ablation: each row adds one step to the previous one, trained and tested on this machine.

    python bench/recipe.py [--data PREPARED_OR_SOURCE] [--epochs 30] [--limit N] [--rows 1-10] [--json OUT]

Rows (test split; every model trained on train, epoch chosen on val):
  1 study CNN (raycfg/models/paper.yaml), one model per task
  2 tuned CNN (raycfg/search/cnn.yaml defaults), one model per task
  3 resnet, one model per task (age by MSE)
  4 multitask resnet: one trunk, three heads
  5 + age as a label distribution (dldl)
  6 + affine and brightness/contrast augmentation
  7 + EMA of the weights
  8 + flip averaging at test time (no retraining)
  9 + ensemble: greedy selection on val over the models of rows 2-8
 10 + final fit: row 7's recipe retrained on train+val for row 7's best epoch count
Also prints the training time each recipe took to reach the study's gender accuracy (88.56%) on
validation, against the study's CNN (row 1), as a ratio. A full run takes several hours on 2
CPU cores; --epochs and --limit shrink it for a quick check.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

STUDY_GENDER_ACCURACY = 0.8856
TRUNK = {"widths": [32, 64, 128, 256], "blocks": [1, 1, 2, 1], "dropout": 0.2}
MODERN_TRAIN = {"optimizer": "adamw", "scheduler": "cosine", "warmup_epochs": 1, "lr": 2e-3, "weight_decay": 0.05,
                "batch_size": 128, "augment": "flip_shift", "label_smoothing": 0.05, "patience": 0,
                "precision": "auto", "channels_last": True}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the shared data)")
    parser.add_argument("--work", default="runs/bench-recipe", help="prepared data when --data is raw")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--limit", type=int, default=None, help="train rows used (quick check)")
    parser.add_argument("--rows", default="1-10", help="rows to run, e.g. 1-10 or 4,5 (later rows need earlier ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    return parser.parse_args()


def parse_rows(text: str) -> set[int]:
    rows: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        rows.update(range(int(low), int(high or low) + 1))
    return rows


class Bench:
    def __init__(self, prepared: Path, epochs: int, limit: int | None) -> None:
        from facetune.data.loading import load_split
        from facetune.tasks import TASKS

        self.epochs = epochs
        self.splits = {name: load_split(prepared, name) for name in ("train", "val", "test")}
        if limit:
            self.splits["train"] = self.splits["train"].head(limit)
        self.x = {name: split.images() for name, split in self.splits.items()}
        self.y = {name: {t: torch.as_tensor(np.array(split.labels(t))) for t in TASKS} for name, split in self.splits.items()}
        ages = self.splits["train"].age
        self.age_stats = {"target_mean": float(np.mean(ages)), "target_std": float(np.std(ages))}

    def train(self, family: str, task: str, arch: dict, train: dict, splits: tuple[str, ...] = ("train",), epochs: int | None = None):
        """(model, FitResult) of one recipe; `splits` are concatenated for training (final fit)."""
        from facetune.models import build_model
        from facetune.models.registry import age_distribution_context
        from facetune.tasks import MULTITASK
        from facetune.training import TrainConfig, fit, seed_everything

        cfg = TrainConfig.from_dict({**train, "epochs": epochs or self.epochs})
        seed_everything(cfg.seed)
        context = dict(self.age_stats) | (age_distribution_context(cfg.loss) if task in ("age", MULTITASK) else {})
        model = build_model(family, arch, task, context)
        x = torch.cat([self.x[s] for s in splits])
        labels = {t: torch.cat([self.y[s][t] for s in splits]) for t in self.y["train"]}
        pick = (lambda y: y) if task == MULTITASK else (lambda y: y[task])
        result = fit(model, task, x, pick(labels), self.x["val"], pick(self.y["val"]), cfg)
        return model, result

    def outputs(self, module: torch.nn.Module, split: str, tta: bool) -> np.ndarray:
        from facetune.training.loop import predict_outputs

        return predict_outputs(module, self.x[split], tta_flip=tta)


def seconds_to_gender(history: list[dict], column: str) -> float | None:
    """Training seconds until validation gender accuracy first reaches the study's figure."""
    elapsed = 0.0
    for row in history:
        elapsed += row["epoch_seconds"]
        if row.get(column, 0.0) >= STUDY_GENDER_ACCURACY:
            return elapsed
    return None


def main() -> int:
    from facetune.models.multitask import TaskView
    from facetune.models.presets import load_preset
    from facetune.storage import ResultsStore
    from facetune.tasks import MULTITASK, TASKS
    from facetune.tuning.ensemble import ensemble_metrics, greedy_selection
    from facetune.tuning.space import combination_config
    from facetune.tuning.sweep import ensure_prepared
    from facetune.models.ensemble import to_prediction_space

    args = parse_args()
    torch.set_num_threads(args.threads)
    wanted = parse_rows(args.rows)
    bench = Bench(ensure_prepared(args.data, ResultsStore(args.work)), args.epochs, args.limit)
    table: list[dict] = []
    per_task_models: dict[str, list[tuple[str, torch.nn.Module, bool]]] = {t: [] for t in TASKS}
    gender_seconds: dict[str, float | None] = {}

    def record(row: int, name: str, modules: dict[str, torch.nn.Module], seconds: float, tta: bool = False) -> None:
        figures = {}
        for task_name, module in modules.items():
            figures[task_name] = TASKS[task_name].metrics(bench.y["test"][task_name].numpy(), bench.outputs(module, "test", tta))
            if 2 <= row <= 8:
                per_task_models[task_name].append((name, module, tta))
        entry = {"row": row, "recipe": name, "age_mae": figures["age"]["mae"], "gender_accuracy": figures["gender"]["accuracy"],
                 "ethnicity_accuracy": figures["ethnicity"]["accuracy"], "train_seconds": seconds}
        table.append(entry)
        print(f"| {row} | {name} | {entry['age_mae']:.2f} | {entry['gender_accuracy']:.2%} | "
              f"{entry['ethnicity_accuracy']:.2%} | {seconds / 60:.1f} |", flush=True)

    def single_task_rows(row: int, name: str, recipe: dict) -> None:
        modules, seconds = {}, 0.0
        for task_name in TASKS:
            arch, train = recipe[task_name]
            model, result = bench.train(recipe["family"], task_name, arch, train)
            modules[task_name], seconds = model, seconds + result.train_seconds
            if task_name == "gender":
                gender_seconds[name] = seconds_to_gender(result.history, "val_accuracy")
        record(row, name, modules, seconds)

    print("| row | recipe | age MAE | gender | ethnicity | train minutes |\n| --- | --- | --- | --- | --- | --- |", flush=True)
    if 1 in wanted:
        preset = load_preset("paper")["cnn"]
        single_task_rows(1, "study CNN", {"family": "cnn", **{t: (preset[t]["arch"], {**preset[t]["train"], "patience": 0}) for t in TASKS}})
    if 2 in wanted:
        tuned = {t: combination_config("cnn", t, {}) for t in TASKS}
        single_task_rows(2, "tuned CNN", {"family": "cnn", **{t: (b["arch"], {**b["train"], "patience": 0}) for t, (b, _) in tuned.items()}})
    if 3 in wanted:
        single_task_rows(3, "resnet", {"family": "resnet", **{t: (TRUNK, MODERN_TRAIN) for t in TASKS}})

    multitask_arch = {"trunk": "resnet", "trunk_arch": {**TRUNK, "dropout": 0.0}, "head_dropout": 0.2}
    steps = [(4, "multitask", {}), (5, "+ dldl", {"loss": "dldl"}),
             (6, "+ affine/jitter augmentation", {"augment": "flip_affine", "color_jitter": 0.15}),
             (7, "+ EMA", {"ema_decay": 0.998})]
    train = dict(MODERN_TRAIN)
    last = None
    for row, name, change in steps:
        train = {**train, **change}
        if row not in wanted:
            continue
        model, result = bench.train("multitask", MULTITASK, multitask_arch, train)
        gender_seconds[name] = seconds_to_gender(result.history, "val_gender_accuracy")
        record(row, name, {t: TaskView(model, t) for t in TASKS}, result.train_seconds)
        last = (model, result, copy.deepcopy(train))
    if 8 in wanted and last is not None:
        record(8, "+ flip TTA", {t: TaskView(last[0], t) for t in TASKS}, last[1].train_seconds, tta=True)
    if 9 in wanted and last is not None:
        figures = {}
        for task_name, task in TASKS.items():
            pool = per_task_models[task_name]
            val = [to_prediction_space(torch.from_numpy(bench.outputs(m, "val", tta)), task).numpy() for _, m, tta in pool]
            test = [to_prediction_space(torch.from_numpy(bench.outputs(m, "test", tta)), task).numpy() for _, m, tta in pool]
            chosen, _ = greedy_selection(task, val, bench.y["val"][task_name].numpy(), max_members=5)
            members = sorted(set(chosen))
            figures[task_name] = ensemble_metrics(task, [test[i] for i in members], [chosen.count(i) for i in members],
                                                  bench.y["test"][task_name].numpy())
        entry = {"row": 9, "recipe": "+ ensemble", "age_mae": figures["age"]["mae"], "gender_accuracy": figures["gender"]["accuracy"],
                 "ethnicity_accuracy": figures["ethnicity"]["accuracy"], "train_seconds": sum(e["train_seconds"] for e in table if 2 <= e["row"] <= 7)}
        table.append(entry)
        print(f"| 9 | + ensemble | {entry['age_mae']:.2f} | {entry['gender_accuracy']:.2%} | {entry['ethnicity_accuracy']:.2%} | "
              f"{entry['train_seconds'] / 60:.1f} |", flush=True)
    if 10 in wanted and last is not None:
        started = time.perf_counter()
        model, result = bench.train("multitask", MULTITASK, multitask_arch, {**last[2], "ema_decay": last[2].get("ema_decay", 0.0)},
                                    splits=("train", "val"), epochs=last[1].best_epoch)
        record(10, "+ final fit (train+val)", {t: TaskView(model, t) for t in TASKS}, time.perf_counter() - started, tta=True)

    study = gender_seconds.get("study CNN")
    for name, seconds in gender_seconds.items():
        if name != "study CNN":
            ratio = f"{study / seconds:.2f}x faster than the study CNN" if study and seconds else "n/a (one side never reached it)"
            shown = f"{seconds:.0f} s" if seconds else "never"
            print(f"time to {STUDY_GENDER_ACCURACY:.2%} val gender: {name}: {shown} ({ratio})")
    if args.json:
        args.json.write_text(json.dumps({"table": table, "seconds_to_study_gender": gender_seconds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
