"""Any model address (see :mod:`flotilla.registry.address`) → the immutable :class:`ModelLocation` it names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flotilla.errors import NotFoundError, SpecError
from flotilla.names import branch_id
from flotilla.registry.address import MODELS_PREFIX, WEIGHTS, ModelLocation, model_dir, parse_lakefs_uri, split_alias
from flotilla.registry.aliases import get_alias

if TYPE_CHECKING:
    from flotilla.hub.client import Hub


def resolve(hub: Hub, address: str, default_repo: str) -> ModelLocation:
    """A lakeFS URI, ``<run>[/<model>]`` or ``<family>@<alias>[/<model>]`` → where the weights are, by commit id.

    ``default_repo`` is the repository for the two spellings that do not name one.
    """
    if address.startswith("lakefs://"):
        repo, ref, path = parse_lakefs_uri(address)
        if path.endswith("/"):
            path += WEIGHTS
        r = hub.repo(repo)
        commit = r.resolve(ref)
        r.stat(commit, path)
        return ModelLocation(repo, commit, path)
    aliased = split_alias(address)
    if aliased:
        family, alias, model = aliased
        return get_alias(hub.repo(default_repo), family, alias).location(model)
    return _resolve_run(hub, address, default_repo)


def _resolve_run(hub: Hub, source: str, default_repo: str) -> ModelLocation:
    """A run id (``<run>`` or ``<run>/<model>``): on main, else on the run's own branches (not promoted yet)."""
    r = hub.repo(default_repo)
    run, _, model = source.partition("/")
    refs = ["main", branch_id(run, prefix="exp-")]
    if model:
        refs.append(branch_id(f"{run}-{model}", prefix="exp-"))
    else:  # an unpromoted run of separate models: each model on exp-<run>-<model>
        refs += sorted(b for b in r.branches() if b.startswith(branch_id(run, prefix="exp-") + "-"))
    prefix = model_dir(run, model) if model else f"{MODELS_PREFIX}{run}/"
    found: dict[str, ModelLocation] = {}
    for ref in refs:
        try:
            commit = r.resolve(ref)
        except NotFoundError:
            continue
        for o in r.list(commit, prefix):
            name = o.path[len(f"{MODELS_PREFIX}{run}/") :].split("/")[0]
            if o.path == f"{model_dir(run, name)}{WEIGHTS}" and name not in found:
                found[name] = ModelLocation(default_repo, commit, o.path)
    if len(found) == 1:
        return next(iter(found.values()))
    if len(found) > 1:
        raise SpecError(
            f"run {run!r} has {len(found)} models ({', '.join(sorted(found))}); a single model is needed here",
            hint=f"name it as '{run}/<model>', e.g. {run}/{sorted(found)[0]}",
        )
    raise NotFoundError(
        f"no model of run {source!r} in repository {default_repo!r} (looked on main and the run's branches)",
        hint="name a model by run id, <family>@<alias>, or a lakeFS URI like lakefs://faces/main/models/<run>/family/model.pt",
    )
