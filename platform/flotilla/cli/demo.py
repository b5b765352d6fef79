"""The reference workflow behind ``make demo``, on the embedded default.

Hub up → local Ray cluster up → synthetic faces generated, validated and merged
into the hub → a sweep over the face family submitted as a Ray job, its logs
streamed → the winner promoted into main → a summary: dashboard URL, data
commit, winning params, per-task metrics, the promoted model's lineage, plots →
one active-learning round on a local Label Studio (scripted annotator), as a Ray job →
the data audited by the production model (findings on an audit-* branch) and its HTML report page.
Hub, cluster and Label Studio stay up for exploring; the summary says how to stop them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flotilla import cluster, labelstudio
from flotilla.cli.output import ray_console
from flotilla.data.api import generate
from flotilla.data.page import data_report
from flotilla.data.report import Thresholds
from flotilla.data.store import list_datasets
from flotilla.errors import FlotillaError
from flotilla.hub import Hub, local
from flotilla.jobs.handle import JobHandle
from flotilla.jobs.submission import submit
from flotilla.settings import Settings
from flotilla.tune.report import missing_plots_note

DEMO_JOB = "jobs/sweep_demo.yaml"
AL_JOB = "jobs/active_round_demo.yaml"
OURS = ("[flotilla] ", "error:", "hint:")  # a job's own lines; Ray's and Tune's stay in `flotilla jobs logs <id>`


def _stream_ours(console: Console, handle: JobHandle) -> None:
    """Follow a job's log, showing flotilla's lines (progress, errors) and leaving Ray's console to its log."""
    pending = ""  # Ray hands the log over in chunks: a line may span two, a chunk may hold many
    for chunk in handle.tail(follow=True):
        *lines, pending = (pending + chunk).split("\n")
        for line in lines:
            if line.startswith(OURS):
                console.print(line.rstrip(), markup=False, highlight=False)
    if pending.startswith(OURS):
        console.print(pending.rstrip(), markup=False, highlight=False)


def run_demo(repo: str = "faces", console: Console | None = None, n: int = 6000) -> None:
    console = console or Console(emoji=False)
    settings = Settings.from_env()
    say = lambda m: console.print(f"[dim]{m}[/]")
    hub_status = local.up(settings, report=say)
    console.print(f"[green]✓[/] {hub_status.describe()}")
    with console.status("starting a local Ray cluster (dashboard on 127.0.0.1)"):
        cl = cluster.up(settings, report=say)
    console.print(f"[green]✓[/] {cl.describe()}")

    hub = Hub(settings=settings)
    r = hub.ensure_repo(repo)
    if "demo" not in list_datasets(r, "main"):
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*cols, console=console) as bar:
            task = bar.add_task("synthetic faces → ingest branch → gate", total=n)
            res = generate(
                hub, repo, "demo", n, seed=0, report_dir=Path("artifacts/reports"), on_progress=lambda k: bar.advance(task, k)
            )
        merged = (res.merge_commit or "")[:12]  # generate() raises unless the gate passed and main took the merge
        console.print(
            f"[green]✓[/] dataset demo: {n} faces validated and merged into main ({merged}); report {res.report_paths.get('png')}"
        )
    else:
        console.print("[green]✓[/] dataset demo already on main")
    data_commit = r.resolve("main")

    handle = submit(DEMO_JOB, settings=settings, hub=hub)
    console.print(
        f"[green]✓[/] submitted sweep job [bold]{handle.submission_id}[/] (data pinned to {data_commit[:12]}); "
        f"its progress (everything: flotilla jobs logs {handle.submission_id}):"
    )
    _stream_ours(console, handle)
    final = handle.wait()
    result = handle.result()
    if final != "SUCCEEDED" or not result or not result.get("ok"):
        raise FlotillaError(
            f"the demo sweep job ended {final}: {(result or {}).get('error', 'see its logs')}",
            hint=f"flotilla jobs logs {handle.submission_id}",
        )
    _summary(console, hub, repo, cl, data_commit, result, hub_status.ui)
    _active_round(console, hub, repo, settings, say)
    _audit_and_page(console, hub, repo, say, settings.home / "runs" / "demo-audit" / "ray.log")


def _audit_and_page(console: Console, hub: Hub, repo: str, say: Callable[[str], None], log: Path) -> None:
    """The demo's coda: the data audited by the production model, and the page that shows the data and the audit.

    The audit's batch inference starts a Ray in this process: its console goes to ``log``, as ``flotilla
    train``'s does; ``say`` still reaches the terminal (the console is bound to it before the redirect).
    """
    from flotilla.audit import audit_dataset  # cleanlab and scikit-learn: only when auditing

    here = Console(file=sys.stdout, emoji=False)
    say(f"auditing the demo data (Ray's console: {log})")
    with ray_console(log, Console(file=sys.stderr, emoji=False)):
        audit = audit_dataset(
            hub, "main", "demo", "face-family@production", repo=repo, on_progress=lambda m: here.print(f"[dim]{m}[/]")
        )
    s = audit.summary
    flagged = ", ".join(f"{k} {v}" for k, v in s.issues.items() if v) or "nothing flagged"
    console.print(f"[green]✓[/] audit {s.audit_id} of {s.rows} faces: {flagged}; findings on [bold]{audit.branch}[/]")
    console.print(f"  review them in Label Studio: flotilla data review {s.audit_id} --send")
    page = data_report(hub, repo, "main", "demo", out=Path("artifacts/reports/demo-data.html"))
    console.print(f"[green]✓[/] the data report (counts, slices, sample grids, the audit's worst, provenance): {page}")


