"""The loop: a model in production — drift monitoring first (inference, ground truth and active learning build on it).

:mod:`~flotilla.loop.twosample` holds the two-sample tests (MMD with a permutation p-value, KS,
chi-square) in numpy alone; :mod:`~flotilla.loop.drift` runs them as a monitor does — prediction
shift per task, per-slice views, one Holm-corrected :class:`DriftVerdict`.
"""

from flotilla.loop.drift import (
    DriftVerdict,
    Outcome,
    SliceShift,
    holm,
    predicted_classes,
    prediction_shift,
    slice_shift,
    verdict,
)
from flotilla.loop.twosample import TwoSampleResult, chi2_test, ks_test, mmd_test

__all__ = [
    "DriftVerdict",
    "Outcome",
    "SliceShift",
    "TwoSampleResult",
    "chi2_test",
    "holm",
    "ks_test",
    "mmd_test",
    "predicted_classes",
    "prediction_shift",
    "slice_shift",
    "verdict",
]
