"""What the release writes for people: the model card beside the shipped models (what they were
trained on, how, and how well, per group with intervals) and the figures block of the docs page."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from facetune.errors import InvalidInputError
from facetune.group_figures import RESAMPLES, format_figure, summary, summary_lines
from facetune.groups import MIN_GROUP_SIZE, group_names
from facetune.records import DEFAULT_INPUT_SPEC, INT8_RANGES_FILE, InputSpec, input_spec_from
from facetune.release.evaluation import headline
from facetune.release.paths import CARD_FILE, METRICS_FILE, STUDENT_DIR_NAME

SHA_HEADING = "## Files"
#: Issue 10's bar for shipping and the project's targets on the test split: (age MAE, gender, ethnicity).
SHIPPING_BAR = (5.4, 0.93, 0.83)
TARGETS = (5.0, 0.94, 0.85)
#: The page holding the release's figures, and the block of it `write_docs_figures` rewrites
#: (everything between the two lines).
DOCS_PAGE = "docs/release-models.md"
FIGURES_BEGIN = f"<!-- release figures: written by `python jobs/train_release.py --docs {DOCS_PAGE}` from facetune/pretrained/metrics.json -->"
FIGURES_END = "<!-- end of release figures -->"
_SHA_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*`([0-9a-f]{64})`\s*\|$")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_files(release_dir: Path) -> list[str]:
    """Every file of a release but the card itself and the fast model's folder (which has its own
    section), as POSIX paths relative to the release folder."""
    root = Path(release_dir)
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                  if path.is_file() and path.name != CARD_FILE and path.relative_to(root).parts[0] != STUDENT_DIR_NAME)


def teacher_digest(release_dir: Path) -> str:
    """One sha256 over the release's shipped files (its int8 ranges aside, which change no weight):
    which ensemble a fast model was distilled from."""
    digest = hashlib.sha256()
    for name in [name for name in shipped_files(release_dir) if Path(name).name != INT8_RANGES_FILE]:
        digest.update(f"{name} {file_sha256(Path(release_dir) / name)}\n".encode())
    return digest.hexdigest()


def _group_row(name: str, m: dict[str, dict]) -> str:
    """A per-group row: the group, its faces, and each task's figure with its 95% interval."""
    return f"| {name} | {m['age']['n']} | " + " | ".join(format_figure(task, headline(m, task)) for task, _ in _COLUMNS) + " |"


def per_group_lines(groups: dict[str, dict], views: str = "flip averaging") -> list[str]:
    """The per-group table (each figure with its interval) and its summary in words, as Markdown."""
    return [
        f"Per group ({views}), each figure with its 95% bootstrap interval ({RESAMPLES:,} resamples of",
        "the group's test faces; the fewer the faces, the wider the interval):",
        "",
        "| group | faces | age MAE | gender accuracy | ethnicity accuracy |",
        "| --- | --- | --- | --- | --- |",
        *[_group_row(name, groups[name]) for name in ["overall", *group_names()] if name in groups],
        "",
        f"Worst and best group per task (ranked among groups of at least {MIN_GROUP_SIZE} faces), gender recall per",
        "gender, and age MAE at both ends of life:",
        "",
        *summary_text(groups),
    ]


