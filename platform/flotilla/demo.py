"""The reference workflow behind ``make demo``; it grows as the platform does.

Today: bring the local hub up, ensure the repository, run a small experiment on
its own branch (write, commit, merge into main) and show the log of main.
"""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.table import Table

from flotilla.hub import Hub, Retention, local
from flotilla.settings import Settings


def run_demo(repo: str = "faces", console: Console | None = None) -> None:
    console = console or Console()
    settings = Settings.from_env()
    st = local.up(settings, report=lambda m: console.print(f"[dim]{m}[/]"))
    console.print(f"[green]✓[/] {st.describe()}")
    hub = Hub(settings=settings)
    r = hub.ensure_repo(repo)
    console.print(f"[green]✓[/] repository [bold]{repo}[/] (lakeFS {hub.version()})")
    if not r.exists("main", "README.md"):
        r.put("main", "README.md", f"# {repo}\n\nThe flotilla data hub for the face model family.\n")
        r.commit("main", "Initialise the data hub", {"flotilla.step": "init"})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with r.experiment(f"demo {stamp}", source="main", merge_into="main", retention=Retention(on_success="delete")) as exp:
        console.print(f"[green]✓[/] experiment branch [bold]{exp.branch}[/] pinned to {exp.base_commit[:12]}")
        exp.put("experiments/demo/notes.json", json.dumps({"created": stamp, "what": "hub demo"}))
    console.print(f"[green]✓[/] committed {exp.commit_id[:12]} and merged into main as {exp.merge_commit[:12]}")
    table = Table(title=f"lakefs://{repo}/main — log")
    for col in ("commit", "message", "metadata"):
        table.add_column(col)
    for c in r.log("main", limit=8):
        table.add_row(c.id[:12], c.message, ", ".join(f"{k}={v}" for k, v in c.metadata.items())[:80])
    console.print(table)
    console.print(
        f"The hub keeps running at {st.endpoint} (web UI there; credentials in {settings.hub_dir / 'credentials.json'}).\n"
        "Stop it with: [bold].venv/bin/flotilla hub down[/]"
    )
