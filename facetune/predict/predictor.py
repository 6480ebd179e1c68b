"""Predictor: the best model of each task from a results directory, applied to faces converted
to each model's own input spec (facetune.predict.faces).

The models, the preprocessing (facetune.data.images) and the output heads (facetune.tasks) are
the ones the sweep used, so predictions on the sweep's own test split reproduce its test figures.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facetune.data.loading import pixels_to_images
from facetune.devices import resolve_device
from facetune.models import load_model
from facetune.models.ensemble import input_specs
from facetune.models.inference import predict_outputs
from facetune.models.int8 import int8_twin
from facetune.models.multitask import TaskView, network_of
from facetune.models.onnx_engine import onnx_runtime_twin
from facetune.predict.choice import choose_best, read_summary
from facetune.predict.faces import Faces, spec_of_array, to_uint8
from facetune.predict.table import prediction_frame
from facetune.records import InputSpec
from facetune.release import paths as release_paths
from facetune.tasks import MULTITASK, TASKS

#: Faces per forward pass; faces are small, so this is bounded by speed, not memory.
DEFAULT_BATCH_SIZE = 256

#: (done, total) -> None; called as batches finish.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class TaskModel:
    """One task's chosen model and where it came from."""

    task: str
    family: str
    model_dir: Path
    module: torch.nn.Module
    summary: Mapping  # the summary.json entry ({} when built without one)


