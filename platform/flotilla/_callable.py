"""Modules that share their name with the function users call: calling the module calls the function.

``flotilla.train(spec)`` is the API, and ``flotilla.train`` is also a package; likewise
``flotilla.jobs.submit(spec)`` and the module ``flotilla.jobs.submit``. The packages export the
functions lazily, but as soon as anything imports the submodule (``flotilla.train.run``,
``flotilla.jobs.submit`` for ``get_job``), Python binds the *module* to that name in its parent:
a second ``flotilla.train(spec)`` in a notebook then raised "'module' object is not callable".
A module whose class has ``__call__`` works whichever of the two the name holds.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(module_name: str, target_module: str, target: str) -> None:
    """Let ``sys.modules[module_name](...)`` call ``target_module.target(...)`` (imported on first call)."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(target_module), target)(*args, **kwargs)

        def __reduce__(self) -> tuple[Any, tuple[str]]:  # pickled by name, like any module (cloudpickle, Ray)
            return importlib.import_module, (self.__name__,)

    sys.modules[module_name].__class__ = CallableModule
