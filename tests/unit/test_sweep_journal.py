"""The trial journal (resume's source of truth), what resume repairs from it, and the one owner of trial branches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.errors import HubUnavailableError
from flotilla.hub.client import Hub
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.repo import Repo
from flotilla.settings import Settings
from flotilla.tune import repair, tune_state
from flotilla.tune.branches import TrialBranches
from flotilla.tune.journal import (
    BranchDeleted,
    Ended,
    Event,
    Journal,
    Ledger,
    Lost,
    PlacementGroupFreed,
    Reported,
    Running,
    TrialStart,
    finished,
    fold,
    reached_target,
)
from flotilla.tune.results import SweepResult, TrialRecord, journal_record


def test_every_record_reads_back_as_written_and_as_an_older_flotilla_wrote_it(tmp_path):
    journal = Journal(tmp_path / "lifecycle.jsonl")
    written = [
        Reported("t1", 1, 0.5, {"val/score": 0.5}),
        Running("t1", "trial-s-t1", True),
        Ended(Event.STOPPED, "t1", "trial-s-t1", 1),
        BranchDeleted("t1", "trial-s-t1"),
        Lost("t2"),
        PlacementGroupFreed("abcd"),
    ]
    for record in written:
        journal.append(record)
    assert journal.records() == written
    lines = [json.loads(x) for x in journal.path.read_text().splitlines()]  # the keys bench/hpo.py and older resumes read
    assert lines[0] == {
        "trial_id": "t1",
        "event": "result",
        "iteration": 1,
        "value": 0.5,
        "metrics": {"val/score": 0.5},
        "t": written[0].t,
    }
    assert [x["event"] for x in lines] == ["result", "running", "stopped", "branch_deleted", "lost", "placement_group_freed"]

    older = tmp_path / "older.jsonl"  # before reports carried metrics and ends their epochs; a kill mid-line; a newer kind
    older.write_text(
        "\n".join(
            [
                json.dumps({"trial_id": "a", "event": "result", "iteration": 1, "value": 0.3, "t": 1}),
                json.dumps({"trial_id": "a", "branch": "trial-s-a", "event": "running", "seen_live": None, "t": 2}),
                json.dumps({"trial_id": "a", "event": "complete", "t": 3}),
                '{"trial_id": "b", "eve',
                json.dumps({"trial_id": "b", "event": "something_newer", "t": 4}),
            ]
        )
        + "\n"
    )
    (a,) = Journal(older).trials().values()
    assert a.curve == (Reported("a", 1, 0.3, {}, 1.0),) and a.branch == "trial-s-a" and not a.seen_live
    assert a.ends == (Event.COMPLETE,) and a.finished and a.best("max") is None  # no metrics: nothing to publish by
    with pytest.raises(ValueError):
        Ended(Event.LOST, "a", None, 0)


def test_a_trials_state_is_its_records_folded_in_order():
    states = fold(
        [
            Running("done", "trial-s-done", True),
            Reported("done", 1, 0.5, {"val/score": 0.5}),
            Reported("done", 2, 0.95, {"val/score": 0.95}),
            Ended(Event.COMPLETE, "done", "trial-s-done", 2),
            Reported("other", 1, 0.3, {"val/score": 0.3}),
            Running("other", "trial-s-other", None),
            Ended(Event.ERRORED, "e", None, 0),
            Ended(Event.ERRORED, "r", None, 1),
            Ended(Event.COMPLETE, "r", None, 3),
            Ended(Event.STOPPED, "s", None, 1),
            Running("l", "trial-s-l", True),
            Lost("gone"),
            PlacementGroupFreed("abcd"),
        ]
    )
    assert set(states) == {"done", "other", "e", "r", "s", "l", "gone"}  # the placement group is nobody's
    assert states["done"].seen_live and not states["other"].seen_live
    assert reached_target(states, 0.9, "max") == "done" and reached_target(states, 0.99, "max") is None
    assert reached_target(states, 0.4, "min") == "other"
    # the last end counts: an errored trial is re-run by the resume, one re-run and finished is done
    assert finished(states) == {"done", "r", "s"}
    assert states["e"].ends == (Event.ERRORED,) and not states["e"].ever_finished and states["r"].ever_finished
    assert states["gone"].lost and not states["gone"].ends
    best = fold([Reported("x", 1, 0.2, {"m": 1.0}), Reported("x", 2, 0.8, {"m": 2.0}), Reported("x", 3, 0.8, {"m": 3.0})])["x"]
    assert best.best("max") == best.curve[1] and best.best("min") == best.curve[0]  # ties: the earlier epoch


def test_a_start_tune_never_saved_is_lost_unless_it_finished_and_a_cut_short_state_is_set_aside(tmp_path):
    exp, d = tmp_path / "tune" / "s", tmp_path
    exp.mkdir(parents=True)
    older = {"trial_data": [[json.dumps({"trial_id": "a", "status": "TERMINATED"}), "{}"]]}
    (exp / "experiment_state-2026-11-27_10-00-00.json").write_text(json.dumps(older))
    newest = exp / "experiment_state-2026-11-27_11-00-00.json"
    newest.write_text(json.dumps(older)[:20])  # the driver died while Tune copied it
    assert tune_state.saved_trial_ids(exp) == {"a"}
    assert not newest.exists() and (exp / f".{newest.name}.unreadable").exists()  # Tune now reads the older one
    (d / "ledger.jsonl").write_text("".join(json.dumps({"trial_id": t}) + "\n" for t in ("a", "b", "c")))  # older lines: ids only
    (d / "lifecycle.jsonl").write_text(json.dumps({"trial_id": "b", "event": "complete", "t": 0}) + "\n")
    assert repair.journal_lost_starts(exp, d, "s") == {"c"}  # b finished: its model is on its branch, not lost
    assert repair.journal_lost_starts(exp, d, "s") == set()  # journalled once
    lines = [json.loads(x) for x in (d / "lifecycle.jsonl").read_text().splitlines()]
    assert [(e["trial_id"], e["event"]) for e in lines] == [("b", "complete"), ("c", "lost")]
    assert tune_state.saved_trial_ids(tmp_path / "nothing") == set()  # no saved state: every start is lost
    Ledger(d / "ledger.jsonl").append(TrialStart("d", {"optim.lr": 0.1}))
    assert [s.trial_id for s in Ledger(d / "ledger.jsonl").starts()] == ["a", "b", "c", "d"]


class _Branches(Repo):
    """A repository that holds branches only: what TrialBranches asks of the hub."""

    def __init__(self, branches: set[str], down: bool = False) -> None:
        creds = HubCredentials("http://127.0.0.1:1", "AKIAEXAMPLE", "secret")
        super().__init__(Hub(credentials=creds, settings=Settings(home=Path("/nonexistent"), cache=Path("/nonexistent"))), "rep")
        self.held, self.down = branches, down

    def branches(self) -> list[str]:
        if self.down:
            raise HubUnavailableError("the lakeFS hub does not answer")
        return sorted(self.held)

    def delete_branch(self, branch: str, *, missing_ok: bool = False) -> None:
        if self.down:
            raise HubUnavailableError("the lakeFS hub does not answer")
        self.held.discard(branch)


def _record(trial_id: str, status: str) -> TrialRecord:
    return TrialRecord(trial_id, {}, status, 3 if status == "completed" else 1, {"val/score": 0.5}, f"trial-s-{trial_id}")


def test_trial_branches_are_deleted_by_one_owner_while_the_sweep_runs_and_at_its_end(tmp_path):
    journal = Journal(tmp_path / "lifecycle.jsonl")
    repo = _Branches({f"trial-s-{t}" for t in ("won", "done", "stop", "err", "lost")} | {"main"})
    branches = TrialBranches(repo, journal, "s", keep="winner")
    branches.on_end("stop", "trial-s-stop", Event.STOPPED)  # while the sweep runs: at once
    branches.on_end("done", "trial-s-done", Event.COMPLETE)  # a finished trial may win: decided at the end
    assert "trial-s-stop" not in repo.held and "trial-s-done" in repo.held
    won, done, err = _record("won", "completed"), _record("done", "completed"), _record("err", "errored")
    result = SweepResult("s", str(tmp_path), {}, "val/score", "max", trials=[won, done, err], winner=won)
    journal.append(Lost("lost"))
    branches.at_sweep_end(result, journal.trials())
    assert repo.held == {"main", "trial-s-won"}  # keep: winner; the lost start goes too
    assert (won.kept, done.kept, err.kept) == (True, False, False)
    deleted = [r.trial_id for r in journal.records() if isinstance(r, BranchDeleted)]
    assert deleted == ["stop", "done", "err", "lost"]  # every deletion journalled

    kept_all = _Branches({"trial-s-stop"})
    TrialBranches(kept_all, journal, "s", keep="all").on_end("stop", "trial-s-stop", Event.STOPPED)
    assert kept_all.held == {"trial-s-stop"}

    down = _Branches({"trial-s-x"}, down=True)  # a hub that does not answer: logged, never raised; resume retries
    assert not TrialBranches(down, journal, "s", keep="winner").delete("x", "trial-s-x")
    x = _record("x", "stopped")
    TrialBranches(down, journal, "s", keep="winner").at_sweep_end(
        SweepResult("s", str(tmp_path), {}, "val/score", "max", trials=[x]), {}
    )
    assert x.kept is False and down.held == {"trial-s-x"}


def test_a_trial_that_finished_before_tune_saved_it_is_ranked_from_the_journal():
    """Killed within Tune's save period of the trial's start: Tune's results lack it, the journal has its
    reports and its end, the ledger its params; the record ranks it by its best epoch, as the trial
    published that epoch's checkpoint."""
    records = [
        Reported("t1", 1, 0.4, {"val/score": 0.4}),
        Reported("t1", 2, 0.7, {"val/score": 0.7}),
        Reported("t1", 3, 0.6, {"val/score": 0.6}),
        Ended(Event.COMPLETE, "t1", "trial-s-t1", 3),
    ]
    state = fold(records)["t1"]
    rec = journal_record(
        state, {"optim.lr": 0.01, "data.ref": "v2"}, "s", 3, "max", commits={"v2": "c2", "main": "c1"}, base_ref="main"
    )
    assert (rec.trial_id, rec.status, rec.epochs, rec.metrics) == ("t1", "completed", 3, {"val/score": 0.7})
    assert rec.branch == "trial-s-t1" and (rec.data_ref, rec.data_commit) == ("v2", "c2")
    stopped = journal_record(fold([records[0], Ended(Event.STOPPED, "t1", None, 1)])["t1"], {}, "s", 3, "max", base_ref="main")
    assert (stopped.status, stopped.epochs, stopped.data_ref) == ("pruned", 1, "main")
