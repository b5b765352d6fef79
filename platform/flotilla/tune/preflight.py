"""What a sweep checks before it writes anything or starts a trial.

The spec itself is checked by :meth:`~flotilla.tune.spec.SweepSpec.check`. Here: the data refs are
pinned to commits (each must hold the dataset) and the promotion target must exist and be able to
take the winner; then, once Ray is reached, one trial must fit the cluster. Each would otherwise
surface after the whole sweep had run, or as trials pending forever.
"""

from __future__ import annotations

from flotilla.cluster.fit import check_fits
from flotilla.data.pinning import pin
from flotilla.data.store import read_manifest
from flotilla.errors import ConflictError, NotFoundError
from flotilla.hub.client import Hub
from flotilla.specs import FamilySpec, check_tasks_fit
from flotilla.tune.spec import SweepSpec


def pin_commits(hub: Hub, spec: SweepSpec, family: FamilySpec) -> dict[str, str]:
    """Resolve every data variant to its commit, and check the promotion target, before anything runs."""
    refs = {family.data.ref}
    if "data.ref" in spec.space:
        refs |= {str(v) for v in spec.space["data.ref"].values or []}
    # every variant pinned, and checked to hold the dataset, by the one pinning step
    commits = {ref: pinned.commit for ref, pinned in pin(hub, family.data.repo, family.data.dataset, sorted(refs)).items()}
    repo = hub.repo(family.data.repo)
    for commit in sorted(set(commits.values())):  # each variant's data declares the columns its tasks read
        check_tasks_fit(family.task_specs(), read_manifest(repo, commit, family.data.dataset).label_schema, family.data.dataset)
    into = spec.promote.into
    if into and not repo.branch_exists(into):
        raise NotFoundError(
            f"promote.into: no branch {into!r} in repository {family.data.repo!r}; the winner would have nowhere to go",
            hint="create it first (e.g. from main), set promote.into to an existing branch, or promote.into: null",
        )
    if into and "data.ref" not in spec.space:  # every trial, the winner too, starts from this data
        extra = [c.path for c in repo.diff(into, commits[family.data.ref], two_dot=False)]
        if extra:
            ref = family.data.ref
            branch = repo.branch_exists(ref)  # a job pins the ref to a commit id: nothing to promote into or name
            raise ConflictError(
                f"data.ref {ref!r} has {len(extra)} path(s) that promote.into {into!r} lacks "
                f"(e.g. {', '.join(extra[:3])}): promoting the winner would merge that data too, so it would be refused "
                "after the whole sweep had run",
                hint=f"merge the data into {into!r} first"
                + (
                    f" (into main: 'flotilla data validate --dataset {family.data.dataset} --ref {ref} --merge'), "
                    f"promote into {ref!r} instead,"
                    if branch
                    else ","
                )
                + " or promote.into: null",
            )
    return commits


def check_trial_fits(spec: SweepSpec, family: FamilySpec, *, local: bool) -> None:
    """A trial holds ``budget.trial_cpus`` for its Tune function plus its Train workers' resources, at
    the largest the space can pick: more than the cluster has, and it would stay pending forever."""

    def values(field: str, default: float) -> list[float]:
        """What the space can pick for ``field`` at the top of its range (the base's value if it is no dimension)."""
        p = spec.space.get(field)
        if p is None:
            return [float(default)]
        return [float(v) for v in p.values or []] if p.type == "choice" else [float(p.high or 0)]

    workers = max(values("scaling.workers", family.scaling.workers))
    # a separate family's trial: one worker per task's model, side by side, sharing one device (trial_resources)
    models = len(family.task_specs()) if family.strategy == "separate" else 1
    cpus = max(values("scaling.cpus_per_worker", family.scaling.cpus_per_worker))
    need = {"CPU": spec.budget.trial_cpus + models * workers * cpus}
    if family.scaling.use_gpu or "scaling.use_gpu" in spec.space:  # 0 GPUs per worker means one whole GPU
        gpus = max(g or 1.0 for g in values("scaling.gpus_per_worker", family.scaling.gpus_per_worker))
        need["GPU"] = workers * gpus if models == 1 else min(1.0, models * gpus)
    check_fits(
        need,
        local=local,
        what="a trial (budget.trial_cpus + scaling.workers x scaling.cpus_per_worker/gpus_per_worker)",
        hint="lower budget.trial_cpus, scaling.workers or scaling.cpus_per_worker (or their search ranges), "
        "or use a bigger cluster (--address)",
    )
