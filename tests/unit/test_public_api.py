"""The documented entry points stay callable however the package was imported (a notebook calls them twice)."""

import importlib

import pytest

from flotilla.errors import SpecError


def test_flotilla_train_and_jobs_submit_stay_callable_after_their_modules_are_imported(tmp_path):
    import flotilla
    import flotilla.jobs as jobs

    first = flotilla.train  # the lazy export, before anything imported the package of the same name
    importlib.import_module("flotilla.train.run")  # what any training (or a second call) does
    jobs.get_job  # imports flotilla.jobs.submit, which then holds the name `submit` in flotilla.jobs
    missing = tmp_path / "no-such-spec.yaml"
    for train in (first, flotilla.train):  # each really is train(): it reads the spec first
        with pytest.raises(SpecError, match="does not exist"):
            train(missing)
    with pytest.raises(SpecError, match="does not exist"):
        jobs.submit(missing, dry_run=True)
    assert flotilla.train.run.train.__name__ == "train" and jobs.submit.get_job is jobs.get_job  # still the modules too


def test_the_callable_modules_pickle_by_name_as_modules_do():
    """A notebook function that Ray ships by value may refer to flotilla.train: cloudpickle must take it."""
    import ray.cloudpickle as cloudpickle

    import flotilla.jobs.submit
    import flotilla.train

    for module in (flotilla.train, flotilla.jobs.submit):
        assert cloudpickle.loads(cloudpickle.dumps(module)) is module
