"""One exception hierarchy for the whole platform.

Every library boundary (lakeFS SDK, Ray, torch, YAML) translates its own errors
into one of these, so callers catch ``FlotillaError`` and get a message that says
what went wrong *and what to do next*. The CLI maps any ``FlotillaError`` to a
clean one-paragraph message and exit code 1; anything else is a bug.

Messages must never contain credentials: construct them from names and ids only.
"""

from __future__ import annotations

from typing import Any

BRIEF_CHARS = 80


def brief(value: Any, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: what an error message may quote of a user's value.

    A value in a spec can be huge (a 10,000-item list, a YAML alias expanded): an error must stay a
    paragraph, not print the whole of it (or run out of memory building it).
    """
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:  # never build the whole repr
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    if len(text) <= limit:
        return text
    tail = f"… ({len(text)} chars)"
    return text[: max(0, limit - len(tail))] + tail


class FlotillaError(Exception):
    """Base of every error flotilla raises on purpose.

    ``hint`` is the next step for the user; it is appended to the message so
    that a plain ``str(err)`` already tells the whole story.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)

    def reword(self, message: str | None = None, *, hint: str | None = None) -> FlotillaError:
        """Replace the message and/or hint in place and return ``self``.

        For a caller that knows more than the layer that raised (e.g. that a failed
        merge left committed work on a branch): re-raising the same object keeps its
        class, so ``except`` clauses further up still match.
        """
        self.message = self.message if message is None else message
        self.hint = self.hint if hint is None else hint
        self.args = (f"{self.message}\n  hint: {self.hint}" if self.hint else self.message,)
        return self


class ConfigError(FlotillaError):
    """Settings, environment or on-disk state of flotilla itself are wrong."""


SHOWN_PROBLEMS = 20
"""How many of a SpecError's problems its message lists; ``problems`` keeps them all."""
PROBLEM_CHARS = 400
"""How long one listed problem may be: it may quote a user's value (a 1 MB name, a key of a huge mapping)."""


