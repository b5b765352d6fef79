"""Typed specs and YAML loading that reports every problem at once.

YAML is a thin layer over these pydantic models: unknown keys are errors (with
a "did you mean"), every invalid field is listed in one :class:`SpecError`, and
``yaml.safe_load`` is the only loader (through :func:`~flotilla.specfiles.safe_yaml`, which
bounds aliases). Every number is finite, no boolean stands for a number, and every count that
sizes memory or time has an upper bound. Library code receives these objects, never raw dicts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from flotilla.data.report import Thresholds
from flotilla.data.schema import LabelSchema
from flotilla.errors import InvalidNameError, SpecError, brief
from flotilla.models.backbone_names import DEFAULT_BACKBONE, check_backbone_name
from flotilla.models.tasks import TaskSpec, resolve_tasks
from flotilla.names import check_dataset_name, check_registry_name, check_repo_id
from flotilla.specfiles import resolve_spec_path, safe_yaml

MAX_EPOCHS = 10_000
"""More epochs than anyone trains a model of this platform for: a larger number is a typo (``1e30``)."""
MAX_BATCH = 65_536
"""The largest batch a worker takes: a batch of 64 px images that size is 800 MB of input alone."""


class _Spec(BaseModel):
    """Every spec: unknown keys refused, frozen, numbers finite, and no YAML boolean taken for a number.

    Pydantic's lax mode reads ``epochs: yes`` as 1 and ``.inf``/``.nan`` as floats; a NaN learning
    rate or weight decay then trains a NaN model that used to be promoted with exit 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(
                f"must be a number, not the boolean {str(value).lower()} (YAML reads yes, no, on, off, true, false as booleans)"
            )
        return value


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (``int``, ``float``, or either or None), and never a boolean."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    return bool(args) and bool not in args and any(a in (int, float) for a in args)


class _HubNames(_Spec):
    """A spec naming a hub repository and a dataset: both checked with the hub's own name rules, so
    that --check reports a bad name, not the run (or job, on the cluster) once it reaches the hub."""

    @field_validator("repo", check_fields=False)
    @classmethod
    def _repo_id(cls, repo: str) -> str:
        return hub_name(check_repo_id, repo)

    @field_validator("dataset", check_fields=False)
    @classmethod
    def _dataset_name(cls, dataset: str) -> str:
        return hub_name(check_dataset_name, dataset)


class DataSpec(_HubNames):
    """Which data: a dataset in a hub repository at a ref (resolved to a commit id once)."""

    repo: str = "faces"
    ref: str = "main"
    dataset: str = "synthetic"
    image_size: int = Field(64, ge=16, le=512)


def hub_name(check: Callable[[str], str], name: str, example: str | None = None) -> str:
    """``check(name)`` (a flotilla.names rule) with its InvalidNameError as a spec problem: the rule and an example."""
    try:
        return check(name)
    except InvalidNameError as exc:
        raise ValueError(f"{exc.message} ({example or exc.hint})") from None


class ModelSpec(_Spec):
    """The architecture; ``backbone`` is one of the registry's names (``flotilla.models.backbone_names``)."""

    backbone: str = DEFAULT_BACKBONE
    width: int = Field(32, ge=4, le=512)
    head_hidden: int = Field(0, ge=0, le=4096)  # each head's hidden layer: 1e9 failed in the workers' allocator
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, backbone: str) -> str:
        try:
            return check_backbone_name(backbone)
        except SpecError as exc:  # pydantic lists a ValueError with the field's place; a SpecError would escape
            raise ValueError(exc.message) from None


class OptimSpec(_Spec):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)  # decoupled decay past 1 drives every weight to zero
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)


