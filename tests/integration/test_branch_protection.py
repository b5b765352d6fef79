"""A protected main on a real lakeFS: every flotilla path still lands there by merge; a direct write is refused, clearly.

lakeFS's branch protection (open source) refuses uploads, deletes and commits on a protected branch and allows
merges. flotilla writes main only through merges of short-lived branches, so turning protection on must change
nothing for ingest, label fixes, appends, training with ``merge_into``, alias moves and sweep promotion, while
anything writing main directly hears which rule refused it and how to go through a merge instead.
"""

import uuid

import pytest
from typer.testing import CliRunner

from flotilla import registry
from flotilla.cli import app
from flotilla.data import read_labels, relabel
from flotilla.data.api import generate
from flotilla.data.validate import Thresholds
from flotilla.errors import ProtectedBranchError
from flotilla.hub import is_protected, protect, protection_rules, unprotect
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train
from flotilla.tune import SweepSpec, sweep

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
REPO = "protected-tests"


def refused_directly(repo, what: str) -> ProtectedBranchError:
    head = repo.resolve("main")
    with pytest.raises(ProtectedBranchError) as info:
        if what == "put":
            repo.put("main", "notes/direct.txt", b"written on main, not merged")
        elif what == "commit":
            repo.commit("main", "a commit straight on main", allow_empty=True)
        else:
            repo.delete("main", "notes/merged.txt")  # a bulk delete: lakeFS refuses it per object, in a 200
    assert repo.resolve("main") == head and not repo.uncommitted("main"), "main changed under a refused write"
    return info.value


def test_a_protected_branch_refuses_direct_writes_clearly_and_takes_merges(repo):
    repo.put("main", "notes/merged.txt", b"before protection")
    repo.commit("main", "before protection")  # lakeFS now holds main's settings (no rules) in its cache for seconds
    # ... and protect returns once the server enforces the rule anyway; a second call changes nothing
    assert protect(repo) is True and protect(repo) is False
    assert protection_rules(repo) == ["main"] and is_protected(repo, "main") and not is_protected(repo, "exp-x")
    for what in ("put", "commit", "delete"):
        err = refused_directly(repo, what)
        msg = str(err)
        # names the branch, the protection, the way in (a merge) and the way out (removing the rule)
        assert "'main'" in msg and "branch protection rule" in msg and "only merges" in msg, msg
        assert "merge_into" in msg and "flotilla hub protect" in msg and "--off" in msg, msg
    with repo.transact("through-a-merge", merge_into="main") as exp:
        exp.put("notes/merged.txt", b"in by merge")
    assert repo.get("main", "notes/merged.txt") == b"in by merge"
    assert len(repo.commit_info("main").parents) == 2
    # a glob rule protects every branch it matches; removing the exact rule lets direct commits through again
    assert protect(repo, "release-*") and is_protected(repo, "release-2")
    assert sorted(protection_rules(repo)) == ["main", "release-*"]
    assert unprotect(repo) is True and unprotect(repo) is False
    assert protection_rules(repo) == ["release-*"]
    repo.put("main", "notes/direct.txt", b"allowed again")  # unprotect returned once the server let writes through
    assert repo.commit("main", "direct, now that main is not protected").id == repo.resolve("main")


def test_a_repository_is_created_protected_when_asked(hub, monkeypatch):
    names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    try:
        assert protection_rules(hub.ensure_repo(names[0], protect=True)) == ["main"]
        assert protection_rules(hub.ensure_repo(names[1])) == []  # the embedded default: off
        monkeypatch.setenv("FLOTILLA_PROTECT_MAIN", "1")
        created = hub.ensure_repo(names[2])
        assert protection_rules(created) == ["main"]
        unprotect(created)
        # an existing repository's rules are its admin's: ensure_repo does not put one back
        assert protection_rules(hub.ensure_repo(names[2])) == []
    finally:
        for n in names:
            hub.delete_repo(n)


