"""The one place where lakeFS SDK and HTTP errors become flotilla errors.

Every call into the ``lakefs`` SDK runs inside :func:`translate`, which maps
HTTP statuses to our hierarchy and adds the next step. Original exceptions are
dropped (``from None``): their text can include request details we do not
control, and a flotilla message must be safe to log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import urllib3.exceptions

from flotilla.errors import (
    AuthError,
    ConflictError,
    DataValidationError,
    HubError,
    HubUnavailableError,
    InvalidNameError,
    NotFoundError,
    ProtectedBranchError,
)
from flotilla.hub.retry import mark_answered
from flotilla.hub.sdk import lakefs_exceptions

if TYPE_CHECKING:
    import lakefs.exceptions as lex


def _server_message(exc: lex.LakeFSException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return getattr(exc, "reason", None) or type(exc).__name__


def unavailable(endpoint: str) -> HubUnavailableError:
    local = "127.0.0.1" in endpoint or "localhost" in endpoint
    return HubUnavailableError(
        f"the lakeFS hub at {endpoint} does not answer",
        hint="start the local hub with 'flotilla hub up' (see 'flotilla hub status' and 'flotilla hub logs')"
        if local
        else "check that the lakeFS server is running and LAKECTL_SERVER_ENDPOINT_URL is right",
    )


_NAME_IN_MESSAGE = re.compile(r"\b(?:branch|repository|tag|ref) id\b")


def bad_request(action: str, msg: str) -> HubError:
    """The error for an HTTP 400, by lakeFS's message (checked against lakeFS v1.84's sources).

    lakeFS answers 400 for very different things: a bad name, but also merging
    into a branch with uncommitted changes or reusing a storage namespace. Only
    the ones recognised here get a specific class and hint; anything else is a
    plain :class:`HubError` quoting lakeFS, rather than a wrong guess.
    """
    low = msg.lower()
    what = f"cannot {action}: {msg}"
    if "no changes" in low:  # graveler.ErrNoChanges: an empty commit or merge, nothing is wrong with any name
        return HubError(
            what, hint="there is nothing new to commit or merge: write to the branch first (or pass allow_empty=True)"
        )
    if "dirty branch" in low or "uncommitted changes" in low:  # graveler.ErrDirtyBranch / ErrCommitMetaRangeDirtyBranch
        return ConflictError(
            what,
            hint="the target branch has uncommitted changes, and lakeFS only merges (or reverts, resets) onto a clean "
            "branch: commit them (repo.commit) or discard them (lakectl branch reset), then try again",
        )
    if "namespace already in use" in low:  # api.ErrStorageNamespaceInUse, on repository create
        return ConflictError(
            what,
            hint="another repository, possibly a deleted one, already stored data there: pass another storage_namespace "
            "(on the local hub the namespace is local://<repository name>, so choose another repository name)",
        )
    if "invalid value" in low and _NAME_IN_MESSAGE.search(low):  # e.g. "argument branch: branch id: invalid value: ..."
        return InvalidNameError(what, hint="flotilla.names lists the rules; branch_id(name) maps any name to a valid branch id")
    return HubError(
        f"{what} (HTTP 400)",
        hint="lakeFS refused the request as invalid; its reason is quoted above ('flotilla hub logs' shows the local hub's side)",
    )


def protected(action: str, msg: str) -> ProtectedBranchError:
    """A direct write to a branch with a lakeFS branch protection rule: name the rule and the way in (a merge)."""
    return ProtectedBranchError(
        f"cannot {action}: the branch is protected by a lakeFS branch protection rule ({msg}); only merges may change it",
        hint="write on a short-lived branch and merge it (Repo.transact(name, merge_into=<branch>) does both; every "
        "flotilla command already does); to allow direct writes, remove the rule: "
        "'flotilla hub protect <repo> --branch <branch> --off' (or the repository's Settings > Branches in the lakeFS UI)",
    )


@contextmanager
def translate(
    action: str,
    endpoint: str,
    *,
    not_found: Callable[[], str] | None = None,
    conflict: Callable[[str], HubError] | None = None,
) -> Iterator[None]:
    """Run SDK calls for ``action`` (e.g. "create branch 'x' in 'faces'").

    ``not_found`` returns extra text listing what does exist; ``conflict`` builds
    a specific error from the server's message.
    """
    lex = lakefs_exceptions()
    try:
        yield
        mark_answered(endpoint)  # from now on, an outage of this hub is waited out (flotilla.hub.retry)
    except lex.NotFoundException as exc:
        extra = ""
        if not_found is not None:
            try:
                extra = not_found()
            except Exception:  # listing is a courtesy; never mask the real error
                extra = ""
        raise NotFoundError(f"cannot {action}: {_server_message(exc)}", hint=extra or None) from None
    except lex.ForbiddenException as exc:  # 403: the key was accepted; this operation is not allowed
        msg = _server_message(exc)
        if "protected branch" in msg.lower():  # graveler's ErrWriteToProtectedBranch / ErrCommitToProtectedBranch
            raise protected(action, msg) from None
        raise HubError(
            f"cannot {action}: the hub does not allow it ({msg})",
            hint="lakeFS forbids this for every key (e.g. deleting a repository's default branch) "
            "or this key lacks the permission: work on another branch, or ask the hub's admin",
        ) from None
    except (lex.NotAuthorizedException, lex.NoAuthenticationFound) as exc:
        raise AuthError(
            f"cannot {action}: the hub rejected the credentials ({_server_message(exc)})",
            hint="check the access key pair (LAKECTL_CREDENTIALS_* or the local hub's credentials file)",
        ) from None
    except lex.ConflictException as exc:
        msg = _server_message(exc)
        if conflict is not None:
            raise conflict(msg) from None
        raise ConflictError(f"cannot {action}: {msg}") from None
    except lex.BadRequestException as exc:
        raise bad_request(action, _server_message(exc)) from None
    except lex.LakeFSException as exc:
        if getattr(exc, "status_code", None) == 412:  # a pre-* hook (e.g. flotilla's data gate) refused
            raise DataValidationError(
                f"cannot {action}: a lakeFS hook refused it: {_server_message(exc)}",
                hint="run 'flotilla data validate --merge' on the source branch (or fix what the hook names)",
            ) from None
        raise HubError(f"cannot {action}: {_server_message(exc)} (HTTP {getattr(exc, 'status_code', '?')})") from None
    except (urllib3.exceptions.HTTPError, ConnectionError, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise unavailable(endpoint) from None
