"""Retraining what a data change left stale, as Ray jobs: one train job per stale model, warm-started from it.

:func:`flotilla.registry.stale` says which models a data change left behind and
:func:`flotilla.registry.retrain_spec` what each one's retraining spec is; submitting them is a jobs
concern, so it lives here and the CLI (``flotilla models stale --retrain``) only prints the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flotilla.errors import FlotillaError
from flotilla.jobs.submission import submit
from flotilla.registry import StaleReport, retrain_spec
from flotilla.specs import FamilySpec, parse_spec

if TYPE_CHECKING:
    from flotilla.hub.client import Hub


@dataclass(frozen=True)
class Retrain:
    """One stale model's retraining: its job (None when it waits for an ancestor's), the data and the spec."""

    model: str
    submission_id: str | None
    data: str = ""
    spec: dict[str, Any] | None = None
    note: str = ""

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "submission_id": self.submission_id, "data": self.data, "spec": self.spec, "note": self.note}


def submit_retrains(report: StaleReport, hub: Hub, address: str | None = None, *, dry_run: bool = False) -> list[Retrain]:
    """One train job per model whose own data is stale; every spec is checked before the first is submitted.

    A model stale only by inheritance is not retrained here: its warm start should be its ancestor's
    retrained model, which does not exist until that job lands. A submission that fails part-way
    raises an error naming the jobs already submitted (running again submits them all again).
    """
    direct = [m for m in report.models if m.change is not None]
    specs = {m.name: parse_spec(FamilySpec, retrain_spec(m), f"retrain spec of {m.name}") for m in direct}
    done: list[Retrain] = []
    for m in direct:
        family = specs[m.name].model_dump(mode="json")
        job = {"kind": "train", "name": f"retrain-{m.name.replace('/', '-')}", "family": family}
        try:
            handle = submit(job, address, hub=hub, dry_run=dry_run)
        except FlotillaError as exc:
            submitted = ", ".join(f"{r.submission_id} ({r.model})" for r in done) or "none"
            raise exc.reword(
                f"retraining {m.name} was not submitted: {exc.message}\n  (already submitted: {submitted})",
            ) from None
        done.append(Retrain(m.name, handle.submission_id, str(family["data"]["ref"]), family))
    for m in report.models:
        if m.change is None:
            note = (
                f"stale via {m.stale_ancestor}; retrain it once {m.stale_ancestor}'s retrain lands (transfer.source: that model)"
            )
            done.append(Retrain(m.name, None, note=note))
    return done
