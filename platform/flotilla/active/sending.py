"""Step 2: the round's samples as tasks in Label Studio, images proxied from the round branch, predictions pre-filled.

The project (one per round, ``flotilla <name> round <k>``) gets the family's labelling config
(:mod:`~flotilla.active.labelconfig`) and an S3 source storage on lakeFS's S3 gateway — bucket = the
repository, prefix = ``<round branch>/active/<name>/round-<k>/images/``, ``presign`` off, so Label
Studio proxies the bytes and the browser never needs lakeFS. Each task is one chosen sample:
``data = {image: s3://…, sample_id}``, with the model's predictions as a pre-annotation whose
``score`` is ``1 − combined uncertainty`` (Label Studio's uncertainty sampling serves the lowest
first). Sending twice reuses the project and imports nothing again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flotilla.active.labelconfig import label_config, prediction_items
from flotilla.active.rounds import RoundState, image_path, read_state, read_table
from flotilla.data.pinning import DataRef
from flotilla.errors import ActiveLearningError
from flotilla.hub.client import Hub
from flotilla.labelstudio import LabelStudioClient
from flotilla.lineage import ActiveRound
from flotilla.loop.inference import ensure_predictions
from flotilla.loop.predictions import prediction_column, read_predictions
from flotilla.models.tasks import resolve_tasks
from flotilla.registry import read_card, resolve

Say = Callable[[str], None]


def project_title(state: RoundState) -> str:
    return f"flotilla {state.name} round {state.round}"


def send_round(
    hub: Hub | None, repo: str, name: str, k: int | None = None, *, client: LabelStudioClient, say: Say | None = None
) -> RoundState:
    """Put round ``k`` (default: the newest) of ``name`` in Label Studio; return the round's state (``step="sent"``)."""
    say = say or (lambda _: None)
    hub = hub or Hub()
    r = hub.repo(repo)
    state = read_state(r, name, k)
    if state.step not in ("selected", "sent"):
        raise ActiveLearningError(f"round {state.round} of {name!r} is past sending (step {state.step!r})")
    location = resolve(hub, state.model_uri, repo)
    tasks = resolve_tasks(list(read_card(hub.repo(location.repo), location).tasks))
    project = client.ensure_project(
        project_title(state), label_config(tasks), sampling="Uncertainty sampling", model_version=location.run_id
    )
    if state.step == "sent" and state.project_id == project.id and client.tasks(project.id):
        say(f"round {state.round} is in Label Studio already (project {project.id})")
        return state
    selection = read_table(r, state.branch, state.dir + "selection.parquet")
    ids = [str(s) for s in selection.column("sample_id").to_pylist()]
    combined = selection.column("combined").to_numpy() if "combined" in selection.column_names else np.zeros(len(ids))
    pool = DataRef(repo, state.pool_commit, state.pool_dataset)
    preds = read_predictions(r, ensure_predictions(hub, location, pool, None))
    row = {str(s): i for i, s in enumerate(preds.column("sample_id").to_pylist())}
    values = {t.name: prediction_column(preds, t.name) for t in tasks}
    images_prefix = f"{state.branch}/{state.dir}images/"
    if not client.s3_storages(project.id):
        creds = hub.credentials
        client.create_s3_storage(
            project.id,
            title=f"lakeFS {repo}/{state.branch}",
            endpoint=creds.endpoint,
            bucket=repo,
            prefix=images_prefix,
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
        )
    payload = []
    for sid, c in zip(ids, combined, strict=True):
        i = row[sid]
        items = prediction_items(tasks, {t.name: values[t.name][i] for t in tasks})
        payload.append(
            {
                "data": {"image": f"s3://{repo}/{state.branch}/{image_path(name, state.round, sid)}", "sample_id": sid},
                "meta": {"flotilla_round": state.round, "flotilla_name": name},
                "predictions": [{"model_version": location.run_id, "score": float(1.0 - c), "result": items}],
            }
        )
    client.import_tasks(project.id, payload)
    sent = state.advance("sent", project_id=project.id)
    record = ActiveRound(
        name, state.round, "send", state.model_uri, state.pool_commit, {"project": project.id, "tasks": len(payload)}
    )
    r.put(state.branch, state.dir + "round.json", sent.to_json())
    r.commit(state.branch, f"Round {state.round} of {name}: {len(payload)} task(s) sent to Label Studio", record.to_metadata())
    say(f"round {state.round}: {len(payload)} task(s) in Label Studio project {project.id} ({project.title!r})")
    return sent
