"""Branch protection: lakeFS refuses every direct write to a protected branch; only merges change it.

Open-source lakeFS has no path-level permissions, so a key that may write any branch may also
commit on ``main``. Branch protection closes that: with a rule for ``main``, uploads, deletes,
commits and resets on ``main`` are refused for every key, and the only way in is a merge, which is
where flotilla's pre-merge data gate runs. Every flotilla path that changes ``main`` (ingest, label
fixes, appends, reviews, gate installs, promotions of train and sweep runs, alias moves) writes on a
short-lived branch of :meth:`Repo.transact` and merges it, so protecting ``main`` changes nothing for
flotilla and stops anything else writing there unseen by the gate (docs/hub.md, "Branch protection").

A rule is a glob pattern (``main``, ``release-*``) stored with the repository on the server; the
rules are read and written whole, so each change here is guarded by the ETag of what was read and
retried if another writer changed the rules meanwhile.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from typing import TYPE_CHECKING, Any

from flotilla.errors import ConflictError, HubError, ProtectedBranchError
from flotilla.hub._translate import translate
from flotilla.hub.sdk import lakefs_exceptions
from flotilla.names import check_branch_id

if TYPE_CHECKING:
    from flotilla.hub.repo import Repo

_TRIES = 5
ENFORCED_WITHIN_S = 30.0
"""How long :func:`protect` waits for the server to enforce a new rule (lakeFS caches a repository's settings
for a few seconds: writes were still let through ~4 s after the rule was stored, on lakeFS 1.84)."""


def protection_rules(repo: Repo) -> list[str]:
    """The branch-name patterns protected in ``repo`` (``[]``: none)."""
    return _read(repo)[0]


def is_protected(repo: Repo, branch: str) -> bool:
    """Whether a rule of ``repo`` matches ``branch`` (lakeFS matches with fnmatch: ``*`` and ``?``)."""
    return any(fnmatch.fnmatchcase(branch, p) for p in protection_rules(repo))


def protect(repo: Repo, branch: str = "main") -> bool:
    """Protect ``branch`` in ``repo`` (commits and uploads refused, merges allowed); False if it already was.

    ``branch`` may be a glob (``release-*``). When ``branch`` is an existing branch, this returns once the
    server refuses writes to it (:data:`ENFORCED_WITHIN_S`). Needs a key allowed to change the
    repository's settings (an admin's, on a hub with RBAC).
    """
    _check_pattern(branch)
    changed = _change(repo, branch, add=True)
    _await(repo, branch, refused=True)
    return changed


def unprotect(repo: Repo, branch: str = "main") -> bool:
    """Remove the rule that is exactly ``branch``; False if there was none (another rule matching it stays).

    Returns once the server lets writes to ``branch`` through, unless another rule still matches it.
    """
    _check_pattern(branch)
    changed = _change(repo, branch, add=False)
    if not is_protected(repo, branch):
        _await(repo, branch, refused=False)
    return changed


def _refuses_writes(repo: Repo, branch: str) -> bool:
    """Whether the server refuses writes to ``branch`` now: deleting a path that does not exist changes nothing
    on an open branch (no staged change, no commit) and is refused on a protected one."""
    try:
        repo.delete(branch, f"_flotilla/protection-probe-{uuid.uuid4().hex}")
    except ProtectedBranchError:
        return True
    return False


def _await(repo: Repo, branch: str, *, refused: bool) -> None:
    if any(c in branch for c in "*?") or branch not in repo.branches():
        return  # nothing to probe: the rule is stored, and lakeFS applies it within seconds
    deadline = time.monotonic() + ENFORCED_WITHIN_S
    while _refuses_writes(repo, branch) != refused:
        if time.monotonic() > deadline:
            raise HubError(
                f"the branch protection rule change for {branch!r} in {repo.name!r} is stored, but after "
                f"{ENFORCED_WITHIN_S:.0f} s the hub still {'accepts' if refused else 'refuses'} direct writes to it",
                hint="lakeFS caches repository settings per server: check the rules in the repository's Settings > "
                "Branches page of the lakeFS UI, and try again in a minute",
            )
        time.sleep(0.5)


class _RulesChanged(Exception):
    """The rules changed between reading and writing them (HTTP 412 on the ETag): read them again."""


def _stale(exc: Exception) -> Exception:
    return _RulesChanged() if getattr(exc, "status_code", None) == 412 else exc


def _check_pattern(pattern: str) -> None:
    check_branch_id(pattern.replace("*", "x").replace("?", "x"))


def _read(repo: Repo) -> tuple[list[str], str]:
    api = repo.hub.client.sdk_client.repositories_api
    action = f"read the branch protection rules of repository {repo.name!r}"
    with translate(action, repo.hub.endpoint), lakefs_exceptions().api_exception_handler():
        resp = api.get_branch_protection_rules_with_http_info(repo.name)
    headers: Any = resp.headers or {}
    return [r.pattern for r in resp.data or []], str(headers.get("ETag") or "")


def _change(repo: Repo, branch: str, *, add: bool) -> bool:
    from lakefs_sdk import BranchProtectionRule

    api = repo.hub.client.sdk_client.repositories_api
    for _ in range(_TRIES):
        patterns, etag = _read(repo)
        if (branch in patterns) == add:
            return False
        wanted = [*patterns, branch] if add else [p for p in patterns if p != branch]
        action = f"{'protect' if add else 'unprotect'} branch {branch!r} of repository {repo.name!r}"
        rules = [BranchProtectionRule(pattern=p) for p in wanted]
        try:
            # if_match: refused (412) when someone else changed the rules since they were read
            with translate(action, repo.hub.endpoint), lakefs_exceptions().api_exception_handler(_stale):
                api.set_branch_protection_rules(repo.name, rules, if_match=etag)
            return True
        except _RulesChanged:
            continue
    raise ConflictError(
        f"cannot {action}: its rules kept changing under this write ({_TRIES} tries)",
        hint="someone else is editing the repository's branch protection rules: try again once they are done",
    )
