"""A sweep's folder mirrored to the hub, so ``resume`` works from any machine (and as a job).

A sweep's state is a folder on the driver's disk (:mod:`flotilla.tune.store`): ``sweep.json``, the
Optuna study (``optuna.db``), Tune's experiment state (``tune/<id>/``), the trial journal and ledger.
A driver whose machine is lost took that folder with it. Here the folder is copied, while the sweep
runs, to the one store every flotilla machine already reaches: the hub. No NFS/EFS mount and no
extra bucket to provision, grant and clean up; the same credentials that read the data write it.

Where: the sweep's data repository, branch ``sweep-<id>`` (:func:`mirror_branch`), created from the
sweep's pinned data commit, objects under ``_sweep/`` (:data:`PREFIX`). Pushed **uncommitted** every
few seconds (a background thread, :class:`Mirror`), so a killed driver loses at most one push period;
committed once when the sweep ends (``sweep <id> state at its end``), so a finished sweep is a
versioned, browsable commit in the lakeFS UI. The branch has an owner record kept on failure
(:mod:`flotilla.hub.owners`): ``flotilla hub branches --prune`` never deletes it.

Why not Tune's own ``storage_path`` on the S3 gateway: Tune reads its experiment state the moment
``Tuner.restore`` is called, and a resume must first repair those files from the journal
(:mod:`flotilla.tune.repair`): the files are edited locally, then Tune reads them. And the SQLite
study cannot live on S3 at all. So the whole folder travels, and Tune always works on a local one.

What is pushed: every file whose size or modification time changed since the last push, but not
``wandb/`` (offline runs: large, and W&B syncs them its own way), not files over :data:`SIZE_CAP`
(one warning), and the SQLite study as a consistent snapshot (sqlite3's backup API; never a torn copy).
A push that fails (the hub down) logs one warning and is retried next period; it never fails the sweep.

Beside the files, two small objects: :data:`MARKER` (who pushed last, from which home, when: a resume
that finds both a local folder and a mirror uses the newer) and :data:`LEASE` (the driver running the
sweep, with a heartbeat each push: a second driver refuses to resume a sweep whose lease is fresh).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from flotilla.errors import ConfigError, ConflictError, FlotillaError, HubError, NotFoundError
from flotilla.hub import owners
from flotilla.hub.client import Hub
from flotilla.hub.repo import Repo
from flotilla.lineage import Key
from flotilla.names import branch_id, check_object_path
from flotilla.tune.store import SAVED, SavedSweep, list_sweeps

log = logging.getLogger(__name__)

PREFIX = "_sweep/"
MARKER = "_mirror.json"  # under PREFIX: who pushed last and when
LEASE = "_lease.json"  # under PREFIX: the driver running the sweep now
STUDY = "optuna.db"
SKIPPED = ("wandb/",)  # W&B's offline runs: large, synced by W&B itself
LOCAL_ONLY = ("ray.log",)  # this machine's console log of Ray: not the sweep's state
SIZE_CAP = 64 * 1024 * 1024
PERIOD_S = 5.0  # as Tune saves its state (tune.run.TUNE_STATE_PERIOD_S): a kill loses at most one period
LEASE_TTL_S = 60.0  # a lease not renewed for this long is stale: its driver is dead (it renews each push)

Stamp = tuple[int, int]  # (size, mtime in ns): what change detection compares


def mirror_branch(sweep_id: str) -> str:
    """The branch a sweep's folder is mirrored to: ``sweep-<id>`` (like ``trial-<sweep>-<trial>``)."""
    return branch_id(sweep_id, prefix="sweep-")


def changed(now: Mapping[str, Stamp], pushed: Mapping[str, Stamp]) -> list[str]:
    """The files of ``now`` whose stamp differs from (or is missing in) what was pushed."""
    return sorted(k for k, v in now.items() if pushed.get(k) != v)


def local_files(d: Path, cap: int = SIZE_CAP) -> tuple[dict[str, Stamp], list[str]]:
    """The sweep folder's files to mirror (relative POSIX paths -> stamp) and those too big to."""
    files: dict[str, Stamp] = {}
    big: list[str] = []
    for root, dirs, names in os.walk(d):
        rel_root = Path(root).relative_to(d).as_posix()
        under = "" if rel_root == "." else f"{rel_root}/"
        dirs[:] = [x for x in dirs if f"{under}{x}/" not in SKIPPED]
        for name in names:
            rel = f"{under}{name}"
            # temporary files (Tune's ".<uuid>-tmp-...", ours "*.tmp-<pid>") and SQLite's journal come and go
            if rel in LOCAL_ONLY or name.startswith(".") or ".tmp" in name or name.startswith(f"{STUDY}-"):
                continue
            try:
                st = (Path(root) / name).stat()
            except FileNotFoundError:  # replaced between the listing and the stat
                continue
            if st.st_size > cap:
                big.append(rel)
            else:
                files[rel] = (st.st_size, st.st_mtime_ns)
    return files, big


