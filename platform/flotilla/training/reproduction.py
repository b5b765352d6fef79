"""``reproduce(model)``: train a published model again from its card and show that it comes out the same.

A card records everything that made a model: the resolved config, the data commit, the code
version and the parent. Re-running it is the test that the record is complete. Before anything
trains, the card is checked against the commit that published it
(:func:`flotilla.registry.verify.verify_card`: a card edited to point at other data would
"reproduce" a model that never existed) and the code running now must be the code that trained
the model, unless the caller accepts the drift. The re-run goes through :func:`train` like any
other, on a fresh ``exp-repro-...`` branch, and is never merged anywhere: a reproduction is
evidence, not a candidate. Its metrics are compared with the card's at the card's best epoch (the
epoch the published checkpoint came from, whichever rule chose it: a sweep ranks checkpoints by
its objective, and a trial stopped early ran fewer epochs than its spec names).

Module named ``reproduction`` so that ``flotilla.training.reproduce`` stays the function.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flotilla.errors import CodeDriftError, LineageError
from flotilla.hub.client import Hub
from flotilla.lineage import ModelCard
from flotilla.models.tasks import resolve_tasks
from flotilla.names import branch_id
from flotilla.registry.address import WEIGHTS, ModelLocation, model_dir
from flotilla.registry.lookup import resolve
from flotilla.registry.verify import verify_card
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import artifacts
from flotilla.training.run import train

if TYPE_CHECKING:
    from flotilla.training.publish import ModelResult

# Absolute tolerances, per metric, for a reproduction on the same data commit, seed and code.
# Measured from run-to-run spread (docs/models.md, "Reproduce"): the tiny spec of tests/integration/
# test_reproduce.py (width 8, 2 epochs, batch 64, 2 CPU DDP workers, 900 synthetic faces, 103 validation
# samples) trained 6 times on one commit with seed 0, in two processes, came out bit-for-bit identical:
# spread 0 on every metric (CPU DDP over gloo, one thread per worker, a seeded data order). They are not 0
# because what is deterministic on one machine is not across machines: other CPUs (oneDNN kernels), GPUs
# (cuDNN algorithm choice, atomic adds) and library versions round every step differently. The allowance is
# about one validation sample of ~100 for the rates (0.01) and half a year for age. Both sit under what a
# real difference moves: seeds 1 and 2 moved age/mae by 3.3 and 1.2 years, emotion/accuracy by 0.04 and 0.03,
# gender/auc by 0.01 and 0.05 (gender/accuracy not at all for seed 2: every metric is compared, not one).
DEFAULT_TOLERANCE: Mapping[str, float] = {
    "age/mae": 0.5,
    "age/rmse": 0.5,
    "gender/accuracy": 0.01,
    "gender/auc": 0.01,
    "emotion/accuracy": 0.01,
    "emotion/macro_f1": 0.01,
    # any other task, by the metric's name
    "mae": 0.5,
    "rmse": 0.5,
    "accuracy": 0.01,
    "auc": 0.01,
    "macro_f1": 0.01,
    "n": 0.0,  # samples scored: the same data commit has the same validation split, exactly
}
FALLBACK_TOLERANCE = 0.01
"""For a metric the table does not name."""


@dataclass(frozen=True)
class MetricCheck:
    """One metric of the card against the reproduction's value at the same epoch."""

    metric: str  # "<task>/<name>"
    card: float
    reproduced: float | None  # None: the reproduction did not report it
    tolerance: float

    @property
    def difference(self) -> float | None:
        return None if self.reproduced is None else self.reproduced - self.card

    @property
    def ok(self) -> bool:
        d = self.difference
        return d is not None and math.isfinite(d) and abs(d) <= self.tolerance


@dataclass(frozen=True)
class ReproduceReport:
    """What was re-run, on what, and how each metric compares (``ok``: all inside their tolerance)."""

    original: ModelLocation
    card: ModelCard
    published_commit: str  # the commit that published the original (its metadata is the model's record)
    code_drift: tuple[str, ...]  # how the code running differs from the card's (empty: the same code)
    run_id: str
    reproduced: ModelLocation
    branch: str
    epoch: int  # the epoch compared: the card's best epoch
    checks: tuple[MetricCheck, ...]
    wall_s: float

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[MetricCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)