def test_the_cli_turns_protection_on_and_off(repo, jobs_env):
    runner = CliRunner()
    on = runner.invoke(app, ["hub", "protect", repo.name])
    assert on.exit_code == 0 and f"{repo.name}/main: protected" in on.output, on.output
    assert is_protected(repo, "main")
    off = runner.invoke(app, ["hub", "protect", repo.name, "--off", "--json"])
    assert off.exit_code == 0 and '"changed": true' in off.output and '"rules": []' in off.output, off.output
    bad = runner.invoke(app, ["hub", "protect", repo.name, "--branch", "no/slash"])
    assert bad.exit_code == 1 and "invalid branch id" in bad.output and "Traceback" not in bad.output


def _family(name: str, **over) -> dict:
    return {
        "name": name,
        "data": {"repo": REPO, "dataset": "faces"},
        "model": {"width": 4},
        "epochs": 1,
        "batch_size": 64,
        "scaling": {"workers": 1, "cpus_per_worker": 0.5},
        "tracking": {"wandb": False},
        **over,
    }


def _first_parents(repo, head: str, stop: str) -> list:
    """main's own history from ``head`` back to ``stop`` (excluded): what landed on main, one commit per landing."""
    out, ref = [], head
    while ref != stop:
        info = repo.commit_info(ref)
        out.append(info)
        ref = info.parents[0]
    return out


def test_ingest_fixes_training_aliases_and_sweeps_reach_a_protected_main_by_merges_only(hub, sweep_ray):
    repo = hub.ensure_repo(REPO, protect=True)
    try:
        created = repo.resolve("main")
        assert is_protected(repo, "main")
        # ingest: the gate's install and the dataset both arrive by merge
        generate(hub, REPO, "faces", 300, seed=3, thresholds=Thresholds(min_group_count=2))
        sid = read_labels(repo, "main", "faces").column("sample_id")[0].as_py()
        fix = relabel(hub, REPO, "faces", {sid: {"age": 41.0}}, reason="a label fix on a protected main")
        # a train run promoted into main with an alias
        run = train(parse_spec(FamilySpec, _family("guard", merge_into="main", alias="production")), hub=hub)
        (model,) = run.models
        assert registry.resolve(hub, "guard@production", REPO).run_id == run.run_id
        # a sweep promoting its winner (and moving an alias)
        spec = parse_spec(
            SweepSpec,
            {
                "name": "guarded",
                "base": _family("guard"),
                "space": {"optim.lr": {"type": "choice", "values": [0.003, 0.01]}},
                "objective": {"weights": {"val/gender/accuracy": 1.0}, "mode": "max"},
                "searcher": {"type": "random", "seed": 1},
                "scheduler": {"type": "none"},
                "budget": {"trials": 2, "concurrency": 2, "trial_cpus": 0.25},
                "promote": {"into": "main", "alias": "candidate"},
            },
        )
        swept = sweep(spec, hub=hub)
        assert swept.promotion_commit and registry.resolve(hub, "guard@candidate", REPO).run_id == swept.winner.run_id
        landed = _first_parents(repo, repo.resolve("main"), created)
        # every change of main since it was protected is a merge commit: nothing was committed on main itself
        assert landed and all(len(c.parents) == 2 for c in landed), [(c.message, c.parents) for c in landed]
        ids = {c.id for c in landed}
        assert {fix.merge_commit, model.merge_commit, swept.promotion_commit} <= ids
        messages = [c.message for c in landed]
        assert any("data validation gate" in m for m in messages) and any("validated dataset faces" in m for m in messages)
        for alias in ("production", "candidate"):  # the alias moves too: each its own merge
            assert any(m.startswith(f"Move guard@{alias} ") for m in messages), messages
        # ... and a direct write is still refused at the end
        refused_directly(repo, "commit")
        refused_directly(repo, "delete")
    finally:
        hub.delete_repo(REPO)