class DeepSpeedSpec(_Spec):
    """ZeRO config for the ``deepspeed`` backend; dtype ``auto`` = bf16 on GPUs that have it, else fp32."""

    stage: Literal[0, 1, 2, 3] = 2
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    offload_optimizer: bool = False

    @model_validator(mode="after")
    def _offload_needs_partitioning(self) -> DeepSpeedSpec:
        # DeepSpeed offloads the optimiser only for ZeRO stages that partition it; below that it was ignored
        if self.offload_optimizer and self.stage < 2:
            raise ValueError(
                f"offload_optimizer needs ZeRO stage 2 (stage is {self.stage}): set stage: 2, or drop offload_optimizer"
            )
        return self

    @field_validator("stage")
    @classmethod
    def _no_stage_3(cls, stage: int) -> int:
        # rank 0 writes checkpoints and the published model from its own copy of the weights;
        # ZeRO-3 partitions the weights themselves, so that copy would be empty tensors
        if stage == 3:
            raise ValueError(
                "ZeRO stage 3 is not supported: it partitions the weights, and flotilla writes the "
                "model from rank 0's copy; use stage 2 (optimizer state and gradients partitioned)"
            )
        return stage


class ScalingSpec(_Spec):
    workers: int = Field(2, ge=1, le=1024)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)  # fractional GPUs allowed (e.g. 0.5)

    @model_validator(mode="after")
    def _gpu_consistency(self) -> ScalingSpec:
        if self.gpus_per_worker and not self.use_gpu:
            raise ValueError("gpus_per_worker > 0 needs use_gpu: true")
        if self.workers > 1 and 0 < self.gpus_per_worker < 1:
            # Ray may pack two such workers onto one GPU, and NCCL (the backend Ray Train picks with GPUs)
            # refuses two ranks on one device ("Duplicate GPU detected")
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker} with {self.workers} workers can put two ranks on one "
                "GPU, which NCCL refuses: use gpus_per_worker: 1 (a fractional share is for workers: 1, "
                "e.g. sweep trials sharing a GPU)"
            )
        return self


class TransferSpec(_Spec):
    """Initialise from a model in the hub: ``lakefs://repo/ref/path/to/model.pt`` or a run id."""

    source: str
    load_heads: bool = False
    freeze_backbone_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)


class TrackingSpec(_Spec):
    wandb: bool = True
    project: str = "flotilla"


class FailureSpec(_Spec):
    max_failures: int = Field(2, ge=0, le=100)


class FamilySpec(_Spec):
    """A family of models trained on one data commit (see ``jobs/face_family.yaml``)."""

    name: str
    tasks: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list[str | dict[str, Any]](["age", "gender", "emotion"]), min_length=1
    )
    strategy: Literal["shared", "separate"] = "shared"
    weighting: Literal["fixed", "uncertainty"] = "fixed"
    backend: Literal["ddp", "deepspeed"] = "ddp"
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    optim: OptimSpec = OptimSpec()
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    scaling: ScalingSpec = ScalingSpec()
    transfer: TransferSpec | None = None
    tracking: TrackingSpec = TrackingSpec()
    failure: FailureSpec = FailureSpec()
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)  # a batch of 1e12 images exhausts any memory
    seed: int = Field(0, ge=0, lt=2**32)  # every worker calls np.random.seed(seed), which takes 0 to 2**32 - 1
    merge_into: str | None = None  # e.g. "main": promote the run's branch when it finishes
    alias: str | None = None  # e.g. "production": point <name>@<alias> at the run once it is merged (docs/models.md)

    @field_validator("tasks")
    @classmethod
    def _tasks_resolve(cls, tasks: list[Any]) -> list[Any]:
        resolve_tasks(tasks)  # raises SpecError listing every task problem
        return tasks

    @model_validator(mode="after")
    def _fp16_needs_a_gpu(self) -> FamilySpec:
        # DeepSpeed's CPU accelerator has no fp16 on most CPUs: every worker raised "Type fp16 is not
        # supported on your device." and was retried. dtype auto is fine: it picks fp32 without a GPU
        if self.backend == "deepspeed" and self.deepspeed.dtype == "fp16" and not self.scaling.use_gpu:
            raise ValueError(
                "deepspeed.dtype: fp16 needs scaling.use_gpu: true (DeepSpeed refuses fp16 on CPU workers); "
                "on CPU use dtype: bf16 or fp32 (or auto: fp32 on CPU, bf16 on GPUs that have it)"
            )
        return self

    @model_validator(mode="after")
    def _freeze_needs_ddp(self) -> FamilySpec:
        if self.transfer and self.transfer.freeze_backbone_epochs and self.backend == "deepspeed":
            raise ValueError("transfer.freeze_backbone_epochs is supported with backend: ddp only")
        return self

    @model_validator(mode="after")
    def _alias_needs_a_merge(self) -> FamilySpec:
        if self.alias is not None:
            if not self.merge_into:
                raise ValueError("alias: an alias points at a merged model; set merge_into too (e.g. main)")
            try:
                check_registry_name("alias", self.alias)
                check_registry_name("family", self.name)
            except InvalidNameError as exc:
                raise ValueError(exc.message) from None
        return self

    def task_specs(self) -> list[TaskSpec]:
        return resolve_tasks(self.tasks)


