"""The study's reported figures, the project's targets and the public reference, read from raycfg/study.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetune.config_files import load_yaml

STUDY_FILE = "study.yaml"


@dataclass(frozen=True)
class Goal:
    """One number on one task: a target ("<=" / ">=") or a reference value."""

    metric: str
    value: float
    goal: str = ""

    def met_by(self, value: float) -> bool:
        """Whether `value` reaches this goal (">=" for accuracy-like metrics, "<=" for errors)."""
        if self.goal == ">=":
            return value >= self.value
        if self.goal == "<=":
            return value <= self.value
        raise ValueError(f"goal {self.goal!r} is not a comparison (expected '<=' or '>=')")


@dataclass(frozen=True)
class Study:
    title: str
    reported: dict[str, dict[str, Any]]  # "cnn_gender" -> {"accuracy": .., "text": ..}
    targets: dict[str, Goal]  # task -> goal
    reference_label: str
    reference: dict[str, Goal]  # task -> best public figure
    source: Path | None = field(default=None, compare=False)

    def reported_text(self, combination: str) -> str:
        """What the study says about `combination` ("" when it says nothing)."""
        return str(self.reported.get(combination, {}).get("text", ""))


def load_study(path: str | Path = STUDY_FILE) -> Study:
    """Read the study figures (default raycfg/study.yaml) and check every entry is complete."""
    raw = load_yaml(path)
    try:
        study = raw["study"]
        targets = {task: Goal(spec["metric"], float(spec["value"]), spec["goal"]) for task, spec in raw["targets"].items()}
        public = raw["public_reference"]
        reference = {
            task: Goal(spec["metric"], float(spec["value"]))
            for task, spec in public.items()
            if task != "label"
        }
    except KeyError as err:
        raise ValueError(f"{path}: missing key {err} (see raycfg/study.yaml for the layout)") from err
    return Study(
        title=study["title"],
        reported=dict(study.get("reported") or {}),
        targets=targets,
        reference_label=str(public.get("label", "public reference")),
        reference=reference,
        source=Path(path),
    )
