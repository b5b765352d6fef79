"""Step 4: warm-start retrain on the round's data, judge old vs new on a fixed evaluation set, promote only if better.

The new model starts from the production model's weights (``transfer``, heads included) and trains
on the round branch — the training dataset with this round's labelled samples appended. Both models
are then scored on the **fixed evaluation set** (a labelled dataset at main, pinned; no round may
select from it) and :func:`~flotilla.active.decision.decide` applies the stated rule. Promotion is:
the run's models merged into main (which brings the round's appended data with them, through the
gate's pre-merge hook), the round branch merged after them (its record), and the alias moved to
the new run. Refused, nothing reaches main. Either way the decision — both models' metrics, the
reasons — is a commit on the round branch (and on main when promoted).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flotilla.active.decision import decide
from flotilla.active.evaluate import evaluate
from flotilla.active.rounds import RoundState, read_state
from flotilla.data.pinning import resolve_data
from flotilla.errors import ActiveLearningError
from flotilla.hub.client import Hub
from flotilla.lineage import ActiveRound
from flotilla.registry import read_card, resolve
from flotilla.registry.aliases import move_alias
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import merge_family, train

Say = Callable[[str], None]


def retrain_spec(card_config: dict[str, Any], *, data_ref: str, dataset: str, source: str, epochs: int | None) -> dict[str, Any]:
    """The production model's own spec, moved to the round's data and warm-started from it; merging is the decision's."""
    spec = copy.deepcopy(card_config)
    spec["data"] = {**dict(spec.get("data") or {}), "ref": data_ref, "dataset": dataset}
    spec["transfer"] = {"source": source, "load_heads": True}
    spec["merge_into"] = None
    spec["alias"] = None
    if epochs:
        spec["epochs"] = epochs
    return spec


def retrain_round(
    hub: Hub | None,
    repo: str,
    name: str,
    k: int | None = None,
    *,
    eval_dataset: str,
    alias: str | None = None,
    epochs: int | None = None,
    tolerance: dict[str, float] | None = None,
    address: str | None = None,
    say: Say | None = None,
) -> RoundState:
    """Retrain round ``k`` of ``name``, decide, and promote (merge + move ``alias``) only when the rule says so."""
    say = say or (lambda _: None)
    hub = hub or Hub()
    r = hub.repo(repo)
    state = read_state(r, name, k)
    alias = alias or state.params.get("alias")
    if state.step != "received":
        raise ActiveLearningError(
            f"round {state.round} of {name!r} is at step {state.step!r}: retraining needs its labels received first",
            hint="flotilla al receive" if state.step == "sent" else "start a new round (flotilla al select)",
        )
    if eval_dataset in (state.pool_dataset, state.train_dataset):
        raise ActiveLearningError(
            f"the evaluation set cannot be the pool or the training data ({eval_dataset!r})",
            hint="keep a separate labelled dataset that no round selects from",
        )
    old = resolve(hub, state.model_uri, repo)
    card = read_card(hub.repo(old.repo), old)
    eval_ref = resolve_data(hub, repo, "main", eval_dataset)
    head = r.resolve(state.branch)
    spec = parse_spec(
        FamilySpec, retrain_spec(dict(card.config), data_ref=head, dataset=state.train_dataset, source=old.uri, epochs=epochs)
    )
    say(f"round {state.round}: warm-start retraining {old.name} on {state.train_dataset}@{head[:12]}")
    result = train(spec, hub=hub, address=address)
    new = resolve(hub, result.run_id, repo)
    image_size = int(spec.data.image_size)
    old_m, new_m = evaluate(hub, old, eval_ref, image_size=image_size), evaluate(hub, new, eval_ref, image_size=image_size)
    keys = sorted(k for k in old_m if not k.endswith("/n"))
    decision = decide(old_m, new_m, keys, tolerance)
    detail = {
        "old": {"model": old.uri, **old_m},
        "new": {"model": new.uri, "run_id": result.run_id, **new_m},
        "eval": {"dataset": eval_dataset, "commit": eval_ref.commit},
        **decision.to_dict(),
    }
    decided = state.advance("decided", decision=detail)
    r.put(state.branch, state.dir + "round.json", decided.to_json())
    verdict = "promote" if decision.promote else "keep the old model"
    r.commit(
        state.branch,
        f"Round {state.round} of {name}: {verdict} — " + "; ".join(decision.reasons),
        ActiveRound(name, state.round, "decide", state.model_uri, head, detail).to_metadata(),
    )
    say(f"round {state.round}: {verdict} ({'; '.join(decision.reasons)})")
    if decision.promote:
        merge_family(r, result.models, "main", result.run_id)
        r.merge(state.branch, "main", f"Active learning {name} round {state.round}: promoted {result.run_id}")
        if alias:
            move_alias(r, state.family, alias, result.run_id, into="main", reason=f"active learning {name} round {state.round}")
        say(f"round {state.round}: {result.run_id} merged into main" + (f", {state.family}@{alias} moved to it" if alias else ""))
    return decided
