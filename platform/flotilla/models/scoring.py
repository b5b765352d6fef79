"""Metric formulas over sufficient statistics — numpy only, no sklearn.

They sit below both the task kinds (which compute their metrics with them) and
:mod:`flotilla.models.metrics` (which re-exports them as part of its public API),
so neither has to import the other.
"""

from __future__ import annotations

import numpy as np


def auc_from_scores(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over average ranks (ties count one half).

    NaN when only one class is present: AUC is undefined there, and 0.5 would look like a result.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(labels).astype(bool).ravel()
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based average rank of each tie group
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_f1_from_confusion(confusion: np.ndarray) -> float:
    """Mean F1 over classes that occur in the labels or the predictions.

    A class absent from both has an undefined (0/0) F1 and is left out — the scikit-learn
    convention — so a small eval set lacking 'disgust' is not penalised for it; a class that is
    predicted but never true (or vice versa) scores 0.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # = 2tp + fp + fn
    seen = denom > 0
    if not seen.any():
        return float("nan")
    return float(np.mean(2 * tp[seen] / denom[seen]))
