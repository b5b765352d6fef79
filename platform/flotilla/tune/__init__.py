"""Hyperparameter sweeps: Ray Tune + Optuna + ASHA, a zero-copy branch per trial, promotion by merge.

``sweep(spec)`` runs one and ``resume(id)`` finishes one that stopped; ``load_result(id)`` reads a
finished one's :class:`SweepResult`. Where each part lives: :mod:`~flotilla.tune.run` (the entry
points and the Tuner), :mod:`~flotilla.tune.spec`, :mod:`~flotilla.tune.preflight`,
:mod:`~flotilla.tune.space`, :mod:`~flotilla.tune.trial`, :mod:`~flotilla.tune.journal`,
:mod:`~flotilla.tune.branches`, :mod:`~flotilla.tune.results`, :mod:`~flotilla.tune.store`,
:mod:`~flotilla.tune.promotion`, :mod:`~flotilla.tune.repair`, :mod:`~flotilla.tune.tune_state`,
:mod:`~flotilla.tune.report`, :mod:`~flotilla.tune.interrupts`.
"""

from flotilla.tune.interrupts import SweepInterrupted
from flotilla.tune.results import NoWinner, SweepResult, TrialRecord
from flotilla.tune.run import resume, sweep
from flotilla.tune.spec import SweepSpec, load_sweep_spec
from flotilla.tune.store import list_sweeps, load_result

__all__ = [
    "NoWinner",
    "SweepInterrupted",
    "SweepResult",
    "SweepSpec",
    "TrialRecord",
    "list_sweeps",
    "load_result",
    "load_sweep_spec",
    "resume",
    "sweep",
]
