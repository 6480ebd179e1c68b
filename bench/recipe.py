"""Recipe ablation: each row adds one step to the previous one, trained and tested on this machine.

    python bench/recipe.py [--data PREPARED_OR_SOURCE] [--epochs 30] [--limit N] [--rows 1-10] [--json OUT]

Rows (test split; every model trained on train, epoch chosen on val):
  1 study CNN (raycfg/models/paper.yaml), one model per task
  2 tuned CNN (raycfg/search/cnn.yaml defaults), one model per task
  3 resnet, one model per task (age by MSE); rows 3-7 take their architecture and training keys
    from raycfg/release.yaml, so row 7 is one release member trained for --epochs
  4 multitask resnet: one trunk, three heads
  5 + age as a label distribution (dldl)
  6 + affine and brightness/contrast augmentation
  7 + EMA of the weights
  8 + flip averaging at test time (no retraining)
  9 + ensemble: greedy selection on val over the models of rows 2-8
 10 + final fit: row 7's recipe retrained on train+val for row 7's best epoch count
Also prints the training time each recipe took to reach the study's gender accuracy (88.56%) on
validation, against the study's CNN (row 1), as a ratio. A full run takes 5-6 hours on the 2-core
machines that trained the release (65-85 s a residual-network epoch) and more than a day on a 2-core
AVX2-only EPYC (about 400 s such an epoch; row 1 alone took 60 min there), so each trained row is
kept in --work (its figures and its models' val and test outputs; rows 1-3 model by model):
a rerun with the same settings skips finished rows, and the table can be built across sessions.
--epochs and --limit shrink it for a quick check (and key the kept rows, so they never mix).
Rows 8-10 need row 7, and row 9 rows 2-8; a row that is needed is trained (or reused) as well.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

STUDY_GENDER_ACCURACY = 0.8856
#: The release recipe's (raycfg/release.yaml) training switches that rows 5-7 turn on one at a time.
#: Before its row a switch is at TrainConfig's default, except the augmentation, which is flips and
#: whole-pixel shifts; so row 7 is one release member. Flip averaging (row 8) is applied outside training.
RELEASE_STEPS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (5, "+ dldl", ("loss",)),
    (6, "+ affine/jitter augmentation", ("augment", "affine_probability", "color_jitter")),
    (7, "+ EMA", ("ema_decay",)),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared folder or raw source (default: the shared data)")
    parser.add_argument("--work", default="runs/bench-recipe",
                        help="prepared data when --data is raw, and the finished rows (ablation/row-N.*)")
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

        def progress(report) -> None:  # to stderr, so stdout stays the table; a row can take hours
            print(f"  {family} {task} epoch {report.epoch}/{cfg.epochs}: {report.metrics['epoch_seconds']:.0f} s",
                  file=sys.stderr, flush=True)

        result = fit(model, task, x, pick(labels), self.x["val"], pick(self.y["val"]), cfg, on_epoch=progress)
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


def needed_rows(wanted: set[int]) -> set[int]:
    """The wanted rows and the rows they are computed from (8-10 from row 7; 9 from 2-8)."""
    rows = set(wanted)
    if rows & {8, 9, 10}:
        rows.add(7)
    if 9 in rows:
        rows.update(range(2, 9))
    return rows


class RowStore:
    """Finished rows in WORK/ablation: row-N.json (spec, figures, seconds) and row-N.npz (outputs).
    A row of one model per task also keeps each finished model's part (row-N-TASK.*), so such a
    row (over an hour and a half for row 3) can be trained across sessions.

    A row or part is reused only when its spec (recipe, epochs, train rows, data) is the one asked for now.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def load(self, row: int | str, spec: dict) -> tuple[dict, dict] | None:
        meta, arrays = self.folder / f"row-{row}.json", self.folder / f"row-{row}.npz"
        if not (meta.is_file() and arrays.is_file()):
            return None
        saved = json.loads(meta.read_text())
        if saved.get("spec") != json.loads(json.dumps(spec)):  # as JSON has it: tuples are lists there
            return None
        with np.load(arrays) as npz:
            return saved, {key: npz[key] for key in npz.files}

    def save(self, row: int | str, spec: dict, facts: dict, outputs: dict[str, np.ndarray]) -> None:
        # Outputs first, then the json that marks the row finished: a kill in between retrains the row.
        np.savez(self.folder / f"row-{row}.npz", **outputs)
        partial = self.folder / f"row-{row}.json.tmp"
        partial.write_text(json.dumps({"spec": spec, **facts}, indent=2))
        partial.replace(self.folder / f"row-{row}.json")


