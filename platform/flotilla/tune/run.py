"""``flotilla.sweep(spec)`` / ``resume(id)``: Ray Tune + Optuna + ASHA over a pinned data commit.

A sweep is checked (:mod:`~flotilla.tune.preflight`), pinned into its folder (``sweep.json``, see
:mod:`~flotilla.tune.store`), run by a Tuner built here over the searcher and scheduler of
:mod:`~flotilla.tune.space`, and finished: trials ranked (:mod:`~flotilla.tune.results`), branches
cleaned up (:mod:`~flotilla.tune.branches`), plots drawn (:mod:`~flotilla.tune.report`) and the
winner merged (:mod:`~flotilla.tune.promotion`). ``resume`` restores the Tuner after bringing Tune's
saved state up to the trial journal (:mod:`~flotilla.tune.repair`).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flotilla.cluster.connect import ensure_ray
from flotilla.errors import ConfigError
from flotilla.hub.client import Hub
from flotilla.names import branch_id
from flotilla.progress import ProgressView
from flotilla.registry.lookup import resolve
from flotilla.settings import TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, TUNE_GLOBAL_CHECKPOINT_S, wandb_dir
from flotilla.specs import Overrides
from flotilla.tune import mirror, repair, space, tune_state
from flotilla.tune.branches import TrialBranches
from flotilla.tune.interrupts import SweepInterrupted, caller_keeps_ctrl_c
from flotilla.tune.journal import JOURNAL, LEDGER, Journal, Ledger, TrialState
from flotilla.tune.lifecycle import TrialBranchCallback
from flotilla.tune.preflight import check_trial_fits, pin_commits
from flotilla.tune.promotion import promote
from flotilla.tune.report import draw_in_background
from flotilla.tune.results import SweepResult, TrialRecord, journal_record, no_winner, ranked, trial_record
from flotilla.tune.searcher import open_study_at
from flotilla.tune.spec import SweepSpec, sweep_spec
from flotilla.tune.store import SAVED, STUDY, TUNE, SavedSweep, load_saved, sweep_dir
from flotilla.tune.study import load as load_study
from flotilla.tune.study import pareto_ids
from flotilla.tune.trial import TrialContext, run_trial, trial_name, trial_resources
from flotilla.tune.watch import TrialProgressCallback

log = logging.getLogger(__name__)

TUNE_STATE_PERIOD_S = "5"


def sweep(
    spec: SweepSpec | Mapping[str, Any] | str | Path,
    *,
    overrides: Overrides | None = None,
    hub: Hub | None = None,
    address: str | None = None,
    sweep_id: str | None = None,
    progress: ProgressView | None = None,
) -> SweepResult:
    """Run a sweep: a trial per sampled point, each on its own hub branch; promote the winner.

    Args:
        spec: a :class:`~flotilla.tune.SweepSpec`, a mapping of the YAML's shape, or a spec file: a
            path (relative to the current directory) or a shipped sweep's name (``"demo"``,
            ``"tuning/demo.yaml"``). A relative ``base:`` is resolved against the folder of the file
            that names it, then among the shipped family specs.
        overrides: applied on top, as ``--set`` applies them: ``{"budget.trials": 2}``.
        hub: the data hub (default: ``Hub()``).
        address: a Ray cluster to run on (default: a local Ray).
        sweep_id: the sweep's id (default: ``<name>-<time>``); it names the trials' branches and the
            folder ``$FLOTILLA_HOME/sweeps/<id>`` (Tune's state, the report, W&B's offline runs).
        progress: told each trial's state and the best objective (see :mod:`flotilla.progress`).

    Raises :class:`~flotilla.tune.results.NoWinner` (with the trials) when no trial trained to the end,
    :class:`~flotilla.tune.interrupts.SweepInterrupted` after a Ctrl-C; either way ``resume(sweep_id)``
    goes on from where it stopped.
    """
    spec = sweep_spec(spec, overrides)
    hub = hub or Hub()
    family = spec.check()
    sweep_id = sweep_id or new_sweep_id(spec.name)
    d = sweep_dir(sweep_id, hub.settings)
    if (d / SAVED).exists():  # the folder alone may hold the console log the CLI opened for this sweep
        raise ConfigError(
            f"sweep {sweep_id!r} already exists in {d.parent}",
            hint=f"continue it with 'flotilla sweep resume {sweep_id}', or pass another sweep_id",
        )
    commits = pin_commits(hub, spec, family)  # before anything is written: a bad ref leaves no half-made sweep
    fixed_size = ensure_ray(address)  # likewise an unreachable cluster ...
    check_trial_fits(spec, family, local=fixed_size)  # ... and a trial the whole cluster could never hold
    # resolved once to an immutable commit: every trial warm-starts from the same weights
    parent = resolve(hub, family.transfer.source, family.data.repo) if family.transfer else None
    saved = SavedSweep(spec, family.model_dump(mode="json"), commits, parent)
    d.mkdir(parents=True, exist_ok=True)
    (d / SAVED).write_text(saved.to_json())
    return drive(hub, saved, d, sweep_id, address, restore=False, progress=progress)


def new_sweep_id(name: str) -> str:
    """A fresh sweep id: the spec's name, the second it started and a random tail (two in one second differ)."""
    return branch_id(f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")


def resume(
    sweep_id: str,
    *,
    hub: Hub | None = None,
    address: str | None = None,
    progress: ProgressView | None = None,
    repo: str | None = None,
    force: bool = False,
) -> SweepResult:
    """Finish an interrupted sweep: finished trials are kept, unfinished/errored ones run again.

    A sweep whose trials all finished but whose promotion did not (a merge conflict, the hub down)
    runs no trial: it retries the promotion.

    From any machine: a sweep this ``FLOTILLA_HOME`` lacks (or holds an older copy of) is pulled from
    its mirror on the hub (:mod:`flotilla.tune.mirror`), found in ``repo`` (the sweep's data
    repository) or, without it, in whichever of the hub's repositories has it. Refused while another
    driver's lease on the sweep is fresh, unless ``force`` (that driver is known to be dead).
    """
    hub = hub or Hub()
    mirror.bring_here(hub, sweep_id, sweep_dir(sweep_id, hub.settings), repo=repo, force=force)
    d, saved = load_saved(sweep_id, hub.settings)
    return drive(hub, saved, d, sweep_id, address, restore=True, progress=progress)


def drive(
    hub: Hub,
    saved: SavedSweep,
    d: Path,
    sweep_id: str,
    address: str | None,
    *,
    restore: bool,
    progress: ProgressView | None = None,
) -> SweepResult:
    """Run (or restore) the Tuner of the sweep pinned in folder ``d``, then finish the sweep."""
    from ray import tune
    from ray.util.client import ray as ray_client

    ensure_ray(address)
    # Save Tune's experiment state every few seconds, not on every controller step (about 8 times a second,
    # which the driver paid for all sweep long): what a SIGKILL lands between, the trial journal (written
    # on every trial event) repairs on resume (see tune.repair).
    os.environ.setdefault(TUNE_GLOBAL_CHECKPOINT_S, TUNE_STATE_PERIOD_S)
    spec = saved.spec
    # W&B's folder as the sweep's driver sees it: the trials' processes may carry an older environment
    folder = wandb_dir() or str(d)
    ctx = TrialContext(sweep_id, saved.family, saved.commits, _credentials_ref(hub), spec.objective, saved.parent, folder)

    def trainable(config: dict[str, Any]) -> None:
        run_trial(config, ctx)

    def resources(config: dict[str, Any]) -> Any:
        return trial_resources(config, ctx, spec.budget.trial_cpus)

    resourced = tune.with_resources(trainable, resources)
    exp_dir = d / TUNE / sweep_id
    open_study_at(sweep_id, d / STUDY)  # Tune's pickled searcher opens this folder's study (pulled from the hub?)
    if restore:
        repair.journal_lost_starts(exp_dir, d, sweep_id)
    if restore and not tune.Tuner.can_restore(str(exp_dir)):
        # the driver died before Tune saved anything (e.g. Ray failed to start): nothing ran, so
        # resuming is starting it, from the spec and commits pinned in sweep.json
        log.warning("sweep %s has no saved Tune state yet: starting it from its pinned spec", sweep_id)
        restore = False
    if restore:
        tune_state.check_restorable(exp_dir, sweep_id)
        repair.bring_up_to_journal(exp_dir, d, spec)
        tune_state.relocate_experiment(exp_dir)  # the folder may have moved (pulled from its hub mirror)
        tuner = tune.Tuner.restore(str(exp_dir), resourced, resume_unfinished=True, resume_errored=True)
        for cb in tune_state.restored_callbacks(tuner):  # restored without its credentials (never pickled)
            if isinstance(cb, TrialBranchCallback):
                cb.attach(hub.credentials)
                cb.journal, cb.ledger = str(d / JOURNAL), str(d / LEDGER)  # this home's folder (pulled from the hub?)
            elif isinstance(cb, TrialProgressCallback):
                cb.attach(progress)
    else:
        tuner = _new_tuner(hub, saved, d, sweep_id, resourced, progress)
    # the folder mirrored to the hub every few seconds while Tune runs: another machine can resume it
    hub_copy = mirror.Mirror(hub.repo(saved.data_repo), sweep_id, d, hub.settings.home, saved.data_commit({}))
    with caller_keeps_ctrl_c() as ctrl_c, hub_copy.running():  # Tune's graceful-stop handler while the sweep runs
        grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]
    # over Ray client (ray://) fit() runs in a remote actor: the local SIGINT handler says nothing about it
    if ctrl_c.interrupted and not ray_client.is_connected():
        # fit() returns normally after a Ctrl-C, with the running trials cut short and marked finished:
        # finishing now would delete their branches as "stopped" and promote the best of a partial sweep
        done = sum(1 for s in Journal(d / JOURNAL).trials().values() if s.ever_finished)
        raise SweepInterrupted(
            f"sweep {sweep_id!r} was interrupted: {done} trial(s) had finished; the trials that were running "
            "keep their branches and checkpoints, nothing was promoted",
            hint=f"'flotilla sweep resume {sweep_id}' finishes it (finished trials do not run again; cut-short "
            "ones go on from their last checkpoint)",
        )
    try:
        return finish(hub, saved, d, sweep_id, results)
    finally:
        hub_copy.commit_end()  # the finished sweep's state: one commit on its mirror branch


