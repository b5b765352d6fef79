"""Job specs (``jobs/*.yaml``), submission to a Ray cluster's Jobs API, and handles on submitted jobs.

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

import asyncio
import json
import logging
import re
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flotilla.cluster.files import ClusterError, auth_headers
from flotilla.cluster.local import LocalCluster, normalise_address
from flotilla.data.pinning import pin as pin_data
from flotilla.errors import FlotillaError
from flotilla.hub.client import Hub
from flotilla.jobs.entrypoint import RESULT_MARKER
from flotilla.jobs.specs import JobSpec, SweepJob, TrainJob, family_of, load_job_spec, parse_job_spec, sweep_of
from flotilla.lineage import JobLabels
from flotilla.settings import FLOTILLA_HOME, FLOTILLA_HUB_PORT, RAY_TRAIN_ENABLE_PRINT_PATCH, Settings, code_vars, ray_address
from flotilla.training.artifacts import code_version
from flotilla.version import __version__

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

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

__all__ = ["RESULT_MARKER", "JobError", "JobHandle", "get_job", "job_client", "list_jobs", "project_root", "stage_job", "submit"]


class JobError(FlotillaError):
    """A job could not be submitted, or it ended without a result."""


def project_root() -> Path:
    """The source checkout flotilla runs from (``<root>/platform/flotilla``), else the current directory.

    Relative spec paths resolve against it. Only a source checkout is shipped to the cluster (see
    :func:`stage_job`): the current directory of a pip-installed flotilla may be anyone's home.
    """
    here = Path(__file__).resolve().parents[3]
    return here if _is_checkout(here) else Path.cwd()


def _is_checkout(root: Path) -> bool:
    return (root / "platform" / "flotilla").is_dir()


# ---- connecting ----------------------------------------------------------------------------------
class _Target:
    """Where jobs go: a Jobs API URL, its auth header, and whether it is our own local cluster."""

    def __init__(self, address: str | None, settings: Settings) -> None:
        address = address or ray_address()
        local = LocalCluster(settings)
        state = local.state()
        if address:
            self.url = normalise_address(address)
            self.local = bool(state and state["dashboard_url"] == self.url)
        else:
            st = local.status()
            if not st.running:
                raise ClusterError(
                    f"no Ray cluster to submit to: the local cluster is not running and no address was given. {st.note}".strip(),
                    hint="start one with 'flotilla cluster up', or pass --address / set FLOTILLA_RAY_ADDRESS",
                )
            self.url, self.local = st.address, True
        self.headers = auth_headers(local.token_path if self.local else None)
        self.python = state["python"] if self.local and state else "python"


def job_client(address: str | None = None, settings: Settings | None = None) -> JobSubmissionClient:
    """A ``JobSubmissionClient`` that carries the cluster's token; errors become ClusterError with a hint."""
    return _connect(address, settings)[0]


def _connect(address: str | None, settings: Settings | None) -> tuple[JobSubmissionClient, _Target]:
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    target = _Target(address, settings or Settings.from_env())
    try:
        client = JobSubmissionClient(target.url, headers=dict(target.headers))
    except AuthenticationError:
        raise ClusterError(
            f"the Ray cluster at {target.url} refused the auth token",
            hint="for flotilla's own cluster the token is <FLOTILLA_HOME>/ray/auth_token; for another cluster set "
            "RAY_AUTH_TOKEN_PATH to its token file",
        ) from None
    except (ConnectionError, RuntimeError, ValueError, requests.RequestException) as exc:
        # ValueError: what answered is not a Ray dashboard (requests' JSON errors are ValueErrors)
        raise ClusterError(
            f"cannot reach the Ray Jobs API at {target.url}: {type(exc).__name__}: {str(exc)[:300]}",
            hint="check 'flotilla cluster status', and that --address names a Ray dashboard",
        ) from None
    return client, target


@contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's client logs every upload step at INFO; keep the user's terminal for the job's own output."""
    names = ("ray._private.runtime_env.packaging", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _call(what: str, fn: Any, *args: Any) -> Any:
    """Run one Jobs API call; what Ray and ``requests`` raise becomes a ClusterError or JobError with a hint."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError:
        raise ClusterError(
            f"could not {what}: the cluster refused the auth token",
            hint="for another cluster set RAY_AUTH_TOKEN_PATH to its token file",
        ) from None
    except requests.RequestException as exc:  # the cluster went away (or an HTTP error from a proxy)
        raise ClusterError(
            f"could not {what}: the Ray Jobs API did not answer ({type(exc).__name__}: {str(exc)[:300]})",
            hint="check 'flotilla cluster status'",
        ) from None
    except (RuntimeError, ValueError) as exc:  # unknown id, a refused submission, a working_dir over Ray's size limit
        raise JobError(
            f"could not {what}: {str(exc)[:500]}", hint="'flotilla jobs list' shows the known submission ids"
        ) from None


# ---- handles --------------------------------------------------------------------------------------
class JobHandle:
    """A submitted job: status, logs (whole or streamed), stop, wait, and its result summary."""

    def __init__(self, submission_id: str, client: Any, pinned: JobSpec | None = None) -> None:
        self.submission_id = submission_id
        self.client = client
        self.pinned = pinned

    def __repr__(self) -> str:
        return f"JobHandle({self.submission_id!r})"

    def info(self) -> Any:
        return _call(f"read job {self.submission_id}", self.client.get_job_info, self.submission_id)

    def status(self) -> str:
        return str(_call(f"read job {self.submission_id}", self.client.get_job_status, self.submission_id))

    def logs(self) -> str:
        return _call(f"read the logs of {self.submission_id}", self.client.get_job_logs, self.submission_id)

    def tail(self, follow: bool = True) -> Iterator[str]:
        """Log text as it arrives; ends when the job reaches a terminal state (``follow=False``: what is there now)."""
        if not follow:
            yield self.logs()
            return
        import aiohttp

        loop = asyncio.new_event_loop()
        agen = self.client.tail_job_logs(self.submission_id)
        pending = None
        try:
            while True:
                # a task, not a bare run of __anext__: Ctrl-C arrives while it waits, and the generator
                # can only be closed after the task is cancelled (closing a running one raises RuntimeError)
                pending = loop.create_task(agen.__anext__())
                try:
                    with _quiet_ray():
                        chunk = loop.run_until_complete(pending)
                except StopAsyncIteration:
                    return
                except (RuntimeError, aiohttp.ClientError) as exc:  # unknown id (404), the cluster went away
                    raise JobError(
                        f"could not follow the logs of {self.submission_id}: {type(exc).__name__}: {str(exc)[:300]}",
                        hint=f"'flotilla jobs status {self.submission_id}' says whether it still runs; "
                        "'flotilla jobs list' shows the known ids",
                    ) from None
                pending = None
                yield chunk
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with suppress(BaseException):
                    loop.run_until_complete(pending)
            with suppress(Exception):
                loop.run_until_complete(agen.aclose())
            loop.close()

    def stop(self) -> bool:
        """Ask Ray to stop the job (SIGTERM to its driver's process group, SIGKILL after a few seconds)."""
        return bool(_call(f"stop {self.submission_id}", self.client.stop_job, self.submission_id))

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the job ends; return its final status (SUCCEEDED, FAILED or STOPPED)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status()
            if st in ("SUCCEEDED", "FAILED", "STOPPED"):
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(
                    f"job {self.submission_id} is still {st} after {timeout:.0f}s", hint="'flotilla jobs logs -f' follows it"
                )
            time.sleep(poll)

    def result(self) -> dict[str, Any]:
        """The summary the entrypoint printed as its last ``FLOTILLA_RESULT {json}`` line."""
        found = parse_result(self.logs())
        if found is None:
            raise JobError(
                f"job {self.submission_id} ({self.status()}) printed no result line",
                hint=f"it did not finish its work; read 'flotilla jobs logs {self.submission_id}'",
            )
        return found


def parse_result(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                raise JobError(
                    f"the job's result line is damaged: {line[:200]!r}",
                    hint="another process's output was interleaved with it; the full logs have the run's details",
                ) from None
    return None


def get_job(submission_id: str, address: str | None = None, settings: Settings | None = None) -> JobHandle:
    return JobHandle(submission_id, job_client(address, settings))


def list_jobs(address: str | None = None, settings: Settings | None = None) -> list[Any]:
    """Ray's ``JobDetails`` of every job the cluster knows, newest first."""
    client = job_client(address, settings)
    jobs = _call("list jobs", client.list_jobs)
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)


# ---- submitting --------------------------------------------------------------------------------------
def submission_id(spec: JobSpec) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")[:40] or "job"
    return f"{spec.kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def pin(spec: JobSpec, hub: Any = None, root: Path | None = None) -> tuple[JobSpec, dict[str, str]]:
    """Resolve a train/sweep job's data ref to a commit id and inline everything the job reads.

    Returns the spec to submit (self-contained: the family or sweep inlined,
    ``data.ref`` replaced by the commit) and the lineage for the job metadata.
    """
    root = root or project_root()
    if isinstance(spec, TrainJob):
        family = family_of(spec, root)
        ref = pin_data(hub or Hub(), family.data.repo, family.data.dataset, [family.data.ref])[family.data.ref]
        pinned = family.model_dump(mode="json")
        pinned["data"]["ref"] = ref.commit
        lineage = {"data_repo": ref.repo, "data_ref": family.data.ref, "data_commit": ref.commit, "dataset": ref.dataset}
        return spec.model_copy(update={"spec": None, "family": pinned, "overrides": {}, "pinned": lineage}), lineage
    if isinstance(spec, SweepJob):
        sweep = sweep_of(spec, root)
        family = sweep.family(root)
        pinned = sweep.model_dump(mode="json", exclude_none=True)
        dim = pinned.get("space", {}).get("data.ref")
        variants = list(dim["values"]) if dim and dim.get("values") else []  # data as a search dimension
        commits = pin_data(hub or Hub(), family.data.repo, family.data.dataset, [family.data.ref, *variants])
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
    return spec, {"data_repo": spec.repo, "dataset": spec.dataset, "data_ref": spec.into}


def stage_job(root: Path, settings: Settings, sid: str, pinned: JobSpec) -> Path:
    """A copy of the project (without environments, outputs or local state) plus the pinned spec.

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
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


def submit(
    spec: JobSpec | str | Path | dict[str, Any],
    address: str | None = None,
    *,
    hub: Any = None,
    settings: Settings | None = None,
    dry_run: bool = False,
) -> JobHandle:
    """Validate, pin and submit a job; return its handle (``dry_run``: validate and pin only, handle has no client)."""
    settings = settings or Settings.from_env()
    root = project_root()
    if isinstance(spec, (str, Path)):
        spec = load_job_spec(spec, root=root)
    elif isinstance(spec, dict):
        spec = parse_job_spec(spec, "job spec", root=root)
    pinned, lineage = pin(spec, hub, root)
    sid = submission_id(spec)
    if dry_run:
        return JobHandle(sid, None, pinned)
    client, target = _connect(address, settings)
    env_vars = {RAY_TRAIN_ENABLE_PRINT_PATCH: "0", "PYTHONUNBUFFERED": "1", **spec.runtime_env.env_vars}
    # the job runs from a staged copy without .git: hand it the code version, for model cards' lineage
    code = code_version()
    env_vars |= code_vars(str(code["git_sha"]), code["dirty"])
    if _is_checkout(root):  # the job runs the source it was submitted with
        env_vars["PYTHONPATH"] = "platform"
    if target.local:  # the local hub's credentials file is found through these; remote nodes bring LAKECTL_*
        env_vars |= {FLOTILLA_HOME: str(settings.home), FLOTILLA_HUB_PORT: str(settings.hub_port)}
    runtime_env: dict[str, Any] = {"env_vars": env_vars, "excludes": list(_EXCLUDES)}
    if spec.runtime_env.pip:
        runtime_env["pip"] = list(spec.runtime_env.pip)
    metadata = {k: str(v) for k, v in JobLabels(spec.kind, spec.name, __version__, lineage).to_metadata().items()}
    stage = stage_job(root, settings, sid, pinned)
    try:
        runtime_env["working_dir"] = str(stage / "src")
        entrypoint = f"{shlex.quote(target.python)} -m flotilla.jobs.entrypoint {PINNED_DIR}/{sid}.yaml"
        with _quiet_ray():
            _call(
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
