"""``Repo``: refs, objects, commits, merges, diffs and tags of one repository.

A thin, typed layer over the ``lakefs`` SDK: every call is translated into the
flotilla error hierarchy, every name and object key is validated before it
reaches the server, commit metadata is stringified and, like commit and merge
messages, checked for the hub's secret key,
and merges into a branch are serialized (one at a time per destination on this
machine) because concurrent merges into one branch have a very heavy tail.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from flotilla.errors import ConfigError, ConflictError, HubError, MergeConflictError, NotFoundError
from flotilla.hub._translate import protected, translate
from flotilla.hub.experiment import Experiment, Retention
from flotilla.hub.retry import resend_when_back
from flotilla.hub.sdk import lakefs
from flotilla.names import check_branch_id, check_object_path, check_prefix

if TYPE_CHECKING:
    import lakefs as sdk_types

    from flotilla.hub.client import Hub

_merge_locks: dict[str, threading.Lock] = {}
_merge_locks_guard = threading.Lock()


@dataclass(frozen=True)
class CommitInfo:
    id: str
    message: str
    metadata: dict[str, str]
    committer: str
    creation_date: int
    parents: tuple[str, ...]


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    size: int
    checksum: str
    mtime: int


@dataclass(frozen=True)
class Change:
    type: Literal["added", "removed", "changed", "conflict", "prefix_changed"]
    path: str
    size: int | None


def _commit_info(c: Any) -> CommitInfo:
    return CommitInfo(c.id, c.message, dict(c.metadata or {}), c.committer, c.creation_date, tuple(c.parents or ()))


class Repo:
    """Handle on one repository of a :class:`~flotilla.hub.client.Hub`."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name

    def __repr__(self) -> str:
        return f"Repo({self.name!r} @ {self.hub.endpoint})"

    @property
    def _sdk(self) -> sdk_types.Repository:
        repository: sdk_types.Repository = lakefs().Repository(self.name, client=self.hub.client)
        return repository

    def _t(self, action: str, **kw: Any) -> AbstractContextManager[None]:
        return translate(f"{action} in repository {self.name!r}", self.hub.endpoint, **kw)

    def _what_exists(self) -> str:
        try:
            branches = self.branches()
        except NotFoundError as exc:  # the repository itself is missing: its hint lists the ones that exist
            return exc.hint or ""
        tags = list(self.tags())
        return f"existing branches: {', '.join(branches) or '(none)'}" + (f"; tags: {', '.join(tags)}" if tags else "")

    def _repo_missing(self) -> str:
        return f"existing repositories: {', '.join(self.hub.repos()) or '(none)'}; create one with Hub.ensure_repo()"

    # ---- refs -----------------------------------------------------------------------
    def branches(self) -> list[str]:
        with self._t("list branches", not_found=self._repo_missing):
            return [b.id for b in self._sdk.branches()]

    def branch_exists(self, branch: str) -> bool:
        return check_branch_id(branch) in self.branches()

    def create_branch(self, branch: str, source: str = "main", *, exist_ok: bool = False) -> str:
        """Create ``branch`` from ``source`` (a branch, tag or commit id): metadata only, no data copied."""
        check_branch_id(branch)

        def conflict(msg: str) -> ConflictError:
            return ConflictError(
                f"branch {branch!r} already exists in {self.name!r}",
                hint="pick another name, delete it first, or pass exist_ok=True",
            )

        action = f"create branch {branch!r} from {source!r}"

        def create() -> str:
            with self._t(action, not_found=self._what_exists, conflict=conflict):
                self._sdk.branch(branch).create(source, exist_ok=exist_ok)
            return branch

        def landed() -> str | None:  # made before the hub's answer was lost: there, at the source's commit
            return branch if branch in self.branches() and self.resolve(branch) == self.resolve(source) else None

        return resend_when_back(create, self.hub.endpoint, action, landed=landed)

    def delete_branch(self, branch: str, *, missing_ok: bool = False) -> None:
        check_branch_id(branch)

        def delete() -> bool:
            with self._t(f"delete branch {branch!r}", not_found=self._what_exists):
                self._sdk.branch(branch).delete()
            return True

        try:
            resend_when_back(
                delete, self.hub.endpoint, f"delete branch {branch!r}", landed=lambda: None if branch in self.branches() else True
            )
        except NotFoundError:
            if not missing_ok:
                raise

    def resolve(self, ref: str) -> str:
        """The commit id a branch, tag or commit id points to now (pin it: commits never change)."""
        if not ref:
            raise NotFoundError("an empty ref cannot be resolved", hint="pass a branch, tag or commit id")
        with self._t(f"resolve ref {ref!r}", not_found=self._what_exists):
            return self._sdk.ref(ref).get_commit().id

    def log(self, ref: str = "main", limit: int = 20, *, prefix: str = "") -> list[CommitInfo]:
        """The newest ``limit`` commits reachable from ``ref`` (through every parent), newest first.

        With ``prefix``, only the commits that changed something under it; lakeFS leaves merge
        commits out of such a log, so what a merge brought in is seen as the commits it merged.
        """
        check_prefix(prefix)
        server_args: dict[str, Any] = {"prefixes": [prefix]} if prefix else {}
        with self._t(f"read the log of {ref!r}", not_found=self._what_exists):
            return [_commit_info(c) for c in self._sdk.ref(ref).log(max_amount=limit, **server_args)]

    def commit_info(self, ref: str) -> CommitInfo:
        with self._t(f"read commit {ref!r}", not_found=self._what_exists):
            return _commit_info(self._sdk.ref(ref).get_commit())

    def tag(self, tag: str, ref: str, *, exist_ok: bool = False) -> str:
        """Tag the commit ``ref`` resolves to; return that commit id."""
        check_branch_id(tag)
        with self._t(f"create tag {tag!r} at {ref!r}", not_found=self._what_exists):
            t = self._sdk.tag(tag).create(ref, exist_ok=exist_ok)
            return t.get_commit().id

    def tags(self) -> dict[str, str]:
        with self._t("list tags", not_found=self._repo_missing):
            return {t.id: t.get_commit().id for t in self._sdk.tags()}

    def delete_tag(self, tag: str) -> None:
        with self._t(f"delete tag {tag!r}", not_found=self._what_exists):
            self._sdk.tag(check_branch_id(tag)).delete()

    # ---- objects --------------------------------------------------------------------
    def put(self, branch: str, path: str, data: bytes | str | IO[bytes]) -> ObjectInfo:
        """Write one object on ``branch`` (uncommitted until :meth:`commit`)."""
        check_branch_id(branch)
        check_object_path(path)
        if hasattr(data, "read"):
            data = data.read()
        action = f"write {path!r} on {branch!r}"

        def upload() -> ObjectInfo:  # the whole object to one path: sending it twice leaves it as once
            with self._t(action, not_found=self._what_exists):
                obj = self._sdk.branch(branch).object(path).upload(data, mode="wb" if isinstance(data, bytes) else "w")
                return self._info(obj.stat())

        return resend_when_back(upload, self.hub.endpoint, action)

    def put_file(self, branch: str, path: str, local: str | Path) -> ObjectInfo:
        with open(local, "rb") as fh:
            return self.put(branch, path, fh.read())

    def get(self, ref: str, path: str) -> bytes:
        check_object_path(path)
        with self._t(f"read {path!r} at {ref!r}", not_found=lambda: self._missing_object(ref, path)):
            with self._sdk.ref(ref).object(path).reader(mode="rb") as fh:
                blob = fh.read()
        return blob if isinstance(blob, bytes) else blob.encode()

    def stat(self, ref: str, path: str) -> ObjectInfo:
        check_object_path(path)
        with self._t(f"stat {path!r} at {ref!r}", not_found=lambda: self._missing_object(ref, path)):
            return self._info(self._sdk.ref(ref).object(path).stat())

    def exists(self, ref: str, path: str) -> bool:
        check_object_path(path)
        with self._t(f"check {path!r} at {ref!r}", not_found=self._what_exists):
            return self._sdk.ref(ref).object(path).exists()

    def list(self, ref: str, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        with self._t(f"list {prefix or '/'!r} at {ref!r}", not_found=self._what_exists):
            return [self._info(o) for o in self._sdk.ref(ref).objects(prefix=prefix or None)]

    def delete(self, branch: str, paths: str | Iterable[str]) -> None:
        items = [paths] if isinstance(paths, str) else list(paths)
        for p in items:
            check_object_path(p)
        action = f"delete {len(items)} object(s) on {branch!r}"

        def delete() -> Any:  # deleting what is already gone is no error: sending it twice is safe
            with self._t(action, not_found=self._what_exists):
                # the SDK annotates it "-> None", yet it returns the server's ObjectErrorList
                return self._sdk.branch(check_branch_id(branch)).delete_objects(items)

        answer = resend_when_back(delete, self.hub.endpoint, action)
        # lakeFS answers a bulk delete 200 with a per-object error list (a protected branch refuses each one there)
        failed = list(getattr(answer, "errors", None) or [])
        if failed:
            first = str(failed[0].message)
            if "protected branch" in first.lower():
                raise protected(f"{action} in repository {self.name!r}", first)
            shown = "; ".join(f"{e.path!r}: {e.message} (HTTP {e.status_code})" for e in failed[:10])
            raise HubError(f"cannot {action} in repository {self.name!r}: {len(failed)} refused: {shown}")

    def import_prefix(
        self, branch: str, source_uri: str, destination: str, message: str, metadata: Mapping[str, Any] | None = None
    ) -> CommitInfo:
        """Import objects under ``source_uri`` (``s3://``, ``local:///abs/dir/``...) without copying them, and commit.

        On the local hub, ``local://`` sources must lie under ``<FLOTILLA_HOME>/imports``.
        """
        check_prefix(destination)
        meta = self._metadata(metadata)
        self._message(message)
        from datetime import timedelta

        with self._t(f"import {source_uri!r} into {branch!r}", not_found=self._what_exists):
            mgr = self._sdk.branch(check_branch_id(branch)).import_data(message, metadata=meta)
            status = mgr.prefix(source_uri, destination=destination).run(poll_interval=timedelta(milliseconds=200))
        if status.error is not None or status.commit is None:
            raise ConflictError(f"import of {source_uri!r} failed: {status.error.message if status.error else 'no commit'}")
        return _commit_info(status.commit)

    def _missing_object(self, ref: str, path: str) -> str:
        parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        try:
            near = [o.path for o in self.list(ref, parent)][:10]
        except NotFoundError:
            return self._what_exists()
        return f"objects under {parent or '/'!r} at {ref!r}: {', '.join(near) or '(none)'}"

    @staticmethod
    def _info(o: Any) -> ObjectInfo:
        return ObjectInfo(o.path, int(o.size_bytes or 0), o.checksum, int(o.mtime))

    # ---- commits, diffs, merges -----------------------------------------------------
    def uncommitted(self, branch: str, prefix: str = "") -> builtins.list[Change]:
        with self._t(f"list uncommitted changes on {branch!r}", not_found=self._what_exists):
            changes = self._sdk.branch(check_branch_id(branch)).uncommitted(prefix=prefix or None)
            return [Change(c.type, c.path, c.size_bytes) for c in changes]

    def discard_uncommitted(self, branch: str) -> None:
        """Drop every staged change on ``branch``: it is its last commit again (a killed writer's half-done work)."""
        with self._t(f"discard the uncommitted changes on {branch!r}", not_found=self._what_exists):
            self._sdk.branch(check_branch_id(branch)).reset_changes("reset")

    def commit(
        self, branch: str, message: str, metadata: Mapping[str, Any] | None = None, *, allow_empty: bool = False
    ) -> CommitInfo:
        """Commit what is staged on ``branch``; metadata values become strings (JSON for non-strings)."""
        meta = self._metadata(metadata)
        self._message(message)
        action = f"commit on {branch!r}"

        def commit() -> CommitInfo:
            with self._t(action, not_found=self._what_exists):
                ref = self._sdk.branch(check_branch_id(branch)).commit(message, metadata=meta, allow_empty=allow_empty)
                return _commit_info(ref.get_commit())

        def landed() -> CommitInfo | None:  # the branch's head is this very commit: it was made before the answer was lost
            head = self.commit_info(branch)
            return head if head.message == message and head.metadata == meta else None

        return resend_when_back(commit, self.hub.endpoint, action, landed=landed)

    def diff(self, left: str, right: str, prefix: str = "", *, two_dot: bool = True) -> builtins.list[Change]:
        """Changes that turn ``left`` into ``right`` (two-dot: the plain difference of the two snapshots)."""
        check_prefix(prefix)
        # passed through the SDK's **kwargs to the server, whose default is three-dot
        server_args: dict[str, Any] = {"type": "two_dot"} if two_dot else {}
        with self._t(f"diff {left!r}..{right!r}", not_found=self._what_exists):
            diff = self._sdk.ref(left).diff(right, prefix=prefix or None, **server_args)
            return [Change(c.type, c.path, c.size_bytes) for c in diff]

    def merge_base(self, a: str, b: str) -> str:
        """The newest commit both refs descend from (lakeFS's merge base): ``a`` itself when ``b`` contains it."""
        sdk = self.hub.client.sdk_client
        with self._t(f"find the merge base of {a!r} and {b!r}", not_found=self._what_exists):
            base: str = sdk.refs_api.find_merge_base(self.name, a, b).base_commit_id
        return base

    def merge(
        self,
        source: str,
        destination: str,
        message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        strategy: Literal["source-wins", "dest-wins"] | None = None,
        allow_empty: bool = False,
    ) -> str:
        """Merge ``source`` into the branch ``destination``; return the merge commit id.

        On conflict nothing changes on ``destination`` and :class:`MergeConflictError`
        lists the conflicting paths.
        """
        check_branch_id(destination)
        meta = self._metadata(metadata)

        def conflict(msg: str) -> ConflictError:
            paths = self._conflicting_paths(source, destination)
            if not paths and "conflict" not in msg.lower():
                return ConflictError(f"cannot merge {source!r} into {destination!r}: {msg}")
            return MergeConflictError(source, destination, paths)

        kw: dict[str, Any] = {
            "message": self._message(message or f"Merge {source} into {destination}", "merge message"),
            "metadata": meta,
            "allow_empty": allow_empty,
        }
        if strategy:
            kw["strategy"] = strategy
        with self._merge_lock(destination):
            with self._t(f"merge {source!r} into {destination!r}", not_found=self._what_exists, conflict=conflict):
                return self._sdk.ref(source).merge_into(destination, **kw)

    def _conflicting_paths(self, source: str, destination: str) -> builtins.list[str]:
        """Paths changed on both sides since the merge base, to different content."""
        base = self.merge_base(source, destination)
        src = {c.path: c for c in self.diff(base, source)}
        dst = {c.path: c for c in self.diff(base, destination)}
        both = sorted(set(src) & set(dst))
        out = []
        for p in both:
            if src[p].type == "removed" and dst[p].type == "removed":
                continue
            try:
                same = self.stat(source, p).checksum == self.stat(destination, p).checksum
            except NotFoundError:
                same = False
            if not same:
                out.append(p)
        return out

    @contextmanager
    def _merge_lock(self, destination: str) -> Iterator[None]:
        key = f"{self.name}--{destination}"
        with _merge_locks_guard:
            lock = _merge_locks.setdefault(key, threading.Lock())
        lock_dir = self.hub.settings.home / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with lock, open(lock_dir / f"merge-{key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _metadata(self, metadata: Mapping[str, Any] | None) -> dict[str, str]:
        """Stringify commit metadata and refuse anything that carries a credential."""
        out = {
            str(k): str(v) if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
            for k, v in (metadata or {}).items()
        }
        secret = self.hub.credentials.secret_access_key
        for i, (k, v) in enumerate(out.items()):
            if secret and secret in k:  # the key itself must not be echoed: it holds the secret
                self._refuse_secret(f"the key of commit metadata entry #{i + 1}")
            if secret and secret in v:
                self._refuse_secret(f"commit metadata key {k!r}")
        return out

    def _message(self, message: str, what: str = "commit message") -> str:
        """A commit or merge message is history too: refuse one that carries the secret key."""
        secret = self.hub.credentials.secret_access_key
        if secret and secret in message:
            self._refuse_secret(f"the {what}")
        return message

    @staticmethod
    def _refuse_secret(where: str) -> None:
        # never quote the offending text: it holds the secret
        raise ConfigError(
            f"{where} contains the hub's secret key; refusing to write it into history",
            hint="remove credentials from configs, names and messages before they are recorded",
        )

    # ---- the one branch lifecycle ------------------------------------------------------
    def transact(
        self,
        name: str,
        source: str = "main",
        *,
        prefix: str = "exp-",
        merge_into: str | None = None,
        message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
        resume: bool = False,
        allow_empty_merge: bool = False,
        branch: str | None = None,
    ) -> Experiment:
        """A short-lived branch ``<prefix><name>`` pinned to ``source``'s current commit; see :class:`Experiment`.

        Every branch flotilla makes goes through here (experiments ``exp-``, ingests ``ingest-``,
        receipts ``receipt-``, gate installs ``gate-install-``, promotion staging ``promote-``, sweep
        trials ``trial-``), so creation, commit, merge, clean-up on failure and retention are written once.
        """
        return Experiment(
            self,
            name,
            source,
            merge_into=merge_into,
            message=message,
            metadata=metadata,
            retention=retention or Retention(),
            prefix=prefix,
            resume=resume,
            allow_empty_merge=allow_empty_merge,
            branch=branch,
        )

    def experiment(
        self,
        name: str,
        source: str = "main",
        *,
        merge_into: str | None = None,
        message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        retention: Retention | None = None,
    ) -> Experiment:
        """An experiment branch (``exp-<name>``) pinned to ``source``'s current commit: :meth:`transact` for experiments."""
        return self.transact(name, source, merge_into=merge_into, message=message, metadata=metadata, retention=retention)
