"""Hyperparameter sweeps: Ray Tune + Optuna + ASHA, a zero-copy branch per trial, promotion by merge."""
