"""Predictor: the best model of each task from a results directory, applied to 48x48 faces.

The models, the preprocessing (facetune.data.images) and the output heads (facetune.tasks) are
the ones the sweep used, so predictions on the sweep's own test split reproduce its test figures.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facetune.data.loading import pixels_to_images
from facetune.models import load_model
from facetune.models.multitask import TaskView
from facetune.schema import IMAGE_SIZE, MODEL_CONFIG_FILE, NUM_PIXELS, SUMMARY_FILE, summary_from_json, summary_to_json
from facetune.tasks import MULTITASK, TASKS
from facetune.training.loop import forward_views

if TYPE_CHECKING:  # inputs.py imports this module; the import is for annotations only
    from facetune.predict.inputs import Inputs

#: Inputs with more images than this run as Ray Data batch inference unless told otherwise.
RAY_MIN_IMAGES = 1000
#: Faces per forward pass; 48x48 inputs are small, so this is bounded by speed, not memory.
DEFAULT_BATCH_SIZE = 256

#: (done, total) -> None; called as batches finish.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Reject:
    """An input that produced no prediction, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class TaskModel:
    """One task's chosen model and where it came from."""

    task: str
    family: str
    model_dir: Path
    module: torch.nn.Module
    summary: Mapping  # the summary.json entry ({} when built without one)


@dataclass
class PredictionResult:
    """Predictions (one row per readable input) plus the inputs that could not be read.

    `predictions` is indexed by input position, so labels known for the inputs line up with
    `labels.loc[result.predictions.index]`. `outputs` holds each task's raw model outputs for
    the same rows, which is what facetune.tasks' metrics take.
    """

    predictions: pd.DataFrame
    rejects: list[Reject] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    def rejects_frame(self) -> pd.DataFrame:
        return pd.DataFrame([(r.source, r.reason) for r in self.rejects], columns=["source", "reason"])


def prediction_columns(tasks: Sequence[str], age_std: bool = False) -> list[str]:
    """The output columns, in CSV order, for the given tasks (`age_std` when the age model gives a spread)."""
    columns = ["source"]
    if "age" in tasks:
        columns.append("age")
        if age_std:
            columns.append("age_std")
    if "gender" in tasks:
        columns += ["gender", f"gender_prob_{_column_name(TASKS['gender'].class_names[1])}"]
    if "ethnicity" in tasks:
        columns.append("ethnicity")
        columns += [f"prob_{_column_name(name)}" for name in TASKS["ethnicity"].class_names]
    return columns


def _column_name(class_name: str) -> str:
    return class_name.strip().lower().replace(" ", "_")


def read_summary(results_dir: str | os.PathLike[str]) -> list[dict]:
    """The list in RESULTS/summary.json, with a clear error when it is missing or malformed."""
    path = Path(results_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --models must be a results directory written by a sweep (jobs/tune_all.py)"
        )
    # Checked against the writer's record, then handed on as the plain dicts the rest of predict reads.
    return summary_to_json(summary_from_json(json.loads(path.read_text()), str(path)))


