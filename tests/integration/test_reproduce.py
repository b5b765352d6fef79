"""reproduce on a real lakeFS and a real local Ray: a fresh model comes back inside its tolerance; a card
edited to point at other data, a data commit the hub lacks and other code are refused before anything trains."""

from __future__ import annotations

import json

import pytest
from tests.integration.helpers import tiny
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.errors import CodeDriftError, LineageError, NotFoundError
from flotilla.lineage import ModelCommit
from flotilla.registry import read_card, resolve
from flotilla.settings import (
    FLOTILLA_CODE_SHA,
    LAKECTL_CREDENTIALS_ACCESS_KEY_ID,
    LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY,
    LAKECTL_SERVER_ENDPOINT_URL,
)
from flotilla.training import reproduce, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = "repro-tests"


@pytest.fixture(scope="module")
def model(hub, local_ray):
    """The tiny family the tolerances were measured on (docs/models.md), trained and merged into main."""
    hub.ensure_repo(REPO)
    generate(hub, REPO, "faces", 900, seed=5, thresholds=Thresholds(min_group_count=3))
    result = train(tiny("fam", data={"repo": REPO}, merge_into="main"), hub=hub)
    yield result
    hub.delete_repo(REPO)


def cli(hub, *args: str):
    creds = hub.credentials
    env = {
        "COLUMNS": "200",
        LAKECTL_SERVER_ENDPOINT_URL: creds.endpoint,
        LAKECTL_CREDENTIALS_ACCESS_KEY_ID: creds.access_key_id,
        LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY: creds.secret_access_key,
    }
    return CliRunner().invoke(app, ["models", "reproduce", *args, "--repo", REPO], env=env)


def repro_branches(hub) -> list[str]:
    return [b for b in hub.repo(REPO).branches() if b.startswith("exp-repro-")]


def test_a_fresh_model_reproduces_inside_its_tolerance_on_its_own_branch(hub, model):
    r = hub.repo(REPO)
    main_before = r.resolve("main")
    out = cli(hub, model.run_id)
    assert out.exit_code == 0, out.output
    assert f"every metric of {model.run_id}/family within its tolerance" in out.output
    rows = {cells[1]: cells[2:] for line in out.output.splitlines() if len(cells := [c.strip() for c in line.split("│")]) == 8}
    for metric in ("age/mae", "gender/accuracy", "emotion/accuracy", "emotion/macro_f1", "age/n"):
        card, reproduced, _, tolerance, mark = rows[metric][:5]
        assert mark == "✓" and tolerance.startswith("±") and float(reproduced) == pytest.approx(float(card), abs=1), rows
    (branch,) = repro_branches(hub)
    run_id = branch.removeprefix("exp-")
    assert run_id.startswith(f"repro-{model.run_id}-")
    assert r.resolve("main") == main_before  # never merged: a reproduction is evidence, not a candidate
    card = read_card(r, resolve(hub, run_id, REPO))
    original = read_card(r, resolve(hub, model.run_id, REPO))
    assert card.data.commit == original.data.commit == model.data.commit and card.data.ref == model.data.commit
    assert card.config["seed"] == original.config["seed"] and card.config["merge_into"] is None and card.parent is None


def test_a_card_edited_to_point_at_other_data_is_refused_naming_both_commits(hub, model):
    r = hub.repo(REPO)
    r.put("main", "notes/fix.txt", b"a later data commit")
    other = r.commit("main", "later data").id
    card_path = f"models/{model.run_id}/family/card.json"
    r.create_branch("tampered", "main")
    card = json.loads(r.get("tampered", card_path))
    card["data"]["commit"] = other
    r.put("tampered", card_path, json.dumps(card))
    r.commit("tampered", "point the card at newer data")
    published = model.models[0].commit
    before = repro_branches(hub)
    address = f"lakefs://{REPO}/tampered/models/{model.run_id}/family/"
    with pytest.raises(LineageError) as err:
        reproduce(hub, address, repo=REPO)
    msg = err.value.message
    assert f"data commit is {other[:12]}" in msg and f"trained on {model.data.commit[:12]}" in msg, msg
    assert f"({published[:12]})" in msg and published[:12] in (err.value.hint or "")
    # the CLI: exit 1 with the error, no traceback
    out = cli(hub, address)
    assert out.exit_code == 1 and "does not match the commit that published the model" in out.output, out.output
    # an edit elsewhere in the card (its config: what would be re-run) is refused too, naming the field
    card = json.loads(r.get("main", card_path))
    card["config"]["epochs"] = 1
    r.put("tampered", card_path, json.dumps(card))
    r.commit("tampered", "fewer epochs")
    with pytest.raises(LineageError, match=r"config\.epochs was edited"):
        reproduce(hub, address, repo=REPO)
    assert repro_branches(hub) == before  # nothing trained


def test_a_data_commit_the_hub_lacks_is_refused(hub, model):
    """A card that agrees with its model commit, both naming data the repository does not have."""
    r = hub.repo(REPO)
    gone = "0" * 64
    original = json.loads(r.get("main", f"models/{model.run_id}/family/card.json"))
    r.create_branch("lost-data", "main")
    card = {**original, "run_id": "lost", "data": {**original["data"], "commit": gone}}
    r.put("lost-data", "models/lost/family/card.json", json.dumps(card))
    r.put("lost-data", "models/lost/family/model.pt", b"weights")
    record = ModelCommit("lost", "family", gone, original["code"]["git_sha"])
    r.commit("lost-data", "a model of data that is gone", record.to_metadata())
    with pytest.raises(NotFoundError, match=f"data commit '{gone}' .* does not exist in repository '{REPO}'"):
        reproduce(hub, f"lakefs://{REPO}/lost-data/models/lost/family/model.pt", repo=REPO)


def test_other_code_is_refused_unless_drift_is_allowed(hub, model, monkeypatch):
    monkeypatch.setenv(FLOTILLA_CODE_SHA, "f" * 40)  # as job submission hands a job its code version
    before = repro_branches(hub)
    with pytest.raises(CodeDriftError) as err:
        reproduce(hub, model.run_id, repo=REPO)
    sha = read_card(hub.repo(REPO), resolve(hub, model.run_id, REPO)).code["git_sha"]
    assert f"git sha {sha[:12]} trained it, ffffffffffff is checked out" in err.value.message
    assert "--allow-code-drift" in (err.value.hint or "") and f"git checkout {sha}" in (err.value.hint or "")
    assert repro_branches(hub) == before
