"""Generic metrics for any modality: arrays in, floats out.

Regression: ``pearson_r``, ``r2_score``, ``explained_variance``, ``mae`` (and ``behavior_scores``,
r and R^2 together). Classification: ``balanced_accuracy``, ``auroc``. Spike-train metrics are
in ``neurofound.eval.spike_metrics``, connectivity in ``neurofound.eval.connectivity``.

Conventions shared by every function here:

* Inputs of different shapes are a ``DataError`` naming both shapes.
* NaN marks a missing sample: samples (rows) where the target or the prediction is NaN are left
  out. ±Inf is a ``DataError`` (a diverged model, not a missing value).
* A score that is undefined on what is left (too few samples, a single class for AUROC, a
  constant series for r) is NaN, without a warning.
* ``(samples, outputs)`` regression inputs score every output and average them uniformly, as
  scikit-learn's ``multioutput="uniform_average"`` does.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from neurofound.errors import DataError

__all__ = [
    "auroc",
    "balanced_accuracy",
    "behavior_scores",
    "explained_variance",
    "mae",
    "pearson_r",
    "r2_score",
]

_NAN = float("nan")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _finite_or_nan(name: str, x: np.ndarray) -> None:
    if np.isinf(x).any():
        raise DataError(f"{name} contains {int(np.isinf(x).sum())} Inf values; use NaN for missing samples")


def _regression_pair(y, yhat) -> tuple[np.ndarray, np.ndarray]:
    """(samples, outputs) float64 pair with NaN rows dropped."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise DataError(f"y {y.shape} and yhat {yhat.shape} must have the same shape")
    if y.ndim == 1:
        y, yhat = y[:, None], yhat[:, None]
    if y.ndim != 2:
        raise DataError(f"need (samples,) or (samples, outputs) arrays, got shape {y.shape}")
    _finite_or_nan("y", y)
    _finite_or_nan("yhat", yhat)
    keep = ~(np.isnan(y).any(1) | np.isnan(yhat).any(1))
    return y[keep], yhat[keep]


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """(samples,) true labels and predicted labels (arg-max of scores), NaN samples dropped."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1:
        raise DataError(f"y_true must be (samples,) class labels, got shape {y_true.shape}")
    if y_pred.ndim == 2 and y_pred.shape[0] == y_true.shape[0]:
        y_pred = _scores_to_labels(y_pred)
    if y_pred.shape != y_true.shape:
        raise DataError(
            f"y_pred {y_pred.shape} must be (samples,) labels or (samples, classes) scores for y_true "
            f"{y_true.shape}"
        )
    keep = np.ones(y_true.shape, bool)
    for name, a in (("y_true", y_true), ("y_pred", y_pred)):
        if a.dtype.kind == "f":
            _finite_or_nan(name, a)
            keep &= ~np.isnan(a)
    return y_true[keep], y_pred[keep]


def _scores_to_labels(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    _finite_or_nan("scores", scores)
    labels = np.full(scores.shape[0], np.nan)
    ok = ~np.isnan(scores).any(1)
    labels[ok] = scores[ok].argmax(1)
    return labels


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def pearson_r(y, yhat) -> float:
    """Pearson correlation; for ``(samples, outputs)`` the mean over outputs.

    NaN when fewer than 2 samples remain or a series is constant.
    """
    y, yhat = _regression_pair(y, yhat)
    if y.shape[0] < 2:
        return _NAN
    yc, hc = y - y.mean(0), yhat - yhat.mean(0)
    den = np.sqrt((yc**2).sum(0) * (hc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (yc * hc).sum(0) / den, np.nan)
    return float(np.mean(r))


def r2_score(y, yhat) -> float:
    """Coefficient of determination as scikit-learn computes it (uniform average over outputs).

    ``1 - SS_res / SS_tot``; can be negative. A constant target scores 1 if predicted exactly,
    else 0 (scikit-learn's convention). NaN with fewer than 2 samples.
    """
    y, yhat = _regression_pair(y, yhat)
    if y.shape[0] < 2:
        return _NAN
    ss_res = ((y - yhat) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(r2))


def explained_variance(y, yhat) -> float:
    """Explained variance ``1 - Var(y - yhat) / Var(y)`` (scikit-learn's ``explained_variance_score``).

    Unlike R^2 it ignores a constant offset of the predictions. A constant target scores 1 if
    the residual is constant too, else 0. NaN with fewer than 2 samples.
    """
    y, yhat = _regression_pair(y, yhat)
    if y.shape[0] < 2:
        return _NAN
    var_res = np.var(y - yhat, axis=0)
    var_y = np.var(y, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ev = np.where(var_y > 0, 1 - var_res / var_y, np.where(var_res == 0, 1.0, 0.0))
    return float(np.mean(ev))


def mae(y, yhat) -> float:
    """Mean absolute error (uniform average over outputs); NaN when no sample remains."""
    y, yhat = _regression_pair(y, yhat)
    if y.shape[0] == 0:
        return _NAN
    return float(np.mean(np.abs(y - yhat)))


def behavior_scores(y, yhat) -> dict[str, float]:
    """Pearson r and R^2 of regression predictions (e.g. of a behaviour variable).

    Args:
        y: true values ``(samples,)`` or ``(samples, outputs)``.
        yhat: predictions, same shape.

    Returns:
        ``{"r": ..., "r2": ...}``.
    """
    return {"r": pearson_r(y, yhat), "r2": r2_score(y, yhat)}


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean over the classes present in ``y_true`` of the fraction of that class predicted right.

    Chance is ``1 / n_classes`` whatever the class frequencies (scikit-learn's
    ``balanced_accuracy_score``): a model that always predicts the majority class of an
    unbalanced target scores chance, not the majority frequency.

    Args:
        y_true: ``(samples,)`` class labels.
        y_pred: ``(samples,)`` predicted labels, or ``(samples, classes)`` scores whose arg-max is
            the label (then labels are ``0 .. classes - 1``).

    Returns:
        Balanced accuracy in [0, 1]; NaN when no sample remains.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    if y_true.size == 0:
        return _NAN
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def auroc(y_true, y_score) -> float:
    """Area under the ROC curve.

    Args:
        y_true: ``(samples,)`` labels: two classes (the larger one, e.g. 1 or True, is positive),
            or ``0 .. classes - 1`` with ``(samples, classes)`` scores.
        y_score: ``(samples,)`` scores of the positive class, or ``(samples, classes)``
            per-class scores: then the one-vs-rest AUROC averaged over the classes present in
            ``y_true`` (macro average).

    Returns:
        AUROC in [0, 1]; NaN when only one class is present.
    """
    y_true = np.asarray(y_true)
    score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 1 or score.shape[:1] != y_true.shape or score.ndim not in (1, 2):
        raise DataError(
            f"y_true {y_true.shape} must be (samples,) and y_score (samples,) or (samples, classes), "
            f"got {score.shape}"
        )
    _finite_or_nan("y_score", score)
    keep = ~np.isnan(score) if score.ndim == 1 else ~np.isnan(score).any(1)
    if y_true.dtype.kind == "f":
        _finite_or_nan("y_true", y_true)
        keep &= ~np.isnan(y_true)
    y_true, score = y_true[keep], score[keep]
    classes = np.unique(y_true)
    if score.ndim == 1:
        if classes.size > 2:
            raise DataError(f"1-D scores need two classes, y_true has {classes.size}; pass (samples, classes) scores")
        if classes.size < 2:
            return _NAN
        return float(roc_auc_score(y_true == classes[1], score))
    n_classes = score.shape[1]
    if classes.size and (not np.all(classes == np.round(classes)) or classes.min() < 0 or classes.max() >= n_classes):
        raise DataError(f"with (samples, {n_classes}) scores, y_true must hold labels 0..{n_classes - 1}")
    per_class = [roc_auc_score(y_true == c, score[:, int(c)]) for c in classes] if classes.size > 1 else []
    return float(np.mean(per_class)) if per_class else _NAN
