"""Models in the hub: where a run's model lives, reading it back, and its model card.

Layout on a run's branch (and on main once promoted)::

    runs/<run_id>/<model>/checkpoint_*/        Ray Train checkpoints (written through the S3 gateway)
    models/<run_id>/<model>/model.pt           the chosen weights: {"config", "state"}
    models/<run_id>/<model>/card.json          the model card (lineage, metrics, resolved config)
    models/<run_id>/<model>/metrics.json       per-epoch history
    models/<run_id>/<model>/code.diff          a dirty tree's diff against the card's git sha (dirty trees only)
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla.lineage import DataLineage, ModelCard, ParentModel
from flotilla.registry.address import ModelLocation
from flotilla.settings import ShippedCode, shipped_code
from flotilla.training.finite import json_safe
from flotilla.version import __version__

CHECKOUT = Path(__file__).resolve().parents[3]
"""The project root flotilla runs from (in a submitted job: its staged copy, which has no ``.git``)."""
CODE_DIFF = "code.diff"

log = logging.getLogger(__name__)


def read_model_bytes(repo: str, commit: str, path: str, credentials: Any) -> bytes:
    """Read through the S3 gateway, so it works on any node of a cluster."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(**credentials.s3_options())
    with fs.open_input_stream(f"{repo}/{commit}/{path}") as fh:
        return bytes(fh.read())


@dataclass(frozen=True)
class CodeVersion:
    """The code that trained a model: flotilla's version, the git commit and, for a dirty tree, its diff.

    A sha alone names a commit the weights did not come from when the tree was dirty, so the diff
    (``git diff HEAD`` of tracked files, binary-safe so that ``git apply`` on the sha restores the
    tree) travels with it: its sha256 in the card, the diff itself beside it (:data:`CODE_DIFF`).
    """

    flotilla_version: str
    git_sha: str
    dirty: bool | None
    diff: bytes | None = field(default=None, repr=False)
    diff_sha256: str | None = None

    def storable_diff(self, secret: str | None) -> bytes | None:
        """The diff to store beside the card: None for a clean tree, and None for a diff that carries the
        hub's secret key (``secret``), which must not enter history; the card still records its hash."""
        if self.diff is None:
            return None
        if secret and secret.encode() in self.diff:
            log.warning("the code diff holds the hub's secret key: it is not stored beside the model card (its sha256 is)")
            return None
        return self.diff

    def card_block(self, *, diff_stored: bool) -> dict[str, Any]:
        """The card's ``code``; ``diff`` names the file beside the card when the diff was stored there."""
        return {
            "flotilla_version": self.flotilla_version,
            "git_sha": self.git_sha,
            "dirty": self.dirty,
            "diff_sha256": self.diff_sha256,
            "diff": CODE_DIFF if diff_stored and self.diff is not None else None,
        }


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def code_version(root: Path = CHECKOUT) -> CodeVersion:
    """The code version of the project at ``root`` (default: the one running this; 'unknown' outside git).

    In a submitted job (its copy of the project has no ``.git``) it is the version submission handed
    it (:func:`shipped_code`), with the diff submission staged under ``root``. Otherwise only a git
    checkout whose top level is ``root`` counts: a flotilla installed into a virtualenv that sits
    inside someone's project must not report (or ship) that project's commit and diff.
    """
    shipped = shipped_code()
    if shipped:
        return _shipped_version(shipped, root)
    unknown = CodeVersion(__version__, "unknown", None)
    head = _git(root, "rev-parse", "--show-toplevel", "HEAD")
    if head is None or len(lines := head.decode().split()) != 2 or Path(lines[0]).resolve() != root.resolve():
        return unknown
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if status is None:
        return CodeVersion(__version__, lines[1], None)
    if not status.strip():
        return CodeVersion(__version__, lines[1], False)
    # plumbing-stable output whatever the user's git config says (colour, external diff tools, prefixes)
    diff = _git(
        root, "diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", "HEAD"
    )
    return CodeVersion(__version__, lines[1], True, diff or None, sha256(diff) if diff else None)


def _git(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _shipped_version(shipped: ShippedCode, root: Path) -> CodeVersion:
    """The version submission handed a job, with the diff it staged when that file is there and intact."""
    diff = None
    if shipped.diff:
        try:
            blob = (root / shipped.diff).read_bytes()
        except OSError:
            blob = None
        diff = blob if blob is not None and sha256(blob) == shipped.diff_sha256 else None
    return CodeVersion(__version__, shipped.sha, shipped.dirty, diff, shipped.diff_sha256)


def model_card(
    *,
    run_id: str,
    model: str,
    tasks: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, float],
    history: Sequence[Mapping[str, Any]],
    data_ref: Any,
    branch: str,
    spec: Any,
    parent: ModelLocation | None,
    code: Mapping[str, Any],
    best_epoch: int,
    environment: Mapping[str, Any],
    tracking: Mapping[str, Any] | None = None,
) -> ModelCard:
    return ModelCard(
        run_id=run_id,
        model=model,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tasks=tuple(tasks),
        metrics=dict(metrics),
        best_epoch=best_epoch,
        epochs_run=len(history),
        data=DataLineage(data_ref.repo, data_ref.commit, data_ref.dataset, data_ref.ref),
        branch=branch,
        code=dict(code),
        config=spec.model_dump(mode="json"),
        parent=None if parent is None else ParentModel(parent.repo, parent.commit, parent.path),
        environment=dict(environment),
        tracking=dict(tracking or {}),
    )


def dumps(obj: Any) -> str:
    """JSON as flotilla writes it to the hub: always valid (a NaN or an infinity becomes null; see training.finite)."""
    return json.dumps(json_safe(json.loads(json.dumps(obj, default=float))), indent=2, sort_keys=True, allow_nan=False)
