"""Sweep specs (``tuning/*.yaml``): search space, objective, searcher, scheduler, budget, data.

A sweep tunes a family spec (``base``) by overriding dotted fields per trial
(``optim.lr``, ``model.width``...). ``data.ref`` may itself be a dimension: each
data variant is just a commit, resolved once when the sweep starts.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from flotilla.errors import InvalidNameError, SpecError, brief
from flotilla.names import check_branch_id, check_registry_name
from flotilla.specfiles import resolve_spec_path
from flotilla.specs import FamilySpec, Overrides, _Spec, deep_merge, kind_of, load_yaml, parse_overrides, parse_spec


class Param(_Spec):
    """One search dimension. ``when`` makes it conditional (define-by-run in Optuna)."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: int | None = Field(default=None, gt=0)  # type: int only (Optuna refuses a step <= 0 when the sweep starts)
    values: list[Any] | None = None
    when: dict[str, Any] | None = None  # e.g. {optim.name: sgd}: only sampled when that param has that value

    @model_validator(mode="before")
    @classmethod
    def _a_dimension(cls, data: Any) -> Any:
        # a fixed value where a dimension belongs: pydantic's own words would name this class, not the fix
        if isinstance(data, list):
            raise ValueError(
                f"must be a dimension, not a list: to search these values write "
                f"{{type: choice, values: {brief(data)}}}; to fix a value, put it in overrides"
            )
        if not isinstance(data, dict):
            raise ValueError(
                f"must be a dimension like {{type: loguniform, low: ..., high: ...}}, not {kind_of(data)}; "
                "to fix a value, put it in overrides"
            )
        if data.get("step") is not None and data.get("type") in ("uniform", "loguniform", "choice"):
            # the searcher suggests uniform/loguniform values without one: it would be ignored
            instead = ", or list the values to try with type: choice" if data["type"] != "choice" else ""
            raise ValueError(f"step applies to type: int only; a {data['type']} dimension takes none (drop it{instead})")
        return data

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
            if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
                # the searcher would cut them down with int() and search a range nobody wrote
                raise ValueError(f"an int dimension needs whole numbers for low and high, got {self.low:g} and {self.high:g}")
        return self