def group_summaries(groups: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """task -> group_figures.summary of the per-group figures (`groups`: evaluation.group_metrics)."""
    return {task: summary(pd.DataFrame([{"group": name} | headline(m, task) for name, m in groups.items() if name != "overall"]), task)
            for task, _ in _COLUMNS}


def summary_text(groups: dict[str, dict]) -> list[str]:
    """Markdown bullets per task: the worst group with its interval, the gap to the best, the
    watched groups (female/male recall, children's and over-60s' MAE) and any group too small to rank."""
    return [f"- {task}: {line}" for task, result in group_summaries(groups).items() for line in summary_lines(task, result)]


def figures_line(m: dict[str, dict]) -> str:
    """One group's three headline figures in words, for a log line."""
    return f"age MAE {m['age']['mae']:.2f}, gender {m['gender']['accuracy']:.2%}, ethnicity {m['ethnicity']['accuracy']:.2%}"


#: The card's figure columns, in order: (task, the metric shown).
_COLUMNS: tuple[tuple[str, str], ...] = (("age", "mae"), ("gender", "accuracy"), ("ethnicity", "accuracy"))


def _cell(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric == "mae" else f"{value:.2%}"


def _figures(m: dict[str, dict]) -> str:
    return " | ".join(_cell(metric, m[task][metric]) for task, metric in _COLUMNS)


def task_figure_line(figure: dict[str, Any]) -> str:
    """A task member's figure in words (`figure`: its task and that task's metrics), for a log line."""
    return f"{figure['task']} accuracy {figure['accuracy']:.2%}"


def _task_member_figures(figure: dict[str, Any]) -> str:
    """The card's three figure cells for a task member: its own task's, a dash in the others."""
    return " | ".join((_cell(metric, figure[metric]) if figure["task"] == task else "-") for task, metric in _COLUMNS)


def _task_member_rows(metrics: dict[str, Any], label: str) -> list[str]:
    """Test-split rows for the task members alone ({name}, {family}, {task} in `label`)."""
    entries = metrics.get("task_members") or {}
    return [f"| {label.format(name=name, family=metrics['recipe']['task_members'][name]['family'], task=m['test_tta_flip']['task'])}"
            f" | {_task_member_figures(m['test_tta_flip'])} |" for name, m in entries.items()]


def _task_member_text(metrics: dict[str, Any]) -> list[str]:
    """The card's lines on the task members, if the release has any."""
    entries = (metrics["recipe"].get("task_members") or {}) if metrics.get("task_members") else {}
    return ["", *[f"For {entry['task']}, a {entry['family']} network trained on {entry['task']} alone (`task_members.{name}`, "
                  f"best epoch {metrics['task_members'][name]['best_epoch']} of {metrics['task_members'][name]['epochs_run']}) "
                  f"joins the average with weight {entry['weight']:g} (a multitask member weighs 1)."
                  for name, entry in entries.items()]] if entries else []


def _shipped_name(metrics: dict[str, Any]) -> str:
    """`4-seed ensemble`, with its task members named (`4-seed ensemble + cnn-gender`)."""
    return " + ".join([f"{len(metrics['members'])}-seed ensemble", *(metrics.get("task_members") or {})])


def _own_keys(recipe: dict[str, Any], seed: str) -> str:
    """` (train.loss_weights: ...; arch.trunk_arch: ...)` for a member with its own training or arch
    keys (`member_train`, `member_arch`), else ``."""
    own = [(f"{section}.{key}", value)
           for section, table in (("train", "member_train"), ("arch", "member_arch"))
           for key, value in ({str(k): v for k, v in (recipe.get(table) or {}).items()}.get(seed) or {}).items()]
    if not own:
        return ""
    return " (" + "; ".join(f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip()}" for key, value in own) + ")"


def _stacked_text(metrics: dict[str, Any]) -> list[str]:
    """The card's lines on the stacked heads, if the release has any."""
    stacked = metrics.get("stacked_head")
    if not stacked:
        return []
    return ["", f"{' and '.join(stacked['tasks']).capitalize()} instead comes from a stacked head: one logistic regression "
            f"(C = {stacked['c']:g}) over", f"the members' {stacked['features']} trunk features side by side, fitted on the "
            "train split after the members (flip-averaged", "features, no augmentation; the val split chose C)."]


def _averaged_heads_row(metrics: dict[str, Any], label: str) -> list[str]:
    """A test-split row for the ensemble without its stacked heads, if the release has any ({tasks} in `label`: theirs)."""
    stacked = metrics.get("stacked_head")
    return [f"| {label.format(tasks=' and '.join(stacked['tasks']))} | {_figures(stacked['test_averaged_heads'])} |"] if stacked else []


def face_crop_text(spec: InputSpec) -> str:
    """"48x48 grayscale", "64x64 colour": the faces the members take, as the card names them."""
    return f"{spec.size}x{spec.size} {'colour' if spec.is_color else 'grayscale'}"


def model_card(out_dir: Path, metrics: dict[str, Any]) -> str:
    test = metrics["test"]
    # The members' layout is the data's (metrics.json records it when it is not the default).
    spec = input_spec_from(metrics["data"].get("input_spec"), "metrics.json: data.input_spec")
    best, single = test["tta_flip"], test["single_view"]
    rows = metrics["data"]["rows"]
    members = metrics["members"]
    recipe = metrics["recipe"]
    seeds = ", ".join(members)
    differing = [seed for seed in members if _own_keys(recipe, seed)]
    one_recipe = (f"one recipe, seeds {seeds}" if not differing else
                  f"one recipe, seeds {seeds}; {', '.join(f'seed {s}' for s in differing)} with "
                  f"{'its' if len(differing) == 1 else 'their'} own keys")
    epochs = ", ".join(f"seed {seed}: {m['best_epoch']} of {m['epochs_run']}" for seed, m in members.items())
    if any("finetune" in m for m in members.values()):
        epochs += "; second stage (`finetune`): " + ", ".join(
            f"seed {seed}: {m['finetune']['best_epoch']} of {m['finetune']['epochs_run']}" for seed, m in members.items() if "finetune" in m)
    lines = [
        "# facetune pretrained models",
        "",
        f"An ensemble of {len(members)} multitask networks ({one_recipe}) answers age (years, with a",
        f"per-face spread), gender and ethnicity from a {face_crop_text(spec)} face crop, aligned and cropped like",
        "UTKFace's \"aligned & cropped\" faces. The members' predictions are averaged task by task (class",
        "and age-bin probabilities), so one call runs every member once.",
        *_stacked_text(metrics),
        *_task_member_text(metrics),
        "",
        "## Data",
        f"- Source: UTKFace ({'the Kaggle age_gender.csv layout' if spec == DEFAULT_INPUT_SPEC else spec.describe() + ' faces'}, "
        f"`{metrics['data']['source']}`), research use only.",
        f"- Split: seeded 80/10/10 (seed {metrics['data']['split_seed']}), stratified by ethnicity x gender, identical",
        "  images kept in one split.",
        f"- Trained on the train split only ({rows['train']:,} faces); the val split ({rows['val']:,}) chose the epoch;",
        f"  the test split ({rows['test']:,}) was evaluated once, below.",
        "",
        "## Recipe",
        "Rebuilt by `python jobs/train_release.py` from `raycfg/release.yaml`:",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).rstrip(),
        "```",
        "",
        f"Training took {metrics['train_seconds'] / 60:.0f} minutes in all on {metrics['machine']} (best epochs: {epochs}).",
    ]
    if metrics.get("shrunk_for_test"):
        lines += ["", "**This is a shrunk test build (fewer epochs or rows), not a release.**"]
    lines += [
        "",
        "## Test split",
        "",
        "| evaluation | age MAE (years) | gender accuracy | ethnicity accuracy |",
        "| --- | --- | --- | --- |",
        *[f"| member seed {seed}{_own_keys(recipe, seed)} alone, flip averaging | {_figures(m['test_tta_flip'])} |"
          for seed, m in members.items()],
        *_task_member_rows(metrics, "task member {name} ({family}, {task} only) alone, flip averaging"),
        f"| ensemble, one view | {_figures(single['overall'])} |",
        *_averaged_heads_row(metrics, "ensemble with the members' {tasks} heads averaged instead, flip averaging"),
        f"| **ensemble with flip averaging (what predict uses)** | {_figures(best['overall'])} |",
        "",
        f"On the val split (which chose the epochs, so optimistic) the ensemble gives {_figures(metrics['val']).replace(' | ', ' / ')}.",
        "",
        *per_group_lines(best),
        "",
        *student_section(out_dir, metrics),
        "## Limits",
        "- UTKFace's labels are noisy (223 groups of identical images carry conflicting labels) and its",
        "  ethnicity classes are imbalanced (\"Others\" is 7% of the faces): per-group figures differ.",
        "- Ethnicity and gender are the dataset's annotations in its own categories, not identities.",
        "- Inputs must be face crops; `facetune predict` finds and crops faces in ordinary photos first.",
        "",
        SHA_HEADING,
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *[f"| {name} | `{file_sha256(out_dir / name)}` |" for name in shipped_files(out_dir)],
        "",
    ]
    return "\n".join(lines)