def reproduce(
    hub: Hub | None,
    address: str,
    *,
    repo: str = "faces",
    allow_code_drift: bool = False,
    tolerance: Mapping[str, float] | None = None,
    run_id: str | None = None,
    ray_address: str | None = None,
) -> ReproduceReport:
    """Train the model at ``address`` (a URI, ``<run>[/<model>]`` or ``family@alias``) again and compare.

    Refuses before anything trains: a card that disagrees with the commit that published it
    (:class:`LineageError`), a data commit the repository lacks (``NotFoundError``), and other code
    than trained the model (:class:`CodeDriftError`) unless ``allow_code_drift``. ``tolerance``
    overrides :data:`DEFAULT_TOLERANCE` by ``"<task>/<metric>"`` or by metric name. ``ray_address``
    is the Ray cluster to train on (default: a local Ray).
    """
    hub = hub or Hub()
    location = resolve(hub, address, repo)
    verified = verify_card(hub.repo(location.repo), location)
    card = verified.card
    drift = code_drift(card.code, artifacts.code_version())
    if drift and not allow_code_drift:
        diff = f" and git apply its diff (lakefs://{location.repo}/{verified.published}/{location.directory}{card.code['diff']})"
        raise CodeDriftError(
            f"{location.name} was trained by other code than is running now: " + "; ".join(drift),
            hint=f"check out the code that trained it (git checkout {card.code.get('git_sha', '?')}"
            + (diff if card.code.get("diff") else "")
            + "), or pass allow_code_drift=True (--allow-code-drift) to re-run it with this code anyway",
        )
    spec = reproduction_spec(card)
    run_id = run_id or branch_id(f"repro-{card.run_id}-{secrets.token_hex(2)}")
    started = time.monotonic()
    result = train(spec, hub=hub, address=ray_address, run_id=run_id)
    (model,) = result.models
    return ReproduceReport(
        original=location,
        card=card,
        published_commit=verified.published,
        code_drift=tuple(drift),
        run_id=run_id,
        reproduced=ModelLocation(location.repo, model.commit, model_dir(run_id, model.name) + WEIGHTS),
        branch=model.branch,
        epoch=card.best_epoch,
        checks=compare(card, model, tolerance),
        wall_s=time.monotonic() - started,
    )


def code_drift(recorded: Mapping[str, Any], current: artifacts.CodeVersion) -> list[str]:
    """How the code running now (``current``) differs from the card's ``code`` block; empty: the same.

    Compared: the git sha (an unknown one on either side cannot be vouched for), a clean tree against
    a dirty one, and the dirty tree's diff hash (``diff_sha256``) when both sides have one (a card from
    before diffs were hashed has none: its sha and dirty flag are all there is to compare).
    """
    then, now = str(recorded.get("git_sha") or "unknown"), current.git_sha or "unknown"
    if "unknown" in (then, now):
        who = "the card records no git sha" if then == "unknown" else "this flotilla does not run from a git checkout"
        return [f"the code version cannot be compared ({who})"]
    out = []
    if then != now:
        out.append(f"git sha {then[:12]} trained it, {now[:12]} is checked out")
    dirty_then, dirty_now = recorded.get("dirty"), current.dirty
    if dirty_then is not None and dirty_now is not None and bool(dirty_then) != bool(dirty_now):
        out.append(
            "it was trained with uncommitted changes and this checkout has none"
            if dirty_then
            else "this checkout has uncommitted changes, the tree that trained it had none"
        )
    diff_then, diff_now = recorded.get("diff_sha256"), current.diff_sha256
    if diff_then and diff_now and diff_then != diff_now:
        out.append(f"the uncommitted changes differ (diff sha256 {str(diff_then)[:12]} then, {str(diff_now)[:12]} now)")
    return out


def reproduction_spec(card: ModelCard) -> FamilySpec:
    """The card's resolved config, pinned to what the card records and kept off every branch but its own.

    The data is the card's exact commit; the transfer source the parent's immutable URI; ``merge_into``
    and ``alias`` none (a reproduction never moves what a family's alias names). A ``separate`` family's
    card is one of its models: only that model's task is trained.
    """
    config = dict(card.config)
    where = f"the config in the card of {card.run_id}/{card.model}"
    recorded: FamilySpec = parse_spec(FamilySpec, config, where)
    over: dict[str, Any] = {
        "data": {**config["data"], "repo": card.data.repo, "dataset": card.data.dataset, "ref": card.data.commit},
        "merge_into": None,
        "alias": None,
    }
    if recorded.transfer is not None:
        if card.parent is None:
            raise LineageError(
                f"{where} transfers from {recorded.transfer.source!r}, but the card records no parent model",
                hint="the parent a model started from is pinned in its card when it trains; train the model again",
            )
        over["transfer"] = {**config["transfer"], "source": card.parent.uri}
    if recorded.strategy == "separate":
        names = [t.name for t in resolve_tasks(recorded.tasks)]
        if card.model not in names:
            raise LineageError(
                f"{where} has no task {card.model!r} (its tasks: {', '.join(names)})",
                hint="a separate family's model is named after its task; restore the card from the model's own commit",
            )
        over["tasks"] = [recorded.tasks[names.index(card.model)]]
    spec: FamilySpec = parse_spec(FamilySpec, {**config, **over}, where)
    return spec


def tolerance_for(metric: str, overrides: Mapping[str, float] | None = None) -> float:
    """``metric``'s tolerance: ``overrides`` then the defaults, each by full key and then by metric name."""
    name = metric.rsplit("/", 1)[-1]
    for table in (overrides or {}, DEFAULT_TOLERANCE):
        for key in (metric, name):
            if key in table:
                return float(table[key])
    return FALLBACK_TOLERANCE


def compare(card: ModelCard, model: ModelResult, tolerance: Mapping[str, float] | None = None) -> tuple[MetricCheck, ...]:
    """Each of the card's metrics against the reproduction's validation metrics at the card's best epoch."""
    history = model.history
    at = history[card.best_epoch] if card.best_epoch < len(history) else {}
    return tuple(
        MetricCheck(key, float(value), _float(at.get(f"val/{key}")), tolerance_for(key, tolerance))
        for key, value in sorted(card.metrics.items())
    )


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None
