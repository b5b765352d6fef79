"""Where a sweep's state lives: ``$FLOTILLA_HOME/sweeps/<id>/``.

``sweep.json`` holds what the sweep pinned when it started (:class:`SavedSweep`: the spec, the
base family, the data commits, the parent model), so ``resume`` runs exactly that sweep whatever
the refs say now; ``results.json`` its :class:`~flotilla.tune.results.SweepResult`, written before
the promotion is tried. Beside them: the Optuna study (``optuna.db``), Tune's experiment state
(``tune/``), the trial journal and ledger (:mod:`flotilla.tune.journal`) and the plots.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flotilla.errors import ConfigError, InvalidNameError, NotFoundError
from flotilla.names import check_branch_id
from flotilla.registry.address import ModelLocation
from flotilla.settings import Settings
from flotilla.specs import parse_spec
from flotilla.tune.results import SweepResult
from flotilla.tune.spec import SweepSpec

SAVED = "sweep.json"
RESULTS = "results.json"
STUDY = "optuna.db"
TUNE = "tune"  # Tune's storage_path; the experiment is tune/<sweep id>


@dataclass(frozen=True)
class SavedSweep:
    """``sweep.json``: the sweep as it was pinned when it started."""

    spec: SweepSpec
    family: Mapping[str, Any]  # the base family spec (JSON), overrides applied, no trial params
    commits: Mapping[str, str]  # data ref -> commit
    parent: ModelLocation | None = None  # transfer learning's parent model, resolved once

    @property
    def epochs(self) -> int:
        return int(self.family["epochs"])

    @property
    def data_repo(self) -> str:
        return str(self.family["data"]["repo"])

    @property
    def base_ref(self) -> str:
        """The data ref of a trial whose params pick none (the base spec's ``data.ref``)."""
        return str(self.family["data"]["ref"])

    def data_commit(self, params: Mapping[str, Any]) -> str:
        """The commit a trial with ``params`` trained on."""
        return self.commits[params.get("data.ref", self.base_ref)]

    def to_json(self) -> str:
        return json.dumps(
            {
                "spec": self.spec.model_dump(mode="json"),
                "family": dict(self.family),
                "commits": dict(self.commits),
                "parent": asdict(self.parent) if self.parent else None,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, sweep_id: str) -> SavedSweep:
        state = json.loads(text)
        parent = state.get("parent")
        return cls(
            saved_spec(state["spec"], sweep_id), state["family"], state["commits"], ModelLocation(**parent) if parent else None
        )


def saved_spec(spec: Mapping[str, Any], sweep_id: str) -> SweepSpec:
    """A sweep.json's spec, as the sweep ran it: older versions accepted, and ignored, what the spec now
    refuses (a ``step`` on a non-int dimension; int end points like 7.5, which ran as ``int(7.5)``)."""
    space = {}
    for name, p in (spec.get("space") or {}).items():
        if isinstance(p, dict) and p.get("type") != "int" and p.get("step") is not None:
            p = {**p, "step": None}
        elif isinstance(p, dict) and p.get("type") == "int":
            p = {**p, **{k: int(p[k]) for k in ("low", "high") if isinstance(p.get(k), (int, float))}}
        space[name] = p
    parsed: SweepSpec = parse_spec(SweepSpec, {**spec, "space": space}, source=f"sweep {sweep_id!r} (its sweep.json)")
    return parsed


def sweeps_dir(settings: Settings | None = None) -> Path:
    return (settings or Settings.from_env()).home / "sweeps"


def sweep_dir(sweep_id: str, settings: Settings | None = None) -> Path:
    """``$FLOTILLA_HOME/sweeps/<id>``; an id is a branch-id-shaped name, so it cannot leave that folder."""
    try:
        check_branch_id(sweep_id)
    except InvalidNameError:
        raise ConfigError(
            f"invalid sweep id {sweep_id!r}: letters, digits, '_' and '-' only",
            hint="see 'flotilla sweep list' for the ids of this machine's sweeps",
        ) from None
    return sweeps_dir(settings) / sweep_id


def list_sweeps(settings: Settings | None = None) -> list[str]:
    root = sweeps_dir(settings)
    return sorted(p.name for p in root.glob("*") if (p / SAVED).exists()) if root.exists() else []


def require_sweep(sweep_id: str, settings: Settings | None = None) -> Path:
    """The sweep's folder; a clear error listing the known sweeps when there is no such sweep."""
    d = sweep_dir(sweep_id, settings)
    if not (d / SAVED).exists():
        known = list_sweeps(settings)
        raise NotFoundError(f"no sweep {sweep_id!r} in {d.parent}", hint=f"known sweeps: {', '.join(known) or '(none)'}")
    return d


def load_saved(sweep_id: str, settings: Settings | None = None) -> tuple[Path, SavedSweep]:
    d = require_sweep(sweep_id, settings)
    return d, SavedSweep.from_json((d / SAVED).read_text(), sweep_id)


def load_result(sweep_id: str, settings: Settings | None = None) -> SweepResult:
    """A sweep's saved result (``flotilla sweep show``)."""
    result = read_result(require_sweep(sweep_id, settings))
    if result is None:
        raise ConfigError(f"sweep {sweep_id!r} has no results yet", hint=f"finish it with 'flotilla sweep resume {sweep_id}'")
    return result


def read_result(d: Path) -> SweepResult | None:
    """The result saved in sweep folder ``d``; None when it has none yet."""
    p = d / RESULTS
    return SweepResult.from_json(p.read_text()) if p.exists() else None


def write_result(result: SweepResult) -> None:
    (Path(result.directory) / RESULTS).write_text(result.to_json())
