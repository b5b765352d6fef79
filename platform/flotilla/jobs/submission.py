"""Submitting a job spec (``jobs/*.yaml``) to a Ray cluster's Jobs API (handles: :mod:`flotilla.jobs.handle`).

``submit(spec)`` refuses a bad spec before anything reaches the cluster (every
problem at once), resolves the data ref of a train/sweep job to a commit id and
writes that commit into the spec it submits, so the job reads exactly the data
that was on the branch at submission even if the branch moves while it queues.
The job ships the project (``platform/``, ``jobs/``, ``tuning/``) as its
``working_dir`` and runs ``python -m flotilla.jobs.entrypoint <pinned spec>``.

Nothing secret goes into the submission: Ray shows env_vars, metadata and the
entrypoint on its dashboard. The job finds hub credentials the normal way
(``resolve_credentials``: the local hub's 0600 file via FLOTILLA_HOME, or the
LAKECTL_* variables set on the cluster's nodes).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flotilla.cluster.files import token_path
from flotilla.data.pinning import pin, resolve_data
from flotilla.errors import FlotillaError, brief
from flotilla.hub.client import Hub
from flotilla.jobs.client import call, connect, quiet_ray
from flotilla.jobs.handle import JobHandle
from flotilla.jobs.secretscan import refuse_secrets
from flotilla.jobs.specs import (
    ActiveRoundJob,
    InferJob,
    JobSpec,
    MonitorJob,
    SweepJob,
    TrainJob,
    family_of,
    load_job_spec,
    parse_job_spec,
    sweep_of,
)
from flotilla.lineage import JobLabels
from flotilla.loop import plan_inference
from flotilla.registry import read_card, resolve
from flotilla.settings import FLOTILLA_HOME, FLOTILLA_HUB_PORT, RAY_TRAIN_ENV, Settings, code_vars
from flotilla.specfiles import checkout_root
from flotilla.specs import Overrides, deep_merge, parse_overrides
from flotilla.training.artifacts import code_version
from flotilla.version import __version__

if TYPE_CHECKING:
    pass

PINNED_DIR = ".flotilla-job"
# never shipped to the cluster: environments, history, outputs, local state that may hold secrets
_EXCLUDES = (
    ".venv",
    "venv",
    ".git",
    "artifacts",
    "wandb",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".flotilla-test",
    ".flotilla",
    "node_modules",
    "build",
    "dist",
    "credentials.json",
    "auth_token",
    ".env",
    "*.env",
    ".lakectl.yaml",
    ".aws",
    ".ssh",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
)

__all__ = ["project_root", "stage_job", "submit"]


def project_root() -> Path:
    """The source checkout flotilla runs from (``<root>/platform/flotilla``), else the current directory.

    The code a job runs is staged from it (see :func:`stage_job`): only a source checkout is shipped to
    the cluster, since the current directory of a pip-installed flotilla may be anyone's home. Spec
    paths do not resolve against it (:mod:`flotilla.specfiles`).
    """
    return checkout_root() or Path.cwd()


def _is_checkout(root: Path) -> bool:
    return (root / "platform" / "flotilla").is_dir()


# ---- submitting --------------------------------------------------------------------------------------
def known_secrets(hub: Any, settings: Settings) -> dict[str, str]:
    """The secrets this machine knows and a job must never carry: the hub's secret key, the local cluster's Ray token."""
    known: dict[str, str] = {}
    with contextlib.suppress(FlotillaError):  # no hub credentials here: none to leak
        known["the hub's secret access key"] = (hub or Hub(settings=settings)).credentials.secret_access_key
    token = token_path(settings)
    if token.is_file():
        known["the local Ray cluster's auth token"] = token.read_text().strip()
    return known


def submission_id(spec: JobSpec) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")[:40] or "job"
    return f"{spec.kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def pin_job(spec: JobSpec, hub: Any = None, root: Path | None = None) -> tuple[JobSpec, dict[str, str]]:
    """Resolve a train/sweep/infer job's data ref (and an infer job's model) to a commit id and inline everything the job reads.

    The refs go through :func:`flotilla.data.pinning.pin`, the one pinning step; this adds only what a
    job needs on top (the spec made self-contained, the lineage for the job's metadata).

    Returns the spec to submit (self-contained: the family or sweep inlined,
    ``data.ref`` replaced by the commit) and the lineage for the job metadata.
    """
    root = root or Path.cwd()  # a file's job spec was anchored to its folder when it was loaded
    if isinstance(spec, TrainJob):
        family = family_of(spec, root)
        ref = pin(hub or Hub(), family.data.repo, family.data.dataset, [family.data.ref])[family.data.ref]
        pinned = family.model_dump(mode="json")
        pinned["data"]["ref"] = ref.commit
        lineage = {"data_repo": ref.repo, "data_ref": family.data.ref, "data_commit": ref.commit, "dataset": ref.dataset}
        return spec.model_copy(update={"spec": None, "family": pinned, "overrides": {}, "pinned": lineage}), lineage
    if isinstance(spec, SweepJob) and spec.resume is not None:
        return spec, {"sweep_id": spec.resume}  # pinned when the sweep started (its sweep.json, in its mirror)
    if isinstance(spec, SweepJob):
        sweep = sweep_of(spec, root)
        family = sweep.family(root)
        pinned = sweep.model_dump(mode="json", exclude_none=True)
        dim = pinned.get("space", {}).get("data.ref")
        variants = list(dim["values"]) if dim and dim.get("values") else []  # data as a search dimension
        commits = pin(hub or Hub(), family.data.repo, family.data.dataset, [family.data.ref, *variants])
        ref = commits[family.data.ref]
        # ... but promote.into: null means "report only": dropped, it read back as the default, main
        pinned["promote"] = sweep.promote.model_dump(mode="json")
        pinned["base"] = family.model_dump(mode="json")  # inline: the job needs no file but this spec
        pinned["overrides"] = {}
        pinned["data"] = {**pinned.get("data", {}), "ref": ref.commit}
        if variants:  # every variant pinned too
            dim["values"] = [commits[v].commit for v in variants]
        lineage = {"data_repo": ref.repo, "data_ref": family.data.ref, "data_commit": ref.commit, "dataset": ref.dataset}
        return spec.model_copy(update={"spec": None, "sweep": pinned, "overrides": {}, "pinned": lineage}), lineage
    if isinstance(spec, InferJob):
        # the whole plan on the submitting side: a bad model, ref, split or image size is refused here, not on the cluster
        plan = plan_inference(
            hub or Hub(),
            spec.model,
            repo=spec.repo,
            data_ref=spec.data_ref,
            dataset=spec.dataset,
            split=spec.split,
            allow_resize=spec.allow_resize,
        )
        lineage = {
            "data_repo": plan.data.repo,
            "data_ref": spec.data_ref,
            "data_commit": plan.data.commit,
            "dataset": plan.data.dataset,
            "model_uri": plan.model.uri,
            "model_data_commit": plan.card.data.commit,
        }
        update = {"model": plan.model.uri, "data_ref": plan.data.commit, "pinned": lineage}
        return spec.model_copy(update=update), lineage
    if isinstance(spec, MonitorJob):
        hub = hub or Hub()
        location = resolve(hub, spec.model, spec.repo)
        dataset = spec.dataset or read_card(hub.repo(location.repo), location).data.dataset
        cur = resolve_data(hub, spec.repo, spec.current, dataset)
        lineage = {
            "data_repo": cur.repo,
            "data_ref": spec.current,
            "data_commit": cur.commit,
            "dataset": dataset,
            "model_uri": location.uri,
        }
        update = {"model": location.uri, "current": cur.commit, "dataset": dataset, "pinned": lineage}
        return spec.model_copy(update=update), lineage
    if isinstance(spec, ActiveRoundJob):
        hub = hub or Hub()
        location = resolve(hub, spec.model, spec.repo)
        pool = resolve_data(hub, spec.repo, spec.pool_ref, spec.pool_dataset)
        resolve_data(hub, spec.repo, "main", spec.eval_dataset)  # the evaluation set must be on main: checked here
        lineage = {
            "data_repo": pool.repo,
            "data_ref": spec.pool_ref,
            "data_commit": pool.commit,
            "dataset": pool.dataset,
            "model_uri": location.uri,
        }
        return spec.model_copy(update={"pool_ref": pool.commit, "pinned": lineage}), lineage
    return spec, {"data_repo": spec.repo, "dataset": spec.dataset, "data_ref": spec.into}


def stage_job(root: Path, settings: Settings, sid: str, pinned: JobSpec, *, code_diff: bytes | None = None) -> Path:
    """A copy of the project (without environments, outputs or local state) plus the pinned spec, and
    ``code_diff`` (a dirty tree's diff, of tracked files that travel anyway) beside it as ``<sid>.diff``.

    Outside a source checkout only the pinned spec travels: it is self-contained (the family or
    sweep inlined), the nodes run the flotilla they have installed, and the current directory is
    not the project's to ship. Public because what leaves this machine is part of submission's
    contract (no credentials, no local state): it can be inspected, and is tested, without a cluster.
    The caller removes the returned folder once the job is submitted.
    """
    stage = Path(tempfile.mkdtemp(prefix="flotilla-job-"))
    try:
        home = settings.home.resolve()

        def ignore(d: str, names: list[str]) -> set[str]:
            out = set(shutil.ignore_patterns(*_EXCLUDES)(d, names))
            return out | {n for n in names if (Path(d) / n).resolve() == home}

        if _is_checkout(root):
            shutil.copytree(root, stage / "src", ignore=ignore, symlinks=True)
        target = stage / "src" / PINNED_DIR / f"{sid}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(pinned.model_dump(mode="json", exclude_none=True), sort_keys=False))
        if code_diff is not None:
            target.with_suffix(".diff").write_bytes(code_diff)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


def submit(
    spec: JobSpec | str | Path | Mapping[str, Any],
    address: str | None = None,
    *,
    overrides: Overrides | None = None,
    hub: Any = None,
    settings: Settings | None = None,
    dry_run: bool = False,
) -> JobHandle:
    """Validate a job spec, pin the commits it reads, and submit it to a Ray cluster as a Ray job.

    Args:
        spec: a job spec object, a mapping of the YAML's shape, or a job spec file: a path (relative to
            the current directory) or a shipped job's name (``"train_face_family"``). A relative
            ``spec:`` inside is resolved against the job file's folder (a mapping's: the current
            directory), then among the shipped specs.
        address: the cluster's dashboard address (default: ``RAY_ADDRESS``, else flotilla's local cluster).
        overrides: applied to the job spec as ``--set`` applies them, e.g. ``{"overrides.epochs": 2}``.
        hub: the data hub the commits are pinned in (default: ``Hub()``).
        settings: flotilla's settings (default: from the environment).
        dry_run: validate and pin only; the handle has no client.

    Returns a :class:`~flotilla.jobs.handle.JobHandle`: ``.status()``, ``.logs()``, ``.wait()``, ``.result()``.
    """
    settings = settings or Settings.from_env()
    root = project_root()  # the checkout the job's code is staged from
    here = Path.cwd()
    if isinstance(spec, (str, Path)):
        spec = load_job_spec(spec, overrides=overrides)
    elif isinstance(spec, Mapping):
        spec = parse_job_spec(deep_merge(dict(spec), parse_overrides(overrides)), "job spec", root=here)
    elif overrides:
        spec = parse_job_spec(deep_merge(spec.model_dump(mode="json"), parse_overrides(overrides)), "job spec", root=here)
    pinned, lineage = pin_job(spec, hub, here)
    shown = {"spec": pinned.model_dump(mode="json"), "lineage": lineage}  # env_vars and pip are in the spec
    refuse_secrets(shown, known_secrets(hub, settings), f"job {brief(spec.name)}")
    sid = submission_id(spec)
    if dry_run:
        return JobHandle(sid, None, pinned)
    client, target = connect(address, settings)
    env_vars = {**RAY_TRAIN_ENV, "PYTHONUNBUFFERED": "1", **spec.runtime_env.env_vars}
    # the job runs from a staged copy without .git: hand it the code version (and a dirty tree's diff, staged
    # beside the pinned spec), for model cards' lineage
    code = code_version()
    diff = f"{PINNED_DIR}/{sid}.diff" if code.diff is not None and _is_checkout(root) else None
    env_vars |= code_vars(code.git_sha, code.dirty, diff, code.diff_sha256)
    if _is_checkout(root):  # the job runs the source it was submitted with
        env_vars["PYTHONPATH"] = "platform"
    if target.local:  # the local hub's credentials file is found through these; remote nodes bring LAKECTL_*
        env_vars |= {FLOTILLA_HOME: str(settings.home), FLOTILLA_HUB_PORT: str(settings.hub_port)}
    runtime_env: dict[str, Any] = {"env_vars": env_vars, "excludes": list(_EXCLUDES)}
    if spec.runtime_env.pip:
        runtime_env["pip"] = list(spec.runtime_env.pip)
    metadata = {k: str(v) for k, v in JobLabels(spec.kind, spec.name, __version__, lineage).to_metadata().items()}
    stage = stage_job(root, settings, sid, pinned, code_diff=code.diff if diff else None)
    try:
        runtime_env["working_dir"] = str(stage / "src")
        entrypoint = f"{shlex.quote(target.python)} -m flotilla.jobs.entrypoint {PINNED_DIR}/{sid}.yaml"
        with quiet_ray():
            call(
                f"submit {spec.name!r} to {target.url}",
                lambda: client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=sid,
                    runtime_env=runtime_env,
                    metadata=metadata,
                    entrypoint_num_cpus=spec.driver_cpus or None,
                ),
            )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return JobHandle(sid, client, pinned)
