"""``flotilla.sweep(spec)`` / ``resume(id)``: Ray Tune + Optuna + ASHA over a pinned data commit.

State of a sweep lives in ``$FLOTILLA_HOME/sweeps/<id>/``: the spec and the pinned
commits (``sweep.json``), the Optuna study (``optuna.db``, SQLite, so
``optuna-dashboard sqlite:///…/optuna.db`` opens it), Tune's experiment state
(``tune/``), a trial ledger and the plots. Trials train on branches of their
own; ASHA-stopped and failed trials lose theirs as soon as Tune ends them (unless
``retention.keep: all``); the winner is merged into ``promote.into`` with its
provenance, one merge at a time.

A trial's score is its best epoch's objective, and that epoch's checkpoint is
the model it publishes, so the trial ranked first is the model promoted and the
promotion commit's metrics are that model's. ``results.json`` is written before
the merge: a merge that conflicts (or a hub that is down at the end) loses no
results, and ``resume`` retries the promotion — once: a sweep already promoted
is never merged twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flotilla.errors import ConfigError, ConflictError, FlotillaError, InvalidNameError, NotFoundError
from flotilla.hub.client import Hub
from flotilla.tune.interrupts import caller_keeps_ctrl_c
from flotilla.names import branch_id, check_branch_id
from flotilla.settings import Settings
from flotilla.tune.spec import SweepSpec, load_sweep_spec

log = logging.getLogger(__name__)


class SweepInterrupted(FlotillaError):
    """A Ctrl-C (or SIGUSR1) stopped the sweep: its state is saved, and ``resume`` finishes it."""


class NoWinner(FlotillaError):
    """The sweep ended without a trial trained to the end: nothing to promote. ``result`` holds the trials."""

    def __init__(self, message: str, *, hint: str | None = None, result: SweepResult | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


@dataclass
class TrialRecord:
    trial_id: str
    params: dict[str, Any]
    status: str  # completed | stopped | errored
    epochs: int
    metrics: dict[str, float]
    branch: str
    run_id: str = ""
    kept: bool = False
    seen_live: bool = False
    error: str = ""  # an errored trial's exception, its last line (the rest is in the trial's Ray log)


@dataclass
class SweepResult:
    sweep_id: str
    directory: str
    data_commits: dict[str, str]
    objective: str
    mode: str
    trials: list[TrialRecord] = field(default_factory=list)
    winner: TrialRecord | None = None
    promotion_commit: str | None = None
    promoted_into: str | None = None
    objectives: dict[str, str] = field(default_factory=dict)  # metric -> min|max; several for a Pareto search
    pareto: list[str] = field(default_factory=list)  # trial ids on the Pareto front (multi-objective only)
    plots: dict[str, str] = field(default_factory=dict)
    promotion_error: str | None = None  # why the winner is not merged yet ('resume' retries it)
    promoted_trial: str | None = None  # the trial merged; not the winner when a resume re-ranked after promoting

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=float)


def pareto_front(trials: list[TrialRecord], objectives: dict[str, str]) -> list[TrialRecord]:
    """Trials no other trial beats on every objective (and strictly on one)."""
    sign = {m: (1.0 if mode == "max" else -1.0) for m, mode in objectives.items()}

    def score(t: TrialRecord) -> list[float]:
        return [sign[m] * t.metrics[m] for m in objectives]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    scores = {id(t): score(t) for t in trials}
    return [t for t in trials if not any(dominates(scores[id(o)], scores[id(t)]) for o in trials if o is not t)]


def sweeps_dir(settings: Settings | None = None) -> Path:
    return (settings or Settings.from_env()).home / "sweeps"


def sweep_dir(sweep_id: str, settings: Settings | None = None) -> Path:
    """``$FLOTILLA_HOME/sweeps/<id>``; an id is a branch-id-shaped name, so it cannot leave that folder."""
    try:
        check_branch_id(sweep_id)
    except InvalidNameError:
        raise ConfigError(f"invalid sweep id {sweep_id!r}: letters, digits, '_' and '-' only",
                          hint="see 'flotilla sweep list' for the ids of this machine's sweeps") from None
    return sweeps_dir(settings) / sweep_id


class DefineByRun:
    """Optuna define-by-run space (picklable: Tune checkpoints its searcher); a param with ``when``
    is only suggested when the params it names took those values, so conditional spaces work."""

    def __init__(self, space: dict[str, Any]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for name, p in self.space.items():
            if p.when and any(chosen.get(k) != v for k, v in p.when.items()):
                continue
            if p.type == "choice":
                chosen[name] = trial.suggest_categorical(name, p.values)
            elif p.type == "int":
                chosen[name] = trial.suggest_int(name, int(p.low), int(p.high), step=p.step or 1)
            else:
                chosen[name] = trial.suggest_float(name, p.low, p.high, log=p.type == "loguniform")
        return None


def asha(spec: SweepSpec, epochs: int) -> Any:
    """ASHA whose rungs all lie before the last epoch.

    A rung *at* the last epoch saves nothing and would kill a trial at its final report, before it
    publishes its model and card on its branch; so the rungs are laid out up to ``epochs - 1`` and
    a trial that passes them always finishes (``stop_last_trials=False``).
    """
    from ray.tune.schedulers import ASHAScheduler

    grace = spec.scheduler.grace_period
    if grace >= epochs:
        raise ConfigError(
            f"scheduler.grace_period {grace} leaves ASHA nothing to stop: trials train {epochs} epochs",
            hint=f"set scheduler.grace_period below {epochs}, or scheduler.type: none",
        )
    from flotilla.tune.trial import EPOCHS_DONE

    return ASHAScheduler(time_attr=EPOCHS_DONE, max_t=epochs - 1, grace_period=grace,
                         reduction_factor=spec.scheduler.reduction_factor, stop_last_trials=False)


def _pin_commits(hub: Hub, spec: SweepSpec, family: Any) -> dict[str, str]:
    """Resolve every data variant to its commit, and check the promotion target, before anything runs."""
    refs = {family.data.ref}
    if "data.ref" in spec.space:
        refs |= set(spec.space["data.ref"].values or [])
    repo = hub.repo(family.data.repo)
    from flotilla.data.store import read_manifest

    commits = {}
    for ref in sorted(refs):
        commits[ref] = repo.resolve(ref)
        read_manifest(repo, commits[ref], family.data.dataset)  # every variant must hold the dataset
    if spec.promote.into and not repo.branch_exists(spec.promote.into):
        raise NotFoundError(
            f"promote.into: no branch {spec.promote.into!r} in repository {family.data.repo!r}; the winner would have nowhere to go",
            hint="create it first (e.g. from main), set promote.into to an existing branch, or promote.into: null",
        )
    if spec.promote.into and "data.ref" not in spec.space:  # every trial, the winner too, starts from this data
        extra = [c.path for c in repo.diff(spec.promote.into, commits[family.data.ref], two_dot=False)]
        if extra:
            ref = family.data.ref
            branch = repo.branch_exists(ref)  # a job pins the ref to a commit id: nothing to promote into or name
            raise ConflictError(
                f"data.ref {ref!r} has {len(extra)} path(s) that promote.into {spec.promote.into!r} lacks "
                f"(e.g. {', '.join(extra[:3])}): promoting the winner would merge that data too, so it would be refused "
                "after the whole sweep had run",
                hint=f"merge the data into {spec.promote.into!r} first"
                     + (f" (into main: 'flotilla data validate --dataset {family.data.dataset} --ref {ref} --merge'), "
                        f"promote into {ref!r} instead," if branch else ",")
                     + " or promote.into: null",
            )
    return commits


def _check_trial_fits(spec: SweepSpec, family: Any, *, local: bool) -> None:
    """A trial holds ``budget.trial_cpus`` for its Tune function plus its Train workers' resources, at
    the largest the space can pick: more than the cluster has, and it would stay pending forever."""
    from flotilla.cluster.fit import check_fits

    def biggest(field: str, default: float) -> float:
        p = spec.space.get(field)
        if p is None:
            return default
        return float(max(p.values)) if p.type == "choice" else float(p.high)

    workers = biggest("scaling.workers", family.scaling.workers)
    need = {"CPU": spec.budget.trial_cpus + workers * biggest("scaling.cpus_per_worker", family.scaling.cpus_per_worker)}
    if family.scaling.use_gpu or "scaling.use_gpu" in spec.space:  # 0 GPUs per worker means one whole GPU
        p = spec.space.get("scaling.gpus_per_worker")
        shares = (p.values if p.type == "choice" else [p.high]) if p else [family.scaling.gpus_per_worker]
        need["GPU"] = workers * max(float(g) or 1.0 for g in shares)
    check_fits(need, local=local, what="a trial (budget.trial_cpus + scaling.workers x scaling.cpus_per_worker/gpus_per_worker)",
               hint="lower budget.trial_cpus, scaling.workers or scaling.cpus_per_worker (or their search ranges), "
                    "or use a bigger cluster (--address)")


def sweep(
    spec: SweepSpec | str | Path | dict[str, Any], *, hub: Hub | None = None, address: str | None = None,
    sweep_id: str | None = None, root: Path | None = None,
) -> SweepResult:
    """Run a sweep: ``spec`` is a SweepSpec, a spec file (``tuning/face_family.yaml``) or the same as a dict.

    Raises :class:`NoWinner` (with the trials) when no trial trained to the end, :class:`SweepInterrupted`
    after a Ctrl-C; either way ``resume(sweep_id)`` goes on from where it stopped.
    """
    if isinstance(spec, dict):
        from flotilla.specs import parse_spec

        spec = parse_spec(SweepSpec, spec, "sweep spec")
    elif not isinstance(spec, SweepSpec):
        root = root or (Path(spec).resolve().parent.parent if Path(spec).parent.name == "tuning" else Path.cwd())
        spec = load_sweep_spec(spec)
    hub = hub or Hub()
    family = spec.check(root)
    sweep_id = sweep_id or branch_id(f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    d = sweep_dir(sweep_id, hub.settings)
    if d.exists():
        raise ConfigError(f"sweep {sweep_id!r} already exists in {d.parent}",
                          hint=f"continue it with 'flotilla sweep resume {sweep_id}', or pass another sweep_id")
    commits = _pin_commits(hub, spec, family)  # before anything is written: a bad ref leaves no half-made sweep
    from flotilla.cluster.connect import ensure_ray

    fixed_size = ensure_ray(address)  # likewise an unreachable cluster ...
    _check_trial_fits(spec, family, local=fixed_size)  # ... and a trial the whole cluster could never hold
    parent = None
    if family.transfer:  # resolved once to an immutable commit: every trial warm-starts from the same weights
        from flotilla.training.artifacts import resolve_model

        parent = asdict(resolve_model(hub, family.transfer.source, family.data.repo))
    state = {"spec": spec.model_dump(mode="json"), "family": family.model_dump(mode="json"), "commits": commits, "parent": parent}
    d.mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    return _run(hub, spec, state, d, sweep_id, address, restore=False)


def resume(sweep_id: str, *, hub: Hub | None = None, address: str | None = None) -> SweepResult:
    """Finish an interrupted sweep: finished trials are kept, unfinished/errored ones run again.

    A sweep whose trials all finished but whose promotion did not (a merge conflict, the hub down)
    runs no trial: it retries the promotion.
    """
    hub = hub or Hub()
    d = require_sweep(sweep_id, hub.settings)
    state = json.loads((d / "sweep.json").read_text())
    return _run(hub, saved_spec(state["spec"], sweep_id), state, d, sweep_id, address, restore=True)


def saved_spec(spec: dict[str, Any], sweep_id: str) -> SweepSpec:
    """A sweep.json's spec, as the sweep ran it: older versions accepted, and ignored, what the spec now
    refuses (a ``step`` on a non-int dimension; int end points like 7.5, which ran as ``int(7.5)``)."""
    from flotilla.specs import parse_spec

    space = {}
    for name, p in (spec.get("space") or {}).items():
        if isinstance(p, dict) and p.get("type") != "int" and p.get("step") is not None:
            p = {**p, "step": None}
        elif isinstance(p, dict) and p.get("type") == "int":
            p = {**p, **{k: int(p[k]) for k in ("low", "high") if isinstance(p.get(k), (int, float))}}
        space[name] = p
    return parse_spec(SweepSpec, {**spec, "space": space}, source=f"sweep {sweep_id!r} (its sweep.json)")


def _run(hub: Hub, spec: SweepSpec, state: dict[str, Any], d: Path, sweep_id: str, address: str | None, *, restore: bool) -> SweepResult:
    import optuna
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler

    from flotilla.cluster.connect import ensure_ray
    from flotilla.tune.lifecycle import TrialBranchCallback, read_lifecycle
    from flotilla.tune.searcher import StoppedAsPrunedOptunaSearch
    from flotilla.tune.trial import run_trial
    from flotilla.tune.until import UntilTarget

    ensure_ray(address)
    # Save Tune's experiment state on every controller step (not every few minutes): trials here are long
    # and few, so it is cheap, and a driver killed with SIGKILL then loses no finished trial.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    family = state["family"]
    obj = spec.objective
    ctx = {
        "sweep_id": sweep_id, "family": family, "commits": state["commits"], "credentials": ray.put(hub.credentials),
        "objective": obj.model_dump(mode="json"), "parent": state.get("parent"),
    }

    def trainable(config: dict[str, Any]) -> None:
        run_trial(config, ctx)

    trainable = tune.with_resources(trainable, {"CPU": spec.budget.trial_cpus})
    lifecycle = TrialBranchCallback(
        hub.credentials, family["data"]["repo"], spec.retention.keep, family["epochs"], str(d / "lifecycle.jsonl"), obj.primary[0],
        sweep_id=sweep_id, ledger=str(d / "ledger.jsonl"),
    )
    tune_dir = d / "tune"
    if restore:
        _journal_lost_starts(tune_dir / sweep_id, d, sweep_id)
    if restore and not tune.Tuner.can_restore(str(tune_dir / sweep_id)):
        # the driver died before Tune saved anything (e.g. Ray failed to start): nothing ran, so
        # resuming is starting it, from the spec and commits pinned in sweep.json
        log.warning("sweep %s has no saved Tune state yet: starting it from its pinned spec", sweep_id)
        restore = False
    if restore:
        journal = read_lifecycle(d / "lifecycle.jsonl")
        _finish_in_tune_state(tune_dir / sweep_id, journal)
        gone = _finished(journal) | {t for t, rec in journal.items() if "lost" in rec.get("events", [])}
        reached = _reached_target(journal, spec.budget.target, obj.mode) if spec.budget.target is not None else None
        _fix_searcher_state(tune_dir / sweep_id, gone, reached)
        tuner = tune.Tuner.restore(str(tune_dir / sweep_id), trainable, resume_unfinished=True, resume_errored=True)
    else:
        sampler = (
            optuna.samplers.TPESampler(seed=spec.searcher.seed, n_startup_trials=spec.searcher.n_startup_trials, multivariate=spec.searcher.multivariate)
            if spec.searcher.type == "tpe"
            else optuna.samplers.RandomSampler(seed=spec.searcher.seed)
        )
        # Optuna >= 5 runs TPE with constant_liar on by default: with several trials at once, running
        # ones count as bad so concurrent suggestions spread out instead of landing side by side
        search = StoppedAsPrunedOptunaSearch(
            space=DefineByRun(spec.space), sampler=sampler, full_iterations=family["epochs"],
            # a list of metrics and modes makes Optuna search for the Pareto front (TPE and random both can)
            metric=list(obj.metrics) if obj.multi else obj.metric, mode=list(obj.metrics.values()) if obj.multi else obj.mode,
            storage=optuna.storages.RDBStorage(f"sqlite:///{d / 'optuna.db'}"), study_name=sweep_id,
        )
        if spec.budget.target is not None:
            search = UntilTarget(search, obj.metric, obj.mode, spec.budget.target)
        scheduler = asha(spec, family["epochs"]) if spec.scheduler.type == "asha" else FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=search, scheduler=scheduler, metric=None if obj.multi else obj.metric,
                mode=None if obj.multi else obj.mode, num_samples=spec.budget.trials,
                max_concurrent_trials=spec.budget.concurrency, time_budget_s=spec.budget.time_limit_s,
            ),
            # the JSON logger only (CSV and TensorBoard stay off): without result.json per trial, Tune warns
            # at the end of every sweep that it "failed to fetch metrics" for each trial
            run_config=tune.RunConfig(name=sweep_id, storage_path=str(tune_dir), callbacks=[lifecycle, JsonLoggerCallback()],
                                      verbose=1),
        )
    local = getattr(tuner, "_local_tuner", None)  # None over Ray client: the tuner lives in a remote actor
    if restore and local is not None:  # the restored run config holds the callback without its credentials (never pickled)
        for cb in local.get_run_config().callbacks or []:
            if isinstance(cb, TrialBranchCallback):
                cb.attach(hub.credentials)
    with caller_keeps_ctrl_c() as ctrl_c:  # Tune's graceful-stop handler while the sweep runs, not after
        grid = tuner.fit()
    # over Ray client (ray://) fit() runs in a remote actor: the local SIGINT handler says nothing about it
    if ctrl_c.interrupted and not ray.util.client.ray.is_connected():
        # fit() returns normally after a Ctrl-C, with the running trials cut short and marked finished:
        # finishing now would delete their branches as "stopped" and promote the best of a partial sweep
        done = sum(1 for e in read_lifecycle(d / "lifecycle.jsonl").values() if {"complete", "stopped"} & set(e.get("events", [])))
        raise SweepInterrupted(
            f"sweep {sweep_id!r} was interrupted: {done} trial(s) had finished; the trials that were running "
            "keep their branches and checkpoints, nothing was promoted",
            hint=f"'flotilla sweep resume {sweep_id}' finishes it (finished trials do not run again; cut-short "
                 "ones go on from their last checkpoint)",
        )
    return _finish(hub, spec, state, d, sweep_id, grid, lifecycle)


def _journal_lost_starts(exp_dir: Path, d: Path, sweep_id: str) -> set[str]:
    """Record trials that started but that Tune's saved state never held, so the resume cannot run them.

    Tune starts a trial (the ledger records it) and saves its state at the end of the step: a driver
    killed in between leaves a start Tune knows nothing of. The resume suggests another trial in its
    place; this one's Optuna trial would stay RUNNING in the study for ever (and count, for TPE's
    constant liar, as a bad point) and its branch would outlive the sweep. Here the study is told it
    failed and the journal says "lost", which the end of the sweep reads to delete its branch.
    """
    from flotilla.tune.lifecycle import append_event, read_lifecycle
    from flotilla.tune.searcher import TUNE_TRIAL_ID

    ledger = d / "ledger.jsonl"
    if not ledger.exists():
        return set()
    started = {json.loads(line)["trial_id"] for line in ledger.read_text().splitlines() if line.strip()}
    saved = _saved_trial_ids(exp_dir)
    if saved is None:
        return set()
    journal = read_lifecycle(d / "lifecycle.jsonl")
    # a start that the journal saw finish is not lost: its model is published on its branch (Tune's copy
    # of its state to the sweep folder lagged); it is left alone
    lost = {t for t in started - saved if not {"lost", "complete", "stopped"} & set(journal.get(t, {}).get("events", []))}
    if not lost:
        return lost
    for t in sorted(lost):
        append_event(d / "lifecycle.jsonl", trial_id=t, event="lost")
    log.warning("sweep %s: trial(s) %s started just before the driver died, before Tune saved them; another "
                "trial runs in their place", sweep_id, ", ".join(sorted(lost)))
    if (d / "optuna.db").exists():
        try:
            import optuna

            study = optuna.load_study(study_name=sweep_id, storage=f"sqlite:///{d / 'optuna.db'}")
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if t.user_attrs.get(TUNE_TRIAL_ID) in lost:
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except Exception as exc:  # the study is a record here; the sweep goes on without it
            log.warning("could not mark the lost trials failed in the Optuna study: %s", exc)
    return lost


def _saved_trial_ids(exp_dir: Path) -> set[str] | None:
    """The trial ids of the Tune state a restore reads (the newest); None when that cannot be told.

    A state file cut short (the driver died while Tune copied it into the sweep folder) would make Tune
    give up on restoring and start the whole sweep again under new ids: it is set aside, so Tune reads
    the newest whole one (an earlier session's).
    """
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    while states:
        newest = states.pop()
        try:
            return {json.loads(pair[0])["trial_id"] for pair in json.loads(newest.read_text())["trial_data"]}
        except json.JSONDecodeError as exc:
            aside = newest.with_name(f".{newest.name}.unreadable")
            os.replace(newest, aside)
            log.warning("Tune state %s is cut short (%s); set aside as %s, the resume reads the one before it",
                        newest.name, exc, aside.name)
        except Exception as exc:  # Tune's format changed: resume as before, and say so
            log.warning("could not read the trials of the Tune state %s: %s", newest.name, exc)
            return None
    return set()


def _reached_target(live: dict[str, Any], target: float, mode: str) -> str | None:
    """A trial whose reports, as the journal has them, reached ``budget.target``."""
    hit = [t for t, rec in sorted(live.items())
           if any((v >= target if mode == "max" else v <= target) for _, v, _ in rec.get("results", []))]
    return hit[0] if hit else None


def _finished(live: dict[str, Any]) -> set[str]:
    """Trials whose last end in the lifecycle journal is a finish (an errored one that a resume re-ran
    and finished counts; one whose last end is an error is re-run by the resume)."""
    ends = {t: [e for e in rec.get("events", []) if e in ("complete", "stopped", "errored")] for t, rec in live.items()}
    return {t for t, e in ends.items() if e and e[-1] in ("complete", "stopped")}


def _finish_in_tune_state(exp_dir: Path, live: dict[str, Any]) -> None:
    """Mark trials that finished as TERMINATED in Tune's saved experiment state, before Tune restores it.

    Tune tells callbacks that a trial completed (the journal records it) before it marks the trial
    TERMINATED and saves its state. A driver killed in between leaves the trial RUNNING there, Tune
    restores it as unfinished and trains it again from scratch: a finished trial ran twice. Its
    final result is in the journal (written when the result came in), so the record is completed
    with it: the epochs it trained and the metrics of its last report.
    """
    from flotilla.tune.trial import EPOCHS_DONE, epochs_done

    finished = _finished(live)
    for path in exp_dir.glob("experiment_state-*.json"):
        try:
            state = json.loads(path.read_text())
            fixed = []
            for pair in state["trial_data"]:
                trial = json.loads(pair[0])
                rec = live.get(trial.get("trial_id"), {})
                if trial.get("trial_id") not in finished or trial.get("status") in ("TERMINATED", "ERROR"):
                    continue
                trial["status"] = "TERMINATED"
                meta = json.loads(pair[1])
                last = meta.get("last_result") if isinstance(meta.get("last_result"), dict) else {}
                history = rec.get("results", [])
                if history and history[-1][0] > epochs_done(last):
                    last = {**last, **history[-1][2], EPOCHS_DONE: history[-1][0], "done": True, "trial_id": trial["trial_id"]}
                meta["last_result"] = last
                pair[0], pair[1] = json.dumps(trial, indent=2), json.dumps(meta, indent=2)
                fixed.append(trial["trial_id"])
            if not fixed:
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)
            log.warning("sweep state %s: trial(s) %s had finished before the driver died but were saved as running; "
                        "they do not run again", path.name, ", ".join(sorted(fixed)))
        except Exception as exc:  # Tune's format changed: resume as before, and say so
            log.warning("could not check the Tune state %s for finished trials: %s", path.name, exc)


def _fix_searcher_state(exp_dir: Path, gone: set[str], reached_by: str | None) -> None:
    """Bring the searcher's saved state up to what the journal saw, before Tune restores it.

    Tune saves the searcher at the end of a step, after callbacks wrote the journal. A driver killed in
    between leaves: trials that ended (or were lost) still "live" in the ConcurrencyLimiter's state
    (restored, they never end again, and with ``budget.concurrency`` of them the limiter suggests nothing:
    the resumed sweep waited forever); and ``budget.target`` reached without UntilTarget knowing (the
    trial that reached it does not report again, so the sweep went on to ``budget.trials``).
    """
    import ray.cloudpickle as cloudpickle

    for path in exp_dir.glob("search_gen_state-*.json"):  # Tune's name; the content is a cloudpickle
        try:
            with open(path, "rb") as fh:
                state = cloudpickle.load(fh)
            if not isinstance(state, dict):
                continue
            said = []
            limiter = state.get("name:ConcurrencyLimiter")
            stale = set(limiter.get("live_trials", ())) & gone if isinstance(limiter, dict) else set()
            if stale:
                limiter["live_trials"] = set(limiter["live_trials"]) - stale
                limiter["num_unfinished_live_trials"] = max(0, limiter.get("num_unfinished_live_trials", 0) - len(stale))
                said.append(f"trial(s) {', '.join(sorted(stale))} had ended but were still counted as running")
            until = state.get("name:UntilTarget")
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


def _trial_record(r: Any, live: dict[str, Any], sweep_id: str, full_epochs: int, mode: str, multi: bool) -> TrialRecord:
    """One Tune result as a trial: its metrics are those of the epoch whose checkpoint it published."""
    from flotilla.tune.trial import epochs_done, trial_branch

    m = r.metrics or {}
    # a trial that died before its first report has no metrics: its id is in its folder's name
    trial_id = m.get("trial_id") or (Path(r.path).name.split("_")[1] if r.path else "?")
    epochs = epochs_done(m)
    status = "errored" if r.error else ("completed" if epochs >= full_epochs else "stopped")
    metrics = {k: float(v) for k, v in m.items() if k.startswith("val/") and isinstance(v, (int, float))}
    history = [h for h in live.get(trial_id, {}).get("results", []) if h[2]]
    if history and not multi:  # best epoch by the objective; ties go to the earlier epoch, as the trial chose
        sign = 1.0 if mode == "max" else -1.0
        metrics = max(history, key=lambda h: (sign * h[1], -h[0]))[2]
    params = {k: v for k, v in (r.config or {}).items() if v is not None}
    branch = m.get("branch") or live.get(trial_id, {}).get("branch") or trial_branch(sweep_id, trial_id)
    return TrialRecord(trial_id, params, status, epochs, metrics, branch, run_id=m.get("run_id", ""),
                       seen_live=bool(live.get(trial_id, {}).get("seen_live", False)), error=_last_line(r.error))


def _last_line(error: Any) -> str:
    """What a trial died of, in one line: Tune wraps the trial's exception in a multi-line traceback."""
    if not error:
        return ""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def _finish(hub: Hub, spec: SweepSpec, state: dict[str, Any], d: Path, sweep_id: str, grid: Any, lifecycle: Any) -> SweepResult:
    from flotilla.tune.lifecycle import read_lifecycle
    from flotilla.tune.report import write_plots
    from flotilla.tune.trial import trial_branch

    family = state["family"]
    repo = hub.repo(family["data"]["repo"])
    obj = spec.objective
    live = read_lifecycle(d / "lifecycle.jsonl")
    metric, mode = obj.primary
    result = SweepResult(sweep_id, str(d), state["commits"], metric, mode, objectives=dict(obj.metrics or {metric: mode}))
    result.trials = [_trial_record(r, live, sweep_id, family["epochs"], mode, obj.multi) for r in grid]
    done = [t for t in result.trials if t.status == "completed" and set(result.objectives) <= set(t.metrics)]
    front = pareto_front(done, result.objectives) if obj.multi else done
    result.pareto = [t.trial_id for t in front] if obj.multi else []
    if front:  # for a Pareto search: the front's best on the first metric listed
        pick = min if mode == "min" else max
        result.winner = pick(front, key=lambda t: t.metrics[metric])
    try:
        existing: set[str] | None = set(repo.branches())
    except FlotillaError as exc:  # results and the promotion attempt must not hang on cleanup; resume retries it
        log.warning("could not list the branches of %s to clean up trial branches: %s", repo.name, exc.message)
        existing = None
    for t in result.trials:
        keep = (t is result.winner or t.trial_id in result.pareto or spec.retention.keep == "all"
                or (spec.retention.keep == "completed" and t.status == "completed"))
        there = existing is None or t.branch in existing  # unknown while the hub does not answer: assume so
        if not keep and existing is not None and there:
            try:
                repo.delete_branch(t.branch, missing_ok=True)
            except FlotillaError as exc:
                log.warning("could not delete trial branch %s (resume retries): %s", t.branch, exc.message)
        t.kept = keep and there
    ran = {t.trial_id for t in result.trials}
    for trial_id, rec in live.items():  # started before a kill, never saved by Tune: nobody else deletes them
        if "lost" in rec.get("events", []) and trial_id not in ran:  # nothing to keep, even with keep: all
            branch = rec.get("branch") or trial_branch(sweep_id, trial_id)
            if existing is not None and branch in existing:
                try:
                    repo.delete_branch(branch, missing_ok=True)
                except FlotillaError as exc:
                    log.warning("could not delete lost trial branch %s (resume retries): %s", branch, exc.message)
    result.plots = write_plots(d, sweep_id, result)
    _promote(repo, spec, state, d, sweep_id, result)
    if result.winner is None:
        raise _no_winner(sweep_id, result, spec)
    return result


def _no_winner(sweep_id: str, result: SweepResult, spec: SweepSpec) -> NoWinner:
    """No trial trained to the end: say how each ended and, for errors, what the first one died of."""
    from collections import Counter

    counts = Counter(t.status for t in result.trials)
    how = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no trial ran"
    errored = [t for t in result.trials if t.status == "errored"]
    why = f"; trial {errored[0].trial_id} failed with: {errored[0].error or 'see its log'}" if errored else ""
    if errored:
        hint = (f"fix the cause (all trials failing alike usually means the spec: try 'flotilla sweep <spec> --check'), "
                f"then 'flotilla sweep resume {sweep_id}' re-runs the errored trials; the full tracebacks are in the Ray logs")
    elif spec.budget.time_limit_s:
        hint = f"budget.time_limit_s ({spec.budget.time_limit_s:g} s) ran out before a trial finished: raise it, or train fewer epochs"
    else:
        hint = "every trial was stopped early: check the scheduler (grace_period) and the objective's mode"
    return NoWinner(f"sweep {sweep_id!r} ended without a trial trained to the end ({how}){why}; nothing was promoted",
                    hint=hint, result=result)


def _promote(repo: Any, spec: SweepSpec, state: dict[str, Any], d: Path, sweep_id: str, result: SweepResult) -> None:
    """Merge the winner into ``promote.into`` once, with its provenance; results are on disk first."""
    w = result.winner
    if not (w and spec.promote.into):
        (d / "results.json").write_text(result.to_json())
        return
    result.promoted_into = spec.promote.into
    prior = _read_result(d / "results.json") if (d / "results.json").exists() else None
    if prior and prior.promotion_commit:  # promoted before: known without asking the hub (which may be down)
        result.promotion_commit, result.promotion_error = prior.promotion_commit, None
        result.promoted_trial = prior.promoted_trial or _promoted_trial(repo, prior.promotion_commit) or w.trial_id
        _warn_if_reranked(sweep_id, result)
        (d / "results.json").write_text(result.to_json())
        return
    result.promotion_error = "not merged yet"
    (d / "results.json").write_text(result.to_json())  # on disk before the hub is asked anything
    try:
        landed = _promotion_on(repo, spec.promote.into, sweep_id)
        if landed:  # a sweep promotes once, even when a resume (re-run errored trials) crowns another winner
            promoted = repo.commit_info(landed).metadata.get("flotilla.trial_id")
            result.promotion_commit, result.promotion_error, result.promoted_trial = landed, None, promoted or w.trial_id
            _warn_if_reranked(sweep_id, result)
            return
        _only_the_model(repo, spec.promote.into, w, sweep_id)
        family = state["family"]
        meta = {
            "flotilla.kind": "promotion", "flotilla.sweep_id": sweep_id, "flotilla.trial_id": w.trial_id,
            "flotilla.data_commit": state["commits"][w.params.get("data.ref", family["data"]["ref"])],
            "params": w.params, **{f"metric.{k[4:]}": v for k, v in w.metrics.items() if not k.endswith("/n")},
        }
        result.promotion_commit = repo.merge(w.branch, spec.promote.into, f"Promote sweep {sweep_id} winner {w.trial_id}", meta)
        result.promotion_error, result.promoted_trial = None, w.trial_id
    except FlotillaError as exc:
        result.promotion_error = exc.message
        raise FlotillaError(
            f"sweep {sweep_id!r} finished but its winner {w.trial_id} (branch {w.branch!r}) was not merged into "
            f"{spec.promote.into!r}: {exc.message}",
            hint=f"{exc.hint + '; ' if exc.hint else ''}the trials' results are saved ('flotilla sweep show {sweep_id}'); "
                 f"then 'flotilla sweep resume {sweep_id}' retries the promotion (it runs no finished trial again)",
        ) from None
    finally:
        (d / "results.json").write_text(result.to_json())


def _promoted_trial(repo: Any, commit: str) -> str | None:
    try:
        return repo.commit_info(commit).metadata.get("flotilla.trial_id")
    except FlotillaError:  # results from before promoted_trial was recorded, and the hub down: the winner then
        return None


def _warn_if_reranked(sweep_id: str, result: SweepResult) -> None:
    w = result.winner
    if w and result.promoted_trial and result.promoted_trial != w.trial_id:
        log.warning("sweep %s: trial %s now ranks first, but trial %s was promoted already (commit %s); "
                    "merge branch %s by hand to promote it instead", sweep_id, w.trial_id, result.promoted_trial,
                    (result.promotion_commit or "")[:12], w.branch)


def _promotion_on(repo: Any, into: str, sweep_id: str, depth: int = 500) -> str | None:
    """The commit that promoted ``sweep_id`` into ``into``, if a merge landed that the sweep never heard back
    from (a lost response, a driver killed mid-merge); found by its metadata in the branch's last ``depth``
    commits (a resume after more than that many commits landed on ``into`` would not see it)."""
    for c in repo.log(into, limit=depth):
        if c.metadata.get("flotilla.kind") == "promotion" and c.metadata.get("flotilla.sweep_id") == sweep_id:
            return c.id
    return None


def _only_the_model(repo: Any, into: str, w: TrialRecord, sweep_id: str) -> None:
    """Refuse a promotion that would merge more than the winner's model and checkpoints.

    A trial branch starts at its data ref's pinned commit. When that ref is a data branch that
    ``into`` lacks (``data.ref`` searched over variants), the merge would carry the variant's data
    changes onto ``into`` along with the model.
    """
    run_id = w.run_id or f"{sweep_id}-{w.trial_id}"
    ours = (f"models/{run_id}/", f"runs/{run_id}/")
    # ... and the empty "directory" objects S3 clients leave on the way there (``runs/``)
    extra = [c.path for c in repo.diff(into, w.branch, two_dot=False)
             if not c.path.startswith(ours) and not (c.path.endswith("/") and any(o.startswith(c.path) for o in ours))]
    if extra:
        ref = w.params.get("data.ref")
        raise ConflictError(
            f"promoting trial {w.trial_id} would also merge {len(extra)} path(s) that are not its model into "
            f"{into!r} (e.g. {', '.join(extra[:3])}): its branch starts from data {'ref ' + repr(ref) if ref else 'that'} "
            f"{into!r} does not have",
            hint=f"merge that data into {into!r} first (into main: 'flotilla data validate --dataset <name> --ref "
                 f"<data branch> --merge'), then resume; or merge branch {w.branch!r} into the data branch by hand",
        )


def list_sweeps(settings: Settings | None = None) -> list[str]:
    root = sweeps_dir(settings)
    return sorted(p.name for p in root.glob("*") if (p / "sweep.json").exists()) if root.exists() else []


def require_sweep(sweep_id: str, settings: Settings | None = None) -> Path:
    """The sweep's folder; a clear error listing the known sweeps when there is no such sweep."""
    d = sweep_dir(sweep_id, settings)
    if not (d / "sweep.json").exists():
        known = list_sweeps(settings)
        raise NotFoundError(f"no sweep {sweep_id!r} in {d.parent}", hint=f"known sweeps: {', '.join(known) or '(none)'}")
    return d


def load_result(sweep_id: str, settings: Settings | None = None) -> SweepResult:
    p = require_sweep(sweep_id, settings) / "results.json"
    if not p.exists():
        raise ConfigError(f"sweep {sweep_id!r} has no results yet", hint=f"finish it with 'flotilla sweep resume {sweep_id}'")
    return _read_result(p)


def _read_result(p: Path) -> SweepResult:
    data = json.loads(p.read_text())
    data["trials"] = [TrialRecord(**t) for t in data["trials"]]
    data["winner"] = TrialRecord(**data["winner"]) if data["winner"] else None
    return SweepResult(**data)


os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard loggers per trial
