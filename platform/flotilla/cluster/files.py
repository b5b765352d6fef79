"""Where flotilla's local Ray cluster keeps its files, and its auth token.

Kept apart from :mod:`flotilla.cluster.local` (which starts and stops the nodes) because
drivers and job clients need the token and the paths without managing a cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from flotilla.errors import FlotillaError
from flotilla.hostio import write_private
from flotilla.settings import Settings, ray_auth_token, ray_auth_token_path

_MAX_TMPDIR = 36  # <tmp>/<node>/session_<date>_<usec>_<pid>/sockets/plasma_store must stay < 108 chars


class ClusterError(FlotillaError):
    """The local Ray cluster failed to start, or a cluster address does not answer."""


def ray_dir(settings: Settings) -> Path:
    return settings.home / "ray"


def ray_tmpdir(settings: Settings) -> Path:
    """Ray's temp root: under FLOTILLA_HOME when short enough, else ``/tmp/flotilla-ray-<hash of home>``.

    Ray puts unix sockets below it and Linux limits socket paths to 107 bytes,
    so a long FLOTILLA_HOME (pytest temp dirs, deep home dirs) gets a short,
    stable stand-in: the same home always maps to the same dir.
    """
    candidate = ray_dir(settings) / "tmp"
    if len(str(candidate)) <= _MAX_TMPDIR:
        return candidate
    digest = hashlib.sha256(str(settings.home).encode()).hexdigest()[:12]
    return Path("/tmp") / f"flotilla-ray-{digest}"


def private_dir(d: Path, shared_parent: bool) -> None:
    """Create ``d`` as 0700; under a world-writable parent (``/tmp``), only if nobody else got there first.

    The ``/tmp`` stand-in's name is predictable (a hash of the home path), so another local user
    could create it, or a symlink by that name, before the cluster's first start; Ray would then
    put its sockets and session files where that user can read or replace them. Such a dir is
    refused, never reused or chmod-ed. Dirs under FLOTILLA_HOME are the user's own: a symlinked
    one (a home on another disk) is followed.
    """
    if not shared_parent:
        d.mkdir(parents=True, exist_ok=True)
    else:
        with contextlib.suppress(FileExistsError):  # ours from an earlier start, or not: lstat tells (a dangling symlink too)
            d.mkdir(mode=0o700)
        st = d.lstat()
        problem = (
            "a symlink"
            if stat.S_ISLNK(st.st_mode)
            else "not a directory"
            if not stat.S_ISDIR(st.st_mode)
            else f"owned by uid {st.st_uid}, not you ({os.getuid()})"
            if st.st_uid != os.getuid()
            else ""
        )
        if problem:
            raise ClusterError(
                f"{d}, where the local Ray cluster keeps its sockets, is {problem}: "
                "another user may have created it to read or hijack the cluster",
                hint=f"remove {d} if you trust it is stale, or set FLOTILLA_HOME to a shorter path "
                f"(at most {_MAX_TMPDIR - len('/ray/tmp')} characters) so Ray's files stay in your home",
            )
    os.chmod(d, 0o700)


def token_path(settings: Settings) -> Path:
    return ray_dir(settings) / "auth_token"


def ensure_token(settings: Settings) -> Path:
    """Create the cluster's auth token once (0600, 256 bits) and return its path (never its value)."""
    path = token_path(settings)
    if not path.exists() or not path.read_text().strip():
        write_private(path, secrets.token_hex(32))
    os.chmod(path, 0o600)
    return path


def auth_headers(token_file: Path | None) -> dict[str, str]:
    """A Bearer header from ``token_file``, else from Ray's own lookup (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token)."""
    token = ""
    if token_file is not None and token_file.exists():
        token = token_file.read_text().strip()
    elif given := ray_auth_token():
        token = given.strip()
    else:
        for cand in (ray_auth_token_path(), Path.home() / ".ray" / "auth_token"):
            if cand and cand.exists():
                token = cand.read_text().strip()
                break
    return {"Authorization": f"Bearer {token}"} if token else {}
