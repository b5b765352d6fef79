"""A trial of a ``strategy: separate`` family: one model per task, side by side, one report per epoch.

A standalone ``flotilla train`` of such a family trains its per-task models concurrently, each on a
branch of its own, and merges them into ``merge_into`` in one merge (:func:`~flotilla.training.publish.merge_family`).
A trial trains them concurrently too, each on a thread of the trial's own process (the in-process
path, :mod:`flotilla.training.inprocess`; the trial reserves every model's CPUs), but all on the
trial's one branch (``runs/<run>/<task>/checkpoint_*``, ``models/<run>/<task>/``): the promotion's
one merge of that branch then lands the whole family on ``promote.into``, or none of it.

Tune and ASHA must see one result per epoch for the trial, so :class:`EpochGather` holds each
model's epoch until every model has reported it, and reports them as one (:func:`merge_epoch`):
the objective's ``val/<task>/<metric>`` weights then combine the models' metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flotilla.training.config import CheckpointRank
from flotilla.tune.spec import Objective

SUMMED = ("train/loss", "train/samples_per_s")
"""Per-model keys the trial reports summed over its models (the family's loss, its throughput)."""


def owns(task: str, key: str) -> bool:
    """Whether ``key`` is a metric of ``task``'s own: ``val/<task>/...`` or ``train/<task>_loss``."""
    return key.startswith(f"val/{task}/") or key == f"train/{task}_loss"


def merge_epoch(per_model: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One epoch of every model (model name = its task's name) as one result.

    Each task's own metrics keep their names, so an objective over ``val/<task>/<metric>`` reads
    them as it would a shared model's; ``train/loss`` and ``train/samples_per_s`` are summed,
    ``epoch_s`` is the slowest model's (they train side by side); every other per-model key
    (``worker_pid``, ``resumed_from_epoch``, ...) is kept as ``<model>/<key>``.
    """
    merged: dict[str, Any] = {}
    for model, metrics in per_model.items():
        for key, value in metrics.items():
            if key == "epoch" or owns(model, key):
                merged[key] = value
            elif key in SUMMED and isinstance(value, (int, float)):
                merged[key] = merged.get(key, 0.0) + float(value)
            elif key == "epoch_s" and isinstance(value, (int, float)):
                merged[key] = max(float(value), merged.get(key, 0.0))
            else:
                merged[f"{model}/{key}"] = value
    return merged


def model_rank(objective: Objective, task: str) -> CheckpointRank:
    """Which checkpoint ``task``'s model publishes: the best epoch by *its own* terms of the objective.

    A weighted objective is a sum of per-task terms, so each model's best epoch by its terms makes a
    family that scores at least as well as the trial's best epoch did. A model the objective does
    not weigh (and every model of a single-metric objective but the metric's) picks as a standalone
    run would (None: its task's primary metric); a Pareto search publishes every model's last epoch.
    """
    if objective.multi:
        return "last"
    weights = {k: w for k, w in (objective.weights or {}).items() if owns(task, k)}
    if weights:

        def score(metrics: Mapping[str, Any]) -> float | None:
            if not all(isinstance(metrics.get(k), (int, float)) for k in weights):
                return None
            return float(sum(w * float(metrics[k]) for k, w in weights.items()))

        return score, "max"  # the weights carry the signs
    if not objective.weights and owns(task, objective.metric):
        metric = objective.metric

        def value(metrics: Mapping[str, Any]) -> float | None:
            v = metrics.get(metric)
            return float(v) if isinstance(v, (int, float)) else None

        return value, objective.mode
    return None


class EpochGather:
    """Every model's epoch, reported as one once all models have reported it (see the module's docstring).

    Each model's checkpoint thread calls :meth:`reporter`'s function; the one that completes an epoch
    reports it, and Tune's stop (``SystemExit`` out of that report) is passed to every other model
    at its next report, so the whole trial ends as Tune asked. An epoch that not every model reports
    (a restarted trial whose models had reached different epochs) is never reported: ASHA's rungs
    and the study count the epochs the trial's family reached together.
    """

    def __init__(self, models: Sequence[str], report: Callable[[dict[str, Any]], None]) -> None:
        self.models = tuple(models)
        self._report = report
        self._lock = threading.Lock()
        self._epochs: dict[int, dict[str, Mapping[str, Any]]] = {}
        self._last = -1  # the last epoch reported: one reported late (a resumed model's re-report) is not sent again
        self.stopped: BaseException | None = None

    def reporter(self, model: str) -> Callable[[dict[str, Any]], None]:
        return lambda metrics: self.add(model, metrics)

    def add(self, model: str, metrics: Mapping[str, Any]) -> None:
        with self._lock:
            if self.stopped is not None:
                raise SystemExit(f"the trial was stopped ({self.stopped!r})")
            epoch = int(metrics["epoch"])
            seen = self._epochs.setdefault(epoch, {})
            seen[model] = dict(metrics)
            if len(seen) < len(self.models) or epoch <= self._last:
                return
            del self._epochs[epoch]
            self._last = epoch
            merged = merge_epoch({m: seen[m] for m in self.models})
            try:  # under the lock: Tune hears the epochs in order, once each
                self._report(merged)
            except BaseException as exc:
                self.stopped = exc
                raise

    def stop(self, why: BaseException) -> None:
        """A model failed: the others end at their next report instead of training on for nothing."""
        with self._lock:
            self.stopped = self.stopped or why
