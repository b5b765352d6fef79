"""What runs inside a submitted Ray job: ``python -m flotilla.jobs.entrypoint <pinned spec.yaml>``.

The driver runs in the job's working_dir (the shipped project) on the cluster.
It connects to the cluster the job runs on (``RAY_ADDRESS``, set by Ray), never
starts a Ray of its own, finds hub credentials the normal way, does the work and
ends with one ``FLOTILLA_RESULT {json}`` line that :meth:`JobHandle.result`
parses. A :class:`FlotillaError` prints its message and hint (no traceback, no
credentials) plus a result line with ``"ok": false`` and exits 1, so Ray marks
the job FAILED.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from flotilla.data.api import generate, import_dataset
from flotilla.data.importers import ImportProblem
from flotilla.errors import FlotillaError
from flotilla.hub.client import Hub
from flotilla.jobs.specs import ActiveRoundJob, InferJob, IngestJob, JobSpec, MonitorJob, SweepJob, TrainJob, load_job_spec
from flotilla.loop import infer, monitor
from flotilla.progress import PlainView
from flotilla.settings import job_ray_address
from flotilla.specs import FamilySpec, parse_spec
from flotilla.training import train
from flotilla.tune import SweepSpec, resume, sweep

RESULT_MARKER = "FLOTILLA_RESULT "  # the line JobHandle.result parses (submission imports it from here)


PREFIX = "[flotilla] "  # flotilla's own lines in a job's log; `flotilla demo` shows only these


def say(msg: str) -> None:
    print(f"{PREFIX}{msg}", flush=True)


def run_ingest(job: IngestJob) -> dict[str, Any]:
    hub = Hub()
    done = [0, time.monotonic()]

    def progress(n: int) -> None:
        done[0] += n
        if time.monotonic() - done[1] > 2 or n == 0:
            done[1] = time.monotonic()
            say(f"ingest {job.dataset}: {done[0]} samples written")

    say(f"ingest {job.dataset!r} into lakefs://{job.repo}/{job.into} on hub {hub.endpoint}")
    if job.synthetic is not None:
        s = job.synthetic
        result = generate(
            hub,
            job.repo,
            job.dataset,
            s.n,
            seed=s.seed,
            spec=s.spec,
            into=job.into,
            thresholds=job.thresholds,
            on_progress=progress,
            labelled=s.labelled,
            create_repo=job.create_repo,
        )
        problems: list[ImportProblem] = []
    else:
        f = job.files
        assert f is not None  # IngestJob asks for exactly one source
        result, problems = import_dataset(
            hub,
            job.repo,
            job.dataset,
            f.format,
            Path(f.path),
            labels_csv=Path(f.labels) if f.labels else None,
            into=job.into,
            thresholds=job.thresholds,
            on_progress=progress,
            create_repo=job.create_repo,
        )
    counts = result.manifest.counts
    say(f"ingest {job.dataset}: {counts['samples']} samples, validation {'passed' if result.passed else 'FAILED'}")
    return {
        "repo": result.repo,
        "dataset": result.dataset,
        "branch": result.branch,
        "commit": result.commit,
        "merge_commit": result.merge_commit,
        "passed": result.passed,
        "counts": dict(counts),
        "skipped": len(problems),
    }


def _address() -> str:
    """The cluster this job runs on, as Ray gave it (``RAY_ADDRESS``): "local" would start a second Ray,
    and "auto" picks whichever Ray it finds on the machine (the newest of two, seen in issue 22)."""
    address = job_ray_address()
    if not address:
        raise FlotillaError(
            "RAY_ADDRESS is not set: this entry point runs as a Ray job, which Ray starts with its cluster's address",
            hint="submit it with 'flotilla jobs submit <spec>' instead of running it by hand",
        )
    return address


def run_train(job: TrainJob) -> dict[str, Any]:
    family = parse_spec(FamilySpec, job.family, source=f"family of job {job.name!r}")
    say(
        f"train {family.name!r}: {len(family.tasks)} task(s), {family.epochs} epoch(s), data lakefs://{family.data.repo}/{family.data.ref}"
    )
    result = train(family, address=_address(), progress=PlainView(sys.stdout, prefix=PREFIX))
    say(f"train {family.name!r} finished in {result.wall_s:.0f}s")
    return {
        "run_id": result.run_id,
        "data_repo": result.data.repo,
        "data_commit": result.data.commit,
        "wall_s": result.wall_s,
        "alias": result.alias,
        "models": [
            {
                "name": m.name,
                "branch": m.branch,
                "commit": m.commit,
                "model_uri": m.model_uri,
                "metrics": m.metrics,
                "merge_commit": m.merge_commit,
            }
            for m in result.models
        ],
    }


def run_sweep(job: SweepJob) -> dict[str, Any]:
    if job.resume is not None:  # from the sweep's mirror on the hub: this node's FLOTILLA_HOME need not have it
        say(f"sweep {job.resume!r}: resumed")
        result = resume(
            job.resume, address=_address(), progress=PlainView(sys.stdout, prefix=PREFIX), repo=job.repo, force=job.force
        )
        say(f"sweep {job.resume!r} finished: winner {getattr(result.winner, 'trial_id', None)}")
        result.wait_for_plots()
        return json.loads(result.to_json())
    spec = parse_spec(SweepSpec, job.sweep, source=f"sweep of job {job.name!r}")
    say(f"sweep {spec.name!r}: {spec.budget.trials} trial(s), data commit {(job.pinned or {}).get('data_commit', '?')}")
    result = sweep(spec, address=_address(), progress=PlainView(sys.stdout, prefix=PREFIX))
    say(f"sweep {spec.name!r} finished: winner {getattr(result.winner, 'trial_id', None)}")
    result.wait_for_plots()  # the job's result names them
    return json.loads(result.to_json())


def run_infer(job: InferJob) -> dict[str, Any]:
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 2 or done >= total:
            last[0] = time.monotonic()
            say(f"infer {job.dataset}: {done}/{total} rows")

    say(f"infer {job.model} on lakefs://{job.repo}/{job.data_ref} dataset {job.dataset!r} ({job.split or 'all'})")
    result = infer(
        Hub(),
        job.model,
        repo=job.repo,
        data_ref=job.data_ref,
        dataset=job.dataset,
        split=job.split,
        batch_size=job.batch_size,
        concurrency=job.concurrency,
        cpus_per_actor=job.cpus_per_actor,
        use_gpu=job.use_gpu,
        allow_resize=job.allow_resize,
        merge_into=job.merge_into,
        address=_address(),
        on_progress=progress,
    )
    say(f"infer {job.dataset}: {result.rows} rows, {result.samples_per_s:.0f} samples/s, committed on {result.branch}")
    return result.to_dict()


def run_monitor(job: MonitorJob) -> dict[str, Any]:
    say(f"monitor {job.model} on lakefs://{job.repo}/{job.current} dataset {job.dataset!r} ({job.split or 'all'})")
    result = monitor(
        Hub(),
        job.model,
        repo=job.repo,
        current=job.current,
        dataset=job.dataset,
        split=job.split,
        alpha=job.alpha,
        ground_truth_check=job.ground_truth,
        tolerance=job.tolerance,
        permutations=job.permutations,
        infer_options={
            "concurrency": job.concurrency,
            "cpus_per_actor": job.cpus_per_actor,
            "use_gpu": job.use_gpu,
            "address": _address(),
        },
        merge_into=job.merge_into,
        out_dir=Path("artifacts/monitoring"),
        on_progress=say,
    )
    say(f"monitor: {'ALARM' if result.alarm else 'no alarm'}; report on {result.branch or '(not committed)'}")
    return result.to_dict()


def run_active_round(job: ActiveRoundJob) -> dict[str, Any]:
    from flotilla.active import run_round
    from flotilla.labelstudio import local_client

    say(f"active-learning round of {job.name!r}: {job.budget} from {job.pool_dataset}@{job.pool_ref} for {job.model}")
    state = run_round(
        Hub(),
        job.model,
        repo=job.repo,
        pool_ref=job.pool_ref,
        pool_dataset=job.pool_dataset,
        name=job.name,
        budget=job.budget,
        eval_dataset=job.eval_dataset,
        client=local_client(),
        strategy=job.strategy,
        epochs=job.epochs,
        annotator=job.annotator,
        wait_s=job.wait_s,
        address=_address(),
        say=say,
    )
    return {"round": state.round, "branch": state.branch, "received": state.received, **state.decision}


def run_job(job: JobSpec) -> dict[str, Any]:
    """The summary of running ``job`` with the runner of its kind."""
    if isinstance(job, IngestJob):
        return run_ingest(job)
    if isinstance(job, TrainJob):
        return run_train(job)
    if isinstance(job, InferJob):
        return run_infer(job)
    if isinstance(job, MonitorJob):
        return run_monitor(job)
    if isinstance(job, ActiveRoundJob):
        return run_active_round(job)
    return run_sweep(job)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m flotilla.jobs.entrypoint <pinned job spec.yaml>", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        job: JobSpec = load_job_spec(argv[0], root=Path.cwd())
        say(f"job {job.name!r} ({job.kind}) started; pid {os.getpid()}")
        summary = run_job(job)
    except FlotillaError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr, flush=True)
        print(RESULT_MARKER + json.dumps({"ok": False, "error": exc.message, "hint": exc.hint}), flush=True)
        return 1
    out = {"ok": True, "kind": job.kind, "name": job.name, "wall_s": round(time.monotonic() - t0, 2), **summary}
    print(RESULT_MARKER + json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
