"""The family's label schema as Label Studio speaks it: the labelling config, pre-annotations, and annotations back.

One source of truth, the model's :class:`~flotilla.models.tasks.TaskSpec` list: a regression task
becomes a ``Number`` (bounded by the dataset's age range for age), a binary or multiclass task a
single-choice ``Choices`` with the task's class names. Control names are the tasks' label columns,
so an annotation maps back to the dataset's columns without a table of synonyms.

Pre-annotations carry the model's predictions with ``score = 1 − uncertainty``: Label Studio's
"Uncertainty sampling" (free edition) serves tasks by ascending score for the project's
``model_version``, so the most uncertain face comes first. Annotations coming back are checked as
strictly as a label fix (:func:`flotilla.data.labelfix.plan_label_fix`): an age out of range or an
unknown emotion is an error naming the task and the sample, never a silent NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from flotilla.data.layout import AGE_RANGE
from flotilla.labelstudio.exported import newest_annotation, refuse_problems
from flotilla.models.tasks import TaskSpec

IMAGE = "image"


def column(task: TaskSpec) -> str:
    return task.label or task.name


def class_names(task: TaskSpec) -> tuple[str, ...]:
    if task.classes:
        return tuple(task.classes)
    return tuple(str(i) for i in range(2 if task.kind == "binary" else int(task.num_classes or 0)))


def label_config(tasks: Sequence[TaskSpec]) -> str:
    """Label Studio's XML labelling config for ``tasks`` (one image, one control per task)."""
    parts = ["<View>", f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>']
    for t in tasks:
        name = quoteattr(column(t))
        parts.append(f"  <Header value={quoteattr(t.name)}/>")
        if t.kind == "regression":
            bounds = f' min="{AGE_RANGE[0]:g}" max="{AGE_RANGE[1]:g}"' if column(t) == "age" else ""
            parts.append(f'  <Number name={name} toName="{IMAGE}"{bounds} required="true"/>')
        else:
            parts.append(f'  <Choices name={name} toName="{IMAGE}" choice="single" showInline="true" required="true">')
            parts += [f"    <Choice value={quoteattr(c)}/>" for c in class_names(t)]
            parts.append("  </Choices>")
    parts.append("</View>")
    return "\n".join(parts) + "\n"


def prediction_items(tasks: Sequence[TaskSpec], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Result items for one sample's predictions (value or class index per task name)."""
    items = []
    for t in tasks:
        v = values[t.name]
        if t.kind == "regression":
            items.append(_item(t, "number", {"number": round(float(v), 1)}))
        else:
            items.append(_item(t, "choices", {"choices": [class_names(t)[int(v)]]}))
    return items


def _item(task: TaskSpec, kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"from_name": column(task), "to_name": IMAGE, "type": kind, "value": value}


@dataclass(frozen=True)
class Parsed:
    """Labels read from annotations: per sample id, {label column: stored value}; and what was wrong."""

    labels: dict[str, dict[str, Any]]
    problems: tuple[str, ...]


def _value(task: TaskSpec, item: Mapping[str, Any]) -> tuple[Any, str | None]:
    value = item.get("value") or {}
    if task.kind == "regression":
        raw = value.get("number")
        age = float(raw) if isinstance(raw, numbers.Real) and not isinstance(raw, bool) else math.nan
        low, high = AGE_RANGE if column(task) == "age" else (-math.inf, math.inf)
        if not low <= age <= high:
            return None, f"{column(task)} {raw!r} is not a number in {low:g}..{high:g}"
        return age, None
    choices = value.get("choices") or []
    names = class_names(task)
    if len(choices) != 1 or choices[0] not in names:
        return None, f"{column(task)} {choices!r} is not one of {', '.join(names)}"
    return names.index(choices[0]), None


def parse_annotations(tasks: Sequence[TaskSpec], exported: Sequence[Mapping[str, Any]]) -> Parsed:
    """Label Studio's JSON export → labels per sample id (``data.sample_id``), the newest non-cancelled annotation each.

    A task with no annotation, or only skipped (cancelled) ones, gets no labels: it is reported by
    the caller as unlabelled, never invented. Every bad value is collected, so one pass names them all.
    """
    by_column = {column(t): t for t in tasks}
    labels: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for task in exported:
        sid = str((task.get("data") or {}).get("sample_id") or "")
        newest = newest_annotation(task)
        if not sid or newest is None:
            continue
        row: dict[str, Any] = {}
        for item in newest.get("result") or []:
            t = by_column.get(str(item.get("from_name")))
            if t is None:
                continue
            value, why = _value(t, item)
            if why:
                problems.append(f"task {task.get('id')} (sample {sid}): {why}")
            else:
                row[column(t)] = value
        if row:
            labels[sid] = row
    return Parsed(labels, tuple(problems))


def require_valid(parsed: Parsed) -> Parsed:
    refuse_problems(parsed.problems, "annotation value(s) cannot be stored", "receive the round again")
    return parsed