def _credentials_ref(hub: Hub) -> Any:
    """The hub's credentials as a Ray object: trials fetch them, Tune's pickled state never holds them."""
    import ray

    return ray.put(hub.credentials)


def _new_tuner(hub: Hub, saved: SavedSweep, d: Path, sweep_id: str, trainable: Any, progress: ProgressView | None) -> Any:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    spec, obj = saved.spec, saved.spec.objective
    callback = TrialBranchCallback(
        hub.credentials,
        saved.data_repo,
        spec.retention.keep,
        saved.epochs,
        str(d / JOURNAL),
        obj.primary[0],
        sweep_id=sweep_id,
        ledger=str(d / LEDGER),
    )
    watch = TrialProgressCallback(progress, obj.primary[0], obj.primary[1], saved.epochs)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=space.searcher(spec, saved.epochs, d / STUDY, sweep_id),
            scheduler=space.scheduler(spec, saved.epochs),
            metric=None if obj.multi else obj.metric,
            mode=None if obj.multi else obj.mode,
            num_samples=spec.budget.trials,
            max_concurrent_trials=spec.budget.concurrency,
            time_budget_s=spec.budget.time_limit_s,
            # a finished or stopped trial's process takes the next trial of the same resources: its imports,
            # the lakeFS SDK and the node's decoded-image cache maps are warm (bench/trial_overhead.py); the
            # loop leaves at the next batch when Tune stops a trial (Session.stop_requested), so the
            # process is free within Tune's 2 s, else Tune starts a fresh one as before
            reuse_actors=True,
            trial_name_creator=trial_name,  # the trial's one name (its id), not trainable_<id>
            trial_dirname_creator=trial_name,
        ),
        # the JSON logger only (CSV and TensorBoard stay off): without result.json per trial, Tune warns
        # at the end of every sweep that it "failed to fetch metrics" for each trial
        run_config=tune.RunConfig(
            name=sweep_id, storage_path=str(d / TUNE), callbacks=[callback, watch, JsonLoggerCallback()], verbose=1
        ),
    )