def choose_best(entries: Sequence[Mapping], family: str | None = None) -> dict[str, Mapping]:
    """task -> the summary entry with the best *validation* selection metric.

    Validation, not test: choosing by test figures would leak the test split into the choice
    and make the reported test numbers optimistic. Models that were trained on val (a final
    fit's, which carry `trained_on`) cannot be judged on it, so only an explicit `family` picks them.
    """
    chosen: dict[str, Mapping] = {}
    for task_name, task in TASKS.items():
        candidates = [
            e for e in entries if e.get("task") == task_name
            and (e.get("family") == family if family is not None else "trained_on" not in e)
        ]
        scored = []
        for entry in candidates:
            value = (entry.get("val") or {}).get(task.metric)
            if value is None or not math.isfinite(float(value)):
                raise ValueError(
                    f"summary entry {entry.get('family')}_{task_name} has no finite val {task.metric}"
                )
            scored.append((float(value), entry))
        if scored:
            pick = min if task.mode == "min" else max
            chosen[task_name] = pick(scored, key=lambda pair: pair[0])[1]
    if not chosen:
        which = f"family {family!r}" if family else "any family"
        present = sorted({f"{e.get('family')}_{e.get('task')}" for e in entries})
        raise ValueError(f"no finished combination for {which} in summary.json (it has: {present or 'none'})")
    return chosen


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Predicts age, gender and ethnicity with one model per task."""

    def __init__(self, models: Mapping[str, TaskModel], device: str | torch.device | None = None,
                 tta_flip: bool = False) -> None:
        if not models:
            raise ValueError("a Predictor needs at least one task model")
        unknown = set(models) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {list(TASKS)}")
        self.device = torch.device(device) if device is not None else default_device()
        # Keep TASKS order so columns and outputs come out the same way every time.
        self.models = {name: models[name] for name in TASKS if name in models}
        for task_model in self.models.values():
            task_model.module.to(self.device).eval()
        #: Average each face's outputs with its mirror image's (test-time flip augmentation).
        self.tta_flip = bool(tta_flip)

    @classmethod
    def pretrained(cls, device: str | torch.device | None = None, tta_flip: bool = True) -> Predictor:
        """The models shipped inside the package (see `facetune predict --about`)."""
        from facetune.release import PRETRAINED_DIR, shipped_models_present

        if not shipped_models_present():
            raise FileNotFoundError(f"no pretrained models in {PRETRAINED_DIR}: rebuild them with `python jobs/train_release.py`")
        return cls.from_model_dirs({MULTITASK: PRETRAINED_DIR}, device=device, tta_flip=tta_flip,
                                   summaries=_release_summaries(PRETRAINED_DIR, tta_flip))

    @classmethod
    def from_results(
        cls,
        results_dir: str | os.PathLike[str],
        family: str | None = None,
        device: str | torch.device | None = None,
    ) -> Predictor:
        """Load, per task, the combination with the best validation metric (of `family` if given)."""
        results_dir = Path(results_dir)
        chosen = choose_best(read_summary(results_dir), family)
        model_dirs = {task: results_dir / Path(entry["checkpoint"]).parent for task, entry in chosen.items()}
        return cls.from_model_dirs(model_dirs, device=device, summaries=chosen)

    @classmethod
    def from_model_dirs(
        cls,
        model_dirs: Mapping[str, str | os.PathLike[str]],
        device: str | torch.device | None = None,
        summaries: Mapping[str, Mapping] | None = None,
        tta_flip: bool = False,
    ) -> Predictor:
        """Load task -> model directory (each written by facetune.models.save_model).

        A multitask model answers every task it is given for (or all three under the key
        MULTITASK); tasks that share one model share its forward pass.
        """
        models = {}
        loaded: dict[Path, tuple[torch.nn.Module, dict]] = {}
        for task, model_dir in model_dirs.items():
            key = Path(model_dir).resolve()
            if key not in loaded:
                loaded[key] = load_model(model_dir)
            module, config = loaded[key]
            if config.get("task") == MULTITASK:
                for name in (TASKS if task == MULTITASK else [task]):
                    models[name] = TaskModel(task=name, family=config.get("family", "?"), model_dir=Path(model_dir),
                                             module=TaskView(module, name), summary=(summaries or {}).get(name, {}))
                continue
            if config.get("task") != task:
                raise ValueError(f"{model_dir} holds a {config.get('task')!r} model, not {task!r}")
            models[task] = TaskModel(
                task=task,
                family=config.get("family", "?"),
                model_dir=Path(model_dir),
                module=module,
                summary=(summaries or {}).get(task, {}),
            )
        return cls(models, device=device, tta_flip=tta_flip)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def model_dirs(self) -> dict[str, Path]:
        return {task: m.model_dir for task, m in self.models.items()}

    def describe(self) -> str:
        """One line per task: which model answers it."""
        return "\n".join(
            f"{task}: {m.family} ({m.model_dir})" for task, m in self.models.items()
        )

    @torch.no_grad()
    def raw_outputs(
        self,
        images: torch.Tensor,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> dict[str, np.ndarray]:
        """task -> (N, num_outputs) float32 model outputs for (N, 1, 48, 48) images in [0, 1]."""
        chunks: dict[str, list[np.ndarray]] = {task: [] for task in self.models}
        total = len(images)
        for start in range(0, total, batch_size):
            batch = images[start : start + batch_size].to(self.device)
            shared: dict[int, torch.Tensor] = {}  # one forward pass per distinct network
            for task, task_model in self.models.items():
                module = task_model.module
                network = module.model if isinstance(module, TaskView) else module
                if id(network) not in shared:
                    shared[id(network)] = forward_views(network, batch, self.tta_flip)
                out = shared[id(network)]
                chunks[task].append((out[:, module.columns] if isinstance(module, TaskView) else out).cpu().numpy())
        return {
            task: np.concatenate(parts) if parts else np.zeros((0, TASKS[task].num_outputs), np.float32)
            for task, parts in chunks.items()
        }

    def predict_array(
        self,
        pixels: np.ndarray,
        sources: Sequence[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> pd.DataFrame:
        """Predict on faces already in the training layout: (N, 48, 48) or (N, 2304), uint8 or
        float in [0, 1]. Returns one row per face with the columns of `prediction_columns`."""
        images = pixels_to_tensor(pixels)
        sources = [f"array[{i}]" for i in range(len(images))] if sources is None else list(sources)
        if len(sources) != len(images):
            raise ValueError(f"{len(sources)} sources for {len(images)} images")
        outputs = self.raw_outputs(images, batch_size=batch_size)
        return self.frame(sources, outputs)

    def predict_images(
        self,
        paths: Sequence[str | os.PathLike[str]],
        use_ray: bool | None = None,
        num_workers: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
    ) -> PredictionResult:
        """Predict on image files (any size, colour or gray); unreadable files become rejects.

        More than RAY_MIN_IMAGES files (or use_ray=True) run as Ray Data batch inference.
        """
        from facetune.predict.inputs import Inputs

        inputs = Inputs(sources=[str(p) for p in paths], paths=[Path(p) for p in paths])
        return self.predict_inputs(inputs, use_ray=use_ray, num_workers=num_workers,
                                   batch_size=batch_size, progress=progress)

    def predict_inputs(
        self,
        inputs: Inputs,
        use_ray: bool | None = None,
        num_workers: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
    ) -> PredictionResult:
        """Predict on gathered inputs (image files or decoded faces), locally or with Ray Data."""
        if use_ray is None:
            use_ray = len(inputs) > RAY_MIN_IMAGES
        if use_ray and len(inputs):
            from facetune.predict.batch import ray_raw_outputs

            positions, outputs, decode_rejects = ray_raw_outputs(
                self, inputs, num_workers=num_workers, batch_size=batch_size, progress=progress
            )
        else:
            positions, outputs, decode_rejects = self._local_raw_outputs(inputs, batch_size, progress)
        sources = [inputs.sources[i] for i in positions]
        frame = self.frame(sources, outputs, index=positions)
        return PredictionResult(frame, list(inputs.rejects) + decode_rejects, outputs)

    def _local_raw_outputs(
        self, inputs: Inputs, batch_size: int, progress: ProgressCallback | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray], list[Reject]]:
        """The plain loop: decode (for image files) and predict one batch at a time."""
        from facetune.predict.inputs import decode_images

        positions: list[np.ndarray] = []
        chunks: dict[str, list[np.ndarray]] = {task: [] for task in self.models}
        rejects: list[Reject] = []
        total = len(inputs)
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            if inputs.pixels is not None:
                pixels, ok = inputs.pixels[start:stop], np.ones(stop - start, dtype=bool)
            else:
                pixels, ok, reasons = decode_images(inputs.paths[start:stop])
                rejects += [Reject(inputs.sources[start + i], reasons[i]) for i in np.flatnonzero(~ok)]
            positions.append(start + np.flatnonzero(ok))
            for task, values in self.raw_outputs(pixels_to_tensor(pixels[ok]), batch_size).items():
                chunks[task].append(values)
            if progress is not None:
                progress(stop, total)
        outputs = {
            task: np.concatenate(parts) if parts else np.zeros((0, TASKS[task].num_outputs), np.float32)
            for task, parts in chunks.items()
        }
        return (np.concatenate(positions) if positions else np.zeros(0, np.int64)), outputs, rejects

    def frame(
        self,
        sources: Sequence[str],
        outputs: Mapping[str, np.ndarray],
        index: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """Raw outputs -> the prediction table (labels as class names, one probability column per class)."""
        if not len(sources):  # nothing readable: the table's columns, no rows (the tasks cannot reshape 0 rows)
            return pd.DataFrame({name: pd.Series(dtype=object) for name in prediction_columns(self.tasks)},
                                index=pd.Index(index if index is not None else [], dtype=np.int64))
        columns: dict[str, object] = {"source": list(sources)}
        for task_name in self.models:
            task = TASKS[task_name]
            predicted = task.predict(torch.as_tensor(outputs[task_name]))
            pred = _numpy(predicted["pred"])
            if task.kind == "regression":
                columns[task_name] = pred.astype(np.float64)
                if "std" in predicted:
                    columns[f"{task_name}_std"] = _numpy(predicted["std"]).astype(np.float64)
                continue
            probs = _numpy(predicted["probs"])
            names = np.asarray(task.class_names, dtype=object)
            columns[task_name] = names[pred.astype(np.int64)] if len(pred) else np.array([], dtype=object)
            if task_name == "gender":
                columns[f"gender_prob_{_column_name(task.class_names[1])}"] = probs[:, 1]
            else:
                for k, name in enumerate(task.class_names):
                    columns[f"prob_{_column_name(name)}"] = probs[:, k]
        frame = pd.DataFrame(columns, index=pd.Index(index if index is not None else range(len(sources))))
        return frame[prediction_columns(self.tasks, age_std="age_std" in columns)]


def _release_summaries(release_dir: Path, tta_flip: bool) -> dict[str, dict]:
    """task -> {"val", "test"} figures of the shipped models, as summary.json entries give them."""
    from facetune.release import METRICS_FILE

    path = release_dir / METRICS_FILE
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    test = metrics["test"]["tta_flip" if tta_flip else "single_view"]["overall"]
    return {
        task: {"family": "multitask", "task": task,
               **{split: {k: v for k, v in figures[task].items() if k != "n"} for split, figures in (("test", test), ("val", metrics["val"]))}}
        for task in TASKS
    }


def _numpy(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(N, 48, 48) or (N, 2304) faces, uint8 or float in [0, 1] -> (N, 1, 48, 48) float32 in [0, 1]."""
    array = np.asarray(pixels)
    if array.ndim == 2 and array.shape[1] == NUM_PIXELS or array.ndim == 3 and array.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        array = array.reshape(len(array), 1, IMAGE_SIZE, IMAGE_SIZE)
    elif not (array.ndim == 4 and array.shape[1:] == (1, IMAGE_SIZE, IMAGE_SIZE)):
        raise ValueError(
            f"faces must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}) or (N, {NUM_PIXELS}) (or (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE})), got {array.shape}"
        )
    if array.dtype == np.uint8:
        # The training conversion itself, so predictions see exactly what the models were fitted on.
        return torch.from_numpy(pixels_to_images(array.reshape(len(array), NUM_PIXELS)))
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0 or np.isnan(array).any()):
            raise ValueError(
                "float faces must lie in [0, 1] (as in training); pass uint8 for 0..255 pixel values"
            )
        return torch.from_numpy(array.astype(np.float32))
    raise ValueError(f"faces must be uint8 or float in [0, 1], got dtype {array.dtype}")