class SpecError(FlotillaError):
    """A YAML/typed spec is invalid; ``problems`` lists every problem found at once.

    The message lists the first :data:`SHOWN_PROBLEMS`, each cut to :data:`PROBLEM_CHARS`: a section
    that is a mapping of 100,000 unknown keys (or a 1 MB string) made a message of megabytes.
    """

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None) -> None:
        self.problems = list(problems or [])
        shown = [
            p if len(p) <= PROBLEM_CHARS else f"{p[: PROBLEM_CHARS - 20]}… ({len(p)} chars)"
            for p in self.problems[:SHOWN_PROBLEMS]
        ]
        more = len(self.problems) - len(shown)
        body = message + "".join(f"\n  - {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(body, hint=hint)


class InfrastructureError(FlotillaError):
    """Work stopped because something it runs on was unavailable (the hub down past the retry budget,
    a connection lost, a node gone), not because of its own input: the same work, resumed from what
    it left, can succeed once the service is back. See :func:`is_infrastructure`."""


class HubError(FlotillaError):
    """Anything that went wrong talking to (or running) the lakeFS data hub."""


class BinaryNotFoundError(HubError):
    """No lakeFS server binary could be found, downloaded or built."""


class ServerError(HubError):
    """The local lakeFS server failed to start, crashed, or is in a bad state."""


class HubUnavailableError(HubError, InfrastructureError):
    """The hub's endpoint does not answer (server down, wrong port)."""


class AuthError(HubError):
    """The hub rejected the credentials (401/403)."""


class NotFoundError(HubError):
    """A repository, ref or object does not exist."""


class InvalidNameError(HubError):
    """A repository, branch or object name breaks lakeFS's (or flotilla's) rules."""


class ConflictError(HubError):
    """A write clashed with existing state (branch exists, merge conflict, ...)."""


class ProtectedBranchError(HubError):
    """lakeFS refused a direct write (upload, delete, commit, reset) to a protected branch: only merges change it."""


class MergeConflictError(ConflictError):
    """A merge found conflicting paths; the destination was left untouched."""

    def __init__(self, source: str, destination: str, paths: list[str], *, hint: str | None = None) -> None:
        self.source = source
        self.destination = destination
        self.paths = list(paths)
        shown = "".join(f"\n  - {p}" for p in self.paths[:50])
        more = f"\n  ... and {len(self.paths) - 50} more" if len(self.paths) > 50 else ""
        listing = shown + more if self.paths else " (lakeFS did not list the paths)"
        super().__init__(
            f"merge of {source!r} into {destination!r} conflicts; {destination!r} was not changed. Conflicting paths:{listing}",
            hint=hint
            or "resolve by committing the wanted version of each path on the source branch "
            "(or merge with strategy='source-wins' / 'dest-wins'), then merge again",
        )


class LabelStudioError(FlotillaError):
    """Anything that went wrong installing, running or talking to the local Label Studio."""


class LabelStudioUnavailableError(LabelStudioError):
    """Label Studio does not answer at its URL (not started, stopped, wrong port)."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio rejected the API token (401/403)."""


class LabelStudioNotFoundError(LabelStudioError):
    """A project, task or storage does not exist in Label Studio (any more)."""


class DataValidationError(FlotillaError):
    """A dataset failed the validation gate; nothing was merged.

    ``report`` is the failing ``ValidationReport`` when there is one (None for problems found before
    a report exists, e.g. an unreadable shard), so a caller such as the CLI can still show and save
    the full report that explains the failure.
    """

    def __init__(self, message: str, *, hint: str | None = None, report: object | None = None) -> None:
        self.report = report
        super().__init__(message, hint=hint)


class DivergedError(FlotillaError):
    """A run's model is not finite (NaN or infinite metrics or weights): nothing is published or promoted."""


class LineageError(FlotillaError):
    """A model's recorded lineage does not hold: its card disagrees with the commit that published it,
    or names data the hub does not have. Re-running it would reproduce something else than the model."""


class CodeDriftError(LineageError):
    """The code running now is not the code that trained the model (another git commit or diff)."""


class MonitoringError(FlotillaError):
    """Drift monitoring cannot run on this input: an empty sample, mismatched shapes, values that are not finite."""


class ActiveLearningError(FlotillaError):
    """An active-learning round cannot run on this input: an empty pool, a budget it cannot meet,
    scores that are not finite, a strategy that does not fit the round."""


class AuditError(FlotillaError):
    """A data audit or its review cannot go on: no such audit, nothing flagged, a review out of order."""


INFRASTRUCTURE_FAULTS = frozenset(
    {
        # Ray: the process, its node or an object it needed went away (not an exception the code raised)
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "WorkerCrashedError",
        "NodeDiedError",
        "ObjectLostError",
        "OwnerDiedError",
        "RaySystemError",
        # urllib3 (the lakeFS SDK's transport) once its own retries are spent
        "MaxRetryError",
        "NewConnectionError",
        "ProtocolError",
    }
)
"""Third-party exception classes, by name, that say a service was unreachable: matched by name, so
this module imports neither Ray nor urllib3."""

NETWORK_MARKERS = ("NETWORK_CONNECTION", "Connection refused", "Couldn't connect to server", "curlCode: 7")
"""What pyarrow's S3 filesystem (the hub's gateway: shards, checkpoints) puts in the ``OSError`` it
raises when its AWS SDK retries could not reach the server."""


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` means the infrastructure failed (the hub, a connection, a node), not the work itself.

    A sweep keeps an infrastructure-errored trial's branch and checkpoints, and ``sweep resume``
    continues it from them; a trial that failed by its own fault (:class:`DivergedError`, a
    :class:`SpecError`, a bug) loses its branch like any other, as re-running it as it is would fail
    the same way. The first flotilla error found decides (an :class:`InfrastructureError` or not: a
    flotilla error states its cause); for others the chain is followed (``__cause__``,
    ``__context__``, Ray's ``cause``, Ray Train's worker and controller failures) looking for a
    refused or lost connection or a dead Ray process. Anything unrecognised is the work's own fault:
    keeping a branch nobody resumes costs less than retraining, but re-running a bug changes nothing.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, InfrastructureError):
            return True
        if isinstance(e, FlotillaError):
            return False
        if isinstance(e, ConnectionError) or type(e).__name__ in INFRASTRUCTURE_FAULTS:
            return True
        if isinstance(e, OSError) and any(m in str(e) for m in NETWORK_MARKERS):
            return True
        todo.extend(_causes(e))
    return False


def _causes(e: BaseException) -> list[BaseException]:
    """The exceptions ``e`` was raised from or carries."""
    found: list[Any] = [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None)]
    failures = getattr(e, "worker_failures", None)
    if isinstance(failures, dict):
        found += list(failures.values())
    return [c for c in found if isinstance(c, BaseException)]
