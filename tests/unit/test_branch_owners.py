"""Who owns a branch (issue 22, item 4): an owner record names one process for good, and a branch whose writer is
gone reads as orphaned and is pruned unless its retention keeps it (pure logic and real processes)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from flotilla.hub import owners
from flotilla.hub.branches import BranchInfo, branch_state
from flotilla.hub.owners import Owner


def _dead_owner(**kw: object) -> Owner:
    """The record a process that has since exited would have left."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os, psutil; p = psutil.Process(); print(p.pid, p.create_time())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid, started = proc.stdout.split()
    return dataclasses.replace(Owner.me(), pid=int(pid), started=float(started), **kw)  # type: ignore[arg-type]


def test_an_owner_is_alive_only_while_its_very_process_runs():
    me = Owner.me()
    assert me.is_mine() and not me.gone()
    assert _dead_owner().gone()
    # the same pid with another start time is another process (a recycled pid): its owner is gone
    assert dataclasses.replace(me, started=me.started - 3600).gone()
    assert dataclasses.replace(me, abandoned=True).gone()
    # another host's process cannot be looked at from here: never judged gone
    assert not dataclasses.replace(_dead_owner(), host=me.host + "-elsewhere").gone()


def test_claim_release_abandon_round_trip(tmp_path):
    assert owners.owner_of(tmp_path, "faces", "ingest-a") is None
    claimed = owners.claim(tmp_path, "faces", "ingest-a", keep=True)
    assert owners.owner_of(tmp_path, "faces", "ingest-a") == claimed and claimed.keep
    assert oct(owners.record_path(tmp_path, "faces", "ingest-a").stat().st_mode & 0o777) == "0o600"
    assert owners.recorded_branches(tmp_path, "faces") == ["ingest-a"]
    owners.abandon(tmp_path, "faces", "ingest-a")
    given_up = owners.owner_of(tmp_path, "faces", "ingest-a")
    assert given_up is not None and given_up.abandoned and given_up.pid == os.getpid() and given_up.gone()
    owners.release(tmp_path, "faces", "ingest-a")
    owners.release(tmp_path, "faces", "ingest-a")  # idempotent
    assert owners.owner_of(tmp_path, "faces", "ingest-a") is None and owners.recorded_branches(tmp_path, "faces") == []
    owners.record_path(tmp_path, "faces", "ingest-b").write_text("{not json")
    assert owners.owner_of(tmp_path, "faces", "ingest-b") is None  # unreadable: no owner, never orphaned


def test_a_branch_whose_writer_is_gone_is_orphaned_and_pruned_unless_kept():
    dead, alive = _dead_owner(), Owner.me()
    assert branch_state(5, False, {}, "main", dead)[0] == "orphaned"
    assert "nothing will commit it" in branch_state(5, False, {}, "main", dead)[1]
    assert branch_state(5, False, {}, "main", alive)[0] == "open"  # still being written
    assert branch_state(5, False, {}, "main", None)[0] == "open"  # no record (a user fixing labels): never orphaned
    assert branch_state(0, True, {}, "main", dead)[0] == "merged"  # killed before staging anything: nothing to orphan
    # an abort that could not delete its branch (hub down) gave it up: orphaned even with nothing staged
    assert branch_state(0, True, {}, "main", dataclasses.replace(alive, abandoned=True))[0] == "orphaned"
    assert "resume" in branch_state(2, False, {}, "main", dataclasses.replace(dead, keep=True))[1]

    def info(kind: str, state: str, kept: bool = False) -> BranchInfo:
        return BranchInfo("faces", f"{kind}-x", kind, "c1", 1.0, state, "", kept)  # type: ignore[arg-type]

    assert info("ingest", "orphaned").prunable and info("receipt", "orphaned").prunable
    assert not info("experiment", "orphaned", kept=True).prunable  # a killed run's checkpoints: train resume
    assert not info("ingest", "open").prunable
