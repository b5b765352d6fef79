"""Names users choose, mapped onto the ids lakeFS accepts.

Experiments and trials have free-form names ("lr=3e-4/bs 64", "Ray trial
train_fn_1a2b_00003"), but lakeFS branch ids must match ``^\\w[-\\w]*$`` in Go's
ASCII sense. The mapping here is:

* **deterministic** – the same name always gives the same branch, so a resumed
  sweep finds its branches again;
* **collision-free** – a name that is already a valid id (and does not look like
  a hashed id) is kept verbatim; every other name becomes a readable slug plus
  ``--`` and 12 hex digits of its SHA-256, so two different names can only meet
  through a hash collision. A verbatim name that *ends* like a hashed id is hashed
  as well, which keeps the two families disjoint.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

from flotilla.errors import InvalidNameError

# \A...\Z, not ^...$: '$' also matches before a trailing newline, so "main\n" would pass.
BRANCH_RE = re.compile(r"\A[A-Za-z0-9_][-A-Za-z0-9_]*\Z")
REPO_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{2,62}\Z")
_HASHED_TAIL = re.compile(r"--[0-9a-f]{12}\Z")
_DISALLOWED = re.compile(r"[^A-Za-z0-9_]+")
MAX_BRANCH_LEN = 96
_SLUG_LEN = 60

BRANCH_RULE = (
    "branch ids use ASCII letters, digits, '_' and '-', start with a letter, digit or '_',"
    f" and are at most {MAX_BRANCH_LEN} characters"
)
REPO_RULE = "repository ids are 3-63 characters of lowercase a-z, 0-9 and '-', starting with a letter or digit"


def _encodable(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8: a lone surrogate (Python's stand-in for undecodable bytes) cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def branch_id(name: str, prefix: str = "") -> str:
    """Map a free-form name (plus an optional ``prefix`` such as ``"exp-"``) to a branch id."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError("an experiment or trial name must be a non-empty string", hint="pass a name such as 'lr-sweep-1'")
    if not _encodable(name):
        raise InvalidNameError(
            f"the name {name.encode('utf-8', 'backslashreplace').decode()!r} is not valid Unicode (a lone surrogate)",
            hint="use a name of ordinary characters, such as 'lr-sweep-1'",
        )
    candidate = prefix + name
    if BRANCH_RE.match(candidate) and len(candidate) <= MAX_BRANCH_LEN and not _HASHED_TAIL.search(candidate):
        return candidate
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    slug = _DISALLOWED.sub("-", name).strip("-")[:_SLUG_LEN].strip("-") or "x"
    return f"{prefix}{slug}--{digest}"


def check_branch_id(branch: str) -> str:
    """Raise ``InvalidNameError`` naming the rule when ``branch`` is not a valid lakeFS branch id."""
    if not isinstance(branch, str) or not BRANCH_RE.match(branch) or len(branch) > MAX_BRANCH_LEN:
        raise InvalidNameError(
            f"invalid branch id {branch!r}: {BRANCH_RULE}",
            hint="use flotilla.names.branch_id(name) to map any name to a valid id",
        )
    return branch


DATASET_RE = re.compile(r"\A[A-Za-z0-9_][-A-Za-z0-9_.]{0,99}\Z")


def check_dataset_name(name: str) -> str:
    """A dataset is one folder under ``datasets/``: a '/' would nest it where the gate never looks."""
    if not isinstance(name, str) or not DATASET_RE.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid dataset name {name!r}: up to 100 letters, digits, '_', '-' and '.', no '/' and no '..'",
            hint="e.g. 'synthetic', 'utkface' or 'faces-2026-11'",
        )
    return name


def check_registry_name(what: str, name: str) -> str:
    """A family or an alias name: one path component of ``registry/aliases/<family>/<alias>.json``."""
    if not isinstance(name, str) or not DATASET_RE.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {what} name {name!r}: up to 100 letters, digits, '_', '-' and '.', no '/', '@' and no '..'",
            hint="e.g. family 'face-family', alias 'production'",
        )
    return name


def check_repo_id(repo: str) -> str:
    """Raise ``InvalidNameError`` naming the rule when ``repo`` is not a valid lakeFS repository id."""
    if not isinstance(repo, str) or not REPO_RE.match(repo):
        raise InvalidNameError(f"invalid repository id {repo!r}: {REPO_RULE}", hint="e.g. 'faces' or 'faces-v2'")
    return repo


def check_object_path(path: str) -> str:
    """Validate an object key inside a repository against path traversal and oddities.

    Keys are POSIX-style relative paths. Rejecting ``..``, absolute paths, empty
    segments, backslashes and control characters means a key can be mirrored to
    a local cache directory (``cache_root / key``) without ever escaping it.
    """
    problem = None
    if not isinstance(path, str) or not path:
        problem = "it is empty"
    elif path.startswith("/"):
        problem = "it is absolute (starts with '/')"
    elif "\\" in path:
        problem = "it contains a backslash"
    elif any(ord(c) < 32 or ord(c) == 127 for c in path):
        problem = "it contains a control character"
    elif not _encodable(path):
        problem = "it is not valid Unicode (a lone surrogate, e.g. from undecodable file-name bytes)"
    else:
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
            problem = "it has an empty, '.' or '..' segment"
        elif len(path.encode()) > 1024:
            problem = "it is longer than 1024 bytes"
    if problem:
        raise InvalidNameError(
            f"invalid object path {path.encode('utf-8', 'backslashreplace').decode() if isinstance(path, str) else path!r}: "
            f"{problem}",
            hint="object paths are relative POSIX paths like 'datasets/faces/shard-00000.parquet'",
        )
    return path


def check_prefix(prefix: str) -> str:
    """Like :func:`check_object_path` but allows the empty prefix and a trailing '/'."""
    if prefix == "":
        return prefix
    check_object_path(prefix.rstrip("/") or ".")
    return prefix


def safe_local_path(root: str, key: str) -> PurePosixPath:
    """Join a validated key under ``root`` (a cache dir); never escapes ``root``."""
    return PurePosixPath(root) / check_object_path(key)
