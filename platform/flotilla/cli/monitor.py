"""``flotilla monitor MODEL --current REF``: drift and ground-truth checks, thin over :func:`flotilla.loop.monitor`.

Exit codes, for cron and CI: 0 no alarm, 3 drift found or a task degraded (the report says which),
1 the check could not run (a bad model, ref or dataset: the message says what to fix).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.cli.common import friendly
from flotilla.cli.output import flag, with_output
from flotilla.hub import Hub

console = Console(emoji=False)
err = Console(stderr=True, emoji=False)
ALARM = 3


@with_output
@friendly
def monitor_command(
    model: str = typer.Argument(..., help="run id, <family>@<alias> or lakefs:// URI of the model"),
    current: str = typer.Option(..., "--current", help="ref (branch, tag, commit) of the data to check"),
    repo: str = typer.Option("faces", "--repo", help="repository of the current data (and of the model, unless a URI)"),
    dataset: str = typer.Option(None, "--dataset", help="dataset at --current (default: the model's training dataset)"),
    split: str = typer.Option(None, "--split", help="train | val | test of the current data (default: every sample)"),
    alpha: float = typer.Option(0.05, "--alpha", help="family-wise significance of the drift alarm"),
    ground_truth: bool = flag("--ground-truth", help="also compare each task's metric on the labelled current samples"),
    tolerance: float = typer.Option(0.0, "--tolerance", help="degradation (metric units) a task may lose before it is flagged"),
    permutations: int = typer.Option(500, "--permutations", help="MMD permutations (p-values down to 1/(1+this))"),
    no_infer: bool = flag("--no-infer", help="use committed predictions only; never run inference"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="predictor actors when inference is needed"),
    use_gpu: bool = flag("--use-gpu", help="one GPU per predictor actor"),
    address: str = typer.Option(None, "--address", help="Ray cluster address for inference (default: a local Ray)"),
    merge_into: str = typer.Option(None, "--merge-into", help="merge the report into this branch (e.g. main)"),
    out: Path = typer.Option(Path("artifacts/monitoring"), "--out", help="where the report's files go locally"),
    as_json: bool = flag("--json", help="print the report's JSON instead of a summary"),
) -> None:
    """Compare the data at --current with the model's own training data; exit 3 on drift (with --ground-truth: degradation)."""
    from flotilla.loop import monitor

    result = monitor(
        Hub(),
        model,
        repo=repo,
        current=current,
        dataset=dataset,
        split=split,
        alpha=alpha,
        ground_truth_check=ground_truth,
        tolerance=tolerance,
        permutations=permutations,
        infer_missing=not no_infer,
        infer_options={"concurrency": concurrency, "use_gpu": use_gpu, "address": address},
        merge_into=merge_into,
        out_dir=out,
    )
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
    elif result.verdict is None:
        console.print(f"[green]✓[/] no drift: {escape(result.message)}", highlight=False)
    else:
        word = "[red bold]DRIFT[/]" if result.drifted else "[green]no drift[/]"
        console.print(f"{word} in {escape(result.current.get('dataset', ''))} for {escape(result.model)} at alpha {alpha:g}")
        for t in result.verdict.tests:
            mark = "[red]✗[/]" if t.rejected else " "
            console.print(
                f"  {mark} {t.name:<22} {t.result.method:<8} p={t.result.p_value:.3g} (Holm {t.adjusted_p:.3g})", highlight=False
            )
        for s in result.shifted_slices()[:5]:
            console.print(f"  shifted slice: {escape(s)}", highlight=False)
        gt = result.ground_truth
        for c in gt.tasks if gt else ():
            mark = "[red]degraded[/]" if c.degraded else "ok"
            console.print(
                f"  ground truth {c.task} {c.metric}: {c.reference:.3f} → {c.current:.3f} "
                f"(worse by {c.degradation:+.3f}, 95% CI {c.ci_low:+.3f}..{c.ci_high:+.3f}, n={c.n_current}) {mark}",
                highlight=False,
            )
        for c in gt.degraded_slices()[:5] if gt else ():
            console.print(
                f"  degraded slice: {c.task} {c.metric} on {c.slice_column}={escape(c.slice_value)} by {c.degradation:+.3f}"
            )
        console.print(f"  report: {escape(result.local_dir)}/report.html", highlight=False)
        if result.branch:
            console.print(f"  committed on [bold]{escape(result.branch)}[/] under {escape(result.report_path)}", highlight=False)
    if result.alarm:
        raise typer.Exit(ALARM)
