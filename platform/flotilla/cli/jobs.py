"""``flotilla cluster up | down | status | token | env`` and ``flotilla jobs submit | list | status | logs | stop``.

Thin over :mod:`flotilla.jobs`; :mod:`flotilla.jobs.submission` (which pulls in Ray and the
training stack) is imported inside the ``jobs`` commands so ``flotilla --help`` stays fast.
``--address`` (or FLOTILLA_RAY_ADDRESS) is a cluster's Jobs API URL (its dashboard, e.g.
``http://127.0.0.1:8265`` after ``ray dashboard cluster.yaml``); without it the local flotilla
cluster is used.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from flotilla.cli.common import friendly
from flotilla.cli.output import flag, mode, print_table, with_output
from flotilla.cluster.files import ClusterError
from flotilla.cluster.local import LocalCluster, ray_cli_env, status
from flotilla.lineage import RAY_JOB_NAME, JobLabels

cluster_app = typer.Typer(
    help="The local Ray cluster flotilla runs itself (token auth on, dashboard on 127.0.0.1).", no_args_is_help=True
)
jobs_app = typer.Typer(help="Ingest, train and sweep jobs on a Ray cluster (Ray Jobs API).", no_args_is_help=True)
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)

ADDRESS = typer.Option(
    None, "--address", help="Jobs API URL of a Ray cluster (default: FLOTILLA_RAY_ADDRESS, else the local cluster)"
)
_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan", "PENDING": "dim"}


@cluster_app.command("up")
@friendly
def cluster_up(
    # bounded here, before anything starts: Ray's head died on --num-cpus -1 ("Resource quantities must be
    # nonnegative") behind a hint about port clashes, and a worker node with no CPU can run nothing;
    # a port outside 1-65535 is not one (0 read as "the default")
    num_cpus: int = typer.Option(None, "--num-cpus", min=0, help="CPUs the head offers (default: all; 0 with --workers)"),
    workers: int = typer.Option(0, "--workers", min=0, help="extra local worker nodes (to try multi-node scheduling)"),
    worker_cpus: int = typer.Option(1, "--worker-cpus", min=1, help="CPUs per extra worker node"),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="GCS port (default: FLOTILLA_RAY_PORT or 6390)"),
    dashboard_port: int = typer.Option(
        None, "--dashboard-port", min=1, max=65535, help="dashboard port (default: FLOTILLA_DASHBOARD_PORT or 8275)"
    ),
    timeout: float = typer.Option(90.0, help="seconds to wait for every node"),
) -> None:
    """Start the local Ray cluster (idempotent) and wait until every node is alive."""
    if num_cpus == 0 and not workers:  # a head that runs no work is for a cluster whose workers do
        raise typer.BadParameter(
            "a head with no CPUs needs worker nodes to run anything: add --workers N, or give the head CPUs",
            param_hint="'--num-cpus'",
        )

    cluster = LocalCluster()
    t0 = time.monotonic()
    with err.status("starting the local Ray cluster") as spin:
        st = cluster.up(
            num_cpus=num_cpus,
            workers=workers,
            worker_cpus=worker_cpus,
            ray_port=port,
            dashboard_port=dashboard_port,
            timeout=timeout,
            report=lambda m: spin.update(m),
        )
    console.print(f"[green]✓[/] {st.describe()} ({time.monotonic() - t0:.1f}s)", highlight=False)
    console.print(
        f"  auth token: {cluster.token_path} (0600); the dashboard's token dialog wants 'flotilla cluster token', "
        'Ray\'s CLI wants eval "$(flotilla cluster env)"',
        highlight=False,
    )


@cluster_app.command("down")
@friendly
def cluster_down(timeout: float = typer.Option(15.0, help="seconds of SIGTERM before SIGKILL")) -> None:
    """Stop the local Ray cluster's processes (only this cluster's; never `ray stop`)."""
    with err.status("stopping the local Ray cluster"):
        msg = LocalCluster().down(timeout=timeout)
    console.print(msg, highlight=False)


@cluster_app.command("status")
@friendly
def cluster_status(address: str = ADDRESS) -> None:
    """Is the cluster running and answering? (exit 3 not running, 4 running but silent, 5 it refused the token)"""
    st = status(address=address)
    console.print(st.describe(), highlight=False)
    if st.running and st.local:
        console.print(f"  auth token: {LocalCluster().token_path} (0600; 'flotilla cluster token' prints it)", highlight=False)
    if st.exit_code:
        raise typer.Exit(st.exit_code)


@cluster_app.command("token")
@friendly
def cluster_token() -> None:
    """Print the local cluster's auth token: what the Ray dashboard's token dialog asks for.

    Like ``ray get-auth-token``: the token alone on stdout (for piping), the newline on stderr.
    Ray's own command prints the token of ~/.ray/auth_token unless told otherwise; ``flotilla
    cluster env`` gives it (and ``ray job ...``) this cluster's.
    """
    cluster = LocalCluster()
    if not cluster.token_path.exists():
        raise ClusterError(
            f"no auth token at {cluster.token_path}: the local cluster was never started with this FLOTILLA_HOME",
            hint="start it with 'flotilla cluster up'",
        )
    sys.stdout.write(cluster.token_path.read_text().strip())
    sys.stdout.flush()
    sys.stderr.write("\n")


@cluster_app.command("env")
@friendly
def cluster_env() -> None:
    """Print the environment Ray's own CLI needs for the local cluster: eval "$(flotilla cluster env)".

    Then ``ray job list``, ``ray job logs <id>``, ``ray status`` and ``ray get-auth-token`` talk to
    flotilla's cluster. The token's path is printed, never the token.
    """
    for name, value in ray_cli_env(LocalCluster()).items():
        sys.stdout.write(f"export {name}={shlex.quote(value)}\n")


@jobs_app.command("submit")
@friendly
def jobs_submit(
    spec: str = typer.Argument(..., help="job spec YAML, e.g. jobs/ingest_synthetic.yaml"),
    address: str = ADDRESS,
    follow: bool = flag("-f", "--follow", help="stream the job's logs until it ends (exit 1 unless it succeeds)"),
    check: bool = flag("--check", help="validate and pin the data commit, print the pinned spec, submit nothing"),
) -> None:
    """Validate a job spec, pin its data commit and submit it (a bad spec is refused with every problem)."""
    from flotilla.jobs.submission import submit

    handle = submit(spec, address, dry_run=check)
    job = handle.pinned
    assert job is not None, "submit() hands back the spec it pinned"
    if check:
        console.print(f"[green]✓[/] {spec} is valid; it would be submitted as {handle.submission_id} with:")
        console.print(
            yaml.safe_dump(job.model_dump(mode="json", exclude_none=True), sort_keys=False), highlight=False, markup=False
        )
        return
    pinned = getattr(job, "pinned", None) or {}  # train and sweep jobs carry their data lineage
    extra = f" on data commit {pinned['data_commit'][:12]} ({pinned['data_repo']}@{pinned['data_ref']})" if pinned else ""
    console.print(f"[green]✓[/] submitted [bold]{handle.submission_id}[/]{extra}", highlight=False)
    if follow:
        _follow(handle)
    else:
        console.print(f"  follow it: flotilla jobs logs {handle.submission_id} -f", highlight=False)


def _follow(handle) -> None:
    try:
        for chunk in handle.tail(follow=True):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        err.print(f"[yellow]stopped following; the job keeps running. Stop it with: flotilla jobs stop {handle.submission_id}[/]")
        raise typer.Exit(130) from None
    final = handle.wait(timeout=60)
    console.print(f"job {handle.submission_id}: [{_STYLE.get(final, 'white')}]{final}[/]", highlight=False)
    if final != "SUCCEEDED":
        # a job that fails before its driver starts (a bad runtime_env.pip, say) has no logs to
        # stream: Ray keeps the reason in the job's message
        message = (handle.info().message or "").strip()
        if message:
            err.print(message, highlight=False, markup=False)
        raise typer.Exit(1)


def _job_record(j: Any) -> dict[str, Any]:
    """One job as plain JSON: what the table shows, unabbreviated, plus its name and times in epoch seconds."""
    labels = JobLabels.from_metadata(j.metadata or {})
    start, end = (j.start_time or 0) / 1000 or None, (j.end_time or 0) / 1000 or None
    return {
        "submission_id": j.submission_id or j.job_id,
        "name": (j.metadata or {}).get(RAY_JOB_NAME),
        "status": str(j.status),
        "kind": labels.job_kind,
        "spec": labels.spec,
        "data_commit": labels.pinned.get("data_commit"),
        "start_time": start,
        "end_time": end,
        "duration_s": round((end or time.time()) - start, 3) if start else None,
    }


@jobs_app.command("list")
@with_output
@friendly
def jobs_list(address: str = ADDRESS, as_json: bool = flag("--json", help="one JSON list, for scripts (jq, json.tool)")) -> None:
    """Jobs the cluster knows, newest first."""
    from flotilla.jobs.handle import list_jobs

    jobs = list_jobs(address)
    if as_json:
        print(json.dumps([_job_record(j) for j in jobs], indent=2))
        return
    table = Table()
    for col in ("submission id", "status", "kind", "spec", "data commit", "started", "duration"):
        table.add_column(col)
    for j in jobs:
        labels = JobLabels.from_metadata(j.metadata or {})
        start = time.strftime("%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        dur = f"{((j.end_time or time.time() * 1000) - j.start_time) / 1000:.0f}s" if j.start_time else "-"
        status = str(j.status)
        table.add_row(
            j.submission_id or j.job_id or "?",
            f"[{_STYLE.get(status, 'white')}]{status}[/]",
            labels.job_kind or "-",
            labels.spec or "-",
            labels.pinned.get("data_commit", "-")[:12],
            start,
            dur,
        )
    print_table(table, console)


@jobs_app.command("status")
@with_output
@friendly
def jobs_status(submission_id: str = typer.Argument(...), address: str = ADDRESS) -> None:
    """A job's status, message and metadata (and its result once it succeeded)."""
    from flotilla.jobs.handle import get_job, parse_result

    handle = get_job(submission_id, address)
    info = handle.info()
    status = str(info.status)
    if mode().json:
        done = status in ("SUCCEEDED", "FAILED")
        print(
            json.dumps(
                {
                    "submission_id": submission_id,
                    "status": status,
                    "message": info.message,
                    "metadata": dict(info.metadata or {}),
                    "result": parse_result(handle.logs()) if done else None,
                },
                indent=2,
                default=str,
            )
        )
        return
    console.print(f"{submission_id}: [{_STYLE.get(status, 'white')}]{status}[/] {info.message or ''}", highlight=False)
    for k, v in sorted((info.metadata or {}).items()):
        console.print(f"  {k}: {v}", highlight=False)
    if status in ("SUCCEEDED", "FAILED"):
        result = parse_result(handle.logs())
        if result is not None:
            console.print_json(data=result)


