"""The winner merged into ``promote.into``, with its provenance, once per sweep.

``results.json`` is written before the merge: a merge that conflicts (or a hub that is down at the
end) loses no results, and ``resume`` retries the promotion — once: a sweep already promoted is
never merged twice, even when a resume (which re-runs errored trials) crowns another winner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from flotilla.errors import ConflictError, FlotillaError
from flotilla.hub.repo import Repo
from flotilla.lineage import PromotionCommit, read_commit
from flotilla.registry.aliases import move_alias, read_alias
from flotilla.tune.results import SweepResult, TrialRecord
from flotilla.tune.store import SavedSweep, read_result, write_result

log = logging.getLogger(__name__)


def promote(repo: Repo, saved: SavedSweep, result: SweepResult) -> None:
    """Merge the winner into the sweep's ``promote.into`` once, with its provenance; results are on disk first.

    Raises :class:`~flotilla.errors.FlotillaError` when the merge is refused or the hub does not
    answer; the result then says why (``promotion_error``) and ``resume`` tries again.
    """
    w, sweep_id, into = result.winner, result.sweep_id, saved.spec.promote.into
    if not (w and into):
        write_result(result)
        return
    result.promoted_into = into
    prior = read_result(Path(result.directory))
    if prior and prior.promotion_commit:  # promoted before: known without asking the hub (which may be down)
        result.promotion_commit, result.promotion_error = prior.promotion_commit, None
        result.promoted_trial = prior.promoted_trial or _promoted_trial(repo, prior.promotion_commit) or w.trial_id
        result.alias = prior.alias
        _warn_if_reranked(result)
        write_result(result)
        _set_alias(repo, saved, result)
        return
    result.promotion_error = "not merged yet"
    write_result(result)  # on disk before the hub is asked anything
    try:
        landed = promotion_on(repo, into, sweep_id)
        if landed:  # a sweep promotes once, even when a resume (re-run errored trials) crowns another winner
            promoted = _trial_of(repo.commit_info(landed).metadata)
            result.promotion_commit, result.promotion_error, result.promoted_trial = landed, None, promoted or w.trial_id
            _warn_if_reranked(result)
            _set_alias(repo, saved, result)
            return
        _only_the_model(repo, into, w, sweep_id)
        lineage = PromotionCommit(
            sweep_id, w.trial_id, saved.data_commit(w.params), w.params, {k.removeprefix("val/"): v for k, v in w.metrics.items()}
        )
        result.promotion_commit = repo.merge(
            w.branch, into, f"Promote sweep {sweep_id} winner {w.trial_id}", lineage.to_metadata()
        )
        result.promotion_error, result.promoted_trial = None, w.trial_id
        write_result(result)
        _set_alias(repo, saved, result)
    except FlotillaError as exc:
        if result.promotion_commit:  # merged: only the alias move failed (_set_alias says so)
            raise
        result.promotion_error = exc.message
        raise FlotillaError(
            f"sweep {sweep_id!r} finished but its winner {w.trial_id} (branch {w.branch!r}) was not merged into "
            f"{into!r}: {exc.message}",
            hint=f"{exc.hint + '; ' if exc.hint else ''}the trials' results are saved ('flotilla sweep show {sweep_id}'); "
            f"then 'flotilla sweep resume {sweep_id}' retries the promotion (it runs no finished trial again)",
        ) from None
    finally:
        write_result(result)


def _set_alias(repo: Repo, saved: SavedSweep, result: SweepResult) -> None:
    """Point ``<family>@<promote.alias>`` at the promoted trial's run, once (a resume retries a failed move)."""
    alias, into = saved.spec.promote.alias, saved.spec.promote.into
    if not alias or not into or result.alias:
        return
    trial = next((t for t in result.trials if t.trial_id == result.promoted_trial), result.winner)
    if trial is None:
        return
    run_id = trial.run_id or f"{result.sweep_id}-{trial.trial_id}"
    family = str(saved.family["name"])
    try:
        now = read_alias(repo, family, alias, into)
        if now and now.current.run_id == run_id:  # moved already (a lost response before a resume)
            result.alias = now.address
            return
        result.alias = move_alias(repo, family, alias, run_id, into=into, reason=f"sweep {result.sweep_id}").address
    except FlotillaError as exc:
        raise FlotillaError(
            f"sweep {result.sweep_id!r} promoted trial {trial.trial_id} into {into!r}, but {family}@{alias} was not "
            f"moved to it: {exc.message}",
            hint=f"'flotilla sweep resume {result.sweep_id}' tries again, or move it yourself: "
            f"'flotilla models promote {run_id} --alias {alias}'",
        ) from None
    finally:
        write_result(result)


def _promoted_trial(repo: Repo, commit: str) -> str | None:
    try:
        return _trial_of(repo.commit_info(commit).metadata)
    except FlotillaError:  # results from before promoted_trial was recorded, and the hub down: the winner then
        return None


def _trial_of(metadata: Mapping[str, str]) -> str | None:
    """The trial a promotion commit merged, from its lineage."""
    record = read_commit(metadata)
    return record.trial_id or None if isinstance(record, PromotionCommit) else None


def _warn_if_reranked(result: SweepResult) -> None:
    w = result.winner
    if w and result.promoted_trial and result.promoted_trial != w.trial_id:
        log.warning(
            "sweep %s: trial %s now ranks first, but trial %s was promoted already (commit %s); "
            "merge branch %s by hand to promote it instead",
            result.sweep_id,
            w.trial_id,
            result.promoted_trial,
            (result.promotion_commit or "")[:12],
            w.branch,
        )


def promotion_on(repo: Repo, into: str, sweep_id: str, depth: int = 500) -> str | None:
    """The commit that promoted ``sweep_id`` into ``into``, if a merge landed that the sweep never heard back
    from (a lost response, a driver killed mid-merge); found by its metadata in the branch's last ``depth``
    commits (a resume after more than that many commits landed on ``into`` would not see it)."""
    for c in repo.log(into, limit=depth):
        record = read_commit(c.metadata)
        if isinstance(record, PromotionCommit) and record.sweep_id == sweep_id:
            return c.id
    return None


def _only_the_model(repo: Repo, into: str, w: TrialRecord, sweep_id: str) -> None:
    """Refuse a promotion that would merge more than the winner's model and checkpoints.

    A trial branch starts at its data ref's pinned commit. When that ref is a data branch that
    ``into`` lacks (``data.ref`` searched over variants), the merge would carry the variant's data
    changes onto ``into`` along with the model.
    """
    run_id = w.run_id or f"{sweep_id}-{w.trial_id}"
    ours = (f"models/{run_id}/", f"runs/{run_id}/")
    # ... and the empty "directory" objects S3 clients leave on the way there (``runs/``)
    extra = [
        c.path
        for c in repo.diff(into, w.branch, two_dot=False)
        if not c.path.startswith(ours) and not (c.path.endswith("/") and any(o.startswith(c.path) for o in ours))
    ]
    if extra:
        ref = w.params.get("data.ref")
        raise ConflictError(
            f"promoting trial {w.trial_id} would also merge {len(extra)} path(s) that are not its model into "
            f"{into!r} (e.g. {', '.join(extra[:3])}): its branch starts from data {'ref ' + repr(ref) if ref else 'that'} "
            f"{into!r} does not have",
            hint=f"merge that data into {into!r} first (into main: 'flotilla data validate --dataset <name> --ref "
            f"<data branch> --merge'), then resume; or merge branch {w.branch!r} into the data branch by hand",
        )
