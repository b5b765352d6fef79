"""``flotilla infer MODEL --data REPO/REF/DATASET``: batch inference, thin over :func:`flotilla.loop.infer`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from flotilla.cli.common import friendly, parse_data
from flotilla.cli.output import flag
from flotilla.hub import Hub

console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


@friendly
def infer_command(
    model: str = typer.Argument(..., help="run id, <family>@<alias> or lakefs:// URI of the model"),
    data: str = typer.Option(..., "--data", help="<repo>/<ref>/<dataset> to predict on"),
    split: str = typer.Option(None, "--split", help="train | val | test (default: every sample)"),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="images per predictor call"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="predictor actors (each loads the model once)"),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", min=0.01, help="CPUs each actor holds"),
    use_gpu: bool = flag("--use-gpu", help="one GPU per actor"),
    allow_resize: bool = flag("--allow-resize", help="accept images of another size than the training data's"),
    merge_into: str = typer.Option(None, "--merge-into", help="merge the predictions into this branch (e.g. main)"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
) -> None:
    """Predict every sample of a dataset with a model on Ray Data; commit the predictions on an infer-* branch."""
    from flotilla.loop import infer

    repo, ref, dataset = parse_data(data, "--data")
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=err, transient=False) as bar:
        task = bar.add_task(f"infer {dataset}", total=None)
        result = infer(
            Hub(),
            model,
            repo=repo,
            data_ref=ref,
            dataset=dataset,
            split=split,
            batch_size=batch_size,
            concurrency=concurrency,
            cpus_per_actor=cpus_per_actor,
            use_gpu=use_gpu,
            allow_resize=allow_resize,
            merge_into=merge_into,
            address=address,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(
        f"[green]✓[/] {result.rows} predictions of {escape(result.model_uri)} at {result.samples_per_s:.0f} samples/s",
        highlight=False,
    )
    console.print(f"  committed on [bold]{result.branch}[/] as {result.commit[:12]}: {escape(result.path)}", highlight=False)
    if result.merge_commit:
        console.print(f"[green]✓[/] merged into {escape(merge_into)} as {result.merge_commit[:12]}", highlight=False)