def release_rows() -> tuple[dict, dict, list[tuple[int, str, dict]]]:
    """(single-task resnet arch, multitask arch, rows 4-7 as (row, name, train keys)) from the release
    recipe, so the ablation ends at what ships whenever the recipe changes. Row 3 trains row 4's keys."""
    from facetune.release.recipe import load_recipe

    recipe = load_recipe()
    multitask_arch = dict(recipe["arch"])
    # A single-task resnet has no separate head: its own dropout before the classifier stands in.
    trunk = {**multitask_arch["trunk_arch"], "dropout": multitask_arch["head_dropout"]}
    switched = {key for _, _, keys in RELEASE_STEPS for key in keys}
    train = {k: v for k, v in recipe["train"].items() if k not in switched | {"epochs", "tta_flip"}}
    rows = [(4, "multitask", train | {"augment": "flip_shift", "patience": 0})]
    for row, name, keys in RELEASE_STEPS:
        rows.append((row, name, rows[-1][2] | {key: recipe["train"][key] for key in keys}))
    return trunk, multitask_arch, rows


def full_train(train: dict) -> dict:
    """A train section with every default filled in, so a changed default does not reuse a kept row."""
    from facetune.training import TrainConfig

    return TrainConfig.from_dict(train).to_dict()


def output_key(split: str, tta: bool, task: str) -> str:
    return f"{split}/{'flip' if tta else 'one'}/{task}"


