"""Raw model outputs -> the prediction table: class names as labels, one probability column per class."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facetune.predict.inputs import Reject
from facetune.tasks import TASKS


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


#: First characters that make a spreadsheet read a cell as a formula (=1+2, +A1, -A1, @SUM(...));
#: tab and carriage return are on OWASP's list too ("CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells starting with FORMULA_STARTS get a leading apostrophe, so
    spreadsheets show them as text instead of running them; numbers are left alone."""
    safe = frame.copy()
    for column in safe.columns:
        if pd.api.types.is_object_dtype(safe[column]) or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(
                lambda cell: "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell
            )
    return safe


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


def prediction_frame(
    tasks: Sequence[str],
    sources: Sequence[str],
    outputs: Mapping[str, np.ndarray],
    index: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One row per source with the columns of `prediction_columns`, from each task's raw outputs."""
    if not len(sources):  # nothing readable: the table's columns, no rows (the tasks cannot reshape 0 rows)
        return pd.DataFrame({name: pd.Series(dtype=object) for name in prediction_columns(tasks)},
                            index=pd.Index(index if index is not None else [], dtype=np.int64))
    columns: dict[str, object] = {"source": list(sources)}
    for task_name in tasks:
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
    return frame[prediction_columns(tasks, age_std="age_std" in columns)]


def _numpy(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