class Predictor:
    """Predicts age, gender and ethnicity with one model per task."""

    def __init__(self, models: Mapping[str, TaskModel], device: str | torch.device | None = None,
                 tta_flip: bool = False) -> None:
        if not models:
            raise ValueError("a Predictor needs at least one task model")
        unknown = set(models) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {list(TASKS)}")
        self.device = resolve_device(device, where="device")
        # Keep TASKS order so columns and outputs come out the same way every time.
        self.models = {name: models[name] for name in TASKS if name in models}
        for task_model in self.models.values():
            # channels-last: the convolutions' fast layout (predict_outputs feeds batches in it too).
            task_model.module.to(self.device, memory_format=torch.channels_last).eval()
        #: Average each face's outputs with its mirror image's (test-time flip augmentation).
        self.tta_flip = bool(tta_flip)
        #: id(network) -> its onnxruntime twin (use_onnxruntime); absent: the network runs on torch.
        self._twins: dict[int, torch.nn.Module] = {}
        self._engine_tried = False
        self._int8: set[int] = set()  # ids of the networks whose twin is quantised
        self.engine_notes: list[str] = []  # why a network stays on torch

    def networks(self) -> dict[int, torch.nn.Module]:
        """The distinct networks behind the tasks (a multitask model answers several), by id."""
        found = {}
        for task_model in self.models.values():
            network = network_of(task_model.module)
            found.setdefault(id(network), network)
        return found

    def use_onnxruntime(self, int8: bool = False) -> str:
        """Run each network with onnxruntime from now on, where its twin matches torch within
        facetune.models.onnx_engine.PARITY_ATOL (on CPU only; a GPU stays with torch). Building a
        twin exports the network (a second or two each), so this pays off for batches of hundreds
        of faces and up. With `int8`, a network whose folder holds int8 ranges judged within
        tolerance on test (`facetune quantize`) runs quantised instead, the others in float32.
        Returns a line saying what each network runs on."""

        if self.device.type != "cpu":
            return "engine: torch (onnxruntime is used on CPU only)"
        if not self._engine_tried:  # once: a network that cannot go is not exported again
            self._engine_tried = True
            folders = {id(network_of(m.module)): m.model_dir for m in self.models.values()}
            for key, network in self.networks().items():
                twin, reason = int8_twin(network, folders[key]) if int8 else (None, "")
                if twin is None:
                    if reason:
                        self.engine_notes.append(f"{type(network).__name__} stays float32 ({reason})")
                    twin, reason = onnx_runtime_twin(network)
                else:
                    self._int8.add(key)
                if twin is None:
                    self.engine_notes.append(f"{type(network).__name__} stays on torch ({reason})")
                else:
                    self._twins[key] = twin
        name = "onnxruntime" + (" int8" if self._int8 else "")
        return f"engine: {name}" + (f"; {'; '.join(self.engine_notes)}" if self.engine_notes else "") \
            if self._twins else f"engine: torch; {'; '.join(self.engine_notes)}"

    @property
    def engine(self) -> str:
        """"onnxruntime" when every network runs on it, "torch" when none does, else "mixed"."""
        count = sum(1 for key in self.networks() if key in self._twins)
        whole = "onnxruntime int8" if self._int8 == set(self.networks()) else "onnxruntime"
        return "torch" if not count else whole if count == len(self.networks()) else "mixed"

    @classmethod
    def pretrained(cls, device: str | torch.device | None = None, tta_flip: bool | None = None,
                   which: str = "ensemble") -> Predictor:
        """The models shipped inside the package (see `facetune predict --about`): `which` is
        "ensemble" (the most accurate) or "fast" (one distilled network, about ten times the faces a
        second). `tta_flip` None: flip averaging for the ensemble, one view for the fast model."""
        folder = release_paths.pretrained_folder(which)
        if not release_paths.shipped_models_present(folder):
            command = "train_release" if which == "ensemble" else "train_student"
            raise FileNotFoundError(f"no pretrained {which} model in {folder}: rebuild it with `python jobs/{command}.py`")
        tta = (which == "ensemble") if tta_flip is None else bool(tta_flip)
        return cls.from_model_dirs({MULTITASK: folder}, device=device, tta_flip=tta, summaries=_release_summaries(folder, tta))

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
    def input_specs(self) -> tuple[InputSpec, ...]:
        """Every layout some network (or ensemble member) takes: what faces are converted to."""
        return tuple(dict.fromkeys(spec for network in self.networks().values() for spec in input_specs(network)))

    @property
    def model_dirs(self) -> dict[str, Path]:
        return {task: m.model_dir for task, m in self.models.items()}

    def describe(self) -> str:
        """One line per task: which model answers it, and the faces it takes."""
        return "\n".join(
            f"{task}: {m.family} ({m.model_dir}; {', '.join(s.describe() for s in input_specs(m.module))} faces)"
            for task, m in self.models.items()
        )

    def raw_outputs(
        self,
        faces: Faces | torch.Tensor,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> dict[str, np.ndarray]:
        """task -> (N, num_outputs) float32 model outputs. `faces` are Faces (each network is given
        them in its own spec) or an (N, C, S, S) float tensor in [0, 1] (used as it is by networks of
        its layout, converted through uint8 for the others)."""
        if not len(faces):
            return {task: np.zeros((0, TASKS[task].num_outputs), np.float32) for task in self.models}
        given: dict[InputSpec, torch.Tensor] = {}
        if isinstance(faces, torch.Tensor):
            given[spec_of_array(faces)] = faces
        held = [faces]

        def images(spec: InputSpec) -> torch.Tensor:  # each layout converted once, for every network
            if spec not in given:
                if isinstance(held[0], torch.Tensor):  # only when some network takes another layout
                    held[0] = Faces.from_pixels(to_uint8(held[0]), spec_of_array(held[0]))
                given[spec] = held[0].images(spec)
            return given[spec]

        shared: dict[int, np.ndarray] = {}  # one pass per distinct network (a multitask model answers all)
        outputs = {}
        for task, task_model in self.models.items():
            module = task_model.module
            network = network_of(module)
            if id(network) not in shared:
                specs = input_specs(network)
                x = images(specs[0]) if len(specs) == 1 else {spec: images(spec) for spec in specs}
                twin = self._twins.get(id(network))
                shared[id(network)] = predict_outputs(twin, x, batch_size, self.tta_flip) if twin is not None else \
                    predict_outputs(network, x, batch_size, self.tta_flip, channels_last=True)
            outputs[task] = shared[id(network)][:, module.columns] if isinstance(module, TaskView) else shared[id(network)]
        return outputs

    def predict_array(
        self,
        pixels: np.ndarray,
        sources: Sequence[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> pd.DataFrame:
        """Predict on faces in any one layout: (N, S, S) or (N, S*S) gray, (N, C, S, S) or (N, C*S*S),
        uint8 or float in [0, 1]; each model is given them converted to its own spec. Returns one
        row per face with the columns of `prediction_columns`."""
        images = pixels_to_tensor(pixels)
        sources = [f"array[{i}]" for i in range(len(images))] if sources is None else list(sources)
        if len(sources) != len(images):
            raise ValueError(f"{len(sources)} sources for {len(images)} images")
        outputs = self.raw_outputs(images, batch_size=batch_size)
        return prediction_frame(self.tasks, sources, outputs)

def _release_summaries(release_dir: Path, tta_flip: bool) -> dict[str, dict]:
    """task -> {"val", "test"} figures of the shipped models, as summary.json entries give them."""
    path = release_dir / release_paths.METRICS_FILE
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())  # the ensemble's or the fast model's: one layout
    test = metrics["test"]["tta_flip" if tta_flip else "single_view"]["overall"]
    return {
        task: {"family": "multitask", "task": task,
               **{split: {k: v for k, v in figures[task].items() if k != "n"} for split, figures in (("test", test), ("val", metrics["val"]))}}
        for task in TASKS
    }


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Faces in one layout (see facetune.predict.faces.spec_of_array), uint8 or float in [0, 1] ->
    (N, C, S, S) float32 in [0, 1], in that same layout."""
    array = np.asarray(pixels)
    spec = spec_of_array(array)
    if array.dtype == np.uint8:
        # The training conversion itself, so predictions see exactly what the models were fitted on.
        return torch.from_numpy(pixels_to_images(array.reshape(len(array), spec.pixels), spec))
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0 or np.isnan(array).any()):
            raise ValueError(
                "float faces must lie in [0, 1] (as in training); pass uint8 for 0..255 pixel values"
            )
        return torch.from_numpy(array.astype(np.float32).reshape(len(array), *spec.shape))
    raise ValueError(f"faces must be uint8 or float in [0, 1], got dtype {array.dtype}")