def student_section(out_dir: Path, metrics: dict[str, Any]) -> list[str]:
    """The card's section on the fast model in out_dir/student/, when there is one: its recipe,
    test figures beside the ensemble's, speed, per-group figures and files."""
    folder = Path(out_dir) / STUDENT_DIR_NAME
    if not (folder / METRICS_FILE).is_file():
        return []
    student = json.loads((folder / METRICS_FILE).read_text())
    recipe, fit, speed = student["recipe"], student["fit"], student["faces_per_second"]
    single, flipped = student["test"]["single_view"], student["test"]["tta_flip"]
    start = f"from member {recipe['init']}'s weights" if recipe["init"] else "from scratch"
    lines = [
        "## The fast model (`--pretrained fast`)",
        "",
        "One network of the members' shape, distilled from this ensemble by `python jobs/train_student.py`",
        f"(`raycfg/student.yaml`): trained {start} on the train split for {fit['epochs_run']} epochs (val chose epoch",
        f"{fit['best_epoch']}; {fit['train_seconds'] / 60:.0f} min), each task's loss {recipe['train']['distill_weight']:.0%} the KL divergence from the",
        "ensemble's flip-averaged probabilities (classes and age bins, computed once on the train faces) and the",
        f"rest the labels. Weights stored in {recipe['weights_dtype']}. It answers with one view.",
    ]
    if student["teacher"] != teacher_digest(out_dir):
        lines += ["", "**It was distilled from another build of the ensemble: rebuild it with `python jobs/train_student.py`.**"]
    if student.get("shrunk_for_test"):
        lines += ["", "**This is a shrunk test build (fewer epochs or rows), not a release.**"]
    ensemble_speed = speed["torch"]["ensemble"]
    lines += [
        "",
        "| evaluation (test split) | age MAE (years) | gender accuracy | ethnicity accuracy |",
        "| --- | --- | --- | --- |",
        f"| **fast model, one view (what `--pretrained fast` uses)** | {_figures(single['overall'])} |",
        f"| fast model with flip averaging (`--tta`) | {_figures(flipped['overall'])} |",
        f"| ensemble with flip averaging | {_figures(metrics['test']['tta_flip']['overall'])} |",
        "",
        f"Faces a second on {speed['faces']:,} test faces, torch on {speed['torch_threads']} threads, measured by the build: fast",
        f"model {speed['torch']['student']:.0f}, ensemble {ensemble_speed:.0f} ({speed['torch']['student'] / ensemble_speed:.1f}x). "
        "onnxruntime and int8: docs/benchmarks.md.",
        "",
        *per_group_lines(single, "the fast model, one view"),
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *[f"| {STUDENT_DIR_NAME}/{path.name} | `{file_sha256(path)}` |" for path in sorted(folder.iterdir()) if path.is_file()],
        "",
    ]
    return lines


