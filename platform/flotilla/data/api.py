"""The data API the CLI and jobs call: generate, import, validate, show.

Each function takes a :class:`~flotilla.hub.client.Hub` and plain arguments, so
``flotilla data ...`` is a thin shell over it and notebooks call the same code.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

from flotilla.data.importers import ImportProblem, import_source
from flotilla.data.ingest import IngestResult, ingest
from flotilla.data.layout import Sample
from flotilla.data.report import Thresholds
from flotilla.data.synthetic import DEFAULT_SPEC, FaceSpec, iter_batches
from flotilla.errors import FlotillaError
from flotilla.hub.client import Hub

Progress = Callable[[int], None]


def synthetic_samples(
    n: int, seed: int = 0, spec: FaceSpec | None = None, *, batch_size: int = 1024, labelled: bool = True
) -> Iterator[Sample]:
    """Synthetic faces as PNG-encoded samples; ids ``syn-<seed>-<index>`` are stable per (seed, index).

    ``labelled=False``: the same faces with every label left out (null), as incoming data arrives.
    """
    from PIL import Image

    spec = spec or DEFAULT_SPEC
    for batch in iter_batches(n, seed=seed, spec=spec, batch_size=batch_size):
        for k in range(len(batch.index)):
            buf = io.BytesIO()
            Image.fromarray(batch.images[k]).save(buf, format="PNG", compress_level=1)
            yield Sample(
                sample_id=f"syn-{seed}-{int(batch.index[k]):07d}",
                image=buf.getvalue(),
                format="png",
                age=float(batch.age[k]) if labelled else None,
                gender=int(batch.gender[k]) if labelled else None,
                emotion=int(batch.emotion[k]) if labelled else None,
                source=f"synthetic seed={seed} index={int(batch.index[k])}",
            )


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
) -> IngestResult:
    """Generate ``n`` synthetic faces and ingest them as dataset ``name`` (branch → gate → merge).

    ``labelled=False`` makes an unlabelled dataset (every label null, ``labelled: false`` in its
    manifest): the incoming data a promoted model predicts on.
    """
    spec = spec or DEFAULT_SPEC
    provenance = {"source": "synthetic", "generator": "flotilla.data.synthetic", "seed": seed, "n": n, "spec": spec.model_dump()}
    return ingest(
        hub,
        repo,
        name,
        synthetic_samples(n, seed, spec, labelled=labelled),
        provenance=provenance,
        into=into,
        report_dir=report_dir,
        thresholds=thresholds,
        on_progress=on_progress,
        labelled=labelled,
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
) -> tuple[IngestResult, list[ImportProblem]]:
    """Import a UTKFace folder, a FER2013 CSV or a folder + labels CSV as dataset ``name``."""
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
