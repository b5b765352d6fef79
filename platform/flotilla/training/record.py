"""What a training run recorded about itself on this machine, so that a killed run can be resumed as it was.

``flotilla.train`` writes ``FLOTILLA_HOME/runs/<run id>/run.json`` before anything trains: the
spec as it ran (every ``--set`` applied), the data commit it pinned, the transfer parent it
resolved (an alias may have moved since), and each model's branch; then ``finished`` once the
family is published (and merged, when ``merge_into`` asked for it). ``flotilla train resume`` reads
only this record and the branches, never what the user types again: a resumed run is the same run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flotilla.data.pinning import DataRef
from flotilla.errors import ConfigError, NotFoundError
from flotilla.hostio import write_private
from flotilla.registry.address import ModelLocation
from flotilla.settings import Settings
from flotilla.specs import FamilySpec, family_spec

RECORD = "run.json"


def run_dir(run_id: str, settings: Settings | None = None) -> Path:
    """A run's folder on this machine (``FLOTILLA_HOME/runs/<run id>``): its record and console log live there; the
    run itself (checkpoints, model, card) lives on its hub branch."""
    return (settings or Settings.from_env()).home / "runs" / run_id


@dataclass(frozen=True)
class RunRecord:
    """One run as it started (and whether it finished): enough to continue it after its driver was killed."""

    run_id: str
    spec: dict[str, Any]  # the FamilySpec as JSON, every override applied
    data: DataRef
    parent: ModelLocation | None
    branches: dict[str, str]  # model name -> its branch
    started: float
    finished: float | None = None
    merge_into: str | None = None

    def family(self) -> FamilySpec:
        return family_spec(self.spec)

    def save(self, settings: Settings | None = None) -> Path:
        path = run_dir(self.run_id, settings) / RECORD
        write_private(path, json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    def done(self, settings: Settings | None = None) -> RunRecord:
        finished = replace(self, finished=time.time())
        finished.save(settings)
        return finished

    @classmethod
    def load(cls, run_id: str, settings: Settings | None = None) -> RunRecord:
        path = run_dir(run_id, settings) / RECORD
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(
                f"no run {run_id!r} on this machine (no {path})",
                hint="pass the run id 'flotilla train' printed (run <id>: ...); runs are recorded under "
                "FLOTILLA_HOME/runs where they were started",
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the record of run {run_id!r} ({path}) is unreadable: {exc}") from None
        try:
            return cls(
                **{
                    **doc,
                    "data": DataRef(**doc["data"]),
                    "parent": ModelLocation(**doc["parent"]) if doc.get("parent") else None,
                }
            )
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"the record of run {run_id!r} ({path}) is not a run record: {exc}") from None
