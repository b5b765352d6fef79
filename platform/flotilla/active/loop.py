"""A whole round in one call — select, send, label, receive, retrain and decide — what ``flotilla al round`` runs as a Ray job.

Labelling is the one step that waits on the world: ``annotator="scripted"`` (demo, tests: the
synthetic truth through Label Studio's API) or ``"people"``, which polls Label Studio until every task
of the round has an annotation or ``wait_s`` passes, then receives what is there (the rest is
reported as unlabelled). Each step is the same function the CLI's single steps call, so a round
stopped at any point is continued with those.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from flotilla.active.receiving import receive_round
from flotilla.active.retraining import retrain_round
from flotilla.active.rounds import RoundState
from flotilla.active.selecting import select_round
from flotilla.active.sending import send_round
from flotilla.active.truth import annotate_round
from flotilla.hub.client import Hub
from flotilla.labelstudio import LabelStudioClient

Say = Callable[[str], None]
POLL_S = 10.0


def wait_for_labels(client: LabelStudioClient, project_id: int, *, wait_s: float, say: Say, poll_s: float = POLL_S) -> int:
    """Poll until every task of ``project_id`` has an annotation (or ``wait_s`` passes); the tasks done."""
    deadline = time.monotonic() + wait_s
    while True:
        tasks = client.tasks(project_id)
        done = sum(1 for t in tasks if t.total_annotations + t.cancelled_annotations > 0)
        say(f"waiting for labels: {done}/{len(tasks)} task(s) done")
        if done == len(tasks) or time.monotonic() >= deadline:
            return done
        time.sleep(poll_s)


def run_round(
    hub: Hub | None,
    model: str,
    *,
    repo: str,
    pool_ref: str,
    pool_dataset: str,
    name: str,
    budget: int,
    eval_dataset: str,
    client: LabelStudioClient,
    strategy: str | None = None,
    epochs: int | None = None,
    annotator: Literal["scripted", "people"] = "people",
    wait_s: float = 3600.0,
    address: str | None = None,
    say: Say | None = None,
) -> RoundState:
    """Run one round end to end; the final state carries the decision (``state.decision``)."""
    say = say or (lambda _: None)
    hub = hub or Hub()
    state = select_round(
        hub, model, repo=repo, pool_ref=pool_ref, pool_dataset=pool_dataset, name=name, budget=budget,
        strategy=strategy, eval_dataset=eval_dataset, infer_options={"address": address}, say=say,
    )  # fmt: skip
    sent = send_round(hub, repo, name, state.round, client=client, say=say)
    assert sent.project_id is not None
    if annotator == "scripted":
        say(f"scripted annotator: {annotate_round(hub, repo, name, state.round, client=client)} task(s) annotated")
    else:
        say(f"label the round in Label Studio: {client.url}/projects/{sent.project_id}")
        wait_for_labels(client, sent.project_id, wait_s=wait_s, say=say)
    receive_round(hub, repo, name, state.round, client=client, say=say)
    return retrain_round(hub, repo, name, state.round, eval_dataset=eval_dataset, epochs=epochs, address=address, say=say)
