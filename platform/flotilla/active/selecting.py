"""Step 1 of a round: score every unlabelled pool sample with the production model and commit the K chosen.

The scores come from committed predictions (found, or made on Ray Data by
:func:`~flotilla.loop.inference.ensure_predictions`): per-task uncertainty
(:mod:`~flotilla.loop.uncertainty`; age by the k-NN committee spread against the model's own
labelled validation samples), the anomaly score against the training commit's embeddings, then the
strategy (:mod:`~flotilla.loop.selection`). Samples are eligible when the pool has no label for them,
no earlier round of this name chose them, and the training dataset does not hold them yet.

The round branch ``al-<name>-round-<k>`` is cut from the pool's content commit; it gets
``selection.parquet`` (ids, order, every score), one PNG per chosen image (what Label Studio will
show) and ``round.json``, in one commit with an :class:`~flotilla.lineage.ActiveRound` record.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from flotilla.active.rounds import RoundState, check_name, image_path, next_round, parquet_bytes, read_table, round_branch, rounds
from flotilla.data.loader import HubDataset
from flotilla.data.pinning import DataRef, resolve_data
from flotilla.data.store import read_labels
from flotilla.errors import ActiveLearningError, NotFoundError
from flotilla.hub.client import Hub
from flotilla.hub.experiment import Retention
from flotilla.lineage import ActiveRound
from flotilla.loop.inference import ensure_predictions
from flotilla.loop.predictions import content_commit, prediction_column, read_predictions
from flotilla.loop.selection import choose_strategy, select_samples
from flotilla.loop.slices import aligned_labels
from flotilla.loop.uncertainty import task_uncertainties
from flotilla.models.tasks import resolve_tasks
from flotilla.registry import read_card, resolve
from flotilla.registry.address import split_alias

Say = Callable[[str], None]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def eligible(repo_name: str, hub: Hub, pool: DataRef, name: str, train_dataset: str, exclude: set[str]) -> np.ndarray:
    """Per pool row (labels-table order): unlabelled, not chosen by an earlier round, not in the training data."""
    repo = hub.repo(repo_name)
    labels = read_labels(repo, pool.commit, pool.dataset)
    ids = labels.column("sample_id").to_pylist()
    unlabelled = np.ones(len(ids), dtype=bool)
    for col in ("age", "gender", "emotion"):
        unlabelled &= np.asarray(labels.column(col).is_null().to_pylist(), dtype=bool)
    taken = set(exclude)
    for k in rounds(repo, name):
        chosen = read_table(repo, round_branch(name, k), f"active/{name}/round-{k:03d}/selection.parquet")
        taken |= set(chosen.column("sample_id").to_pylist())
    with contextlib.suppress(NotFoundError):  # no training dataset on main yet: nothing to exclude
        taken |= set(read_labels(repo, "main", train_dataset).column("sample_id").to_pylist())
    out: np.ndarray = unlabelled & np.array([sid not in taken for sid in ids], dtype=bool)
    return out


def select_round(
    hub: Hub | None,
    model: str,
    *,
    repo: str,
    pool_ref: str,
    pool_dataset: str,
    name: str,
    budget: int,
    strategy: str | None = None,
    weights: dict[str, float] | None = None,
    quotas: bool = False,
    cold_start: bool = False,
    eval_dataset: str | None = None,
    seed: int = 0,
    infer_options: dict[str, Any] | None = None,
    say: Say | None = None,
) -> RoundState:
    """Choose ``budget`` samples of ``pool_dataset`` for ``model`` to learn from next; commit them as round k of ``name``."""
    say = say or (lambda _: None)
    hub = hub or Hub()
    check_name(name)
    location = resolve(hub, model, repo)
    card = read_card(hub.repo(location.repo), location)
    tasks = resolve_tasks(list(card.tasks))
    family = str(card.config.get("name") or location.run_id)
    train_dataset = card.data.dataset
    if pool_dataset in (eval_dataset,):
        raise ActiveLearningError(
            f"the pool {pool_dataset!r} is the evaluation set: no round may select from the data it is judged on",
            hint="keep a separate labelled dataset for evaluation (--eval)",
        )
    pool = content_commit(hub.repo(repo), resolve_data(hub, repo, pool_ref, pool_dataset))
    exclude: set[str] = set()
    if eval_dataset:
        exclude = set(read_labels(hub.repo(repo), "main", eval_dataset).column("sample_id").to_pylist())
    ok = eligible(repo, hub, pool, name, train_dataset, exclude)
    if not ok.any():
        raise ActiveLearningError(
            f"dataset {pool_dataset!r} at {pool_ref!r} has no unlabelled sample left to select "
            "(every one is labelled, chosen by an earlier round, or already in the training data)",
            hint="add new unlabelled data to the pool (flotilla data generate --unlabelled / import), or stop here",
        )
    if budget < 1 or budget > int(ok.sum()):
        raise ActiveLearningError(
            f"a budget of {budget} for {int(ok.sum())} selectable pool sample(s)",
            hint=f"choose a budget between 1 and {int(ok.sum())}",
        )
    run = dict(infer_options or {})
    reference = content_commit(
        hub.repo(card.data.repo), DataRef(card.data.repo, card.data.commit, card.data.dataset, card.data.ref)
    )
    pool_preds = read_predictions(hub.repo(repo), ensure_predictions(hub, location, pool, None, run=run, say=say, what="pool"))
    ref_preds = read_predictions(
        hub.repo(reference.repo), ensure_predictions(hub, location, reference, "val", run=run, say=say, what="reference")
    )
    pool_ids = [str(s) for s in pool_preds.column("sample_id").to_pylist()]
    keep = dict(zip(read_labels(hub.repo(repo), pool.commit, pool.dataset).column("sample_id").to_pylist(), ok, strict=True))
    rows = np.array([keep.get(s, False) for s in pool_ids], dtype=bool)
    columns = {c: prediction_column(pool_preds, c, "pool")[rows] for c in _columns(tasks)}
    ref_ids = [str(s) for s in ref_preds.column("sample_id").to_pylist()]
    ref_labels = aligned_labels(ref_ids, HubDataset(reference, hub.credentials).labels, [t.label or t.name for t in tasks])
    ref_emb = prediction_column(ref_preds, "embedding", "reference")
    regression = [t for t in tasks if t.kind == "regression"]
    labelled = ~np.isnan(np.stack([ref_labels[t.label or t.name] for t in regression])).any(axis=0) if regression else None
    chosen_strategy = choose_strategy(
        strategy, labelled=int(card.metrics.get("train/n", 0) or len(ref_ids)), cold_start=cold_start
    )
    uncertainty = None
    if chosen_strategy in ("uncertainty", "uncertainty+diversity"):
        uncertainty = task_uncertainties(
            columns,
            {t.name: t.kind for t in tasks},
            labelled_embedding=ref_emb[labelled] if labelled is not None else None,
            labelled_targets={t.name: ref_labels[t.label or t.name][labelled] for t in regression}
            if labelled is not None
            else None,
        )
    say(f"selecting {budget} of {int(rows.sum())} pool samples by {chosen_strategy}")
    selection = select_samples(
        budget,
        embedding=columns["embedding"],
        uncertainty=uncertainty,
        strategy=chosen_strategy,
        weights=weights,
        quotas=quotas,
        reference_embedding=ref_emb,
        seed=seed,
    )
    import pyarrow as pa

    ids = np.array(pool_ids, dtype=object)[rows]
    table = pa.table({k: (list(v) if k == "sample_id" else v) for k, v in selection.table(ids).items()})
    k = next_round(hub.repo(repo), name)
    state = RoundState(
        name, k, repo, location.uri, family, pool.dataset, pool.commit, train_dataset, chosen_strategy, budget,
        {**dict(selection.params), "eval_dataset": eval_dataset, "alias": (split_alias(model) or ("", None))[1]},
        branch=round_branch(name, k),
    )  # fmt: skip
    wanted = set(table.column("sample_id").to_pylist())
    data = HubDataset(pool, hub.credentials)
    r = hub.repo(repo)
    # cut from the ref's head, not the pool's content commit: the training data the round appends to is main's of now
    head = r.resolve(pool_ref)
    exp = r.transact(f"{name}-round-{k}", head, branch=state.branch, retention=Retention(on_success="keep", on_failure="delete"))
    with exp:
        written = 0
        for i in range(len(data.manifest.shards)):
            for sid, image in zip(*data.shard_samples(i), strict=True):
                if sid in wanted:
                    exp.put(image_path(name, k, sid), _png(image))
                    written += 1
        if written != len(wanted):
            raise ActiveLearningError(f"{len(wanted) - written} chosen sample(s) have no image in {pool.dataset!r}")
        exp.put(state.dir + "selection.parquet", parquet_bytes(table))
        exp.put(state.dir + "round.json", state.to_json())
        record = ActiveRound(name, k, "select", location.uri, pool.commit, {"strategy": chosen_strategy, "budget": budget})
        exp.commit(
            f"Round {k} of {name}: {budget} sample(s) of {pool.dataset} selected by {chosen_strategy}", record.to_metadata()
        )
    say(f"round {k} of {name!r}: {budget} sample(s) committed on {state.branch}")
    return state


def _columns(tasks: list[Any]) -> list[str]:
    out = ["embedding"]
    for t in tasks:
        out.append(t.name)
        if t.kind != "regression":
            out.append(f"{t.name}_probs")
    return out
