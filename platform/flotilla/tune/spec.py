"""Sweep specs (``tuning/*.yaml``): search space, objective, searcher, scheduler, budget, data.

A sweep tunes a family spec (``base``) by overriding dotted fields per trial
(``optim.lr``, ``model.width``...). ``data.ref`` may itself be a dimension: each
data variant is just a commit, resolved once when the sweep starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from flotilla.specs import FamilySpec, _Spec, deep_merge, load_yaml, parse_spec


class Param(_Spec):
    """One search dimension. ``when`` makes it conditional (define-by-run in Optuna)."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: int | None = None
    values: list[Any] | None = None
    when: dict[str, Any] | None = None  # e.g. {optim.name: sgd}: only sampled when that param has that value

    @model_validator(mode="after")
    def _bounds(self) -> Param:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"a {self.type} parameter needs low < high")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
        return self


class Objective(_Spec):
    """Optimise one reported metric, or a weighted sum of per-task metrics (``weights``)."""

    metric: str = "val/score"
    mode: Literal["min", "max"] = "max"
    weights: dict[str, float] | None = None  # e.g. {"val/age/mae": -0.02, "val/gender/accuracy": 1.0}

    @model_validator(mode="after")
    def _weights_need_score(self) -> Objective:
        if self.weights and self.metric != "val/score":
            raise ValueError("with 'weights' the objective metric is their sum, reported as 'val/score'")
        if not self.weights and self.metric == "val/score":
            raise ValueError("set 'metric' to a reported metric (e.g. val/age/mae) or give 'weights'")
        return self


class Searcher(_Spec):
    type: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(4, ge=0)
    multivariate: bool = True


class Scheduler(_Spec):
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class Budget(_Spec):
    trials: int = Field(8, ge=1)
    concurrency: int = Field(2, ge=1)
    trial_cpus: float = Field(0.25, gt=0)  # the trial's own driver; its training workers come from base.scaling
    time_limit_s: float | None = Field(None, gt=0)


class Retention(_Spec):
    """Which trial branches survive the sweep: the promoted winner always does."""

    keep: Literal["winner", "completed", "all"] = "completed"


class Promote(_Spec):
    into: str | None = "main"


class DataOverride(_Spec):
    repo: str | None = None
    ref: str | None = None
    dataset: str | None = None


class SweepSpec(_Spec):
    name: str
    base: str | dict[str, Any] = "jobs/face_family.yaml"
    overrides: dict[str, Any] = Field(default_factory=dict)
    data: DataOverride = DataOverride()
    space: dict[str, Param] = Field(min_length=1)
    objective: Objective
    searcher: Searcher = Searcher()
    scheduler: Scheduler = Scheduler()
    budget: Budget = Budget()
    retention: Retention = Retention()
    promote: Promote = Promote()

    def family(self, root: Path | None = None) -> FamilySpec:
        """The base family spec with the sweep's overrides and data applied (no trial params yet)."""
        base = self.base if isinstance(self.base, dict) else load_yaml((root or Path.cwd()) / self.base)
        data = {k: v for k, v in self.data.model_dump().items() if v is not None}
        merged = deep_merge(deep_merge(base or {}, self.overrides), {"data": data} if data else {})
        return parse_spec(FamilySpec, merged, source=f"sweep {self.name!r} base")


def load_sweep_spec(path: str | Path) -> SweepSpec:
    spec = parse_spec(SweepSpec, load_yaml(path), source=str(path))
    spec.family(Path(path).resolve().parent.parent if Path(path).parent.name == "tuning" else Path.cwd())
    return spec


def unflatten(params: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.01}`` → ``{"optim": {"lr": 0.01}}`` (the shape of a family spec override)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
