"""The scripted annotator: the synthetic generator's ground truth, submitted through Label Studio's API.

Tests and the demo cannot wait for a person, but the round trip must still go through the real
server: tasks are annotated with ``POST /api/tasks/<id>/annotations/`` exactly as the labelling UI
does, and received through the same export a person's work would be. The truth comes from the
generator's oracle (:func:`flotilla.data.synthetic.sample_labels`: labels of any index without
rendering), for the seed and spec the pool's manifest recorded. ``corrupt`` makes a bad annotator
(labels shuffled between tasks' samples) for the tests that must see a round refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flotilla.active.labelconfig import class_names, column
from flotilla.active.rounds import read_state
from flotilla.data.layout import Manifest
from flotilla.data.store import read_manifest
from flotilla.data.synthetic import FaceSpec, sample_labels
from flotilla.errors import ActiveLearningError
from flotilla.hub.client import Hub
from flotilla.labelstudio import LabelStudioClient
from flotilla.models.tasks import TaskSpec, resolve_tasks
from flotilla.registry import read_card, resolve

SYNTHETIC_ID = re.compile(r"\Asyn-(\d+)-(\d+)\Z")


def synthetic_truth(manifest: Manifest, sample_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """True labels (``age``, ``gender``, ``emotion``) of synthetic ``sample_ids``, from the pool's recorded seed and spec."""
    prov = manifest.provenance
    if prov.get("source") != "synthetic":
        raise ActiveLearningError(
            f"dataset {manifest.name!r} is not synthetic (source {prov.get('source')!r}): there is no ground truth to script",
            hint="label it in Label Studio by hand (al send, then al receive), or script a synthetic pool",
        )
    spec = FaceSpec.model_validate(prov.get("spec") or {})
    out: dict[str, dict[str, float]] = {}
    for sid in sample_ids:
        m = SYNTHETIC_ID.match(sid)
        if not m:
            raise ActiveLearningError(f"sample id {sid!r} is not a synthetic one (syn-<seed>-<index>)")
        labels = sample_labels(1, int(m.group(1)), spec, start=int(m.group(2)))
        out[sid] = {k: float(labels[k][0]) for k in ("age", "gender", "emotion")}
    return out


def annotation(tasks: Sequence[TaskSpec], truth: Mapping[str, float]) -> list[dict[str, Any]]:
    """Label Studio result items for one sample's true labels."""
    items: list[dict[str, Any]] = []
    for t in tasks:
        value = truth[column(t)]
        if t.kind == "regression":
            items.append({"from_name": column(t), "to_name": "image", "type": "number", "value": {"number": round(value, 1)}})
        else:
            items.append(
                {
                    "from_name": column(t),
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [class_names(t)[int(value)]]},
                }
            )
    return items


def scripted_labels(
    tasks: Sequence[TaskSpec], truth: Mapping[str, Mapping[str, float]], *, corrupt: bool = False, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Per sample id, the result items the scripted annotator submits; ``corrupt`` gives each sample another's labels."""
    ids = sorted(truth)
    given = list(ids)
    if corrupt:
        given = list(np.random.default_rng(seed).permutation(ids))
        given = given[1:] + given[:1] if given == ids and len(ids) > 1 else given
    return {sid: annotation(tasks, truth[src]) for sid, src in zip(ids, given, strict=True)}


def annotate_round(
    hub: Hub,
    repo: str,
    name: str,
    k: int | None = None,
    *,
    client: LabelStudioClient,
    corrupt: bool = False,
    leave: int = 0,
    seed: int = 0,
) -> int:
    """Annotate round ``k``'s tasks in Label Studio with the synthetic truth, through its API; the number annotated.

    ``leave``: that many tasks (the last ones) are left unannotated, as a person who stopped early
    would; ``corrupt``: every sample gets another's labels (a bad annotator).
    """
    r = hub.repo(repo)
    state = read_state(r, name, k)
    if state.project_id is None:
        raise ActiveLearningError(f"round {state.round} of {name!r} is not in Label Studio yet", hint="send it first")
    location = resolve(hub, state.model_uri, repo)
    tasks = resolve_tasks(list(read_card(hub.repo(location.repo), location).tasks))
    ls_tasks = sorted(client.tasks(state.project_id), key=lambda t: t.id)
    todo = ls_tasks[: len(ls_tasks) - leave] if leave else ls_tasks
    ids = [str(t.data.get("sample_id")) for t in todo]
    truth = synthetic_truth(read_manifest(r, state.pool_commit, state.pool_dataset), ids)
    results = scripted_labels(tasks, truth, corrupt=corrupt, seed=seed)
    for t, sid in zip(todo, ids, strict=True):
        client.annotate(t.id, results[sid])
    return len(todo)
