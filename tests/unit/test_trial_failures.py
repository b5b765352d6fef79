"""A trial's error is the infrastructure's or its own; only the infrastructure's keeps the trial's branch (issue 22).

A sweep trial that the hub (down past its retry budget), a lost connection or a dead Ray process
failed keeps its branch and checkpoints, and ``sweep resume`` continues it; one that failed by its
own fault (diverged, a bad spec, a bug) loses its branch as before, and no message names it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ray.exceptions import RayTaskError

from flotilla.errors import (
    DivergedError,
    FlotillaError,
    HubUnavailableError,
    InfrastructureError,
    NotFoundError,
    SpecError,
    is_infrastructure,
)
from flotilla.hub import identity
from flotilla.hub.client import Hub
from flotilla.hub.credentials import HubCredentials
from flotilla.hub.repo import Repo
from flotilla.hub.retry import has_answered
from flotilla.settings import Settings
from flotilla.specs import parse_spec
from flotilla.tune.branches import TrialBranches
from flotilla.tune.journal import INFRASTRUCTURE, OWN_FAULT, BranchDeleted, Ended, Event, Journal
from flotilla.tune.results import SweepResult, TrialRecord, error_cause, last_line, no_winner
from flotilla.tune.spec import SweepSpec


def _from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


class _WorkerGroupError(Exception):
    """Shaped as Ray Train's: the workers' own errors in ``worker_failures``."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__("training failed")
        self.worker_failures = failures


ActorDiedError = type("ActorDiedError", (Exception,), {})  # Ray's, matched by name: errors.py imports no Ray

INFRASTRUCTURE_CASES = {
    "the hub down past its retry budget": HubUnavailableError("the local lakeFS hub was down for 121 s"),
    "a training failure the hub caused": InfrastructureError("training 'family' failed: HubUnavailableError: ..."),
    "a refused connection": ConnectionRefusedError(111, "Connection refused"),
    "pyarrow's S3 gateway unreachable": OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7"),
    "a loader error raised from a lost connection": _from(RuntimeError("DataLoader worker failed"), ConnectionResetError()),
    "a dead Ray actor": ActorDiedError("The actor died unexpectedly"),
    "a Ray Train worker that lost the hub": _WorkerGroupError({0: ValueError("x"), 1: HubUnavailableError("down")}),
    "Tune's wrapper of a trial the hub failed": RayTaskError("trainable", "tb", InfrastructureError("x")).as_instanceof_cause(),
}

OWN_FAULT_CASES = {
    "a diverged model": DivergedError("age/mae is nan"),
    "a bad spec": SpecError("bad spec", ["epochs: not an int"]),
    "a plain flotilla error (training failed by a bug)": FlotillaError("training 'family' failed: KeyError: 'x'"),
    "a ref that does not exist": NotFoundError("no such branch"),
    "a bug": KeyError("x"),
    "out of memory": RuntimeError("CUDA out of memory"),
    "an unrelated OSError": OSError("No space left on device"),
    "a flotilla error decides, whatever it was raised from": _from(DivergedError("nan"), ConnectionResetError()),
    "Tune's wrapper of a diverged trial": RayTaskError("trainable", "tb", DivergedError("nan")).as_instanceof_cause(),
}


@pytest.mark.parametrize("exc", INFRASTRUCTURE_CASES.values(), ids=INFRASTRUCTURE_CASES.keys())
def test_the_infrastructure_failing_a_trial_is_told_from_its_own_fault(exc):
    assert is_infrastructure(exc)
    assert error_cause(exc) == INFRASTRUCTURE


@pytest.mark.parametrize("exc", OWN_FAULT_CASES.values(), ids=OWN_FAULT_CASES.keys())
def test_a_trials_own_fault_is_not_the_infrastructures(exc):
    assert not is_infrastructure(exc)
    assert error_cause(exc) == OWN_FAULT


def test_a_cycle_of_causes_ends_and_the_text_tune_keeps_of_an_unpicklable_error_is_classified_too():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not is_infrastructure(a)
    assert error_cause("Traceback ...\nflotilla.errors.InfrastructureError: training 'family' failed") == INFRASTRUCTURE
    assert error_cause("Traceback ...\nflotilla.errors.DivergedError: age/mae is nan") == OWN_FAULT
    assert issubclass(HubUnavailableError, InfrastructureError)


