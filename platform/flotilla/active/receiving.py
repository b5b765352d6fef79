"""Step 3: the annotations back from Label Studio, checked, and appended to the training dataset through the gate.

Label Studio's export is mapped back to sample ids (``data.sample_id``) and label columns
(:func:`~flotilla.active.labelconfig.parse_annotations`): every bad value is named at once and
nothing is written. Tasks left unlabelled or skipped are reported (``unlabelled`` in the round's
state), never invented; a round task deleted in Label Studio is an error unless ``allow_missing``.
The labelled samples, with their original image bytes from the pool, are appended to the training
dataset **on the round branch** (:func:`flotilla.data.append`: new shards and a label delta, the gate
judging the whole dataset). main is untouched until the retrained model earns its promotion.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from flotilla.active.labelconfig import column, parse_annotations, require_valid
from flotilla.active.rounds import RoundState, parquet_bytes, read_state, read_table
from flotilla.data.appending import append
from flotilla.data.layout import Sample
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef
from flotilla.errors import ActiveLearningError
from flotilla.hub.client import Hub
from flotilla.labelstudio import LabelStudioClient
from flotilla.lineage import ActiveRound
from flotilla.models.tasks import resolve_tasks
from flotilla.registry import read_card, resolve

Say = Callable[[str], None]


def _pool_samples(hub: Hub, pool: DataRef, labels: dict[str, dict[str, object]]) -> list[Sample]:
    """The labelled samples with their pool images as stored (encoded bytes and format, not re-encoded)."""
    data = HubDataset(pool, hub.credentials)
    out: list[Sample] = []
    for shard in data.manifest.shards:
        table = data.read_shard(shard)
        for sid, image, fmt in zip(*(table.column(c).to_pylist() for c in ("sample_id", "image", "format")), strict=True):
            if sid in labels:
                row = labels[sid]
                out.append(Sample(sid, image, fmt, row.get("age"), row.get("gender"), row.get("emotion"), source="label studio"))  # type: ignore[arg-type]
    return out


def receive_round(
    hub: Hub | None,
    repo: str,
    name: str,
    k: int | None = None,
    *,
    client: LabelStudioClient,
    allow_missing: bool = False,
    say: Say | None = None,
) -> RoundState:
    """Read round ``k``'s annotations and append the labelled samples to the training dataset on the round branch."""
    say = say or (lambda _: None)
    hub = hub or Hub()
    r = hub.repo(repo)
    state = read_state(r, name, k)
    if state.step != "sent" or state.project_id is None:
        raise ActiveLearningError(
            f"round {state.round} of {name!r} is at step {state.step!r}: only a round sent to Label Studio can be received",
            hint="send it first (flotilla al send)" if state.step == "selected" else "start a new round (flotilla al select)",
        )
    location = resolve(hub, state.model_uri, repo)
    tasks = resolve_tasks(list(read_card(hub.repo(location.repo), location).tasks))
    exported = client.export(state.project_id)
    chosen = [str(s) for s in read_table(r, state.branch, state.dir + "selection.parquet").column("sample_id").to_pylist()]
    present = {str((t.get("data") or {}).get("sample_id")) for t in exported}
    missing = [s for s in chosen if s not in present]
    if missing and not allow_missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ActiveLearningError(
            f"{len(missing)} task(s) of round {state.round} are gone from Label Studio project {state.project_id}: {shown}; "
            "nothing was received",
            hint="send the round again (flotilla al send) to recreate them, or receive without them (--allow-missing)",
        )
    parsed = require_valid(
        parse_annotations(tasks, [t for t in exported if str((t.get("data") or {}).get("sample_id")) in set(chosen)])
    )
    unlabelled = tuple(s for s in chosen if s not in parsed.labels)
    if not parsed.labels:
        raise ActiveLearningError(
            f"no task of round {state.round} has an annotation yet ({len(unlabelled)} unlabelled): nothing to receive",
            hint=f"label them in Label Studio (project {state.project_id}), then receive again",
        )
    columns = [column(t) for t in tasks]
    received = pa.table(
        {"sample_id": list(parsed.labels), **{c: [parsed.labels[s].get(c) for s in parsed.labels] for c in columns}}
    )
    samples = _pool_samples(hub, DataRef(repo, state.pool_commit, state.pool_dataset), parsed.labels)
    r.put(state.branch, state.dir + "received.parquet", parquet_bytes(received))
    detail = {"received": len(samples), "unlabelled": len(unlabelled), "missing": len(missing)}
    r.commit(
        state.branch,
        f"Round {state.round} of {name}: {len(samples)} label(s) received",
        ActiveRound(name, state.round, "receive", state.model_uri, state.pool_commit, detail).to_metadata(),
    )
    say(f"round {state.round}: {len(samples)} labelled, {len(unlabelled)} left unlabelled, {len(missing)} missing")
    result = append(
        hub, repo, state.train_dataset, samples, into=state.branch, reason=f"active learning {name} round {state.round}"
    )
    done = state.advance("received", received=len(samples), unlabelled=unlabelled)
    r.put(state.branch, state.dir + "round.json", done.to_json())
    r.commit(
        state.branch,
        f"Round {state.round} of {name}: {len(samples)} sample(s) appended to {state.train_dataset}",
        ActiveRound(
            name, state.round, "append", state.model_uri, result.merge_commit or "", {"delta": result.delta}
        ).to_metadata(),
    )
    return done