def is_experiment_state(rel: str) -> bool:
    """Whether ``rel`` is one of Tune's experiment state files (``tune/<id>/experiment_state-<session>.json``)."""
    name = rel.rsplit("/", 1)[-1]
    return name.startswith("experiment_state-") and name.endswith(".json")


def _stamp(p: Path) -> Stamp:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns)


def consistent_save(d: Path, rel: str, tries: int = 3) -> dict[str, tuple[Stamp, bytes]]:
    """Tune's experiment state ``rel`` and the searcher states of its session, read as one save: the experiment
    state unchanged while they were read, each searcher state written after it (Tune writes them in that
    order). Empty when Tune was saving each time (the next push tries again)."""
    exp = d / rel
    session = exp.name[len("experiment_state-") : -len(".json")]
    searchers = [exp.parent / f"searcher-state-{session}.pkl", exp.parent / f"search_gen_state-{session}.json"]
    for _ in range(tries):
        try:
            before = _stamp(exp)
            got = {p.relative_to(d).as_posix(): (_stamp(p), p.read_bytes()) for p in searchers if p.exists()}
            blob = exp.read_bytes()
            if _stamp(exp) == before and all(st[1] >= before[1] for st, _ in got.values()):
                return {**got, rel: (before, blob)}
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    return {}


def key_to_path(key: str, d: Path) -> Path:
    """The local file of mirror object ``key`` (``_sweep/<rel>``) in folder ``d``; never outside it."""
    check_object_path(key)
    if not key.startswith(PREFIX) or key == PREFIX:
        raise ConfigError(f"object {key!r} is not under the sweep mirror's prefix {PREFIX!r}")
    target = (d / key[len(PREFIX) :]).resolve()
    if not target.is_relative_to(d.resolve()):
        raise ConfigError(f"object {key!r} would be written outside the sweep folder {d}")
    return target


@dataclass(frozen=True)
class Holder:
    """A driver: its host, home and pid, and when it last said so (``at``, epoch seconds)."""

    host: str
    home: str
    pid: int
    at: float

    @classmethod
    def me(cls, home: Path) -> Holder:
        return cls(socket.gethostname(), str(home), os.getpid(), time.time())

    def same_driver(self, other: Holder) -> bool:
        return (self.host, self.home, self.pid) == (other.host, other.home, other.pid)

    def fresh(self, now: float, ttl: float = LEASE_TTL_S) -> bool:
        """Whether this lease's driver is taken as alive: on this host, whether its process runs; from
        another host (which cannot be looked at from here), whether it renewed the lease within ``ttl``."""
        if self.host == socket.gethostname():
            return psutil.pid_exists(self.pid) and now - self.at < ttl
        return now - self.at < ttl

    def describe(self) -> str:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        return f"pid {self.pid} on {self.host} (FLOTILLA_HOME {self.home}), last seen {seen}"

    @classmethod
    def from_json(cls, blob: bytes) -> Holder | None:
        try:
            return cls(**json.loads(blob))
        except (ValueError, TypeError):
            return None


def check_lease(lease: Holder | None, me: Holder, sweep_id: str, *, force: bool, now: float | None = None) -> None:
    """Refuse to drive a sweep whose lease another driver holds and renewed recently (unless ``force``)."""
    now = time.time() if now is None else now
    if lease is None or force or lease.same_driver(me) or not lease.fresh(now):
        return
    raise ConflictError(
        f"sweep {sweep_id!r} is being run by another driver: {lease.describe()}",
        hint=f"wait for it to end; if that driver is dead, 'flotilla sweep resume {sweep_id} --force' takes the sweep "
        f"over (its lease expires by itself {int(LEASE_TTL_S)} s after its last heartbeat)",
    )