def test_a_trials_error_line_is_its_error_not_the_hint_that_names_its_branch():
    err = FlotillaError(
        "training 'family' of run r failed: ValueError: x", hint="the checkpoints so far are on branch 'trial-s-a'"
    )
    text = f"Traceback (most recent call last):\n  File ...\nflotilla.errors.FlotillaError: {err}"
    assert last_line(text) == "flotilla.errors.FlotillaError: training 'family' of run r failed: ValueError: x"
    assert "trial-s-a" not in last_line(text)


class _Branches(Repo):
    """A repository that holds branches only: what TrialBranches asks of the hub."""

    def __init__(self, branches: set[str]) -> None:
        creds = HubCredentials("http://127.0.0.1:1", "AKIAEXAMPLE", "secret")
        super().__init__(Hub(credentials=creds, settings=Settings(home=Path("/nonexistent"), cache=Path("/nonexistent"))), "rep")
        self.held = branches

    def branches(self) -> list[str]:
        return sorted(self.held)

    def delete_branch(self, branch: str, *, missing_ok: bool = False) -> None:
        self.held.discard(branch)


def _errored(trial_id: str, cause: str) -> TrialRecord:
    return TrialRecord(trial_id, {}, "errored", 1, {"val/score": 0.5}, f"trial-s-{trial_id}", error="boom", cause=cause)


def _spec() -> SweepSpec:
    return parse_spec(
        SweepSpec,
        {
            "name": "s",
            "base": {"name": "fam", "data": {"repo": "rep", "dataset": "d"}, "epochs": 3},
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "objective": {"metric": "val/age/mae", "mode": "min"},
        },
    )


def test_an_infrastructure_error_keeps_the_trials_branch_and_the_messages_name_only_kept_branches(tmp_path):
    journal = Journal(tmp_path / "lifecycle.jsonl")
    repo = _Branches({"main", "trial-s-hub", "trial-s-own"})
    branches = TrialBranches(repo, journal, "s", keep="winner")
    journal.append(Ended(Event.ERRORED, "hub", "trial-s-hub", 1, infrastructure=True))
    journal.append(Ended(Event.ERRORED, "own", "trial-s-own", 1))
    branches.on_end("hub", "trial-s-hub", Event.ERRORED, infrastructure=True)  # while the sweep runs
    branches.on_end("own", "trial-s-own", Event.ERRORED)
    assert repo.held == {"main", "trial-s-hub"}
    states = journal.trials()
    assert states["hub"].infrastructure and not states["own"].infrastructure
    assert '"cause": "infrastructure"' in journal.path.read_text().splitlines()[0]

    hub, own = _errored("hub", INFRASTRUCTURE), _errored("own", OWN_FAULT)
    result = SweepResult("s", str(tmp_path), {}, "val/score", "max", trials=[hub, own])
    branches.at_sweep_end(result, states)  # keep: winner, and there is none; the hub's victim stays all the same
    assert repo.held == {"main", "trial-s-hub"} and (hub.kept, own.kept) == (True, False)
    assert [r.trial_id for r in journal.records() if isinstance(r, BranchDeleted)] == ["own"]

    err = no_winner(result, _spec())
    assert "trial-s-own" not in str(err), "a message names a deleted branch"
    assert "trial-s-hub" in err.hint and "flotilla sweep resume s" in err.hint and "continues" in err.hint

    only_hub = SweepResult("s", str(tmp_path), {}, "val/score", "max", trials=[hub])
    err = no_winner(only_hub, _spec())
    assert "trial-s-hub" in err.hint and "fix the cause" not in err.hint


def test_a_trial_vouches_for_the_hub_its_driver_confirmed_so_a_restart_at_its_first_call_is_waited_out(tmp_path):
    """A process that never saw the hub fails at once; a sweep's trial, vouched for, waits for a hub being restarted."""
    creds = HubCredentials("http://127.0.0.1:2", "AKIAEXAMPLE", "secret", pidfile=str(tmp_path / "lakefs.pid"))
    identity.forget()
    try:
        t = time.monotonic()
        with pytest.raises(HubUnavailableError, match="not running"):
            creds.confirm_server(deadline=t + 5)
        assert time.monotonic() - t < 1.0, "a hub never seen was waited for"
        assert not has_answered(creds.endpoint)
        creds.vouch()
        t = time.monotonic()
        with pytest.raises(HubUnavailableError, match="was down for"):
            creds.confirm_server(deadline=t + 1.0)
        assert time.monotonic() - t >= 0.9, "a vouched-for hub was not waited for"
        assert has_answered(creds.endpoint)  # the SDK's retries wait for it too (flotilla.hub.retry)
    finally:
        identity.forget()
