"""The data version as a sweep dimension, end to end, on a real lakeFS and a real local Ray.

A dataset is ingested on main and tagged ``raw``; a third of its gender labels are then fixed
(``relabel``: a branch, the validation gate, one merge). A sweep whose space picks ``data.ref`` from
``[raw, main]`` trains on both commits: each trial's card, the results and the table say which
commit it read, and the winner is promoted into main whichever version it trained on — a winner trained on ``raw`` (an
ancestor of main) brings its model only, never the labels main has since fixed.
"""

import json
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from flotilla.cli import app
from flotilla.data import relabel
from flotilla.data.api import generate
from flotilla.data.store import read_labels
from flotilla.data.validate import Thresholds
from flotilla.lineage import PromotionCommit, read_commit
from flotilla.specs import parse_spec
from flotilla.tune import SweepResult, SweepSpec, load_result, sweep
from flotilla.tune.report import SHORT_SHA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
REPO = "variant-tests"
SMALL = Thresholds(min_group_count=2)


@dataclass(frozen=True)
class Versions:
    raw: str  # the ingest's commit, tagged 'raw'
    fixed: str  # main after the label fix merged (its validated merge commit)
    raw_gender: list[int]
    fixed_gender: list[int]


def gender(repo, ref: str) -> list[int]:
    return read_labels(repo, ref, "faces").column("gender").to_pylist()


def spec(name: str, *, space: dict, trials: int, data: dict | None = None) -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": name,
            "base": {
                "name": "fam",
                "data": {"repo": REPO, "dataset": "faces", "image_size": 32},
                "model": {"width": 4},
                "epochs": 2,
                "batch_size": 64,
                "scaling": {"workers": 1, "cpus_per_worker": 0.5},
                "tracking": {"wandb": False},
                "failure": {"max_failures": 0},
            },
            **({"data": data} if data else {}),
            "space": {**space, "optim.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
            "objective": {"metric": "val/gender/accuracy", "mode": "max"},
            # seed 0: Optuna's random sampler picks main for the first trial and raw for the second
            "searcher": {"type": "random", "seed": 0},
            "scheduler": {"type": "none"},
            "budget": {"trials": trials, "concurrency": 2, "trial_cpus": 0.25},
        },
    )


@pytest.fixture(scope="module")
def versions(hub) -> Versions:
    repo = hub.ensure_repo(REPO)
    generate(hub, REPO, "faces", 300, seed=11, thresholds=SMALL)
    raw = repo.tag("raw", "main")
    labels = read_labels(repo, "main", "faces").to_pylist()
    wrong = labels[::3]  # a third of the gender labels were wrong: the fix goes through the gate in one merge
    fix = relabel(hub, REPO, "faces", {x["sample_id"]: {"gender": 1 - x["gender"]} for x in wrong}, reason="gender audit")
    assert fix.changed == {"gender": len(wrong)} and fix.merge_commit == repo.resolve("main") != raw
    return Versions(raw, fix.merge_commit, gender(repo, raw), gender(repo, fix.merge_commit))


@pytest.fixture(scope="module")
def by_version(hub, versions, sweep_ray) -> SweepResult:
    space = {"data.ref": {"type": "choice", "values": ["raw", "main"]}}
    return sweep(spec("versions", space=space, trials=2), hub=hub, sweep_id="versions")


def only_its_model(repo, before: str, run_id: str) -> None:
    """What a promotion added to main since ``before``: the run's model and checkpoints, and nothing else
    (no data path; ``runs/`` is the empty directory marker S3 clients leave on the way to ``runs/<run>/``)."""
    ours = (f"models/{run_id}/", f"runs/{run_id}/")
    changed = {c.path for c in repo.diff(before, "main")}
    assert any(p.startswith(ours[0]) for p in changed), changed
    assert all(p.startswith(ours) or p == "runs/" for p in changed), changed