def snapshot_study(db: Path, into: Path) -> None:
    """A consistent copy of the SQLite study (sqlite3's backup API: the copy is one state of the database)."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(into)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


class Mirror:
    """The hub copy of one sweep folder: :meth:`push` what changed, :meth:`running` pushes in the background."""

    def __init__(self, repo: Repo, sweep_id: str, d: Path, home: Path, source: str) -> None:
        self.repo, self.sweep_id, self.d, self.home, self.source = repo, sweep_id, d, home, source
        self.branch = mirror_branch(sweep_id)
        self._opened = False
        self._pushed: dict[str, Stamp] = {}
        self._warned: set[str] = set()
        self._failing = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the mirror branch from ``source`` (the sweep's pinned data commit) unless it exists; claim it
        (kept on failure: never pruned)."""
        owners.claim(self.home, self.repo.name, self.branch, keep=True)
        self.repo.create_branch(self.branch, self.source, exist_ok=True)
        self._opened = True

    def push(self, *, lease: bool = True) -> int:
        """Upload what changed since the last push, the marker and (``lease``) the lease, else drop the lease
        (this driver is done with the sweep); the number of files uploaded."""
        with self._lock:
            if not self._opened:
                self.open()
            # Tune 2.60 saves its experiment state, then its searcher state (neither atomically with the other):
            # an experiment state is sent only with the searcher state of the same save or a later one, searcher
            # first, so the hub never holds a trial Tune knows and the searcher does not (a KeyError on resume)
            first, _ = local_files(self.d)
            held: dict[str, tuple[Stamp, bytes]] = {}
            for rel in changed(first, self._pushed):
                if is_experiment_state(rel):
                    held.update(consistent_save(self.d, rel))
            files, big = local_files(self.d)
            for rel in big:
                if rel not in self._warned:
                    self._warned.add(rel)
                    log.warning("sweep %s: %s is over %d MiB: not mirrored to the hub", self.sweep_id, rel, SIZE_CAP >> 20)
            todo = [rel for rel in changed(files, self._pushed) if not is_experiment_state(rel) and rel not in held]
            for rel in todo:
                if rel == STUDY:
                    with tempfile.TemporaryDirectory(prefix="flotilla-study-") as tmp:
                        snapshot_study(self.d / STUDY, Path(tmp) / STUDY)
                        self.repo.put_file(self.branch, PREFIX + rel, Path(tmp) / STUDY)
                else:
                    try:
                        self.repo.put_file(self.branch, PREFIX + rel, self.d / rel)
                    except FileNotFoundError:  # replaced or removed since the listing: next push
                        continue
                self._pushed[rel] = files[rel]
            for rel, (stamp, blob) in sorted(held.items(), key=lambda kv: is_experiment_state(kv[0])):  # searcher first
                self.repo.put(self.branch, PREFIX + rel, blob)
                self._pushed[rel] = stamp
            now = Holder.me(self.home)
            self.repo.put(self.branch, PREFIX + MARKER, json.dumps(asdict(now)))
            if lease:
                self.repo.put(self.branch, PREFIX + LEASE, json.dumps(asdict(now)))
            elif self.repo.exists(self.branch, PREFIX + LEASE):
                self.repo.delete(self.branch, PREFIX + LEASE)
            return len(todo) + len(held)

    def try_push(self, *, lease: bool = True) -> None:
        """:meth:`push`, a failure logged once (until a push succeeds again), never raised."""
        try:
            self.push(lease=lease)
        except Exception as exc:  # the hub down, a file gone: the sweep goes on, the next period retries
            if not self._failing:
                log.warning(
                    "sweep %s: could not mirror its state to the hub (retried every %.0f s): %s", self.sweep_id, PERIOD_S, exc
                )
            self._failing = True
        else:
            if self._failing:
                log.warning("sweep %s: its state is mirrored to the hub again", self.sweep_id)
            self._failing = False

    @contextlib.contextmanager
    def running(self, period_s: float = PERIOD_S) -> Iterator[None]:
        """Push every ``period_s`` on a background thread while the block runs, and once when it ends (the
        lease dropped then: a resume elsewhere right after a Ctrl-C is not refused)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(period_s):
                self.try_push()

        thread = threading.Thread(target=loop, name=f"flotilla-mirror-{self.sweep_id}", daemon=True)
        self.try_push()
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.try_push(lease=False)

    def commit_end(self) -> None:
        """The final push, the lease dropped, and one commit: the finished sweep's state, versioned on the hub."""
        try:
            self.push(lease=False)
            if self.repo.uncommitted(self.branch, PREFIX):
                self.repo.commit(self.branch, f"sweep {self.sweep_id} state at its end", {Key.SWEEP_ID: self.sweep_id})
            owners.release(self.home, self.repo.name, self.branch)
        except FlotillaError as exc:
            log.warning("sweep %s: could not commit its state on the hub (branch %s): %s", self.sweep_id, self.branch, exc)


