"""Sweep-owned branches: record that each trial's branch lives while it runs, delete losers at once.

A Tune callback on the sweep driver. On a trial's first result it checks the
trial's branch exists (the trial created it from the pinned commit) and notes
it; when Tune ends a trial early (ASHA) or it fails, its branch is deleted right
away unless retention keeps everything, so a long sweep never piles up dead
branches. Events go to ``lifecycle.jsonl`` so a resumed sweep and its report
see the whole story; every start of a trial is a line in ``ledger.jsonl``, which
is how a resumed sweep shows no finished trial ran twice. Both are written here,
on the driver, never by the trial (which may run on another node). A hub that
hiccups is logged, never allowed to end the sweep. Credentials are never
pickled with Tune's state.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from flotilla.tune.trial import epochs_done

log = logging.getLogger(__name__)


class TrialBranchCallback(Callback):
    def __init__(
        self, credentials: Any, repo: str, keep: str, max_epochs: int, journal: str, metric: str = "",
        *, sweep_id: str = "", ledger: str = "",
    ) -> None:
        self.credentials = credentials
        self.sweep_id = sweep_id
        self.ledger = ledger
        self.metric = metric
        self.repo_name = repo
        self.keep = keep
        self.max_epochs = max_epochs
        self.journal = journal
        self._seen: set[str] = set()
        self._repo = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("credentials", "_repo")} | {"credentials": None, "_repo": None}

    def __setstate__(self, state: dict[str, Any]) -> None:  # a sweep saved by an older flotilla lacks these
        self.__dict__.update({"sweep_id": "", "ledger": "", **state})

    def attach(self, credentials: Any) -> None:
        self.credentials = credentials
        self._repo = None

    @property
    def repo(self):
        if self._repo is None:
            from flotilla.hub.client import repo_for

            self._repo = repo_for(self.credentials, self.repo_name)
        return self._repo

    def _event(self, **kw: Any) -> None:
        append_event(self.journal, **kw)

    def _branch(self, trial: Any) -> str | None:
        """The trial's branch; named from the ids when the trial died before its first report."""
        branch = (trial.last_result or {}).get("branch")
        if not branch and self.sweep_id:
            from flotilla.tune.trial import trial_branch

            branch = trial_branch(self.sweep_id, trial.trial_id)
        return branch

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ledger:
            params = {k: v for k, v in (trial.config or {}).items() if v is not None}
            with open(self.ledger, "a") as fh:
                fh.write(json.dumps({"trial_id": trial.trial_id, "params": params, "started": time.time()}, default=str) + "\n")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)):  # every report, in arrival order: what benchmarks count
            metrics = {k: float(v) for k, v in result.items() if k.startswith("val/") and isinstance(v, (int, float))}
            self._event(trial_id=trial.trial_id, event="result", iteration=epochs_done(result),
                        value=float(value), metrics=metrics)
        branch = result.get("branch")
        if branch and trial.trial_id not in self._seen:
            self._seen.add(trial.trial_id)
            try:
                live: bool | None = self.repo.branch_exists(branch)
            except Exception as exc:  # a hub hiccup must not end the sweep: Tune would let it through
                log.warning("could not check branch %s: %s", branch, exc)
                live = None
            self._event(trial_id=trial.trial_id, branch=branch, event="running", seen_live=live)

    def _end(self, trial: Any, status: str) -> None:
        branch = self._branch(trial)
        epochs = epochs_done(trial.last_result)
        if status == "complete" and epochs < self.max_epochs:
            status = "stopped"
        self._event(trial_id=trial.trial_id, branch=branch, event=status, epochs=epochs)
        if status in ("stopped", "errored"):
            self._free_placement_group((trial.last_result or {}).get("placement_group"))
        if branch and status in ("stopped", "errored") and self.keep != "all":
            try:
                self.repo.delete_branch(branch, missing_ok=True)
                self._event(trial_id=trial.trial_id, branch=branch, event="branch_deleted")
            except Exception as exc:  # cleanup is retried at the end of the sweep
                log.warning("could not delete %s: %s", branch, exc)

    def _free_placement_group(self, pg_hex: str | None) -> None:
        """Remove the killed trial's Train placement group if Ray Train's own cleaner has not.

        Ray Train frees it from a monitor that polls the state API; on a loaded machine that API
        times out and the group leaks, and then the next trial's workers wait forever for CPUs.
        """
        if not pg_hex:
            return
        import ray
        from ray.util.placement_group import PlacementGroup

        try:
            state = ray.util.placement_group_table().get(pg_hex, {}).get("state")
            if state and state != "REMOVED":
                ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex))))
                self._event(trial_id="-", event="placement_group_freed", placement_group=pg_hex)
        except Exception as exc:
            log.warning("could not free placement group %s: %s", pg_hex, exc)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "complete")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "errored")


def append_event(journal: str | Path, **kw: Any) -> None:
    """One line of the lifecycle journal: the callback's events and those ``resume`` adds ("lost")."""
    with open(journal, "a") as fh:
        fh.write(json.dumps({**kw, "t": time.time()}) + "\n")


def read_lifecycle(path: Path) -> dict[str, dict[str, Any]]:
    """Per trial: its branch, whether it was seen live, and how it ended."""
    out: dict[str, dict[str, Any]] = {}
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        e = json.loads(line)
        if e["trial_id"] == "-":
            continue
        rec = out.setdefault(e["trial_id"], {"seen_live": False})
        if e.get("branch"):
            rec["branch"] = e["branch"]
        if e["event"] == "result":
            results = rec.setdefault("results", [])
            if results and e["iteration"] <= results[-1][0]:  # the trial went back to an earlier checkpoint (or the start)
                del results[next(i for i, r in enumerate(results) if r[0] >= e["iteration"]):]
            results.append((e["iteration"], e["value"], e.get("metrics", {})))
        elif e["event"] == "running":
            rec["seen_live"] = rec["seen_live"] or bool(e["seen_live"])
        else:
            rec.setdefault("events", []).append(e["event"])
    return out