def main() -> int:
    from facetune.data.prepare import ensure_prepared
    from facetune.models.multitask import TaskView
    from facetune.tuning.presets import load_preset
    from facetune.records import PreparedManifest
    from facetune.storage import ResultsStore
    from facetune.tasks import MULTITASK, TASKS
    from facetune.tuning.ensemble_selection import ensemble_metrics, greedy_selection
    from facetune.tuning.space import combination_config
    from facetune.models.ensemble import to_prediction_space

    args = parse_args()
    torch.set_num_threads(args.threads)
    wanted = parse_rows(args.rows)
    prepared = ensure_prepared(args.data, ResultsStore(args.work))
    manifest = PreparedManifest.read(prepared)
    store = RowStore(Path(args.work) / "ablation")
    settings = {"epochs": args.epochs, "limit": args.limit, "data": manifest.source, "rows": manifest.rows_written,
                "split_seed": manifest.seed}
    bench: Bench | None = None  # loaded on the first row that has to be trained

    def get_bench() -> Bench:
        nonlocal bench
        if bench is None:
            bench = Bench(prepared, args.epochs, args.limit)
        return bench

    def all_outputs(modules: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        """Every task's val and test outputs, one view and flip-averaged."""
        b = get_bench()
        return {output_key(split, tta, t): b.outputs(module, split, tta)
                for t, module in modules.items() for split in ("val", "test") for tta in (False, True)}

    def run_row(row: int, name: str, spec: dict, train_models) -> tuple[dict, dict]:
        """(facts, outputs) of a row: from the store, or trained now by `train_models`, which gives
        (outputs, facts), and stored."""
        spec = {"recipe": name, **spec, **settings}
        cached = store.load(row, spec)
        if cached is not None:
            return cached
        outputs, facts = train_models()
        store.save(row, spec, facts, outputs)
        return {"spec": spec, **facts}, outputs

    def single_task_row(row: int, name: str, family: str, recipe: dict[str, tuple[dict, dict]]) -> tuple[dict, dict]:
        spec = {t: {"arch": arch, "train": full_train(train)} for t, (arch, train) in recipe.items()}

        def train_part(task_name: str) -> tuple[dict, dict]:
            """One task's model, kept as a part of the row as soon as it is trained."""
            part_spec = {"recipe": name, "family": family, "task": task_name, **spec[task_name], **settings}
            kept = store.load(f"{row}-{task_name}", part_spec)
            if kept is not None:
                return kept
            arch, train = recipe[task_name]
            model, result = get_bench().train(family, task_name, arch, train)
            to_gender = seconds_to_gender(result.history, "val_accuracy") if task_name == "gender" else None
            facts = {"train_seconds": result.train_seconds, "seconds_to_study_gender": to_gender}
            outputs = all_outputs({task_name: model})
            store.save(f"{row}-{task_name}", part_spec, facts, outputs)
            return facts, outputs

        def train_models():
            parts = {task_name: train_part(task_name) for task_name in TASKS}
            outputs = {key: value for _, part_outputs in parts.values() for key, value in part_outputs.items()}
            return outputs, {"train_seconds": sum(facts["train_seconds"] for facts, _ in parts.values()),
                             "seconds_to_study_gender": parts["gender"][0]["seconds_to_study_gender"]}
        return run_row(row, name, {"family": family, "tasks": spec}, train_models)

    labels: dict[str, dict[str, np.ndarray]] = {}

    def label(split: str, task_name: str) -> np.ndarray:
        if split not in labels:
            from facetune.data.loading import load_split

            arrays = load_split(prepared, split)
            labels[split] = {t: np.asarray(arrays.labels(t)) for t in TASKS}
        return labels[split][task_name]

    table: list[dict] = []
    row_seconds: dict[int, float] = {}
    gender_seconds: dict[str, float | None] = {}
    pool: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {t: [] for t in TASKS}  # (row, val, test) per candidate
    ensemble_members: dict[str, dict[int, int]] = {}  # row 9: task -> {row: times chosen}

    def record(row: int, name: str, facts: dict, outputs: dict, tta: bool = False) -> None:
        figures = {t: TASKS[t].metrics(label("test", t), outputs[output_key("test", tta, t)]) for t in TASKS}
        if 2 <= row <= 8:
            for t, task in TASKS.items():
                pool[t].append((row, *(to_prediction_space(torch.from_numpy(outputs[output_key(split, tta, t)]), task).numpy()
                                       for split in ("val", "test"))))
        if "seconds_to_study_gender" in facts:
            gender_seconds[name] = facts["seconds_to_study_gender"]
        row_seconds[row] = facts["train_seconds"]
        emit(row, name, figures["age"]["mae"], figures["gender"]["accuracy"], figures["ethnicity"]["accuracy"], facts["train_seconds"])

    def emit(row: int, name: str, age_mae: float, gender: float, ethnicity: float, seconds: float) -> None:
        if row not in wanted:
            return
        entry = {"row": row, "recipe": name, "age_mae": age_mae, "gender_accuracy": gender, "ethnicity_accuracy": ethnicity,
                 "train_seconds": seconds}
        table.append(entry)
        print(f"| {row} | {name} | {age_mae:.2f} | {gender:.2%} | {ethnicity:.2%} | {seconds / 60:.1f} |", flush=True)

    rows = needed_rows(wanted)
    print("| row | recipe | age MAE | gender | ethnicity | train minutes |\n| --- | --- | --- | --- | --- | --- |", flush=True)
    if 1 in rows:
        preset = load_preset("paper")["cnn"]
        recipe = {t: (preset[t]["arch"], {**preset[t]["train"], "patience": 0}) for t in TASKS}
        record(1, "study CNN", *single_task_row(1, "study CNN", "cnn", recipe))
    if 2 in rows:
        tuned = {t: combination_config("cnn", t, {}) for t in TASKS}
        recipe = {t: (b["arch"], {**b["train"], "patience": 0}) for t, (b, _) in tuned.items()}
        record(2, "tuned CNN", *single_task_row(2, "tuned CNN", "cnn", recipe))
    trunk, multitask_arch, multitask_rows = release_rows()
    if 3 in rows:
        record(3, "resnet", *single_task_row(3, "resnet", "resnet", {t: (trunk, multitask_rows[0][2]) for t in TASKS}))

    last: tuple[dict, dict, dict] | None = None  # row 7's (facts, outputs, train config)
    for row, name, train in multitask_rows:
        if row not in rows:
            continue

        def train_models(train: dict = train) -> tuple[dict, dict]:
            model, result = get_bench().train("multitask", MULTITASK, multitask_arch, train)
            return all_outputs({t: TaskView(model, t) for t in TASKS}), {
                "train_seconds": result.train_seconds, "best_epoch": result.best_epoch,
                "seconds_to_study_gender": seconds_to_gender(result.history, "val_gender_accuracy")}

        facts, outputs = run_row(row, name, {"family": "multitask", "arch": multitask_arch, "train": full_train(train)},
                                 train_models)
        record(row, name, facts, outputs)
        last = (facts, outputs, dict(train))
    if 8 in rows and last is not None:
        record(8, "+ flip TTA", {"train_seconds": last[0]["train_seconds"]}, last[1], tta=True)
    if 9 in rows:
        figures = {}
        for task_name, task in TASKS.items():
            chosen, _ = greedy_selection(task, [val for _, val, _ in pool[task_name]], label("val", task_name), max_members=5)
            times = {i: chosen.count(i) for i in sorted(set(chosen))}  # greedy selection may pick a candidate again
            figures[task_name] = ensemble_metrics(task, [pool[task_name][i][2] for i in times],
                                                  list(times.values()), label("test", task_name))
            ensemble_members[task_name] = {pool[task_name][i][0]: n for i, n in times.items()}
        seconds = sum(row_seconds[row] for row in range(2, 8))
        emit(9, "+ ensemble", figures["age"]["mae"], figures["gender"]["accuracy"], figures["ethnicity"]["accuracy"], seconds)
        for task_name, picks in ensemble_members.items():
            print(f"row 9 {task_name}: " + " + ".join(f"row {row} x{times}" for row, times in picks.items()), flush=True)
    if 10 in rows and last is not None:
        facts7, _, train7 = last

        def final_fit() -> tuple[dict, dict]:
            started = time.perf_counter()
            model, _ = get_bench().train("multitask", MULTITASK, multitask_arch, train7, splits=("train", "val"),
                                         epochs=facts7["best_epoch"])
            seconds = time.perf_counter() - started  # training only, not the evaluation below
            return all_outputs({t: TaskView(model, t) for t in TASKS}), {"train_seconds": seconds}

        facts, outputs = run_row(10, "+ final fit (train+val)", {"family": "multitask", "arch": multitask_arch, "train": full_train(train7),
                                                                 "epochs_from_row_7": facts7["best_epoch"]}, final_fit)
        record(10, "+ final fit (train+val)", facts, outputs, tta=True)

    study = gender_seconds.get("study CNN")
    for name, seconds in gender_seconds.items():
        if not seconds:
            shown = f"not reached within {args.epochs} epochs"
        elif name == "study CNN":
            shown = f"{seconds:.0f} s"
        elif not study:  # the study CNN's own line (or its absence) says why
            shown = f"{seconds:.0f} s (no ratio without the study CNN's time)"
        else:
            shown = f"{seconds:.0f} s, {study / seconds:.2f}x as fast as the study CNN"
        print(f"time to {STUDY_GENDER_ACCURACY:.2%} val gender: {name}: {shown}")
    if args.json:
        args.json.write_text(json.dumps({"table": table, "seconds_to_study_gender": gender_seconds,
                                         "ensemble_members": ensemble_members}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