def write_model_card(out_dir: Path, metrics: dict[str, Any]) -> Path:
    path = Path(out_dir) / CARD_FILE
    path.write_text(model_card(Path(out_dir), metrics))
    return path


def rewrite_model_card(release_dir: Path) -> Path:
    """Write the card of the release in `release_dir` again from its metrics.json (after a file
    beside the release changed: the fast model, int8 ranges)."""
    return write_model_card(release_dir, json.loads((Path(release_dir) / METRICS_FILE).read_text()))


def docs_figures(metrics: dict[str, Any]) -> str:
    """The docs page's table of the shipped models' figures (between FIGURES_BEGIN and FIGURES_END)."""
    test, members = metrics["test"], metrics["members"]
    epochs = {m["epochs_run"] for m in members.values()}
    finetuned = [m["finetune"] for m in members.values() if "finetune" in m]
    second_stage = (f", then a second stage of {'/'.join(map(str, sorted({f['epochs_run'] for f in finetuned})))} epochs "
                    f"(best epochs {', '.join(str(f['best_epoch']) for f in finetuned)})") if finetuned else ""
    lines = [
        f"Test split ({metrics['data']['rows']['test']:,} faces); {len(members)} members of {'/'.join(map(str, sorted(epochs)))} epochs "
        f"(best epochs {', '.join(str(m['best_epoch']) for m in members.values())}){second_stage}, {metrics['train_seconds'] / 3600:.1f} hours "
        f"of training in all on {metrics['machine']}:",
        "",
        "| model | age MAE (years) | gender accuracy | ethnicity accuracy |",
        "| --- | --- | --- | --- |",
        f"| **shipped: {_shipped_name(metrics)}, flip TTA** | "
        + " | ".join(f"**{part}**" for part in _figures(test["tta_flip"]["overall"]).split(" | ")) + " |",
        f"| the same, one view | {_figures(test['single_view']['overall'])} |",
        *_averaged_heads_row(metrics, "the same with the members' {tasks} heads averaged instead of the stacked head"),
        *[f"| seed {seed}{_own_keys(metrics['recipe'], seed)} alone, flip TTA | {_figures(m['test_tta_flip'])} |"
          for seed, m in members.items()],
        *_task_member_rows(metrics, "{name} ({family}, {task} only) alone, flip TTA"),
        f"| issue 10's bar for shipping | <= {SHIPPING_BAR[0]} | >= {SHIPPING_BAR[1]:.1%} | >= {SHIPPING_BAR[2]:.1%} |",
        f"| project target | <= {TARGETS[0]} | >= {TARGETS[1]:.0%} | >= {TARGETS[2]:.0%} |",
        "",
        f"On validation (which chose each member's epoch) the ensemble reaches {_figures(metrics['val']).replace(' | ', ' / ')}"
        + (f" ({_figures(metrics['stacked_head']['val_averaged_heads']).replace(' | ', ' / ')} with the members' heads averaged)."
           if metrics.get("stacked_head") else "."),
        "",
        *per_group_lines(test["tta_flip"]),
    ]
    return "\n".join(lines)


def figures_block_span(page: Path) -> tuple[str, int, int]:
    """(page text, start, end) of its release-figures block's content; a missing file or block is refused."""
    path = Path(page)
    text = path.read_text() if path.is_file() else ""
    begin, end = text.find(FIGURES_BEGIN), text.find(FIGURES_END)
    if begin < 0 or end < begin:
        raise InvalidInputError(f"--docs {page}: no such file, or no release-figures block in it "
                                f"(the lines {FIGURES_BEGIN!r} and {FIGURES_END!r})")
    return text, begin + len(FIGURES_BEGIN), end


def write_docs_figures(page: Path, metrics: dict[str, Any]) -> None:
    """Replace the docs page's release-figures block with the figures of `metrics`."""
    text, start, end = figures_block_span(page)
    Path(page).write_text(text[:start] + "\n" + docs_figures(metrics) + "\n" + text[end:])


def card_checksums(card_path: Path) -> dict[str, str]:
    """{file: sha256} as the card states them."""
    text = card_path.read_text().split(SHA_HEADING, 1)[-1]
    return {match[1]: match[2] for match in map(_SHA_ROW.match, text.splitlines()) if match}
