"""The one place where lakeFS SDK and HTTP errors become flotilla errors.

Every call into the ``lakefs`` SDK runs inside :func:`translate`, which maps
HTTP statuses to our hierarchy and adds the next step. Original exceptions are
dropped (``from None``): their text can include request details we do not
control, and a flotilla message must be safe to log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lakefs.exceptions as lex
import urllib3.exceptions

from flotilla.errors import (
    AuthError,
    ConflictError,
    DataValidationError,
    HubError,
    HubUnavailableError,
    InvalidNameError,
    NotFoundError,
)


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
    try:
        yield
    except lex.NotFoundException as exc:
        extra = ""
        if not_found is not None:
            try:
                extra = not_found()
            except Exception:  # listing is a courtesy; never mask the real error
                extra = ""
        raise NotFoundError(f"cannot {action}: {_server_message(exc)}", hint=extra or None) from None
    except (lex.NotAuthorizedException, lex.ForbiddenException, lex.NoAuthenticationFound) as exc:
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
        msg = _server_message(exc)
        if "no changes" in msg.lower():  # an empty commit or merge: nothing is wrong with any name
            raise HubError(f"cannot {action}: {msg}",
                           hint="there is nothing new to commit or merge: write to the branch first (or pass allow_empty=True)") from None
        raise InvalidNameError(f"cannot {action}: {msg}") from None
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
