"""Out-of-sample predictions from a cross-validated linear probe on a model's frozen embeddings.

cleanlab's label-issue scores are only honest when each sample's predicted probabilities come
from a model that never saw that sample's label: a model scores its own training labels as
right, mistakes included, because it learnt them. Two ways give out-of-sample predictions for a
training set: retrain the CNN K times, each time without one fold (K full trainings — hours on
this machine, a Ray job on a cluster), or keep the trained model's trunk as a fixed feature
extractor and cross-validate a *linear probe* on its embeddings (seconds: one logistic regression
or ridge fit per fold). The probe is the default (``method="probe"``): its probabilities are
out-of-sample by construction and, on features a network already made linearly separable, about
as sharp as the network's own head. Its one blind spot is that the trunk itself saw the training
labels, so a flipped label the trunk memorised can pull its embedding towards the wrong class;
that is why the audit reports a recall bound rather than promising every flip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flotilla.errors import SpecError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MIN_PER_FOLD = 2


def _classifier(seed: int) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))


def _regressor() -> Pipeline:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=1.0))


def _check(n: int, folds: int, what: str) -> None:
    if folds < 2:
        raise SpecError(f"folds must be at least 2, got {folds}", hint="5 is the usual choice")
    if n < folds * MIN_PER_FOLD:
        raise SpecError(
            f"{what} has {n} labelled sample(s): too few for {folds}-fold cross-validation",
            hint="label more samples, lower --folds, or use --method model on data the model never saw",
        )


def probe_probabilities(
    embeddings: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, seed: int = 0, what: str = "task"
) -> np.ndarray:
    """[n, num_classes] out-of-fold class probabilities for the labelled rows (``labels`` not NaN); NaN rows elsewhere.

    Stratified folds keep every class in every training fold where the data allows; a class a fold
    never saw gets probability 0 there (as the probe cannot predict what it never met).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    labelled = np.flatnonzero(~np.isnan(labels))
    _check(len(labelled), folds, what)
    x, y = embeddings[labelled], labels[labelled].astype(np.int64)
    out = np.full((len(labels), num_classes), np.nan)
    counts = np.bincount(y, minlength=num_classes)
    stratified = counts[counts > 0].min() >= folds
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed) if stratified else KFold(folds, shuffle=True, random_state=seed)
    )
    for fit_rows, held_rows in splitter.split(x, y):
        probs = np.zeros((len(held_rows), num_classes))
        classes = np.unique(y[fit_rows])
        if len(classes) == 1:
            probs[:, classes[0]] = 1.0
        else:
            model = _classifier(seed).fit(x[fit_rows], y[fit_rows])
            probs[:, model.classes_] = model.predict_proba(x[held_rows])
        out[labelled[held_rows]] = probs
    return out


def probe_values(embeddings: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0, what: str = "task") -> np.ndarray:
    """[n] out-of-fold ridge predictions for the labelled rows, NaN elsewhere (a regression task's probe)."""
    from sklearn.model_selection import KFold

    labelled = np.flatnonzero(~np.isnan(labels))
    _check(len(labelled), folds, what)
    x, y = embeddings[labelled], labels[labelled]
    out = np.full(len(labels), np.nan)
    for fit_rows, held_rows in KFold(folds, shuffle=True, random_state=seed).split(x):
        out[labelled[held_rows]] = _regressor().fit(x[fit_rows], y[fit_rows]).predict(x[held_rows])
    return out