def find(hub: Hub, sweep_id: str, repo: str | None = None) -> Repo:
    """The repository holding sweep ``sweep_id``'s mirror: ``repo`` when given, else the first of the hub's that has it."""
    branch = mirror_branch(sweep_id)
    try:
        for name in [repo] if repo else hub.repos():
            r = hub.repo(name)
            if branch in r.branches():
                return r
    except NotFoundError:
        pass  # no such repository: said below
    except HubError as exc:  # the hub unreachable: the sweep is not here, and its mirror cannot be looked for
        raise NotFoundError(
            f"no sweep {sweep_id!r} in {hub.settings.home / 'sweeps'}, and its mirror on the hub could not be looked for: "
            f"{exc.message}",
            hint=exc.hint,
        ) from None
    where = f"repository {repo!r}" if repo else f"any repository of the hub at {hub.endpoint}"
    raise NotFoundError(
        f"no sweep {sweep_id!r} here ({hub.settings.home / 'sweeps'}) nor in {where} (no branch {branch!r})",
        hint=f"this home's sweeps: {', '.join(list_sweeps(hub.settings)) or '(none)'}; check the id ('flotilla sweep list' "
        "on the machine that started it); a sweep started before sweeps were mirrored resumes only where it started",
    )


def remote_marker(repo: Repo, sweep_id: str) -> Holder | None:
    """Who pushed the mirror last, and when; None when it has no marker."""
    branch = mirror_branch(sweep_id)
    try:
        return Holder.from_json(repo.get(branch, PREFIX + MARKER))
    except NotFoundError:
        return None


def remote_lease(repo: Repo, sweep_id: str) -> Holder | None:
    branch = mirror_branch(sweep_id)
    try:
        return Holder.from_json(repo.get(branch, PREFIX + LEASE))
    except NotFoundError:
        return None


def local_newest(d: Path) -> float:
    """When the local sweep folder last changed (its newest mirrored file); 0 when it has none."""
    files, _ = local_files(d)
    return max((ns / 1e9 for _, ns in files.values()), default=0.0)


def pull(repo: Repo, sweep_id: str, d: Path) -> int:
    """Download sweep ``sweep_id``'s mirror into folder ``d`` (replacing what is there); the number of files."""
    branch = mirror_branch(sweep_id)
    objects = [o for o in repo.list(branch, PREFIX) if o.path not in (PREFIX + MARKER, PREFIX + LEASE)]
    targets = [(o.path, key_to_path(o.path, d)) for o in objects]  # every key checked before anything is written
    for key, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.pull-{os.getpid()}")
        tmp.write_bytes(repo.get(branch, key))
        os.replace(tmp, target)
    return len(targets)


def bring_here(hub: Hub, sweep_id: str, d: Path, *, repo: str | None = None, force: bool = False) -> None:
    """Before a resume: the sweep's newest state in folder ``d``, and no other live driver on it.

    No local ``sweep.json``: the mirror is found (in ``repo``, else searched for) and pulled. Both: the
    mirror is pulled when another home pushed it after this folder last changed (the sweep went on
    elsewhere), else this folder is used. A fresh lease of another driver refuses the resume unless ``force``.
    """
    local = (d / SAVED).exists()
    if local and repo is None:
        repo = SavedSweep.from_json((d / SAVED).read_text(), sweep_id).data_repo
    try:
        r = find(hub, sweep_id, repo)
    except NotFoundError:
        if local:  # a sweep from before mirroring, or whose mirror could not be made: resumed from this folder
            log.warning("sweep %s: no mirror of it on the hub; resuming from %s", sweep_id, d)
            return
        raise
    me = Holder.me(hub.settings.home)
    check_lease(remote_lease(r, sweep_id), me, sweep_id, force=force)
    marker = remote_marker(r, sweep_id)
    newer = marker is not None and (marker.host, marker.home) != (me.host, me.home) and marker.at > local_newest(d)
    if local and not newer:
        log.warning("sweep %s: resuming from this machine's folder %s (as new as its hub mirror)", sweep_id, d)
        return
    n = pull(r, sweep_id, d)
    by = f" (pushed by {marker.describe()})" if marker else ""
    log.warning(
        "sweep %s: resuming from its hub mirror lakefs://%s/%s%s: %d file(s) into %s",
        sweep_id,
        r.name,
        mirror_branch(sweep_id),
        by,
        n,
        d,
    )