_COLUMN_KIND = {"regression": "regression", "binary": "binary", "multiclass": "categorical"}


def check_tasks_fit(tasks: list[TaskSpec], schema: LabelSchema, dataset: str = "") -> None:
    """Every task reads a label column ``schema`` declares, of its kind (multiclass ↔ categorical with
    ``num_classes`` classes). Checked where the data is known (a run pins it), since a spec may train on
    any column its dataset declares: a mismatch would otherwise fail inside every worker."""
    problems = []
    for t in tasks:
        column = schema.get(t.label)
        if column is None:
            close = difflib.get_close_matches(t.label, schema.names, n=1)
            problems.append(
                f"task {t.name!r} reads label column {t.label!r}, which dataset {dataset!r} does not declare"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        elif _COLUMN_KIND[t.kind] != column.kind:
            problems.append(f"task {t.name!r} is {t.kind}, but column {t.label!r} of {dataset!r} is {column.kind}")
        elif t.kind == "multiclass" and t.num_classes != column.num_classes:
            problems.append(
                f"task {t.name!r} has num_classes {t.num_classes}, but column {t.label!r} of {dataset!r} "
                f"has {column.num_classes} classes ({', '.join(column.classes)})"
            )
    if problems:
        raise SpecError(
            f"the family's tasks do not fit dataset {dataset!r}:",
            problems,
            hint=f"its declared label columns: {schema.describe()}",
        )


def _did_you_mean(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """Suggest the closest valid key for a misspelled one, walking nested specs."""
    fields = model.model_fields
    for part in loc[:-1]:
        f = fields.get(str(part))
        ann = getattr(f, "annotation", None) if f else None
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return ""
        fields = sub.model_fields
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_spec(model: type[BaseModel], data: Any, source: str = "spec", *, settable: bool = False) -> Any:
    """Validate ``data`` against ``model``; raise one SpecError listing every problem.

    ``settable``: the spec comes from ``flotilla train`` (:func:`load_family_spec`), whose ``--set`` the
    quoting advice then covers too; a sweep's base or a job's family has no ``--set``."""
    if not isinstance(data, dict):
        if data is None:  # an empty file: "got NoneType" named Python's type, not what is wrong with the file
            raise SpecError(f"{source} is empty", hint="a spec is a YAML mapping of keys to values: 'name: ...' lines")
        raise SpecError(f"{source} must be a mapping of keys to values, not {kind_of(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown key{_did_you_mean(e['loc'], model)}")
            elif e["type"] == "value_error":  # our validators' own words, without pydantic's "Value error, "
                problems.append(f"{where}: {e['ctx']['error']}")
            elif e["type"] == "string_type" and isinstance(e["input"], (int, float, date)):
                problems.append(f"{where}: {e['msg']}{_quote_it(e['loc'], e['input'], settable)}")
            elif e["type"] == "model_type":  # pydantic's words name a class ("instance of Searcher"), not the fix
                problems.append(
                    f"{where}: must be a mapping of keys to values ({where}: {{key: value, ...}}), not {kind_of(e['input'])}"
                )
            else:
                problems.append(f"{where}: {e['msg']}")
        raise SpecError(f"{source} is invalid ({len(problems)} problem(s)):", problems) from None
    except SpecError as exc:
        raise SpecError(f"{source} is invalid:", exc.problems or [exc.message]) from None


def _quote_it(loc: tuple[Any, ...], value: Any, settable: bool) -> str:
    """Why YAML's unquoted 2024, 1.5, yes or 2024-01-01 is not a string, and the quoting that makes it one.

    ``settable``: the spec takes ``flotilla train --set``, whose quotes must get past the shell as well.
    """
    if isinstance(value, bool):  # written yes/no/on/off/true/false: which one is lost
        return (
            f" (YAML read it as the boolean {str(value).lower()}, as it reads yes, no, on, off: quote it as written, e.g. 'yes')"
        )
    shown = str(value)
    text = f" (YAML read {shown} as {'a date' if isinstance(value, date) else 'a number'}: quote it, '{shown}'"
    if settable and all(isinstance(p, str) for p in loc):  # on the command line the shell eats one pair of quotes
        text += f"; with --set, --set \"{'.'.join(loc)}='{shown}'\""
    return text + ")"


def kind_of(value: Any) -> str:
    """How a YAML value reads to the person who wrote it: 'a list', 'a string 'main''."""
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    words = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{words.get(type(value), 'a ' + type(value).__name__)} {shown}"


def load_yaml(path: str | Path) -> dict[str, Any] | None:
    """A spec file's mapping (None for an empty file); anything else is a SpecError naming the file.

    A directory, a binary file or a YAML list would otherwise surface as Python's own exception
    (IsADirectoryError, UnicodeDecodeError, or a ValueError from merging a list into a spec).
    """
    p = Path(path)
    try:
        data = safe_yaml(p.read_text(encoding="utf-8"), str(p))
    except FileNotFoundError:
        raise SpecError(f"spec file {p} does not exist") from None
    except IsADirectoryError:
        inside = sorted(str(x) for x in p.glob("*.y*ml"))[:5]
        raise SpecError(
            f"{p} is a directory, not a spec file: give the path of one YAML spec"
            + (f" in it ({', '.join(inside)})" if inside else "")
        ) from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{p} is not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8): "
            "a spec is a UTF-8 YAML file; check the path names the spec and not a model or data file"
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{p} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise SpecError(
            f"{p} must be a YAML mapping of keys to values (a spec: 'name: ...' lines), but its top level is {kind_of(data)}"
        )
    return data


def load_family_spec(path: str | Path, overrides: Overrides | None = None) -> FamilySpec:
    """The family spec file ``path`` names (see :func:`flotilla.specfiles.resolve_spec_path`: the
    current directory, then the shipped specs), with ``overrides`` (:func:`parse_overrides`) applied."""
    data = load_yaml(resolve_spec_path(path, "family"))
    extra = parse_overrides(overrides)
    if extra:
        data = deep_merge(data or {}, extra)
    spec: FamilySpec = parse_spec(FamilySpec, data, source=str(path), settable=True)
    return spec


def load_thresholds(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Thresholds:
    """The validation gate's thresholds from a YAML file (the keys of an ingest job's ``thresholds:``
    block) with ``overrides`` on top (``flotilla data import --min-per-group 5`` sets ``min_group_count``).

    Parsed like every spec: a misspelled key is an error naming it, with a "did you mean".
    """
    data = (load_yaml(path) or {}) if path is not None else {}
    if overrides:
        data = deep_merge(data, overrides)
    source = f"thresholds file {path}" if path is not None else "the gate's thresholds"
    thresholds: Thresholds = parse_spec(Thresholds, data, source=source)
    return thresholds


def family_spec(spec: FamilySpec | Mapping[str, Any] | str | Path, overrides: Overrides | None = None) -> FamilySpec:
    """A family spec from what a person hands ``flotilla.train``: a spec object, a mapping of the YAML's
    shape, or a file's path or shipped name, each with ``overrides`` applied the way ``--set`` applies them."""
    if isinstance(spec, (str, Path)):
        return load_family_spec(spec, overrides)
    if isinstance(spec, FamilySpec):
        if not overrides:
            return spec
        data: Any = spec.model_dump(mode="json")
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise SpecError(
            f"a family spec is a FamilySpec, a mapping or a spec file's path, not {kind_of(spec)}",
            hint="e.g. flotilla.train('jobs/face_family.yaml', overrides={'epochs': 2})",
        )
    family: FamilySpec = parse_spec(FamilySpec, deep_merge(data, parse_overrides(overrides)), source="family spec")
    return family


Overrides = Mapping[str, Any] | Sequence[str]
"""Spec overrides: ``["optim.lr=0.01", "epochs=3"]`` (the CLI's ``--set``, values read as YAML) or
``{"optim.lr": 0.01, "data": {"ref": "dev"}}`` (Python values; a key may be dotted)."""


def parse_sets(sets: Sequence[str] | None) -> dict[str, Any]:
    """``--set optim.lr=0.01 --set epochs=3`` → nested overrides (values parsed as YAML scalars)."""
    return parse_overrides(list(sets or []))


def parse_overrides(overrides: Overrides | None) -> dict[str, Any]:
    """Overrides (``--set`` strings, or a mapping from Python) → one nested mapping to merge into a spec.

    One code path for the CLI and the API, so ``overrides={"optim.lr": 0.01}`` means what
    ``--set optim.lr=0.01`` means. Every bad item is a SpecError naming it, not a yaml ScannerError or a
    TypeError from deep inside: a value YAML cannot read (``@nightly``, ``[1``, ``*main``: quoting makes
    it a string), and two items that make one key both a value and a mapping (``epochs=3`` with
    ``epochs.x=1``).
    """
    if not overrides:
        return {}
    if isinstance(overrides, str):
        raise SpecError(
            f"overrides must be a list of KEY=VALUE strings or a mapping, not the one string {overrides!r}",
            hint=f"overrides=[{overrides!r}]",
        )
    items: list[tuple[str, str, Any]] = []  # (how the item is named in errors, key, value)
    if isinstance(overrides, Mapping):
        items = [(f"overrides[{str(k)!r}]", str(k), v) for k, v in overrides.items()]
    else:
        for item in overrides:
            if "=" not in item:
                raise SpecError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set optim.lr=0.01")
            key, text = item.split("=", 1)
            items.append((f"--set {item!r}", key, _yaml_value(item, key, text)))
    return _nest(items)


def _yaml_value(item: str, key: str, text: str) -> Any:
    try:
        return safe_yaml(text, f"--set {brief(item)}")
    except yaml.YAMLError as exc:
        quoted = text.replace("'", "''")  # YAML's own escape inside single quotes
        dotted = ".".join(part.strip() for part in key.strip().split("."))
        raise SpecError(
            f"--set {item!r}: the value {text!r} is not valid YAML ({getattr(exc, 'problem', None) or exc})",
            hint=f"quote it to pass it as a string: --set \"{dotted}='{quoted}'\"",
        ) from None


def _nest(items: list[tuple[str, str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}  # which item wrote each key path, to name it in a conflict

    def setter_of(path: tuple[str, ...]) -> str:
        return next(origin[path[:n]] for n in range(len(path), 0, -1) if path[:n] in origin)

    def conflict(item: str, other: str, message: str) -> SpecError:
        return SpecError(
            f"{item} conflicts with {other}: {message}",
            hint="keep one of the two: a field is set whole (--set KEY=VALUE) or key by key (--set KEY.SUBKEY=VALUE)",
        )

    for item, raw_key, value in items:
        path = tuple(part.strip() for part in raw_key.strip().split("."))
        if not all(path):
            raise SpecError(f"{item} has an empty key (or an empty part between dots)", hint="e.g. --set optim.lr=0.01")
        key = ".".join(path)
        node = out
        for depth, part in enumerate(path[:-1], start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                parent = ".".join(path[:depth])
                raise conflict(
                    item,
                    setter_of(path[:depth]),
                    f"that sets {parent} to {kind_of(node)}, not a mapping, so {key} cannot be set inside it",
                )
        inside = [origin[p] for p in origin if len(p) > len(path) and p[: len(path)] == path]
        if inside:  # an earlier item wrote a key inside this one: keep it (a second KEY=VALUE replaces the first)
            if not isinstance(value, dict):
                raise conflict(
                    item, inside[0], f"that sets a key inside {key}, and this sets {key} to {kind_of(value)}, not a mapping"
                )
            value = deep_merge(node[path[-1]], value)
        node[path[-1]] = value
        origin[path] = item
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
