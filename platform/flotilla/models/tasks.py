"""Tasks are *data*: a YAML entry becomes a :class:`TaskSpec`, and every other part
of the model family (heads, losses, metrics, chance baselines) is driven by it.

That is what lets a user add a ``smile`` task by writing five lines of YAML
instead of editing library code: the library only knows three *kinds* of task
(regression, binary, multiclass), never the names of specific tasks.

What each kind means (its losses, metrics, head size, ...) lives in one object per kind in
:mod:`flotilla.models.kinds`; this module checks a spec against it. It deliberately imports only
numpy, so validating a spec (``flotilla validate``, the CLI's start-up) does not pay for importing torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from flotilla.data.layout import EMOTIONS, GENDERS
from flotilla.errors import SpecError, brief
from flotilla.models.kinds import KINDS, Kind, TaskKind

# Whether bigger is better is a property of the metric, not of the task.
METRIC_MODE: dict[str, str] = {"mae": "min", "rmse": "min", "accuracy": "max", "auc": "max", "macro_f1": "max"}

# \A...\Z, not ^...$: '$' also matches before a trailing newline, so "smile\n" would pass
# and become a metric key / YAML key that never matches the task's written name.
_NAME_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,63}\Z")
# Batch columns the loader owns; a task reading them would be nonsense.
_RESERVED_LABELS = ("image", "sample_id", "split")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction target, fully described by plain values (so it round-trips through YAML/JSON).

    ``label`` is the batch column holding the target; its mask is ``mask_<label>`` (missing mask
    column = every sample labelled). Regression targets are divided by ``target_scale`` for
    training, which keeps the loss O(1) whatever the unit (age in years -> /100); the model's raw
    regression output is in those scaled units and metrics multiply it back. ``huber_delta`` is in
    scaled units too. ``weight`` multiplies the task's term in the total loss (0 disables it).
    """

    name: str
    kind: Kind
    label: str = ""
    num_classes: int | None = None
    loss: str = ""
    metrics: tuple[str, ...] = ()
    weight: float = 1.0
    target_scale: float = 1.0
    huber_delta: float = 1.0
    primary_metric: str = ""
    mode: str = ""
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise SpecError(f"task {self.name!r} is invalid:", problems, hint=_HINT)

    def _problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            p.append(f"name: {self.name!r} must start with a letter and use only letters, digits and '_' (max 64)")
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            # Without a valid kind nothing else can be checked meaningfully.
            return [*p, f"kind: {self.kind!r} is not one of {', '.join(KINDS)}"]
        kind = KINDS[self.kind]
        _set(self, "label", self.label or self.name)
        if not isinstance(self.label, str) or self.label in _RESERVED_LABELS or self.label.startswith("mask_"):
            p.append(f"label: {self.label!r} is not a usable batch column (reserved: image, sample_id, split, mask_*)")
        p += kind.num_classes_problems(self.num_classes)
        _set(self, "classes", _as_tuple(self.classes or ()))
        want = kind.class_count(self.num_classes)
        if self.classes and want is not None and len(self.classes) != want:
            p.append(f"classes: {len(self.classes)} class names given but this {kind.name} task has {want or 'no'} classes")
        _set(self, "loss", self.loss or kind.default_loss)
        if self.loss not in kind.losses:
            p.append(f"loss: {self.loss!r} does not fit a {kind.name} task; use one of {', '.join(kind.losses)}")
        _set(self, "metrics", tuple(dict.fromkeys(_as_tuple(self.metrics or kind.metrics))))
        bad = [m for m in self.metrics if m not in kind.metrics]
        if bad:
            allowed = ", ".join(kind.metrics)
            p.append(f"metrics: {', '.join(map(repr, bad))} not available for a {kind.name} task; use {allowed}")
        for fname, zero_ok in (("weight", True), ("target_scale", False), ("huber_delta", False)):
            v = getattr(self, fname)
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not number or v < 0 or (v == 0 and not zero_ok):
                p.append(f"{fname}: {brief(v)} must be a finite number {'>=' if zero_ok else '>'} 0")
            else:
                _set(self, fname, float(v))
        if not kind.scaled and self.target_scale != 1.0:
            p.append(f"target_scale: only regression tasks are scaled (got {self.target_scale!r} for a {kind.name} task)")
        if not self.primary_metric:
            _set(self, "primary_metric", kind.default_primary(self.metrics))
        if self.primary_metric not in self.metrics and not bad:
            p.append(f"primary_metric: {self.primary_metric!r} is not among this task's metrics {list(self.metrics)}")
        if not self.mode:
            _set(self, "mode", METRIC_MODE.get(self.primary_metric, "max"))
        if self.mode not in ("min", "max"):
            p.append(f"mode: {self.mode!r} must be 'min' or 'max'")
        elif self.primary_metric in METRIC_MODE and self.mode != METRIC_MODE[self.primary_metric]:
            right = METRIC_MODE[self.primary_metric]
            better = "smaller" if right == "min" else "larger"
            p.append(f"mode: {self.primary_metric} is better when {better}, so mode must be {right!r}")
        return p

    @property
    def behaviour(self) -> TaskKind:
        """The object that holds everything this task's kind decides (loss, head, metrics, ...)."""
        return KINDS[self.kind]

    @property
    def out_dim(self) -> int:
        """Width of the head's output: binary uses one logit (BCE), multiclass one per class."""
        return self.behaviour.head_size(self)

    @property
    def mask_column(self) -> str:
        return f"mask_{self.label}"

    @property
    def primary_key(self) -> str:
        """The key of the primary metric in :meth:`MetricAccumulator.compute`'s result."""
        return f"{self.name}/{self.primary_metric}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe form; ``task_from_dict(t.to_dict()) == t``."""
        d = asdict(self)
        d["metrics"] = list(self.metrics)
        d["classes"] = list(self.classes)
        return d