class Objective(_Spec):
    """Optimise one reported metric, a weighted sum of per-task metrics (``weights``), or several
    metrics at once (``metrics``: a Pareto search, no single winner until you say which one counts most)."""

    metric: str = "val/score"
    # required with 'metric'; the default is the weighted sum's, whose weights carry the signs
    mode: Literal["min", "max"] = "max"
    weights: dict[str, float] | None = None  # e.g. {"val/age/mae": -0.02, "val/gender/accuracy": 1.0}
    # multi-objective, e.g. {val/age/mae: min, val/emotion/accuracy: max}; the first one listed
    # picks the promoted model among the Pareto-optimal trials
    metrics: dict[str, Literal["min", "max"]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Objective:
        if self.metrics is not None:
            if len(self.metrics) < 2:
                raise ValueError("a multi-objective 'metrics' needs at least two metrics; for one, use 'metric' and 'mode'")
            if self.weights or self.metric != "val/score":
                raise ValueError("give one of 'metric', 'weights' or 'metrics', not several")
            return self
        if self.weights and self.metric != "val/score":
            raise ValueError("with 'weights' the objective metric is their sum, reported as 'val/score'")
        if not self.weights and self.metric == "val/score":
            raise ValueError("set 'metric' to a reported metric (e.g. val/age/mae), give 'weights', or several 'metrics'")
        if not self.weights and "mode" not in self.model_fields_set:
            # a default would maximise an error metric as readily as an accuracy
            raise ValueError(
                f"'mode' is required with 'metric': mode: min to minimise {self.metric}, or mode: max to maximise it"
            )
        return self

    @property
    def multi(self) -> bool:
        return self.metrics is not None

    @property
    def primary(self) -> tuple[str, str]:
        """The metric and mode that rank trials (for a Pareto search: the first metric listed)."""
        if self.metrics:
            name, mode = next(iter(self.metrics.items()))
            return name, mode
        return self.metric, self.mode


class Searcher(_Spec):
    type: Literal["tpe", "random"] = "tpe"
    seed: int = Field(default=0, ge=0, lt=2**32)  # Optuna's samplers (numpy) take 0 to 2**32 - 1
    n_startup_trials: int = Field(default=4, ge=0, le=100_000)
    multivariate: bool = True


class Scheduler(_Spec):
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(default=1, ge=1, le=10_000)
    reduction_factor: float = Field(default=2.0, gt=1, le=100)


class Budget(_Spec):
    trials: int = Field(default=8, ge=1, le=100_000)
    concurrency: int = Field(default=2, ge=1, le=1024)
    trial_cpus: float = Field(default=0.25, gt=0, le=1024)  # the trial's own driver; its training workers come from base.scaling
    time_limit_s: float | None = Field(default=None, gt=0)
    # "good enough": once a trial reports an objective at or past this, no new trials start; the
    # running ones finish (so the one that got there publishes its model and can be promoted)
    target: float | None = None


class Retention(_Spec):
    """Which trial branches survive the sweep: the promoted winner always does."""

    keep: Literal["winner", "completed", "all"] = "completed"


class Promote(_Spec):
    into: str | None = "main"
    alias: str | None = None  # e.g. production: point <family>@<alias> at the winner once it is merged (docs/models.md)

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        # `promote: main` is the natural slip; pydantic's own words would name this class, not the fix
        if isinstance(data, str):
            raise ValueError(f"write promote: {{into: {data}}} (promote is a mapping)")
        if not isinstance(data, dict):
            raise ValueError(f"must be a mapping like {{into: main}} ({{into: null}} to only report), not {kind_of(data)}")
        return data


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

    @model_validator(mode="after")
    def _multi_objective_limits(self) -> SweepSpec:
        if self.objective.multi and self.scheduler.type == "asha":
            raise ValueError(
                "ASHA stops trials by one metric and 'objective.metrics' has several: set scheduler.type: none "
                "for a Pareto search, or combine the tasks into one score with 'objective.weights'"
            )
        if self.objective.multi and self.budget.target is not None:
            raise ValueError("budget.target needs a single objective; it has no meaning for a Pareto search")
        return self

    def _base(self, root: Path | None) -> dict[str, Any]:
        """The base family spec: inline, or a file (:func:`~flotilla.specfiles.resolve_spec_path`: a relative
        path against ``root``, the folder of the sweep spec that names it, then the shipped family specs);
        a problem with that file is reported as base's."""
        if isinstance(self.base, dict):
            return self.base
        try:
            return load_yaml(resolve_spec_path(self.base, "family", relative_to=root, what="base:")) or {}
        except SpecError as exc:  # missing, a directory, a binary file, a list...: the file came from base
            message = exc.message if exc.message.startswith("base:") else f"base: {exc.message}"
            raise SpecError(message, hint=exc.hint) from None

    def anchored(self, folder: Path) -> SweepSpec:
        """This spec, checked, with a relative ``base`` made absolute against ``folder`` (the folder of the
        file that holds the spec): once anchored it means the same from any current directory."""
        self.check(folder)
        if isinstance(self.base, dict) or Path(self.base).is_absolute():
            return self
        return self.model_copy(update={"base": str(resolve_spec_path(self.base, "family", relative_to=folder))})

    def _merged(self, root: Path | None) -> dict[str, Any]:
        base = self._base(root)
        data = {k: v for k, v in self.data.model_dump().items() if v is not None}
        merged = deep_merge(deep_merge(base, self.overrides), {"data": data} if data else {})
        # a trial never merges on its own (the base job may say merge_into for standalone runs):
        # the sweep promotes its one winner, into promote.into
        merged.pop("merge_into", None)
        return merged

    def family(self, root: Path | None = None) -> FamilySpec:
        """The base family spec with the sweep's overrides and data applied (no trial params yet)."""
        family: FamilySpec = parse_spec(FamilySpec, self._merged(root), source=f"sweep {self.name!r} base")
        return family

    def check(self, root: Path | None = None) -> FamilySpec:
        """Everything that can go wrong before a trial runs, reported at once.

        A misspelled space key (``optim.lrr``) or choice value (``weighting: uncertanty``) would
        otherwise surface as every trial failing minutes in, and a misspelled objective metric as
        Tune complaining after the first epoch; so each dimension's end points and choices are
        applied to the base spec, and the objective's metrics are matched to what the tasks report.
        """
        merged = self._merged(root)
        family: FamilySpec = parse_spec(FamilySpec, merged, source=f"sweep {self.name!r} base")
        problems: list[str] = []
        for name, p in self.space.items():
            problems += _value_problems(merged, name, p)
        problems += self._sweep_level_problems(family)
        reported = {"train/loss"}
        for t in family.task_specs():
            reported |= {f"val/{t.name}/{m}" for m in t.metrics} | {f"train/{t.name}_loss"}
        wanted = dict.fromkeys([*(self.objective.weights or {}), *(self.objective.metrics or {})])
        if not self.objective.weights and not self.objective.metrics:
            wanted[self.objective.metric] = None
        for m in wanted:
            if m not in reported:
                close = difflib.get_close_matches(m, sorted(reported), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; reported: {', '.join(sorted(reported))}"
                problems.append(f"objective: {m!r} is not a metric this family reports{hint}")
        if problems:
            raise SpecError(f"sweep {self.name!r} is invalid ({len(problems)} problem(s)):", problems)
        return family

    def _sweep_level_problems(self, family: FamilySpec) -> list[str]:
        """What the sweep decides once for all trials, and conditions that could never hold."""
        problems = []
        for name in self.space:
            root = name.split(".")[0]
            if root in ("merge_into", "transfer", "strategy", "data", "epochs") and name != "data.ref":
                why = {
                    "epochs": 'every trial trains the same number of epochs: ASHA\'s rungs, "trained to the end" and '
                    "the winner are measured against it (set epochs in base or overrides; ASHA stops trials early)",
                    "merge_into": "trials never merge; the sweep promotes its winner (promote.into)",
                    "transfer": "the parent model is resolved once, when the sweep starts (set transfer in base or overrides)",
                    "strategy": "every trial trains the family the same way (set strategy in base or overrides)",
                    "data": "only data.ref can vary per trial (each variant is pinned when the sweep starts)",
                }[root]
                problems.append(f"space.{name}: cannot be a search dimension: {why}")
        if self.scheduler.type == "asha" and self.scheduler.grace_period >= family.epochs:
            problems.append(
                f"scheduler.grace_period: {self.scheduler.grace_period} leaves ASHA nothing to stop: trials "
                f"train {family.epochs} epochs; set it below {family.epochs}, or scheduler.type: none"
            )
        if family.strategy == "separate":
            # a trial trains its per-task models side by side in its own process (flotilla.tune.separate):
            # the in-process path's condition (flotilla.training.inprocess.runs_in_process), for every trial
            varied = [f"space.{k}" for k in ("scaling.workers", "backend") if k in self.space]
            if family.scaling.workers != 1 or family.backend == "deepspeed" or varied:
                problems.append(
                    "strategy: separate: a trial trains each task's model in its own process, on one worker "
                    "without DeepSpeed; set scaling.workers: 1 (and no DeepSpeed backend)"
                    + (f", and drop {' and '.join(varied)} from the space" if varied else "")
                    + ", or strategy: shared in 'overrides'"
                )
        names = list(self.space)
        for i, (name, p) in enumerate(self.space.items()):
            for key, value in (p.when or {}).items():
                if key not in names[:i]:
                    if key in self.space:
                        where = "is listed after it; list the dimension a condition names before the one it guards"
                    else:
                        close = difflib.get_close_matches(key, names, n=1)
                        where = "is not a dimension of this space" + (f" (did you mean {close[0]!r}?)" if close else "")
                    problems.append(f"space.{name}.when: {key!r} {where}")
                elif never := _never_sampled(key, self.space[key], value, name):
                    problems.append(f"space.{name}.when: {never}")
        if self.promote.into is not None:
            try:
                check_branch_id(self.promote.into)
            except InvalidNameError as exc:
                problems.append(f"promote.into: {exc.message}")
        if self.promote.alias is not None:
            if self.promote.into is None:
                problems.append("promote.alias: an alias points at a promoted model; set promote.into too (e.g. main)")
            try:
                check_registry_name("alias", self.promote.alias)
            except InvalidNameError as exc:
                problems.append(f"promote.alias: {exc.message}")
        return problems


def _between(p: Param) -> float:
    """A value a uniform/loguniform dimension draws that is not a whole number (its middle, or near it)."""
    assert p.low is not None and p.high is not None
    mid = math.sqrt(p.low * p.high) if p.type == "loguniform" else (p.low + p.high) / 2
    return mid + min(0.5, (p.high - mid) / 2) if float(mid).is_integer() else mid


def _refused(merged: dict[str, Any], name: str, value: Any) -> list[str]:
    """Why the base spec refuses ``name = value`` (nothing when it takes it)."""
    try:
        parse_spec(FamilySpec, deep_merge(merged, unflatten({name: value})), source=f"space.{name}={brief(value)}")
    except SpecError as exc:
        return exc.problems or [exc.message]
    return []


def _value_problems(merged: dict[str, Any], name: str, p: Param) -> list[str]:
    """The values a dimension can take, applied to the base spec: its choices, or its end points and,
    for uniform/loguniform, a fractional value between them (an int field takes low: 8 and high: 32
    as 8.0 and 32.0, then refuses every 25.16 a trial draws)."""
    if p.type == "choice":
        probes = list(p.values or [])
    elif p.type == "int":
        probes = [int(p.low), int(p.high)]  # type: ignore[arg-type]
    else:
        probes = [p.low, p.high, _between(p)]
    for value in probes:
        why = _refused(merged, name, value)
        if not why:
            continue
        # the field takes the whole numbers either side of the value but not the value: it is an integer field
        whole = p.type in ("uniform", "loguniform") and not float(value).is_integer()
        if whole and not _refused(merged, name, math.floor(value)) and not _refused(merged, name, math.ceil(value)):
            low, high = math.ceil(p.low), math.floor(p.high)  # type: ignore[arg-type]
            why = [
                *why[:-1],
                f"{why[-1]}; {name} takes whole numbers and a {p.type} dimension draws fractions: "
                f"use {{type: int, low: {low}, high: {high}}}",
            ]
        return [f"space.{name} = {brief(value)}: {x}" for x in why]
    return []


def _never_sampled(key: str, dim: Param, value: Any, guarded: str) -> str | None:
    """Why ``when: {key: value}`` on ``guarded`` can never hold, or None when it can: the searcher
    compares the value drawn for ``key`` with ``==``, which a continuous draw never meets."""
    if dim.type == "choice":
        if value not in (dim.values or []):
            return f"{key} = {brief(value)} is never sampled (its choices: {dim.values}), so {guarded} never would be"
        return None
    if dim.type == "int":
        low, high, step = int(dim.low), int(dim.high), dim.step or 1  # type: ignore[arg-type]
        whole = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        if not whole or not low <= value <= high or (value - low) % step:
            grid = f" in steps of {step}" if step > 1 else ""
            return (
                f"{key} = {brief(value)} is never sampled (its values: whole numbers from {low} to {high}{grid}), "
                f"so {guarded} never would be"
            )
        return None
    return (
        f"{key} is a {dim.type} dimension, whose draws are never exactly {brief(value)}, so {guarded} would never be "
        f"sampled: a condition names a choice (or int) dimension; make {key} a choice of the values you mean"
    )


def load_sweep_spec(path: str | Path, overrides: Overrides | None = None) -> SweepSpec:
    """The sweep spec file ``path`` names (the current directory, then the shipped ``tuning/`` specs),
    with ``overrides`` (as ``--set`` gives them) applied, checked, and its ``base`` resolved against the
    file's own folder (then the shipped family specs)."""
    file = resolve_spec_path(path, "sweep")
    data = load_yaml(file)
    extra = parse_overrides(overrides)
    if extra:
        data = deep_merge(data or {}, extra)
    spec: SweepSpec = parse_spec(SweepSpec, data, source=str(path))
    return spec.anchored(file.parent)


def sweep_spec(spec: SweepSpec | Mapping[str, Any] | str | Path, overrides: Overrides | None = None) -> SweepSpec:
    """A checked sweep spec from a spec object, a mapping of the YAML's shape (a relative ``base`` then
    resolved against the current directory), or a spec file's path or shipped name; with ``overrides``."""
    if isinstance(spec, (str, Path)):
        return load_sweep_spec(spec, overrides)
    if isinstance(spec, SweepSpec):
        if not overrides:
            return spec.anchored(Path.cwd())
        data: Any = spec.model_dump(mode="json", exclude_none=True)
        data["promote"] = spec.promote.model_dump(mode="json")  # promote.into: null means "report only"
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise SpecError(
            f"a sweep spec is a SweepSpec, a mapping or a spec file's path, not {kind_of(spec)}",
            hint="e.g. flotilla.sweep('tuning/demo.yaml', overrides={'budget.trials': 2})",
        )
    checked: SweepSpec = parse_spec(SweepSpec, deep_merge(data, parse_overrides(overrides)), source="sweep spec")
    return checked.anchored(Path.cwd())


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
