"""Each task's out-of-sample outputs, by the method asked for: a cross-validated probe, or the model itself.

- ``probe`` (default): a K-fold linear probe on the model's frozen embeddings
  (:mod:`flotilla.audit.probe`). Right for any data, the model's own training set included.
- ``model``: the model's predictions as they are. Out-of-sample only for data the model never
  saw — a freshly labelled batch, say — and then the best estimate there is; on its own training
  data it would vouch for every label it learnt, wrong ones included, so the audit refuses that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from flotilla.audit.issues import TaskInput
from flotilla.audit.probe import probe_probabilities, probe_values
from flotilla.errors import SpecError
from flotilla.models.tasks import TaskSpec

METHODS = ("probe", "model")
Say = Callable[[str], None]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise SpecError(
            f"unknown audit method {method!r}",
            hint="probe (a cross-validated linear probe on the model's embeddings; any data) or model "
            "(the model's own predictions; only for data it never saw)",
        )
    return method


def num_classes(task: TaskSpec) -> int:
    return 2 if task.kind == "binary" else task.out_dim


def model_outputs(task: TaskSpec, predictions: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's own output for ``task``: [n, C] probabilities (``<task>_probs``) or [n] values."""
    return predictions[task.name] if task.kind == "regression" else predictions[f"{task.name}_probs"]


def task_inputs(
    tasks: Sequence[TaskSpec],
    labels: Mapping[str, np.ndarray],
    embeddings: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    method: str = "probe",
    folds: int = 5,
    seed: int = 0,
    say: Say | None = None,
) -> list[TaskInput]:
    """One :class:`~flotilla.audit.issues.TaskInput` per task, named by its label column (the findings' contract).

    ``labels`` is keyed by label column (``task.label or task.name``), NaN where unlabelled;
    ``predictions`` by predictions column (``<task>``, ``<task>_probs``).
    """
    say = say or (lambda _: None)
    check_method(method)
    out = []
    for t in tasks:
        y = labels[t.label or t.name]
        if method == "model":
            outputs = model_outputs(t, predictions)
        elif t.kind == "regression":
            say(f"{folds}-fold ridge probe for {t.name!r}")
            outputs = probe_values(embeddings, y, folds=folds, seed=seed, what=f"task {t.name!r}")
        else:
            say(f"{folds}-fold logistic probe for {t.name!r}")
            outputs = probe_probabilities(embeddings, y, num_classes(t), folds=folds, seed=seed, what=f"task {t.name!r}")
        out.append(TaskInput(t.label or t.name, t.kind, y, outputs))  # findings name a task by its label column
    return out
