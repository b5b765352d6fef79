"""Reaching a Ray cluster's Jobs API: where jobs go, its token, and Ray's errors as flotilla's.

Kept apart from submission and from the handles because both use it: one place turns Ray's and
``requests``' exceptions into a :class:`~flotilla.cluster.files.ClusterError` or :class:`JobError` with a hint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flotilla.cluster.files import ClusterError, auth_headers
from flotilla.cluster.health import normalise_address
from flotilla.cluster.local import LocalCluster
from flotilla.errors import FlotillaError
from flotilla.settings import Settings, ray_address

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


class JobError(FlotillaError):
    """A job could not be submitted, or it ended without a result."""


class Target:
    """Where jobs go: a Jobs API URL, its auth header, and whether it is our own local cluster."""

    def __init__(self, address: str | None, settings: Settings) -> None:
        address = address or ray_address()
        local = LocalCluster(settings)
        state = local.state()
        if address:
            self.url = normalise_address(address)
            self.local = bool(state and state["dashboard_url"] == self.url)
        else:
            st = local.status()
            if not st.running:
                raise ClusterError(
                    f"no Ray cluster to submit to: the local cluster is not running and no address was given. {st.note}".strip(),
                    hint="start one with 'flotilla cluster up', or pass --address / set FLOTILLA_RAY_ADDRESS",
                )
            self.url, self.local = st.address, True
        self.headers = auth_headers(local.token_path if self.local else None)
        self.python = state["python"] if self.local and state else "python"


def job_client(address: str | None = None, settings: Settings | None = None) -> JobSubmissionClient:
    """A ``JobSubmissionClient`` that carries the cluster's token; errors become ClusterError with a hint."""
    return connect(address, settings)[0]


def connect(address: str | None, settings: Settings | None) -> tuple[JobSubmissionClient, Target]:
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    target = Target(address, settings or Settings.from_env())
    try:
        client = JobSubmissionClient(target.url, headers=dict(target.headers))
    except AuthenticationError:
        raise ClusterError(
            f"the Ray cluster at {target.url} refused the auth token",
            hint="for flotilla's own cluster the token is <FLOTILLA_HOME>/ray/auth_token; for another cluster set "
            "RAY_AUTH_TOKEN_PATH to its token file",
        ) from None
    except (ConnectionError, RuntimeError, ValueError, requests.RequestException) as exc:
        # ValueError: what answered is not a Ray dashboard (requests' JSON errors are ValueErrors)
        raise ClusterError(
            f"cannot reach the Ray Jobs API at {target.url}: {type(exc).__name__}: {str(exc)[:300]}",
            hint="check 'flotilla cluster status', and that --address names a Ray dashboard",
        ) from None
    return client, target


@contextmanager
def quiet_ray() -> Iterator[None]:
    """Ray's client logs every upload step at INFO; keep the user's terminal for the job's own output."""
    names = ("ray._private.runtime_env.packaging", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def call(what: str, fn: Any, *args: Any) -> Any:
    """Run one Jobs API call; what Ray and ``requests`` raise becomes a ClusterError or JobError with a hint."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError:
        raise ClusterError(
            f"could not {what}: the cluster refused the auth token",
            hint="for another cluster set RAY_AUTH_TOKEN_PATH to its token file",
        ) from None
    except requests.RequestException as exc:  # the cluster went away (or an HTTP error from a proxy)
        raise ClusterError(
            f"could not {what}: the Ray Jobs API did not answer ({type(exc).__name__}: {str(exc)[:300]})",
            hint="check 'flotilla cluster status'",
        ) from None
    except (RuntimeError, ValueError) as exc:  # unknown id, a refused submission, a working_dir over Ray's size limit
        raise JobError(
            f"could not {what}: {str(exc)[:500]}", hint="'flotilla jobs list' shows the known submission ids"
        ) from None
