"""Typed job specs: ``kind: ingest | train | sweep | infer | monitor | active-round`` plus that kind's payload.

Same rules as every flotilla spec (:func:`flotilla.specs.parse_spec`): unknown
keys are errors with a "did you mean", and every problem is reported at once —
including the problems of the family (or sweep) spec a train (or sweep) job
points at, so a job is never refused twice in a row for two different typos.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flotilla.data.report import Thresholds
from flotilla.data.synthetic import DEFAULT_SPEC, MAX_SEED, FaceSpec, Shift
from flotilla.errors import SpecError
from flotilla.names import check_branch_id, check_repo_id
from flotilla.settings import DEFAULT_REPO
from flotilla.specfiles import SpecKind, resolve_spec_path
from flotilla.specs import FamilySpec, Overrides, _HubNames, _Spec, deep_merge, hub_name, load_yaml, parse_overrides, parse_spec
from flotilla.tune import SweepSpec

# names Ray would show on its dashboard: credentials never go there
_SECRET_ENV = ("LAKECTL_", "LAKEFS_", "AWS_SECRET", "AWS_SESSION", "RAY_AUTH", "WANDB_API_KEY")
_SECRET_WORDS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIAL")  # anywhere in the name
_SECRET_PARTS = {"KEY", "APIKEY", "PRIVATE", "AUTH", "PWD", "PASS"}  # a whole _-separated part (not KEYBOARD_...)
# user:password@ in a URL (a pip index, a git+https requirement, a database URL)
_URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.I)


def _secret_name(name: str) -> bool:
    up = name.upper()
    return up.startswith(_SECRET_ENV) or any(w in up for w in _SECRET_WORDS) or bool(_SECRET_PARTS & set(up.split("_")))


class RuntimeEnvSpec(_Spec):
    """Extras for the job's Ray runtime env (flotilla sets working_dir and its own env_vars)."""

    pip: list[str] = Field(default_factory=list)
    env_vars: dict[str, str] = Field(default_factory=dict)

    @field_validator("env_vars")
    @classmethod
    def _no_secrets(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [k for k, v in env.items() if _secret_name(k) or _URL_USERINFO.search(v)]
        if bad:
            raise ValueError(
                f"{', '.join(sorted(bad))} look like credentials (by name, or a user:password@ URL in the value); the "
                "Ray dashboard shows env_vars to anyone who can open it. Set them on the cluster's nodes instead "
                "(see docs/scale-out.md)"
            )
        return env

    @field_validator("pip")
    @classmethod
    def _no_secrets_in_requirements(cls, pip: list[str]) -> list[str]:
        bad = [req for req in pip if _URL_USERINFO.search(req)]
        if bad:
            raise ValueError(
                f"{len(bad)} requirement(s) carry a user:password@ URL; Ray shows runtime_env.pip on its dashboard. "
                "Put the index credentials in the nodes' pip config (pip.conf or PIP_INDEX_URL set on the nodes)"
            )
        return pip


class _JobBase(_Spec):
    name: str = Field(min_length=1, max_length=100)  # free text; submission ids use a slug of it
    description: str = ""
    driver_cpus: float = Field(0.0, ge=0)  # CPUs reserved for the job's driver process (0: none, Ray's default)
    runtime_env: RuntimeEnvSpec = RuntimeEnvSpec()


class SyntheticSource(_Spec):
    """``flotilla data generate``: ``n`` faces drawn with ``seed`` from ``spec``, the generator's own
    :class:`~flotilla.data.synthetic.FaceSpec` (image size, label distributions, ``shift``)."""

    n: int = Field(20_000, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # one seed range everywhere (flotilla.data.synthetic.MAX_SEED)
    spec: FaceSpec = DEFAULT_SPEC
    labelled: bool = True  # False: every label null, an unlabelled dataset (incoming data to predict on)

    @model_validator(mode="before")
    @classmethod
    def _knobs_go_under_spec(cls, data: Any) -> Any:
        # size and the shift knobs were once written flat here; say where they live, not only "unknown key"
        if isinstance(data, dict):
            moved = [
                f"spec.{k}" if k in FaceSpec.model_fields else f"spec.shift.{k}"
                for k in data
                if k not in cls.model_fields and (k in FaceSpec.model_fields or k in Shift.model_fields)
            ]
            if moved:
                raise ValueError(
                    f"the generator's settings go under spec: write {', '.join(moved)} "
                    "(e.g. synthetic: {n: 1000, spec: {size: 64, shift: {lighting: 0.3}}})"
                )
        return data


class FilesSource(_Spec):
    """``flotilla data import`` parameters; ``path`` as the cluster's nodes see it."""

    format: Literal["utkface", "fer2013", "folder"]
    path: str
    labels: str | None = None


class IngestJob(_JobBase, _HubNames):
    kind: Literal["ingest"]
    repo: str = DEFAULT_REPO
    create_repo: bool = False  # create ``repo`` if the hub lacks it; else only the default repository is created
    dataset: str = "synthetic"
    into: str = "main"
    synthetic: SyntheticSource | None = None
    files: FilesSource | None = None
    thresholds: Thresholds = Thresholds()

    @model_validator(mode="after")
    def _one_source(self) -> IngestJob:
        if (self.synthetic is None) == (self.files is None):
            raise ValueError("give exactly one source: 'synthetic' (generate) or 'files' (import)")
        return self

    @field_validator("into")  # repo and dataset: _HubNames
    @classmethod
    def _branch_id(cls, into: str) -> str:
        return hub_name(check_branch_id, into, example="the branch the dataset is merged into, e.g. 'main'")


class TrainJob(_JobBase):
    kind: Literal["train"]
    spec: str | None = None  # a family spec file, relative to this job spec's folder, or a shipped one (face_family)
    family: dict[str, Any] | None = None  # or the family spec inline
    overrides: dict[str, Any] = Field(default_factory=dict)
    pinned: dict[str, str] | None = None  # written by submit(): the data commit the job reads

    @model_validator(mode="after")
    def _one_family(self) -> TrainJob:
        if (self.spec is None) == (self.family is None):
            raise ValueError("give exactly one of 'spec' (a family spec file) or 'family' (inline)")
        return self


class SweepJob(_JobBase):
    """A sweep: a new one (``spec``, or ``sweep`` inline), or ``resume: <id>``, an interrupted one finished
    on the cluster from its mirror on the hub (:mod:`flotilla.tune.mirror`): the job's driver may run
    on any node, with any ``FLOTILLA_HOME``. ``repo``: where the mirror is (the sweep's data repository;
    default: searched for among the hub's repositories)."""

    kind: Literal["sweep"]
    spec: str | None = None  # a sweep spec file, relative to this job spec's folder, or a shipped one (tuning/demo.yaml)
    sweep: dict[str, Any] | None = None  # or inline
    resume: str | None = None  # or the id of a sweep to finish
    repo: str | None = None  # with resume: the repository of the sweep's mirror
    force: bool = False  # with resume: take the sweep over from a driver whose lease is fresh (known to be dead)
    overrides: dict[str, Any] = Field(default_factory=dict)
    pinned: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one_sweep(self) -> SweepJob:
        if sum(x is not None for x in (self.spec, self.sweep, self.resume)) != 1:
            raise ValueError(
                "give exactly one of 'spec' (a sweep spec file), 'sweep' (inline) or 'resume' (the id of a sweep to finish)"
            )
        if self.resume is None and (self.repo is not None or self.force):
            raise ValueError("'repo' and 'force' go with 'resume' only (a new sweep's repository is its data's)")
        if self.resume is not None and self.overrides:
            raise ValueError("'overrides' cannot change a resumed sweep: it runs as it was pinned when it started")
        return self

    @field_validator("resume")
    @classmethod
    def _sweep_id(cls, resume: str | None) -> str | None:
        return (
            None if resume is None else hub_name(check_branch_id, resume, example="a sweep id, e.g. 'demo-20260101-120000-ab12'")
        )

    @field_validator("repo")
    @classmethod
    def _repo_id(cls, repo: str | None) -> str | None:
        return None if repo is None else hub_name(check_repo_id, repo)


class InferJob(_JobBase, _HubNames):
    """Batch inference (:func:`flotilla.loop.infer`): ``model`` over ``dataset`` at ``data_ref`` in ``repo``.

    Submission pins both: ``model`` becomes the ``lakefs://`` URI of the weights at a commit (an
    alias that moves while the job queues does not change what it runs) and ``data_ref`` the commit.
    """

    kind: Literal["infer"]
    model: str = Field(min_length=1)  # a run id, <family>@<alias> or a lakefs:// URI
    repo: str = "faces"
    data_ref: str = "main"
    dataset: str
    split: Literal["train", "val", "test"] | None = None
    batch_size: int = Field(256, ge=1)
    concurrency: int = Field(1, ge=1)  # predictor actors
    cpus_per_actor: float = Field(1.0, gt=0)
    use_gpu: bool = False  # one GPU per actor, only when asked
    allow_resize: bool = False
    merge_into: str | None = None
    pinned: dict[str, str] | None = None  # written by submit(): the model URI and data commit the job reads

    @field_validator("merge_into")
    @classmethod
    def _merge_branch(cls, merge_into: str | None) -> str | None:
        if merge_into is None:
            return None
        return hub_name(check_branch_id, merge_into, example="the branch the predictions are merged into, e.g. 'main'")


class MonitorJob(_JobBase, _HubNames):
    """A drift check (:func:`flotilla.loop.monitor`) of ``model`` on ``dataset`` at ``current``, as a Ray job.

    What a schedule submits (cron, CI): submission pins ``model`` to its weights' URI and ``current``
    to a commit, so a rerun of the same pinned spec judges the same model on the same data. The job
    succeeds whether or not it finds drift; its result (``flotilla jobs result``) says ``alarm``.
    """

    kind: Literal["monitor"]
    model: str = Field(min_length=1)
    repo: str = "faces"
    current: str = "main"
    dataset: str | None = None  # default: the model's training dataset
    split: Literal["train", "val", "test"] | None = None
    alpha: float = Field(0.05, gt=0, lt=1)
    ground_truth: bool = False
    tolerance: float = Field(0.0, ge=0)
    permutations: int = Field(500, ge=20)
    concurrency: int = Field(1, ge=1)  # predictor actors, when predictions must be made
    cpus_per_actor: float = Field(1.0, gt=0)
    use_gpu: bool = False
    merge_into: str | None = None
    pinned: dict[str, str] | None = None  # written by submit()

    @field_validator("merge_into")
    @classmethod
    def _merge_branch(cls, merge_into: str | None) -> str | None:
        if merge_into is None:
            return None
        return hub_name(check_branch_id, merge_into, example="the branch the report is merged into, e.g. 'main'")


class ActiveRoundJob(_JobBase, _HubNames):
    """One active-learning round (:func:`flotilla.active.run_round`) as a Ray job: select → label → receive → retrain → decide.

    ``annotator: scripted`` labels a synthetic pool with the generator's truth through Label Studio's
    API (the demo); ``people`` waits up to ``wait_s`` for the round's tasks to be labelled in the
    browser. Submission checks the model, the pool and the evaluation set and pins the pool to its
    commit; ``model`` stays as given (``fam@production``), since a promotion moves that very alias.
    """

    kind: Literal["active-round"]
    model: str = Field(min_length=1)
    repo: str = "faces"
    pool_ref: str = "main"
    pool_dataset: str
    eval_dataset: str
    name: str = Field(min_length=1, max_length=40)
    budget: int = Field(ge=1)
    strategy: Literal["random", "typicality", "uncertainty", "uncertainty+diversity", "anomaly"] | None = None
    epochs: int | None = Field(None, ge=1)
    annotator: Literal["scripted", "people"] = "people"
    wait_s: float = Field(3600.0, gt=0)
    pinned: dict[str, str] | None = None  # written by submit()


JobSpec = IngestJob | TrainJob | SweepJob | InferJob | MonitorJob | ActiveRoundJob
KINDS: dict[str, type[IngestJob] | type[TrainJob] | type[SweepJob] | type[InferJob] | type[MonitorJob] | type[ActiveRoundJob]] = {
    "ingest": IngestJob,
    "train": TrainJob,
    "sweep": SweepJob,
    "infer": InferJob,
    "monitor": MonitorJob,
    "active-round": ActiveRoundJob,
}


def _problems(fn: Callable[[], object]) -> list[str]:
    try:
        fn()
    except SpecError as exc:
        return exc.problems or [exc.message]
    return []


def family_of(job: TrainJob, root: Path) -> FamilySpec:
    """The family a train job trains: its file or inline spec with the job's overrides applied.

    ``root``: the folder a relative ``spec:`` is resolved against (the job spec file's own folder),
    then the shipped specs (:func:`flotilla.specfiles.resolve_spec_path`)."""
    return _family(job.spec, job.family, job.overrides, job.name, root)


def sweep_of(job: SweepJob, root: Path) -> SweepSpec:
    """The sweep a sweep job runs: its file or inline spec with the job's overrides applied, checked,
    its ``base`` resolved against the sweep file's own folder."""
    return _sweep(job.spec, job.sweep, job.overrides, job.name, root)


def _base(spec: str | None, inline: dict[str, Any] | None, root: Path, kind: SpecKind) -> tuple[dict[str, Any] | None, Path]:
    """The inline spec, else the file ``spec`` names (a job names exactly one: its validators check),
    and the folder relative paths inside it resolve against."""
    if inline is not None:
        return inline, root
    assert spec is not None, "a job has a spec file or an inline spec"
    file = resolve_spec_path(spec, kind, relative_to=root, what="spec:")
    return load_yaml(file), file.parent


def _family(spec: str | None, inline: dict[str, Any] | None, overrides: dict[str, Any], name: object, root: Path) -> FamilySpec:
    base, _ = _base(spec, inline, root, "family")
    family: FamilySpec = parse_spec(FamilySpec, deep_merge(base or {}, overrides), source=f"family of job {name!r}")
    return family


def _sweep(spec: str | None, inline: dict[str, Any] | None, overrides: dict[str, Any], name: object, root: Path) -> SweepSpec:
    base, folder = _base(spec, inline, root, "sweep")
    sweep: SweepSpec = parse_spec(SweepSpec, deep_merge(base or {}, overrides), source=f"sweep of job {name!r}")
    return sweep.anchored(folder)  # its base family, space and objective metrics must be valid too


def _inner_problems(kind: str, data: dict[str, Any], root: Path) -> list[str]:
    """Problems of the family/sweep a job points at, even when the job itself has problems too."""
    key, build = ("family", _family) if kind == "train" else ("sweep", _sweep)
    spec, inline, overrides = data.get("spec"), data.get(key), data.get("overrides") or {}
    if (spec is None) == (inline is None) or not isinstance(overrides, dict) or not isinstance(inline, (dict, type(None))):
        return []  # already reported by the job's own validation
    if spec is not None:
        if not isinstance(spec, str):
            return []
        try:
            path = resolve_spec_path(spec, "family" if kind == "train" else "sweep", relative_to=root, what="spec:")
        except SpecError as exc:
            return [exc.message]
        if path.is_dir():  # is_file() alone called it missing
            inside = [str(p.relative_to(root)) for p in sorted(path.glob("*.y*ml"))[:20] if not _is_job_spec(p)][:5]
            return [
                f"spec: {spec} is a directory under {root}, not a spec file: name one YAML spec in it"
                + (f" ({', '.join(inside)})" if inside else "")
            ]
    name = data.get("name", "?")
    return [f"{key}: {p}" for p in _problems(lambda: build(spec, inline, overrides, name, root))]


def _is_job_spec(path: Path) -> bool:
    """A job spec (it has a ``kind``), which a job's ``spec:`` cannot name: kept out of the files suggested."""
    try:
        data = load_yaml(path)
    except SpecError:
        return True  # not a spec either
    return isinstance(data, dict) and "kind" in data


def parse_job_spec(data: Any, source: str = "job spec", root: Path | None = None) -> JobSpec:
    """Validate a job spec (and, for train/sweep, what it points at); one SpecError lists every problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{source} must be a mapping of keys to values, got {type(data).__name__}")
    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        close = difflib.get_close_matches(str(kind), list(KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = "missing" if kind is None else f"{kind!r} is not a job kind"
        problems = [f"kind: {what}; use one of {', '.join(KINDS)}{hint}"]
        known = set().union(*(m.model_fields for m in KINDS.values()))
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                problems.append(f"{key}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise SpecError(f"{source} is invalid ({len(problems)} problem(s)):", problems)
    problems = _problems(lambda: parse_spec(model, data, source))
    if kind in ("train", "sweep"):
        problems += _inner_problems(kind, data, root or Path.cwd())
    if problems:
        raise SpecError(f"{source} is invalid ({len(problems)} problem(s)):", problems)
    return model.model_validate(data)


def load_job_spec(path: str | Path, root: Path | None = None, overrides: Overrides | None = None) -> JobSpec:
    """The job spec file ``path`` names (the current directory, then the shipped job specs), checked.

    A relative ``spec:`` in it is resolved against ``root``: by default the job spec file's own folder
    (then the shipped specs), and made absolute here, so the job means the same from anywhere."""
    file = resolve_spec_path(path, "job")
    folder = root or file.parent
    data = load_yaml(file)
    extra = parse_overrides(overrides)
    if extra:
        data = deep_merge(data or {}, extra)
    job = parse_job_spec(data, source=str(path), root=folder)
    if isinstance(job, (TrainJob, SweepJob)) and job.spec is not None and not Path(job.spec).is_absolute():
        kind: SpecKind = "family" if isinstance(job, TrainJob) else "sweep"
        job = job.model_copy(update={"spec": str(resolve_spec_path(job.spec, kind, relative_to=folder))})
    return job