def _active_round(console: Console, hub: Hub, repo: str, settings: Settings, say: Callable[[str], None]) -> None:
    """The demo's last act: one active-learning round on Label Studio, as a Ray job (jobs/active_round_demo.yaml)."""
    r = hub.repo(repo)
    have = list_datasets(r, "main")
    if "demo-pool" not in have:
        generate(hub, repo, "demo-pool", 2000, seed=100, labelled=False)
    if "demo-eval" not in have:  # a fixed evaluation set: small, so its rarest age x gender cells are allowed to be thin
        generate(hub, repo, "demo-eval", 1000, seed=101, thresholds=Thresholds(min_group_count=5))
    with console.status("starting Label Studio (first time: its own virtualenv, about 2 minutes)"):
        ls = labelstudio.up(settings, report=say)
    console.print(f"[green]✓[/] Label Studio {ls.url} (login in {settings.label_dir / 'credentials.json'})")
    handle = submit(AL_JOB, settings=settings, hub=hub)
    console.print(
        f"[green]✓[/] submitted active-learning round [bold]{handle.submission_id}[/]; "
        f"its progress (everything: flotilla jobs logs {handle.submission_id}):"
    )
    _stream_ours(console, handle)
    final, result = handle.wait(), handle.result() or {}
    if final != "SUCCEEDED":
        raise FlotillaError(f"the demo's active-learning round ended {final}", hint=f"flotilla jobs logs {handle.submission_id}")
    word = "promoted the retrained model" if result.get("promote") else "kept the production model"
    reasons = "; ".join(result.get("reasons", []))
    console.print(f"[green]✓[/] round {result.get('round')}: {result.get('received')} labels received; {word}: {reasons}")
    console.print(f"  the round's story: lakectl log lakefs://{repo}/{result.get('branch')}; Label Studio: {ls.url}")


def _summary(console: Console, hub: Hub, repo: str, cl, data_commit: str, result: dict, ui: str) -> None:
    winner = result.get("winner") or {}
    t = Table(title="flotilla demo — summary", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")  # URIs and paths to copy: wrapped, never cut with "…"
    t.add_row("Ray dashboard", cl.address)
    t.add_row("lakeFS hub", hub.endpoint)
    t.add_row("lakeFS web UI", ui or f"{hub.endpoint}/")  # where it is and how to log in, or why it was not built
    t.add_row("data commit", f"lakefs://{repo}/{data_commit}")
    t.add_row("sweep", f"{result.get('sweep_id')}: {len(result.get('trials', []))} trials")
    t.add_row("winner", f"{winner.get('trial_id')}  params {json.dumps(winner.get('params', {}), sort_keys=True)}")
    for k, v in sorted((winner.get("metrics") or {}).items()):
        if not k.endswith("/n"):
            t.add_row(f"  {k}", f"{v:.4f}")
    t.add_row("promoted into main", str(result.get("promotion_commit") or "-")[:12])
    if result.get("alias"):
        t.add_row("alias", f"{result['alias']}  (flotilla models list / show {result['alias']})")
    run_id = winner.get("run_id")
    if run_id:
        card = json.loads(hub.repo(repo).get("main", f"models/{run_id}/family/card.json"))
        t.add_row("model", f"lakefs://{repo}/main/models/{run_id}/family/model.pt")
        data, code = card["data"], card["code"]
        t.add_row("  lineage: data", f"{data['repo']}@{data['commit'][:12]} ({data['dataset']}, from {data['ref']})")
        t.add_row("  lineage: code", f"flotilla {code['flotilla_version']} git {str(code['git_sha'])[:12]} dirty={code['dirty']}")
        t.add_row("  lineage: branch", card["branch"])
        t.add_row("  lineage: parent", str((card.get("parent") or {}).get("uri", "none (trained from scratch)")))
    for name, path in (result.get("plots") or {}).items():
        t.add_row(f"plot {name}", path)
    console.print(t)
    if note := missing_plots_note(result.get("plots") or {}, [tr.get("status", "") for tr in result.get("trials") or []]):
        console.print(f"[dim]{note}[/]")
    console.print(
        "Hub and cluster keep running. Explore: [bold].venv/bin/flotilla sweep show "
        f"{result.get('sweep_id')}[/], [bold].venv/bin/flotilla models list[/], the dashboard above, or lakeFS's web UI above.\n"
        "Stop them with: [bold].venv/bin/flotilla label down; .venv/bin/flotilla cluster down && .venv/bin/flotilla hub down[/]"
    )
