"""The loop: a model in production — batch inference and drift monitoring over data that keeps arriving.

:mod:`~flotilla.loop.inference` runs a published model over a dataset pinned to a commit on Ray
Data and commits the predictions, with their lineage, on an ``infer-*`` branch
(:mod:`~flotilla.loop.predictor` is what runs inside it). :mod:`~flotilla.loop.twosample` holds the
two-sample tests (MMD with a permutation p-value, KS, chi-square); :mod:`~flotilla.loop.drift` runs
them as a monitor does — prediction shift per task, per-slice views, one Holm-corrected
:class:`DriftVerdict`. :func:`monitor` (:mod:`~flotilla.loop.monitoring`) ties them to a model:
the reference is its training commit, committed predictions are found again
(:mod:`~flotilla.loop.predictions`) or made, slices come from :mod:`~flotilla.loop.slices`, the
ground-truth check from :mod:`~flotilla.loop.groundtruth`, and the report from :mod:`~flotilla.loop.report`.
"""

from flotilla.loop.drift import (
    DriftVerdict,
    Outcome,
    SliceShare,
    SliceShift,
    holm,
    predicted_classes,
    prediction_shift,
    share_shift,
    slice_shift,
    verdict,
)
from flotilla.loop.groundtruth import GroundTruth, MetricCheck
from flotilla.loop.inference import InferencePlan, InferenceResult, infer, plan_inference
from flotilla.loop.monitoring import MonitorResult, monitor
from flotilla.loop.predictions import PredictionSet, content_commit, find_predictions, predictions_dir, read_predictions
from flotilla.loop.predictor import Predictor, load_model, output_schema
from flotilla.loop.twosample import TwoSampleResult, chi2_test, ks_test, mmd_test

__all__ = [
    "DriftVerdict",
    "GroundTruth",
    "InferencePlan",
    "InferenceResult",
    "MetricCheck",
    "MonitorResult",
    "Outcome",
    "PredictionSet",
    "Predictor",
    "SliceShare",
    "SliceShift",
    "TwoSampleResult",
    "chi2_test",
    "content_commit",
    "find_predictions",
    "holm",
    "infer",
    "ks_test",
    "load_model",
    "mmd_test",
    "monitor",
    "output_schema",
    "plan_inference",
    "predicted_classes",
    "prediction_shift",
    "predictions_dir",
    "read_predictions",
    "share_shift",
    "slice_shift",
    "verdict",
]
