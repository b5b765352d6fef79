"""Hyperparameter sweeps: Ray Tune + Optuna + ASHA, a zero-copy branch per trial, promotion by merge."""

from flotilla.tune.spec import SweepSpec, load_sweep_spec
from flotilla.tune.sweep import NoWinner, SweepInterrupted, SweepResult, TrialRecord, load_result, resume, sweep

__all__ = [
    "NoWinner",
    "SweepInterrupted",
    "SweepResult",
    "SweepSpec",
    "TrialRecord",
    "load_result",
    "load_sweep_spec",
    "resume",
    "sweep",
]
