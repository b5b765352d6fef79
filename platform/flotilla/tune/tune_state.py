"""Everything flotilla reads or edits in Tune's saved state, in one place.

Written against **Ray 2.60** (``ray[tune]>=2.60,<2.61`` in pyproject.toml). None of it is Ray's public
API: it is the format Tune 2.60 saves an experiment in, which ``resume`` must bring up to what the
trial journal saw before Tune restores it (see :mod:`flotilla.tune.repair` for why). What it relies on:

- ``<experiment>/experiment_state-<session>.json`` (``TuneController.CKPT_FILE_TMPL``), JSON whose
  ``trial_data`` is a list of ``[trial JSON, run-metadata JSON]`` pairs (``Trial.get_json_state()``):
  the trial's ``trial_id`` and ``status`` (``Trial.TERMINATED`` ...), the metadata's ``last_result``.
  Tune restores the newest file (by name) with ``Trial.from_json_state`` / ``restore_run_metadata``.
- ``<experiment>/search_gen_state-<session>.json`` (``SearchGenerator.CKPT_FILE_TMPL``), a cloudpickled
  dict holding each searcher wrapper's ``get_state()`` under ``name:<class>``: the
  ``ConcurrencyLimiter``'s ``live_trials`` and ``num_unfinished_live_trials``, the generator's own
  ``counter`` (trials created, against ``num_samples``), and our
  :class:`~flotilla.tune.until.UntilTarget`'s ``reached_by``.
- ``tuner.pkl`` and the searcher's own pickle name the classes they hold by module; a restored
  ``Tuner`` keeps its run config (with our callback) on ``Tuner._local_tuner`` (None over Ray client).

``tests/unit/test_tune_state.py`` builds these files with Ray's own classes and fails when any of it
changes: read it before moving to another Ray version.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

from flotilla.errors import ConfigError
from flotilla.tune.journal import Reported
from flotilla.tune.trial import EPOCHS_DONE, epochs_done

log = logging.getLogger(__name__)

RAY_VERSION = "2.60"
"""The Ray release whose saved-state format this module was written against."""

EXPERIMENT_STATES = "experiment_state-*.json"  # TuneController.CKPT_FILE_TMPL.format("*")
SEARCHER_STATES = "search_gen_state-*.json"  # SearchGenerator.CKPT_FILE_TMPL.format("*"); a cloudpickle despite the name
COUNTER = "counter"  # SearchGenerator.get_state(): trials created so far, against num_samples
LIMITER = "name:ConcurrencyLimiter"
UNTIL_TARGET = "name:UntilTarget"
TERMINATED, ERROR = "TERMINATED", "ERROR"  # Trial.TERMINATED, Trial.ERROR
MOVED = {"flotilla.tune.sweep": "flotilla.tune.space"}  # modules whose classes older sweeps pickled


def check_restorable(exp_dir: Path, sweep_id: str) -> None:
    """Refuse, with the reason, a saved state that names classes of a module flotilla no longer has.

    Tune unpickles ``tuner.pkl`` and the searcher's state as they are; a sweep saved by a flotilla
    whose search space lived in ``flotilla.tune.sweep`` would fail deep inside Tune's restore.
    """
    for path in [exp_dir / "tuner.pkl", *exp_dir.glob("searcher-state-*.pkl")]:
        data = path.read_bytes() if path.exists() else b""
        for old, new in MOVED.items():
            if old.encode() in data:
                raise ConfigError(
                    f"sweep {sweep_id!r} was saved by an older flotilla: its Tune state names classes of "
                    f"{old}, which moved to {new}",
                    hint=f"resume it with the flotilla that started it, or start the sweep again "
                    f"(its spec is in {exp_dir.parent.parent / 'sweep.json'})",
                )


def saved_trial_ids(exp_dir: Path) -> set[str] | None:
    """The trial ids of the Tune state a restore reads (the newest); None when that cannot be told.

    A state file cut short (the driver died while Tune copied it into the sweep folder) would make Tune
    give up on restoring and start the whole sweep again under new ids: it is set aside, so Tune reads
    the newest whole one (an earlier session's).
    """
    states = sorted(exp_dir.glob(EXPERIMENT_STATES))
    while states:
        newest = states.pop()
        try:
            return {json.loads(pair[0])["trial_id"] for pair in json.loads(newest.read_text())["trial_data"]}
        except json.JSONDecodeError as exc:
            aside = newest.with_name(f".{newest.name}.unreadable")
            os.replace(newest, aside)
            log.warning(
                "Tune state %s is cut short (%s); set aside as %s, the resume reads the one before it",
                newest.name,
                exc,
                aside.name,
            )
        except Exception as exc:  # Tune's format changed: resume as before, and say so
            log.warning("could not read the trials of the Tune state %s: %s", newest.name, exc)
            return None
    return set()


def mark_finished(exp_dir: Path, finished: Mapping[str, Reported | None]) -> None:
    """Mark trials TERMINATED in Tune's saved experiment state, with their last report.

    ``finished``: trial id -> its last report as the journal has it (None: none with metrics). A trial
    already TERMINATED or ERROR there is left as it is; one whose saved ``last_result`` is behind the
    journal's report gets that report's metrics and epochs, so Tune's result for it is its final one.
    """
    for path in exp_dir.glob(EXPERIMENT_STATES):
        try:
            state = json.loads(path.read_text())
            fixed = []
            for pair in state["trial_data"]:
                trial = json.loads(pair[0])
                trial_id = trial.get("trial_id")
                if trial_id not in finished or trial.get("status") in (TERMINATED, ERROR):
                    continue
                trial["status"] = TERMINATED
                meta = json.loads(pair[1])
                last = meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {}
                report = finished[trial_id]
                if report is not None and report.epochs > epochs_done(last):
                    last = {**last, **report.metrics, EPOCHS_DONE: report.epochs, "done": True, "trial_id": trial_id}
                meta["last_result"] = last
                pair[0], pair[1] = json.dumps(trial, indent=2), json.dumps(meta, indent=2)
                fixed.append(trial_id)
            if not fixed:
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)
            log.warning(
                "sweep state %s: trial(s) %s had finished before the driver died but were saved as running; "
                "they do not run again",
                path.name,
                ", ".join(sorted(fixed)),
            )
        except Exception as exc:  # Tune's format changed: resume as before, and say so
            log.warning("could not check the Tune state %s for finished trials: %s", path.name, exc)


def fix_searcher_state(exp_dir: Path, gone: Set[str], reached_by: str | None) -> None:
    """Take trials that ended (``gone``) out of the saved ConcurrencyLimiter's live set, and tell the saved
    UntilTarget that ``reached_by`` reached ``budget.target``."""
    import ray.cloudpickle as cloudpickle

    for path in exp_dir.glob(SEARCHER_STATES):
        try:
            with open(path, "rb") as fh:
                state: Any = cloudpickle.load(fh)
            if not isinstance(state, dict):
                continue
            said = []
            limiter = state.get(LIMITER)
            stale = set(limiter.get("live_trials", ())) & gone if isinstance(limiter, dict) else set()
            if isinstance(limiter, dict) and stale:
                limiter["live_trials"] = set(limiter["live_trials"]) - stale
                limiter["num_unfinished_live_trials"] = max(0, limiter.get("num_unfinished_live_trials", 0) - len(stale))
                said.append(f"trial(s) {', '.join(sorted(stale))} had ended but were still counted as running")
            until = state.get(UNTIL_TARGET)
            if reached_by and isinstance(until, dict) and until.get("reached_by") is None:
                until["reached_by"] = reached_by
                said.append(f"trial {reached_by} had reached budget.target")
            if not said:
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as fh:
                cloudpickle.dump(state, fh)
            os.replace(tmp, path)
            log.warning("searcher state %s: %s; now it knows", path.name, "; ".join(said))
        except Exception as exc:  # Tune's format changed: resume as before, and say so
            log.warning("could not check the searcher state %s against the journal: %s", path.name, exc)


def set_created(exp_dir: Path, n: int) -> None:
    """Set the saved SearchGenerator's trial counter (``counter``, trials created against ``num_samples``)
    to ``n``: the trials the saved experiment holds plus those that finished before Tune saved them.

    Saved together, the counter equals the experiment's trial count. It does not when a trial finished
    between two saves (the counter is behind: the sweep would run a trial past ``budget.trials``) or when
    the searcher state is a newer save than the experiment state (it counts a start the experiment lost:
    the sweep would run a trial fewer); the sweep's mirror can pair them so (:mod:`flotilla.tune.mirror`).
    """
    import ray.cloudpickle as cloudpickle

    for path in exp_dir.glob(SEARCHER_STATES):
        try:
            with open(path, "rb") as fh:
                state: Any = cloudpickle.load(fh)
            if not isinstance(state, dict) or not isinstance(state.get(COUNTER), int) or state[COUNTER] == n:
                continue
            was, state[COUNTER] = state[COUNTER], n
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as fh:
                cloudpickle.dump(state, fh)
            os.replace(tmp, path)
            log.warning("searcher state %s counted %d trial(s) created, the journal %d; now it knows", path.name, was, n)
        except Exception as exc:  # Tune's format changed: the sweep may run a trial more or fewer, and says so
            log.warning("could not check the trial count of the searcher state %s: %s", path.name, exc)


def relocate_experiment(exp_dir: Path) -> None:
    """Point the experiment the saved ``SearchGenerator`` holds at ``exp_dir``'s storage (a folder moved:
    pulled from the hub into another ``FLOTILLA_HOME``, see :mod:`flotilla.tune.mirror`).

    Tune restores a moved experiment's *trials* into the new folder, but ``SearchGenerator.set_state``
    puts back the ``Experiment`` it saved, whose ``storage`` names the old folder: the trials created
    after the resume then had their results looked for there ("Failed to fetch metrics"). Here the saved
    experiment's storage (one object, also ``spec["storage"]``) gets the new ``storage_fs_path``, as
    Tune's own restore does for the trials (``TuneController._restore_trials``)."""
    import ray.cloudpickle as cloudpickle

    here = exp_dir.parent.as_posix()
    for path in exp_dir.glob(SEARCHER_STATES):
        try:
            with open(path, "rb") as fh:
                state: Any = cloudpickle.load(fh)
            storage = getattr(state.get("experiment"), "storage", None) if isinstance(state, dict) else None
            if storage is None or getattr(storage, "storage_fs_path", here) == here:
                continue
            was = storage.storage_fs_path
            storage.storage_fs_path = here
            spec = getattr(state["experiment"], "spec", None)
            if isinstance(spec, dict) and spec.get("storage") is not None:
                spec["storage"].storage_fs_path = here
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as fh:
                cloudpickle.dump(state, fh)
            os.replace(tmp, path)
            log.info("searcher state %s: the experiment moved from %s to %s", path.name, was, here)
        except Exception as exc:  # Tune's format changed: resume as before (new trials' results looked for there), say so
            log.warning("could not point the searcher state %s at the moved experiment: %s", path.name, exc)


def restored_callbacks(tuner: Any) -> list[Any]:
    """The callbacks of a restored Tuner's run config (unpickled from its saved state); none over Ray
    client, where the tuner lives in a remote actor."""
    local = getattr(tuner, "_local_tuner", None)
    return list(local.get_run_config().callbacks or []) if local is not None else []
