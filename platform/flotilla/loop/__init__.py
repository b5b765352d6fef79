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

Active learning reads the same predictions: :mod:`~flotilla.loop.uncertainty` turns them into
each task's uncertainty, and :func:`select_samples` (:mod:`~flotilla.loop.selection`) picks what
to label next — random, typicality, uncertainty, uncertainty + diversity or anomaly — as a
:class:`Selection` that carries every score.
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
from flotilla.loop.inference import InferencePlan, InferenceResult, ensure_predictions, infer, plan_inference
from flotilla.loop.monitoring import MonitorResult, monitor
from flotilla.loop.predictions import PredictionSet, content_commit, find_predictions, predictions_dir, read_predictions
from flotilla.loop.predictor import Predictor, load_model, output_schema
from flotilla.loop.selection import (
    STRATEGIES,
    Selection,
    choose_strategy,
    combine,
    k_center_greedy,
    kmeans_pp,
    rank_normalise,
    select_samples,
    typicality,
)
from flotilla.loop.twosample import TwoSampleResult, chi2_test, ks_test, mmd_test
from flotilla.loop.uncertainty import (
    binary_probs,
    knn_spread,
    margin,
    normalised_entropy,
    sample_spread,
    task_uncertainties,
)

__all__ = [
    "STRATEGIES",
    "DriftVerdict",
    "GroundTruth",
    "InferencePlan",
    "InferenceResult",
    "MetricCheck",
    "MonitorResult",
    "Outcome",
    "PredictionSet",
    "Predictor",
    "Selection",
    "SliceShare",
    "SliceShift",
    "TwoSampleResult",
    "binary_probs",
    "chi2_test",
    "choose_strategy",
    "combine",
    "content_commit",
    "ensure_predictions",
    "find_predictions",
    "holm",
    "infer",
    "k_center_greedy",
    "kmeans_pp",
    "knn_spread",
    "ks_test",
    "load_model",
    "margin",
    "mmd_test",
    "monitor",
    "normalised_entropy",
    "output_schema",
    "plan_inference",
    "predicted_classes",
    "prediction_shift",
    "predictions_dir",
    "rank_normalise",
    "read_predictions",
    "sample_spread",
    "select_samples",
    "share_shift",
    "slice_shift",
    "task_uncertainties",
    "typicality",
    "verdict",
]
