"""``flotilla al select|send|annotate|receive|retrain|status|round``: active-learning rounds, thin over :mod:`flotilla.active`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.cli.common import friendly, parse_data
from flotilla.cli.output import flag
from flotilla.data.synthetic import MAX_SEED
from flotilla.errors import ActiveLearningError, SpecError
from flotilla.hub import Hub
from flotilla.specfiles import safe_yaml

al_app = typer.Typer(
    help="Active learning: select → label in Label Studio → gated append → retrain → promote if better.", no_args_is_help=True
)
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)
REPO = typer.Option("faces", "--repo", help="hub repository of the round")
ROUND = typer.Option(None, "--round", help="round number (default: the newest)")


def _say(msg: str) -> None:
    err.print(f"[dim]{escape(msg)}[/]")


@al_app.command("select")
@friendly
def select_command(
    model: str = typer.Argument(..., help="the production model: <family>@<alias>, a run id or a lakefs:// URI"),
    pool: str = typer.Option(..., "--pool", help="<repo>/<ref>/<dataset> of unlabelled samples"),
    budget: int = typer.Option(..., "--budget", help="how many samples to label this round"),
    name: str = typer.Option(..., "--name", help="the loop's name (branches al-<name>-round-<k>)"),
    strategy: str = typer.Option(None, "--strategy", help="random | typicality | uncertainty | uncertainty+diversity | anomaly"),
    quotas: bool = flag("--quotas", help="split the budget across tasks instead of one combined score"),
    cold_start: bool = flag("--cold-start", help="the model has seen no labels: random or typicality only"),
    eval_dataset: str = typer.Option(None, "--eval", help="the fixed evaluation set, never selected from"),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="seed of the selection's random draws, 0 to 2**32 - 1"),
) -> None:
    """Score every unlabelled pool sample with the model and commit the chosen ones on a round branch."""
    from flotilla.active import select_round

    repo, ref, dataset = parse_data(pool, "--pool")
    state = select_round(
        Hub(), model, repo=repo, pool_ref=ref, pool_dataset=dataset, name=name, budget=budget, strategy=strategy,
        quotas=quotas, cold_start=cold_start, eval_dataset=eval_dataset, seed=seed, say=_say,
    )  # fmt: skip
    console.print(
        f"[green]✓[/] round {state.round} of {escape(name)}: {state.budget} sample(s) by {state.strategy} on {state.branch}"
    )


@al_app.command("send")
@friendly
def send_command(name: str = typer.Argument(...), repo: str = REPO, k: int = ROUND) -> None:
    """Put the round's samples in Label Studio (flotilla label up first), predictions pre-filled."""
    from flotilla.active import send_round
    from flotilla.labelstudio import local_client

    client = local_client()
    state = send_round(Hub(), repo, name, k, client=client, say=_say)
    console.print(f"[green]✓[/] round {state.round} in Label Studio: {client.url}/projects/{state.project_id}")


@al_app.command("annotate")
@friendly
def annotate_command(
    name: str = typer.Argument(...),
    repo: str = REPO,
    k: int = ROUND,
    corrupt: bool = flag("--corrupt", help="a bad annotator: every sample gets another's labels"),
) -> None:
    """The scripted annotator (synthetic pools only): submit the generator's true labels through Label Studio's API."""
    from flotilla.active import annotate_round
    from flotilla.labelstudio import local_client

    n = annotate_round(Hub(), repo, name, k, client=local_client(), corrupt=corrupt)
    console.print(f"[green]✓[/] {n} task(s) annotated through Label Studio's API")


@al_app.command("receive")
@friendly
def receive_command(
    name: str = typer.Argument(...),
    repo: str = REPO,
    k: int = ROUND,
    allow_missing: bool = flag("--allow-missing", help="receive even if tasks were deleted in Label Studio"),
) -> None:
    """Read the annotations back and append the labelled samples to the training data on the round branch (gated)."""
    from flotilla.active import receive_round
    from flotilla.labelstudio import local_client

    state = receive_round(Hub(), repo, name, k, client=local_client(), allow_missing=allow_missing, say=_say)
    console.print(f"[green]✓[/] {state.received} sample(s) appended to {escape(state.train_dataset)} on {state.branch}")
    if state.unlabelled:
        console.print(f"  {len(state.unlabelled)} task(s) left unlabelled: {escape(', '.join(state.unlabelled[:10]))}")


@al_app.command("retrain")
@friendly
def retrain_command(
    name: str = typer.Argument(...),
    eval_dataset: str = typer.Option(..., "--eval", help="the fixed labelled evaluation dataset (at main)"),
    repo: str = REPO,
    k: int = ROUND,
    epochs: int = typer.Option(None, "--epochs", help="epochs of the warm-start retrain (default: the model's own)"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
) -> None:
    """Warm-start retrain, judge old vs new on the evaluation set, promote only when better; exit 3 when kept."""
    from flotilla.active import retrain_round

    state = retrain_round(Hub(), repo, name, k, eval_dataset=eval_dataset, epochs=epochs, address=address, say=_say)
    d = state.decision
    for c in d.get("comparisons", []):
        console.print(f"  {c['task']} {c['metric']}: {c['old']:.4g} → {c['new']:.4g} (tolerance {c['tolerance']:g})")
    word = "[green]promoted[/]" if d.get("promote") else "[yellow]kept the old model[/]"
    console.print(f"{word}: {escape('; '.join(d.get('reasons', [])))}")
    if not d.get("promote"):
        raise typer.Exit(3)


@al_app.command("status")
@friendly
def status_command(name: str = typer.Argument(...), repo: str = REPO, k: int = ROUND) -> None:
    """The round's state (round.json on its branch)."""
    from flotilla.active import read_state

    console.print_json(json.dumps(json.loads(read_state(Hub().repo(repo), name, k).to_json())))


@al_app.command("round")
@friendly
def round_command(
    spec: Path = typer.Argument(..., help="an active-round job spec (e.g. jobs/active_round_demo.yaml)"),
    wait_for_labels: bool = flag("--wait-for-labels", help="people label in Label Studio: wait for them"),
    follow: bool = flag("--follow/--no-follow", default=True, help="stream the job's logs until it ends"),
) -> None:
    """Run a whole round (select → label → receive → retrain → decide) as one Ray job; exit 3 when the old model is kept."""
    from flotilla.jobs.submission import submit

    data = safe_yaml(spec.read_text(), str(spec))
    if not isinstance(data, dict) or data.get("kind") != "active-round":
        raise SpecError(f"{spec} is not an active-round job spec (kind: active-round)", hint="see jobs/active_round_demo.yaml")
    if wait_for_labels:
        data["annotator"] = "people"
    handle = submit(data)
    console.print(f"[green]✓[/] submitted round job [bold]{handle.submission_id}[/]")
    if not follow:
        return
    for line in handle.tail(follow=True):
        if line.strip():
            console.print(line.rstrip(), markup=False, highlight=False)
    final, result = handle.wait(), handle.result() or {}
    if final != "SUCCEEDED" or not result.get("ok", True):
        raise ActiveLearningError(
            f"the round job ended {final}: {result.get('error', 'see its logs')}",
            hint=f"flotilla jobs logs {handle.submission_id}",
        )
    word = "[green]promoted[/]" if result.get("promote") else "[yellow]kept the old model[/]"
    console.print(f"{word}: {escape('; '.join(result.get('reasons', [])))}")
    if not result.get("promote"):
        raise typer.Exit(3)
