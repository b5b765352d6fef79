"""The data API the CLI and jobs call: generate, import, validate, show.

Each function takes a :class:`~flotilla.hub.client.Hub` and plain arguments, so
``flotilla data ...`` is a thin shell over it and notebooks call the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flotilla.data.importers import ImportProblem, import_source
from flotilla.data.ingest import IngestResult, ingest, target_repo
from flotilla.data.report import Thresholds
from flotilla.data.shardwork import SyntheticPlan
from flotilla.data.shardwork import synthetic_samples as synthetic_samples  # re-exported: the public name
from flotilla.data.synthetic import DEFAULT_SPEC, FaceSpec
from flotilla.errors import FlotillaError
from flotilla.hub.client import Hub

Progress = Callable[[int], None]


def generate(
    hub: Hub,
    repo: str,
    name: str,
    n: int,
    *,
    seed: int = 0,
    spec: FaceSpec | None = None,
    into: str = "main",
    report_dir: Path | None = None,
    thresholds: Thresholds | None = None,
    on_progress: Progress | None = None,
    labelled: bool = True,
    workers: int | None = None,
    create_repo: bool = False,
) -> IngestResult:
    """Generate ``n`` synthetic faces and ingest them as dataset ``name`` (branch → gate → merge).

    ``labelled=False`` makes an unlabelled dataset (every label null, ``labelled: false`` in its
    manifest): the incoming data a promoted model predicts on. ``workers``: processes generating
    the shards (None: one per core); the data is the same whatever their number. ``n`` at least 1 and
    ``seed`` in 0..2**32 - 1 (:data:`~flotilla.data.synthetic.MAX_SEED`), checked before anything is written.
    ``create_repo``: create ``repo`` if it does not exist; without it a name that is not on the hub is an
    error (a typo is not a new repository), except the default repository, created on first use.
    """
    spec = spec or DEFAULT_SPEC
    plan = SyntheticPlan(n, seed, spec, labelled)
    provenance = {"source": "synthetic", "generator": "flotilla.data.synthetic", "seed": seed, "n": n, "spec": spec.model_dump()}
    return ingest(
        hub,
        repo,
        name,
        plan,
        provenance=provenance,
        into=into,
        report_dir=report_dir,
        thresholds=thresholds,
        on_progress=on_progress,
        labelled=labelled,
        workers=workers,
        create_repo=create_repo,
    )


def import_dataset(
    hub: Hub,
    repo: str,
    name: str,
    fmt: str,
    path: Path,
    *,
    labels_csv: Path | None = None,
    into: str = "main",
    report_dir: Path | None = None,
    thresholds: Thresholds | None = None,
    on_progress: Progress | None = None,
    workers: int | None = None,
    create_repo: bool = False,
) -> tuple[IngestResult, list[ImportProblem]]:
    """Import a UTKFace folder, a FER2013 CSV or a folder + labels CSV as dataset ``name``.

    The files are read here, in order (the importer's problems and format errors are raised as it reads);
    ``workers`` processes (None: one per core) encode each shard and inspect its images for the gate.
    ``create_repo`` as in :func:`generate`; the repository is checked before the files are read.
    """
    if not create_repo:  # a typo in the name fails now, not after reading thousands of files
        target_repo(hub, repo)
    result = import_source(fmt, Path(path), labels_csv=Path(labels_csv) if labels_csv else None)
    provenance = {"source": fmt, "path": str(path), **({"labels_csv": str(labels_csv)} if labels_csv else {})}
    try:
        out = ingest(
            hub,
            repo,
            name,
            result.samples,
            provenance=provenance,
            into=into,
            report_dir=report_dir,
            thresholds=thresholds,
            on_progress=on_progress,
            schema=result.schema,
            workers=workers,
            create_repo=create_repo,
        )
    except FlotillaError as exc:
        # the entries skipped while reading are often *why* it failed (no file name parsed: 0 images), and the
        # caller, who prints them after a success, never gets them when this raises
        if result.problems:
            n = len(result.problems)
            shown = "; ".join(map(str, result.problems[:5])) + (f"; ... and {n - 5} more" if n > 5 else "")
            raise exc.reword(
                f"{exc.message}\n{n} {fmt} source entr{'y was' if n == 1 else 'ies were'} skipped while reading {path}: {shown}"
            ) from None
        raise
    return out, result.problems