def finish(hub: Hub, saved: SavedSweep, d: Path, sweep_id: str, results: Iterable[Any]) -> SweepResult:
    """End a sweep from Tune's results (a ``ResultGrid``'s ``Result`` items): rank the trials, delete the
    branches the retention policy does not keep, promote the winner, then draw the plots on a
    thread (:meth:`SweepResult.wait_for_plots`): the result does not wait for them.

    Raises :class:`~flotilla.tune.results.NoWinner`, with the result, when no trial trained to the end.
    """
    spec, obj = saved.spec, saved.spec.objective
    journal = Journal(d / JOURNAL)
    states = journal.trials()
    records = [
        trial_record(
            r, states, sweep_id, saved.epochs, obj.primary[1], multi=obj.multi, commits=saved.commits, base_ref=saved.base_ref
        )
        for r in results
    ]
    records += unsaved_finished(d, states, {r.trial_id for r in records}, sweep_id, saved)
    front = pareto_ids(load_study(d, sweep_id)) if obj.multi else None  # Optuna's front: study.best_trials
    result = ranked(sweep_id, d, saved.commits, obj, records, front=front)
    repo = hub.repo(saved.data_repo)
    TrialBranches(repo, journal, sweep_id, spec.retention.keep).at_sweep_end(result, states)
    promote(repo, saved, result)
    result.drawn_by(draw_in_background(d, sweep_id, result))
    if result.winner is None:
        raise no_winner(result, spec)
    return result


def unsaved_finished(
    d: Path, states: Mapping[str, TrialState], known: set[str], sweep_id: str, saved: SavedSweep
) -> list[TrialRecord]:
    """The trials the journal saw finish that Tune's results lack (the driver died before Tune saved
    them; see :func:`flotilla.tune.repair.journal_lost_starts`), as records built from the journal."""
    params = {s.trial_id: s.params for s in Ledger(d / LEDGER).starts()}
    mode = saved.spec.objective.primary[1]
    return [
        journal_record(s, params[t], sweep_id, saved.epochs, mode, commits=saved.commits, base_ref=saved.base_ref)
        for t, s in sorted(states.items())
        if s.finished and not s.lost and t not in known and t in params
    ]


os.environ.setdefault(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, "1")  # no CSV/JSON/TensorBoard loggers per trial
