"""The model card beside the shipped models: what they were trained on, how, and how well."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from facetune.schema import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE

#: The files whose sha256 the card records (the card itself and metrics.json describe them).
SHIPPED_FILES: tuple[str, ...] = (MODEL_WEIGHTS_FILE, MODEL_CONFIG_FILE)
CARD_FILE = "MODEL_CARD.md"
SHA_HEADING = "## Files"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row(name: str, m: dict[str, dict]) -> str:
    return (f"| {name} | {m['age']['n']} | {m['age']['mae']:.2f} | {m['gender']['accuracy']:.2%} | "
            f"{m['ethnicity']['accuracy']:.2%} |")


def model_card(out_dir: Path, metrics: dict[str, Any]) -> str:
    test = metrics["test"]
    best, single = test["tta_flip"], test["single_view"]
    overall, plain = best["overall"], single["overall"]
    rows = metrics["data"]["rows"]
    lines = [
        "# facetune pretrained models",
        "",
        "One multitask network answers age (years, with a per-face spread), gender and ethnicity from a",
        "48x48 grayscale face crop, aligned and cropped like UTKFace's \"aligned & cropped\" faces.",
        "",
        "## Data",
        f"- Source: UTKFace (the Kaggle age_gender.csv layout, `{metrics['data']['source']}`), research use only.",
        f"- Split: seeded 80/10/10 (seed {metrics['data']['split_seed']}), stratified by ethnicity x gender, identical",
        "  images kept in one split.",
        f"- Trained on the train split only ({rows['train']:,} faces); the val split ({rows['val']:,}) chose the epoch;",
        f"  the test split ({rows['test']:,}) was evaluated once, below.",
        "",
        "## Recipe",
        "Rebuilt by `python jobs/train_release.py` from `raycfg/release.yaml`:",
        "",
        "```yaml",
        yaml.safe_dump(metrics["recipe"], sort_keys=False).rstrip(),
        "```",
        "",
        f"Best epoch {metrics['best_epoch']} of {metrics['epochs_run']}; training took "
        f"{metrics['train_seconds'] / 60:.0f} minutes on {metrics['machine']}.",
    ]
    if metrics.get("shrunk_for_test"):
        lines += ["", "**This is a shrunk test build (fewer epochs or rows), not a release.**"]
    lines += [
        "",
        "## Test split",
        "",
        "| evaluation | age MAE (years) | gender accuracy | ethnicity accuracy |",
        "| --- | --- | --- | --- |",
        f"| one view | {plain['age']['mae']:.2f} | {plain['gender']['accuracy']:.2%} | {plain['ethnicity']['accuracy']:.2%} |",
        f"| with flip averaging (what predict uses) | {overall['age']['mae']:.2f} | {overall['gender']['accuracy']:.2%} | "
        f"{overall['ethnicity']['accuracy']:.2%} |",
        "",
        "Per group (with flip averaging):",
        "",
        "| group | faces | age MAE | gender accuracy | ethnicity accuracy |",
        "| --- | --- | --- | --- | --- |",
        *[_row(name, m) for name, m in best.items() if name != "overall"],
        "",
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
        *[f"| {name} | `{file_sha256(out_dir / name)}` |" for name in SHIPPED_FILES],
        "",
    ]
    return "\n".join(lines)


def write_model_card(out_dir: Path, metrics: dict[str, Any]) -> Path:
    path = Path(out_dir) / CARD_FILE
    path.write_text(model_card(Path(out_dir), metrics))
    return path


def card_checksums(card_path: Path) -> dict[str, str]:
    """{file: sha256} as the card states them."""
    text = card_path.read_text().split(SHA_HEADING, 1)[-1]
    found = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in SHIPPED_FILES:
            found[cells[0]] = cells[1]
    return found