_HINT = "see REFERENCE_TASKS in flotilla.models.tasks for complete examples (age, gender, emotion)"


def _as_tuple(v: Any) -> tuple[Any, ...]:
    """YAML gives a list, a lone string or a scalar; the frozen spec stores a tuple (hashable)."""
    return (v,) if isinstance(v, str) or not isinstance(v, Iterable) else tuple(v)


def _set(obj: TaskSpec, name: str, value: Any) -> None:
    """Normalise a field of a frozen dataclass during validation (defaults that depend on ``kind``)."""
    object.__setattr__(obj, name, value)


REFERENCE_TASKS: dict[str, TaskSpec] = {
    "age": TaskSpec(name="age", kind="regression", loss="l1", metrics=("mae", "rmse"), target_scale=100.0),
    "gender": TaskSpec(name="gender", kind="binary", loss="bce", metrics=("accuracy", "auc"), classes=GENDERS),
    "emotion": TaskSpec(
        name="emotion", kind="multiclass", num_classes=7, loss="ce", metrics=("accuracy", "macro_f1"), classes=EMOTIONS
    ),
}


def task_from_dict(d: Mapping[str, Any]) -> TaskSpec:
    """Build a task from a YAML/JSON mapping, rejecting unknown keys (typos would otherwise be silent)."""
    if isinstance(d, TaskSpec):
        return d
    if not isinstance(d, Mapping):
        raise SpecError(f"a task must be a mapping, got {type(d).__name__}", hint=_HINT)
    known = {f.name for f in fields(TaskSpec)}
    unknown = sorted(set(d) - known)
    missing = [k for k in ("name", "kind") if k not in d]
    problems = [f"{k}: unknown field (known: {', '.join(sorted(known))})" for k in unknown]
    problems += [f"{k}: required" for k in missing]
    kw = {k: v for k, v in d.items() if k in known}
    for key in ("metrics", "classes"):
        if isinstance(kw.get(key), list):
            kw[key] = tuple(kw[key])
    if not missing:
        try:
            task = TaskSpec(**kw)
        except SpecError as err:
            problems += err.problems
        else:
            if not problems:
                return task
    # Report unknown keys *and* the field problems together: one round trip to fix a spec.
    raise SpecError(f"task {d.get('name', '?')!r} is invalid:", problems, hint=_HINT)


def resolve_tasks(items: Iterable[str | Mapping[str, Any] | TaskSpec]) -> list[TaskSpec]:
    """A spec's ``tasks:`` list: reference task names, full mappings, or a name plus overrides.

    ``{"name": "age", "loss": "huber"}`` starts from the reference ``age`` and changes only the loss,
    so small tweaks don't require restating the whole task.
    """
    out: list[TaskSpec] = []
    for item in items:
        if isinstance(item, TaskSpec):
            task = item
        elif isinstance(item, str):
            if item not in REFERENCE_TASKS:
                raise SpecError(
                    f"unknown task {item!r}; reference tasks are {', '.join(REFERENCE_TASKS)}",
                    hint="define a new task as a mapping with at least name and kind",
                )
            task = REFERENCE_TASKS[item]
        elif isinstance(item, Mapping) and item.get("name") in REFERENCE_TASKS and "kind" not in item:
            task = task_from_dict({**REFERENCE_TASKS[item["name"]].to_dict(), **item})
        else:
            task = task_from_dict(item)
        out.append(task)
    names = [t.name for t in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"task names must be unique; repeated: {', '.join(dupes)}")
    if not out:
        raise SpecError("at least one task is required")
    return out


def chance_level(task: TaskSpec, labels: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """What the best *constant* predictor scores, keyed like ``MetricAccumulator.compute()``.

    A model is only worth reporting relative to this floor (an emotion model at 25% accuracy is
    worthless when 'always happy' gets 25%). Each metric uses its own best constant: the median
    for MAE, the mean for RMSE, the majority class for accuracy/macro-F1, any constant for AUC (0.5).
    ``labels`` are in original units; unlabelled entries are dropped via ``mask`` or NaN.
    """
    y = np.asarray(labels)
    keep = np.ones(y.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if y.dtype.kind == "f":
        keep &= np.isfinite(y)
    y = y[keep]
    out: dict[str, float] = {f"{task.name}/n": float(y.size)}
    if y.size == 0:
        return out | {f"{task.name}/{m}": float("nan") for m in task.metrics}
    values = task.behaviour.chance_values(y)
    return out | {f"{task.name}/{m}": values[m] for m in task.metrics}
