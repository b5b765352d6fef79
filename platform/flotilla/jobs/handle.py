"""Handles on submitted jobs: status, logs (followed live), stop, wait, and the result a job prints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from flotilla.jobs.client import JobError, call, job_client, quiet_ray
from flotilla.jobs.entrypoint import RESULT_MARKER
from flotilla.jobs.specs import JobSpec
from flotilla.settings import Settings

if TYPE_CHECKING:
    pass


class JobHandle:
    """A submitted job: status, logs (whole or streamed), stop, wait, and its result summary."""

    def __init__(self, submission_id: str, client: Any, pinned: JobSpec | None = None) -> None:
        self.submission_id = submission_id
        self.client = client
        self.pinned = pinned

    def __repr__(self) -> str:
        return f"JobHandle({self.submission_id!r})"

    def info(self) -> Any:
        return call(f"read job {self.submission_id}", self.client.get_job_info, self.submission_id)

    def status(self) -> str:
        return str(call(f"read job {self.submission_id}", self.client.get_job_status, self.submission_id))

    def logs(self) -> str:
        return call(f"read the logs of {self.submission_id}", self.client.get_job_logs, self.submission_id)

    def tail(self, follow: bool = True) -> Iterator[str]:
        """Log text as it arrives; ends when the job reaches a terminal state (``follow=False``: what is there now)."""
        if not follow:
            yield self.logs()
            return
        import aiohttp

        # a known id first: Ray's dashboard logs a refused log-tail handshake with its request headers, our
        # bearer token among them (dashboard.log), and an unknown id is refused that way
        self.info()
        loop = asyncio.new_event_loop()
        agen = self.client.tail_job_logs(self.submission_id)
        pending = None
        try:
            while True:
                # a task, not a bare run of __anext__: Ctrl-C arrives while it waits, and the generator
                # can only be closed after the task is cancelled (closing a running one raises RuntimeError)
                pending = loop.create_task(agen.__anext__())
                try:
                    with quiet_ray():
                        chunk = loop.run_until_complete(pending)
                except StopAsyncIteration:
                    return
                except (RuntimeError, aiohttp.ClientError) as exc:  # unknown id (404), the cluster went away
                    raise JobError(
                        f"could not follow the logs of {self.submission_id}: {type(exc).__name__}: {str(exc)[:300]}",
                        hint=f"'flotilla jobs status {self.submission_id}' says whether it still runs; "
                        "'flotilla jobs list' shows the known ids",
                    ) from None
                pending = None
                yield chunk
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with suppress(BaseException):
                    loop.run_until_complete(pending)
            with suppress(Exception):
                loop.run_until_complete(agen.aclose())
            loop.close()

    def stop(self) -> bool:
        """Ask Ray to stop the job (SIGTERM to its driver's process group, SIGKILL after a few seconds)."""
        return bool(call(f"stop {self.submission_id}", self.client.stop_job, self.submission_id))

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the job ends; return its final status (SUCCEEDED, FAILED or STOPPED)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status()
            if st in ("SUCCEEDED", "FAILED", "STOPPED"):
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(
                    f"job {self.submission_id} is still {st} after {timeout:.0f}s", hint="'flotilla jobs logs -f' follows it"
                )
            time.sleep(poll)

    def result(self) -> dict[str, Any]:
        """The summary the entrypoint printed as its last ``FLOTILLA_RESULT {json}`` line."""
        found = parse_result(self.logs())
        if found is None:
            raise JobError(
                f"job {self.submission_id} ({self.status()}) printed no result line",
                hint=f"it did not finish its work; read 'flotilla jobs logs {self.submission_id}'",
            )
        return found


def parse_result(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                raise JobError(
                    f"the job's result line is damaged: {line[:200]!r}",
                    hint="another process's output was interleaved with it; the full logs have the run's details",
                ) from None
    return None


def get_job(submission_id: str, address: str | None = None, settings: Settings | None = None) -> JobHandle:
    return JobHandle(submission_id, job_client(address, settings))


def list_jobs(address: str | None = None, settings: Settings | None = None) -> list[Any]:
    """Ray's ``JobDetails`` of every job the cluster knows, newest first."""
    client = job_client(address, settings)
    jobs = call("list jobs", client.list_jobs)
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)
