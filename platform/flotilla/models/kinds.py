"""The three kinds of task, one object each: everything that depends on a task's kind lives here.

A :class:`~flotilla.models.tasks.TaskSpec` names its kind as a plain string (so specs stay
YAML); :data:`KINDS` maps that string to the one object that knows the kind's losses and
metrics, its head size, how it validates, turns labels into targets, computes its loss,
post-processes raw outputs, scores a constant predictor and accumulates its metrics. The rest
of the model family asks ``task.behaviour`` instead of testing ``task.kind``, so adding a kind
is one new class here and nothing elsewhere.

Why one object per kind holds both the numpy and the torch behaviour, with torch imported
inside the methods that use it: validating a spec (``flotilla validate``, the CLI's start-up)
must not pay for importing torch, yet a kind split into a numpy half and a torch half would be
two registries to keep in step, the very drift this module removes. The lazy import costs one
``sys.modules`` lookup per call once torch is loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from flotilla.errors import SpecError
from flotilla.models.scoring import auc_from_scores, macro_f1_from_confusion

if TYPE_CHECKING:
    import torch

    from flotilla.models.tasks import TaskSpec

# For type checkers only; a unit test keeps it equal to KINDS' names.
Kind = Literal["regression", "binary", "multiclass"]

Stats = dict[str, Any]


class TaskKind(ABC):
    """What a task of one kind means: its vocabulary (losses, metrics) and its behaviour.

    ``losses``: the losses it allows, the first being the default. ``metrics``: the metrics it
    can report (also the default list). ``primary_order``: the default primary metric is the first
    of these the task reports. Metric statistics are plain dicts of numpy/python values with an
    ``"n"`` count kept by :class:`~flotilla.models.metrics.MetricAccumulator`, so they pickle and
    add up across workers.
    """

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    primary_order: ClassVar[tuple[str, ...]]
    scaled: ClassVar[bool] = False
    """Whether targets are divided by ``target_scale`` (only regression's are)."""

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"

    @property
    def default_loss(self) -> str:
        return self.losses[0]

    def default_primary(self, metrics: tuple[str, ...]) -> str:
        return next((m for m in self.primary_order if m in metrics), self.primary_order[0])

    # --- validation (numpy-free, torch-free) ---------------------------------------------------

    def num_classes_problems(self, num_classes: Any) -> list[str]:
        """Problems with a spec's ``num_classes``; by default a kind takes none."""
        if num_classes is None:
            return []
        return [f"num_classes: only multiclass tasks take num_classes (got {num_classes!r} for a {self.name} task)"]

    @abstractmethod
    def class_count(self, num_classes: Any) -> int | None:
        """How many classes a task of this kind has (0 for none; None when ``num_classes`` is invalid)."""

    @abstractmethod
    def head_size(self, task: TaskSpec) -> int:
        """Width of the head's output."""

    # --- numpy: chance level and streaming metrics ------------------------------------------

    @abstractmethod
    def chance_values(self, labels: np.ndarray) -> dict[str, float]:
        """Each metric of the best constant predictor over ``labels`` (labelled, non-empty, original units)."""

    @abstractmethod
    def empty_stats(self, task: TaskSpec) -> Stats:
        """Fresh sufficient statistics (``"n"`` included) for :meth:`accumulate`."""

    @abstractmethod
    def accumulate(self, task: TaskSpec, stats: Stats, outputs: np.ndarray, labels: np.ndarray) -> None:
        """Add labelled samples' raw outputs and labels to ``stats`` (``"n"`` is counted by the caller)."""

    @abstractmethod
    def metric_values(self, stats: Stats) -> dict[str, float]:
        """Every metric ``stats`` can give (NaN where there are no samples)."""

    def export_stats(self, stats: Stats) -> Stats:
        """A picklable copy of ``stats`` that later updates do not alter."""
        return dict(stats)

    @abstractmethod
    def merge_stats(self, task_name: str, mine: Stats, theirs: Mapping[str, Any]) -> None:
        """Fold another worker's exported statistics into ``mine`` (``"n"`` is merged by the caller)."""

    # --- torch: outputs, targets, losses, predictions ----------------------------------------

    def head_output(self, raw: torch.Tensor) -> torch.Tensor:
        """The head's [B, head_size] output as the task's raw output ([B] unless overridden)."""
        return raw.squeeze(-1)

    @abstractmethod
    def target(self, task: TaskSpec, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, mask) from a batch column; unlabelled targets become a harmless dummy."""

    @abstractmethod
    def elementwise_loss(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (masking and reduction are the caller's)."""

    @abstractmethod
    def postprocess(self, task: TaskSpec, raw: torch.Tensor) -> torch.Tensor:
        """Raw output -> the task's natural prediction."""


class Regression(TaskKind):
    """A number (age): output in units of ``target_scale``, metrics in original units."""

    name = "regression"
    losses = ("l1", "mse", "huber")
    metrics = ("mae", "rmse")
    primary_order = ("mae", "rmse")
    scaled = True

    def class_count(self, num_classes: Any) -> int | None:
        return 0

    def head_size(self, task: TaskSpec) -> int:
        return 1

    def chance_values(self, labels: np.ndarray) -> dict[str, float]:
        # MAE's best constant is the median, RMSE's the mean
        y = labels.astype(np.float64)
        return {"mae": float(np.mean(np.abs(y - np.median(y)))), "rmse": float(np.std(y))}

    def empty_stats(self, task: TaskSpec) -> Stats:
        return {"n": 0, "abs": 0.0, "sq": 0.0}

    def accumulate(self, task: TaskSpec, stats: Stats, outputs: np.ndarray, labels: np.ndarray) -> None:
        err = outputs.astype(np.float64).reshape(-1) * task.target_scale - labels.astype(np.float64)
        stats["abs"] += float(np.abs(err).sum())
        stats["sq"] += float(np.square(err).sum())

    def metric_values(self, stats: Stats) -> dict[str, float]:
        n, nan = stats["n"], float("nan")
        return {"mae": stats["abs"] / n if n else nan, "rmse": float(np.sqrt(stats["sq"] / n)) if n else nan}

    def merge_stats(self, task_name: str, mine: Stats, theirs: Mapping[str, Any]) -> None:
        mine["abs"] += theirs["abs"]
        mine["sq"] += theirs["sq"]

    def target(self, task: TaskSpec, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        y = labels.float()
        mask = mask & torch.isfinite(y)
        return torch.where(mask, y / task.target_scale, torch.zeros_like(y)), mask

    def elementwise_loss(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        output = output.float()
        if task.loss == "l1":
            return (output - target).abs()
        if task.loss == "mse":
            return (output - target).square()
        return F.huber_loss(output, target, reduction="none", delta=task.huber_delta)

    def postprocess(self, task: TaskSpec, raw: torch.Tensor) -> torch.Tensor:
        return raw * task.target_scale


class _Categorical(TaskKind):
    """What binary and multiclass share: integer labels 0..C-1, checked, and a majority-class floor."""

    def chance_values(self, labels: np.ndarray) -> dict[str, float]:
        classes, counts = np.unique(labels.astype(np.int64), return_counts=True)
        p = counts.max() / labels.size
        # Majority predictor: F1 of the majority class is 2p/(1+p), others 0; macro averages over the
        # classes present (same convention as MetricAccumulator), the predicted one being among them.
        return {"accuracy": float(p), "auc": 0.5, "macro_f1": float(2 * p / (1 + p) / len(classes))}

    def class_labels(self, task: TaskSpec, labels: np.ndarray) -> np.ndarray:
        """Labels as int64 class indices; a label outside 0..C-1 is a ValueError naming the task."""
        y = labels.astype(np.int64).reshape(-1)
        n_classes = int(self.class_count(task.num_classes) or 0)
        if y.min() < 0 or y.max() >= n_classes:
            bad = y[(y < 0) | (y >= n_classes)][:5].tolist()
            raise ValueError(f"task {task.name!r}: labels {bad} are outside 0..{n_classes - 1}")
        return y

    def target(self, task: TaskSpec, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        y = labels
        if y.is_floating_point():
            y = torch.where(torch.isfinite(y), y, torch.zeros_like(y)).long()
        return torch.where(mask, y.long(), torch.zeros_like(y, dtype=torch.long)), mask


class Binary(_Categorical):
    """Two classes (gender): one logit, BCE; label 1 is the positive class."""

    name = "binary"
    losses = ("bce",)
    metrics = ("accuracy", "auc")
    # accuracy before AUC because accuracy is what users quote
    primary_order = ("accuracy", "auc")

    def num_classes_problems(self, num_classes: Any) -> list[str]:
        return [] if num_classes == 2 else super().num_classes_problems(num_classes)

    def class_count(self, num_classes: Any) -> int | None:
        return 2

    def head_size(self, task: TaskSpec) -> int:
        return 1

    def empty_stats(self, task: TaskSpec) -> Stats:
        stats: Stats = {"n": 0, "correct": 0}
        if "auc" in task.metrics:
            stats |= {"scores": [], "labels": []}
        return stats

    def accumulate(self, task: TaskSpec, stats: Stats, outputs: np.ndarray, labels: np.ndarray) -> None:
        y = self.class_labels(task, labels)
        logits = outputs.astype(np.float32).reshape(-1)
        stats["correct"] += int(((logits > 0) == (y == 1)).sum())
        if "scores" in stats:
            # Logits, not probabilities: same ranking, but no ties from a saturated sigmoid.
            stats["scores"].append(logits)
            stats["labels"].append(y.astype(np.uint8))

    def metric_values(self, stats: Stats) -> dict[str, float]:
        n = stats["n"]
        values = {"accuracy": stats["correct"] / n if n else float("nan")}
        if "scores" in stats:
            values["auc"] = auc_from_scores(*self._scores(stats))
        return values

    def export_stats(self, stats: Stats) -> Stats:
        out = dict(stats)
        if "scores" in out:
            out["scores"], out["labels"] = self._scores(stats)
        return out

    def merge_stats(self, task_name: str, mine: Stats, theirs: Mapping[str, Any]) -> None:
        mine["correct"] += theirs["correct"]
        if "scores" in mine and "scores" in theirs:
            mine["scores"].append(np.asarray(theirs["scores"], dtype=np.float32))
            mine["labels"].append(np.asarray(theirs["labels"], dtype=np.uint8))

    @staticmethod
    def _scores(stats: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if not stats["scores"]:
            return np.zeros(0, np.float32), np.zeros(0, np.uint8)
        return np.concatenate(stats["scores"]), np.concatenate(stats["labels"])

    def elementwise_loss(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(output.float(), target.float(), reduction="none")

    def postprocess(self, task: TaskSpec, raw: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.sigmoid(raw)


class Multiclass(_Categorical):
    """``num_classes`` classes (emotion): one logit per class, cross-entropy, a confusion matrix."""

    name = "multiclass"
    losses = ("ce",)
    metrics = ("accuracy", "macro_f1")
    primary_order = ("macro_f1", "accuracy")

    def num_classes_problems(self, num_classes: Any) -> list[str]:
        if num_classes is None:
            return ["num_classes: required for a multiclass task"]
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            return [f"num_classes: {num_classes!r} must be an integer >= 2"]
        return []

    def class_count(self, num_classes: Any) -> int | None:
        return num_classes if isinstance(num_classes, int) else None

    def head_size(self, task: TaskSpec) -> int:
        n = task.num_classes
        assert n is not None, "a validated multiclass task has num_classes >= 2"
        return int(n)

    def empty_stats(self, task: TaskSpec) -> Stats:
        c = self.head_size(task)
        return {"n": 0, "confusion": np.zeros((c, c), dtype=np.int64)}

    def accumulate(self, task: TaskSpec, stats: Stats, outputs: np.ndarray, labels: np.ndarray) -> None:
        y = self.class_labels(task, labels)
        c = self.head_size(task)
        pred = outputs.reshape(y.shape[0], -1).argmax(axis=1)
        stats["confusion"] += np.bincount(y * c + pred, minlength=c**2).reshape(c, c)

    def metric_values(self, stats: Stats) -> dict[str, float]:
        n, cm, nan = stats["n"], stats["confusion"], float("nan")
        return {"accuracy": float(np.trace(cm) / n) if n else nan, "macro_f1": macro_f1_from_confusion(cm) if n else nan}

    def export_stats(self, stats: Stats) -> Stats:
        return {**stats, "confusion": stats["confusion"].copy()}

    def merge_stats(self, task_name: str, mine: Stats, theirs: Mapping[str, Any]) -> None:
        if np.shape(theirs["confusion"]) != mine["confusion"].shape:
            raise ValueError(f"task {task_name!r}: confusion matrices of different class counts cannot merge")
        mine["confusion"] += np.asarray(theirs["confusion"], dtype=np.int64)

    def head_output(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def elementwise_loss(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output.float(), target, reduction="none")

    def postprocess(self, task: TaskSpec, raw: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.softmax(raw, dim=-1)


REGRESSION, BINARY, MULTICLASS = Regression(), Binary(), Multiclass()

KINDS: Mapping[str, TaskKind] = MappingProxyType({k.name: k for k in (REGRESSION, BINARY, MULTICLASS)})
"""Every task kind by the name a spec gives it: the one list of kind names."""


def task_kind(name: str) -> TaskKind:
    """The kind object for ``name``; an unknown name is a SpecError listing the known ones."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise SpecError(f"unknown task kind {name!r}; known kinds: {', '.join(KINDS)}") from None