def promoted(repo, result: SweepResult) -> PromotionCommit:
    head = repo.commit_info("main")
    assert head.id == result.promotion_commit, "the promotion is not main's head"
    record = read_commit(head.metadata)
    assert isinstance(record, PromotionCommit) and record.trial_id == result.winner.trial_id
    return record


def test_a_sweep_over_data_versions_trains_on_both_and_says_which_commit_each_trial_read(hub, hub_settings, versions, by_version):
    repo, result = hub.repo(REPO), by_version
    pinned = {"raw": versions.raw, "main": versions.fixed}
    assert result.data_commits == pinned
    assert sorted(t.params["data.ref"] for t in result.trials) == ["main", "raw"], "the seed no longer tries both: pick another"
    assert all(t.status == "completed" for t in result.trials)
    for t in result.trials:
        ref = t.params["data.ref"]
        assert (t.data_ref, t.data_commit) == (ref, pinned[ref])
        # the trial's own card, on its branch: the commit it read and the ref that named it
        card = json.loads(repo.get(t.branch, f"models/{t.run_id}/family/card.json"))
        assert (card["data"]["commit"], card["data"]["ref"]) == (pinned[ref], ref), t.trial_id
        assert repo.commit_info(t.branch).metadata["flotilla.data_commit"] == pinned[ref]
    saved = load_result("versions", hub.settings)  # results.json, what 'flotilla sweep show' reads
    assert {t.trial_id: t.data_commit for t in saved.trials} == {t.trial_id: t.data_commit for t in result.trials}
    shown = CliRunner().invoke(
        app, ["sweep", "show", "versions"], env={"COLUMNS": "250", "FLOTILLA_HOME": str(hub_settings.home)}
    )
    assert shown.exit_code == 0 and "data commit" in shown.output, shown.output
    for t in result.trials:
        row = next(line for line in shown.output.splitlines() if t.trial_id in line)
        assert t.data_commit[:SHORT_SHA] in row and t.data_ref in row, row
    w = result.winner
    assert f"trained on data {w.data_ref} @ {w.data_commit[:SHORT_SHA]}" in shown.output

    # the winner is on main, whichever version it trained on; main keeps its fixed labels
    record = promoted(repo, result)
    assert record.data_commit == pinned[w.data_ref] == w.data_commit
    card = json.loads(repo.get("main", f"models/{w.run_id}/family/card.json"))
    assert (card["data"]["commit"], card["data"]["ref"]) == (w.data_commit, w.data_ref)
    assert gender(repo, "main") == versions.fixed_gender != versions.raw_gender
    only_its_model(repo, versions.fixed, w.run_id)


def test_the_version_the_first_winner_did_not_train_on_is_promoted_as_cleanly(hub, versions, by_version):
    """The other case of promotion, made sure of: a sweep trained on the version the first one's winner
    did not read. A winner trained on ``raw`` is merged as its model alone: main's labels stay fixed."""
    repo = hub.repo(REPO)
    other = "raw" if by_version.winner.data_ref == "main" else "main"
    before = repo.resolve("main")
    result = sweep(spec("other", space={}, trials=1, data={"ref": other}), hub=hub, sweep_id="other-version")
    w = result.winner
    assert (w.data_ref, w.data_commit) == (other, versions.raw if other == "raw" else before)
    record = promoted(repo, result)
    assert record.data_commit == w.data_commit
    card = json.loads(repo.get("main", f"models/{w.run_id}/family/card.json"))
    assert (card["data"]["commit"], card["data"]["ref"]) == (w.data_commit, other)
    assert gender(repo, "main") == versions.fixed_gender, "promoting a winner trained on raw reverted the label fix"
    only_its_model(repo, before, w.run_id)
    # both sweeps' models are on main, each with the data commit it read
    first = by_version.winner
    assert json.loads(repo.get("main", f"models/{first.run_id}/family/card.json"))["data"]["commit"] == first.data_commit
