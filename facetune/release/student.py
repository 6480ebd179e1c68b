"""The distilled model shipped beside the ensemble (`fast`): one network trained on the train split
to match the shipped ensemble's outputs (class and age-bin probabilities, flip averaging folded in)
as well as the labels, so that one forward pass answers what the ensemble answers with ten.

`train_student` reads raycfg/student.yaml, computes the teacher's outputs on the train faces once
(kept in the work folder, keyed by the ensemble's files), trains resumably like a release member,
writes pretrained/student/ (model, metrics.json) and rewrites the model card's student section.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from facetune.config_files import raycfg_dir
from facetune.config_keys import STUDENT, check, with_defaults
from facetune.devices import describe_device, resolve_device
from facetune.errors import InputNotFoundError, InvalidInputError
from facetune.json_files import write_json
from facetune.models import build_model, load_model, make_context, save_model
from facetune.release.card import figures_line, rewrite_model_card, teacher_digest
from facetune.release.evaluation import evaluate
from facetune.release.members import fit_resumably, resumable_state, train_config
from facetune.release.paths import MEMBERS_DIR, METRICS_FILE, PRETRAINED_DIR, STUDENT_DIR_NAME
from facetune.release.recipe import WEIGHTS_DTYPES
from facetune.release.train import check_shrink, release_splits
from facetune.tasks import MULTITASK
from facetune.training.loop import TrainConfig, predict_outputs, seed_everything

Log = Callable[[str], None]
STATE_FILE = "student_state.pt"
TEACHER_FILE = "teacher_outputs.pt"
#: Faces timed for the card's faces/s (the test split's first ones), one batch of 256 at a time.
TIMED_FACES = 2000


def default_student_recipe_path() -> Path:
    return raycfg_dir() / "student.yaml"


def load_student_recipe(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """raycfg/student.yaml with its defaults; unknown keys and a bad train config fail here."""
    recipe_path = Path(path) if path is not None else default_student_recipe_path()
    if not recipe_path.is_file():
        raise InputNotFoundError(f"--recipe {recipe_path}: no such file")
    recipe = with_defaults(yaml.safe_load(recipe_path.read_text()) or {}, STUDENT, str(recipe_path))
    check(recipe, STUDENT, str(recipe_path), context={"family": recipe["family"]})
    try:
        train = TrainConfig.from_dict(recipe["train"])
    except (ValueError, TypeError) as err:
        raise InvalidInputError(f"{recipe_path}: train: {err}") from None
    if train.distill_weight == 0:
        raise InvalidInputError(f"{recipe_path}: train.distill_weight is 0, so nothing would be distilled")
    if recipe["weights_dtype"] not in WEIGHTS_DTYPES:
        raise InvalidInputError(f"{recipe_path}: weights_dtype {recipe['weights_dtype']!r}; known: {list(WEIGHTS_DTYPES)}")
    return recipe


def teacher_outputs(teacher: Any, images: torch.Tensor, cache: Path, key: str, log: Log) -> dict[str, torch.Tensor]:
    """{task: probabilities} of the ensemble on `images`, flip averaged as predict answers; computed
    once per (ensemble, faces) and kept in `cache`."""
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") == key and len(next(iter(saved["probabilities"].values()))) == len(images):
            return saved["probabilities"]
    started = time.time()
    outputs = torch.from_numpy(predict_outputs(teacher, images, batch_size=256, tta_flip=True))
    probabilities = {name: torch.softmax(part.float(), dim=1) for name, part in teacher.split_outputs(outputs).items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "probabilities": probabilities}, cache)
    log(f"[student] the ensemble's outputs on {len(images):,} train faces: {time.time() - started:.0f} s (kept in {cache})")
    return probabilities


def faces_per_second(model: Any, images: torch.Tensor, tta_flip: bool) -> float:
    """Faces a second of `model` on `images` in this process (torch, batches of 256, after one warm-up batch)."""
    predict_outputs(model, images[:256], batch_size=256, tta_flip=tta_flip)
    started = time.perf_counter()
    predict_outputs(model, images, batch_size=256, tta_flip=tta_flip)
    return len(images) / (time.perf_counter() - started)


def train_student(
    data: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str],
    release_dir: str | os.PathLike[str] = PRETRAINED_DIR,
    recipe_path: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    log: Log = print,
    device: str | None = None,
) -> dict[str, Any]:
    """Distil the release in `release_dir` into one network and write `release_dir`/student/
    (model, metrics.json) and the card's student section. `epochs` and `limit` shrink a test run."""
    check_shrink(epochs, limit)
    recipe = load_student_recipe(recipe_path)
    release, work = Path(release_dir), Path(work_dir)
    if not (release / METRICS_FILE).is_file():
        raise InputNotFoundError(f"{release}: no release to distil ({METRICS_FILE} is missing); build it first "
                                 "with `python jobs/train_release.py`")
    init = release / MEMBERS_DIR / recipe["init"] if recipe["init"] else None
    if init is not None and not init.is_dir():
        raise InvalidInputError(f"init: {recipe['init']!r} is not a member of {release} (see {release / MEMBERS_DIR})")
    train_device = resolve_device(device)
    splits, data_record = release_splits(data, work, limit)
    torch.set_num_threads(int(recipe["torch_threads"]))
    teacher, _ = load_model(release)
    digest = teacher_digest(release)
    teacher_probabilities = teacher_outputs(teacher, splits["train"].images(), work / TEACHER_FILE,
                                            f"{digest} {data_record}", log)

    train_cfg = train_config(recipe["train"], epochs)
    seed_everything(train_cfg.seed)
    model = build_model(recipe["family"], recipe["arch"], MULTITASK,
                        make_context(MULTITASK, splits["train"].age, loss=train_cfg.loss))
    if init is not None:
        model.load_state_dict(load_model(init)[0].state_dict())
    identity = {"recipe": {k: v for k, v in recipe.items() if k != "description"}, "teacher": digest, "limit": limit}
    state_path = work / STATE_FILE
    resume = resumable_state(state_path, train_cfg, identity)
    log(f"[student] training on {describe_device(train_device)}"
        f"{f', from {init}' if init is not None else ', from scratch'}")
    model, fitted = fit_resumably(model, train_cfg, splits, state_path, resume, {"identity": identity}, "student", log,
                                  train_device, teacher=teacher_probabilities)

    out = release / STUDENT_DIR_NAME
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, staging, family=recipe["family"], task=MULTITASK, arch=recipe["arch"],
               weights_dtype=getattr(torch, recipe["weights_dtype"]))
    student, _ = load_model(staging)
    test_images = splits["test"].images()[:TIMED_FACES]
    metrics = {
        "recipe": recipe,
        "teacher": digest,
        "data": data_record,
        "fit": fitted,
        "shrunk_for_test": bool(epochs or limit),
        # The student answers with one view (what makes it fast); flip averaging is there on request.
        "val": evaluate(student, splits["val"], False)["overall"],
        "test": {("tta_flip" if tta else "single_view"): evaluate(student, splits["test"], tta) for tta in (False, True)},
        "faces_per_second": {"torch": {"student": faces_per_second(student, test_images, False),
                                       "ensemble": faces_per_second(teacher, test_images, True)},
                             "faces": len(test_images), "torch_threads": int(recipe["torch_threads"])},
    }
    write_json(staging / METRICS_FILE, metrics, sort_keys=True)
    retired = out.with_name(f".{out.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if out.exists():
        os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)
    rewrite_model_card(release)
    log(f"[student] wrote {out}: test, one view: {figures_line(metrics['test']['single_view']['overall'])}")
    return metrics