@jobs_app.command("logs")
@friendly
def jobs_logs(
    submission_id: str = typer.Argument(...),
    follow: bool = flag("-f", "--follow", help="keep streaming until the job ends"),
    address: str = ADDRESS,
) -> None:
    """A job's driver log (what its entrypoint printed, plus Ray's worker output)."""
    from flotilla.jobs.handle import get_job

    handle = get_job(submission_id, address)
    if follow:
        _follow(handle)
    else:
        sys.stdout.write(handle.logs())


@jobs_app.command("stop")
@friendly
def jobs_stop(
    submission_id: str = typer.Argument(...),
    wait: bool = flag("--wait/--no-wait", default=True, help="wait until the job has ended"),
    address: str = ADDRESS,
) -> None:
    """Stop a running job (SIGTERM to its driver, SIGKILL a few seconds later)."""
    from flotilla.jobs.handle import get_job

    handle = get_job(submission_id, address)
    if not handle.stop():
        console.print(f"{submission_id} was not running ({handle.status()})", highlight=False)
        return
    if wait:
        with err.status(f"stopping {submission_id}"):
            final = handle.wait(timeout=120)
        console.print(f"{submission_id}: {final}", highlight=False)
    else:
        console.print(f"stop requested for {submission_id}", highlight=False)
