"""The documented entry points stay callable however the package was imported (a notebook calls them twice)."""

import importlib

import pytest

from flotilla.errors import SpecError

PACKAGES = ("flotilla", "flotilla.hub", "flotilla.cluster", "flotilla.training", "flotilla.tune", "flotilla.jobs",
            "flotilla.models", "flotilla.data", "flotilla.cli", "flotilla.registry", "flotilla.loop",
            "flotilla.labelstudio", "flotilla.audit")  # fmt: skip


def test_flotilla_train_and_jobs_submit_stay_callable_after_their_modules_are_imported(tmp_path):
    import flotilla
    import flotilla.jobs as jobs

    first = flotilla.train
    importlib.import_module("flotilla.training.run")  # what any training (or a second call) does
    importlib.import_module("flotilla.jobs.submission")
    missing = tmp_path / "no-such-spec.yaml"
    for train in (first, flotilla.train):  # each really is train(): it reads the spec first
        with pytest.raises(SpecError, match="does not exist"):
            train(missing)
    with pytest.raises(SpecError, match="does not exist"):
        jobs.submit(missing, dry_run=True)
    assert flotilla.train is first and callable(jobs.submit) and jobs.submit.__module__ == "flotilla.jobs.submission"


def test_every_package_exports_what_its_all_names():
    """One public-API style: each package's ``__init__`` re-exports its public names through ``__all__``."""
    for name in PACKAGES:
        module = importlib.import_module(name)
        assert module.__all__, name
        for export in module.__all__:
            assert getattr(module, export) is not None, f"{name}.{export}"


def test_no_exported_name_is_also_a_submodule():
    """``import flotilla.data.ingest as m`` resolves by attribute: a function of that name would shadow the module."""
    import pkgutil

    for name in PACKAGES:
        module = importlib.import_module(name)
        submodules = {m.name for m in pkgutil.iter_modules(module.__path__)}
        clashes = {
            n for n in submodules & set(module.__all__) if getattr(module, n) is not importlib.import_module(f"{name}.{n}")
        }
        assert not clashes, f"{name} exports {clashes}, which are also its submodules"


def test_the_api_functions_pickle_by_name():
    """A notebook function that Ray ships by value may refer to flotilla.train: cloudpickle must take it."""
    import ray.cloudpickle as cloudpickle

    import flotilla
    import flotilla.jobs

    for fn in (flotilla.train, flotilla.sweep, flotilla.jobs.submit):
        assert cloudpickle.loads(cloudpickle.dumps(fn)) is fn
