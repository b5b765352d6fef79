"""The loop: a model in production — batch inference and drift monitoring over data that keeps arriving.

:mod:`~flotilla.loop.inference` runs a published model over a dataset pinned to a commit on Ray
Data and commits the predictions, with their lineage, on an ``infer-*`` branch
(:mod:`~flotilla.loop.predictor` is what runs inside it). :mod:`~flotilla.loop.twosample` holds the
two-sample tests (MMD with a permutation p-value, KS, chi-square); :mod:`~flotilla.loop.drift` runs
them as a monitor does — prediction shift per task, per-slice views, one Holm-corrected
:class:`DriftVerdict`.
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
from flotilla.loop.inference import InferencePlan, InferenceResult, infer, plan_inference, predictions_dir
from flotilla.loop.predictor import Predictor, load_model, output_schema
from flotilla.loop.twosample import TwoSampleResult, chi2_test, ks_test, mmd_test

__all__ = [
    "DriftVerdict",
    "InferencePlan",
    "InferenceResult",
    "Outcome",
    "Predictor",
    "SliceShift",
    "TwoSampleResult",
    "chi2_test",
    "holm",
    "infer",
    "ks_test",
    "load_model",
    "mmd_test",
    "output_schema",
    "plan_inference",
    "predicted_classes",
    "prediction_shift",
    "predictions_dir",
    "slice_shift",
    "verdict",
]
