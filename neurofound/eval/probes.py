"""Linear probes on frozen features: ridge (regression) and logistic (classification).

Each probe standardises features with TRAIN statistics, picks the ridge strength by K-fold
cross-validation on the train split only, refits on all train rows and predicts the test rows.
Folds are contiguous (no shuffling): rows are usually consecutive time windows, and shuffled
folds would let neighbouring, nearly identical windows leak between folds and favour too little
regularisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofound.errors import ConfigError, DataError
from neurofound.eval.metrics import balanced_accuracy, behavior_scores

__all__ = ["DEFAULT_ALPHAS", "DEFAULT_CS", "csp_lda", "logistic_probe", "ridge_probe"]

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                test_y: np.ndarray | None = None, *, alphas: Sequence[float] = DEFAULT_ALPHAS,
                cv: int = 5) -> dict:
    """Fit a ridge probe on train features and predict the test features.

    Args:
        train_x: ``(train, features)``.
        train_y: ``(train,)`` or ``(train, outputs)`` targets.
        test_x: ``(test, features)``.
        test_y: optional true test targets; adds ``r`` and ``r2``.
        alphas: candidate ridge strengths (on standardised features).
        cv: number of contiguous folds for choosing alpha (train split only).

    Returns:
        ``{"pred": (test,) or (test, outputs), "alpha": chosen strength}`` plus ``"r"``,
        ``"r2"`` when ``test_y`` is given (see ``metrics.behavior_scores``).
    """
    xtr = np.asarray(train_x, dtype=np.float64)
    ytr = np.asarray(train_y, dtype=np.float64)
    xte = np.asarray(test_x, dtype=np.float64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise DataError(f"train_x {xtr.shape} and test_x {xte.shape} must be (rows, features) with equal features")
    if ytr.shape[0] != xtr.shape[0] or ytr.ndim not in (1, 2):
        raise DataError(f"train_y {ytr.shape} must have one row per train_x row ({xtr.shape[0]})")
    if cv < 2 or xtr.shape[0] < cv:
        raise ConfigError(f"need cv >= 2 folds and at least cv train rows; got cv={cv}, rows={xtr.shape[0]}")
    if not (np.all(np.isfinite(xtr)) and np.all(np.isfinite(ytr)) and np.all(np.isfinite(xte))):
        raise DataError("features/targets contain NaN or inf; drop or impute those rows first")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas), cv=KFold(n_splits=cv, shuffle=False)))
    model.fit(xtr, ytr)
    pred = model.predict(xte)
    out = {"pred": pred, "alpha": float(model[-1].alpha_)}
    if test_y is not None:
        out.update(behavior_scores(np.asarray(test_y, dtype=np.float64).reshape(pred.shape), pred))
    return out


def logistic_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                   test_y: np.ndarray | None = None, *, cs: Sequence[float] = DEFAULT_CS, cv: int = 5) -> dict:
    """Fit an L2 logistic-regression probe (inverse strength C by contiguous CV on train) and predict test.

    Args:
        train_x, test_x: ``(rows, features)``.
        train_y: ``(train,)`` integer class labels.
        test_y: optional true test labels; adds ``balanced_acc``.
        cs: candidate inverse regularisation strengths.
        cv: folds for choosing C, stratified and unshuffled (fewer when a class has fewer rows).

    Returns:
        ``{"pred": (test,) class labels, "C": chosen value}`` plus ``"balanced_acc"``.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    xtr = np.asarray(train_x, dtype=np.float64)
    xte = np.asarray(test_x, dtype=np.float64)
    ytr = np.asarray(train_y).reshape(-1)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1] or ytr.shape[0] != xtr.shape[0]:
        raise DataError(f"train_x {xtr.shape}, train_y {ytr.shape} and test_x {xte.shape} do not fit together")
    if not (np.all(np.isfinite(xtr)) and np.all(np.isfinite(xte))):
        raise DataError("features contain NaN or inf; drop or impute those rows first")
    classes, counts = np.unique(ytr, return_counts=True)
    if classes.size < 2:
        raise DataError(f"a classification probe needs at least two classes in the training rows, got {classes}")
    folds = int(max(2, min(cv, counts.min())))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(cs), cv=StratifiedKFold(n_splits=folds, shuffle=False),
                                                                 max_iter=2000, scoring="balanced_accuracy"))
    model.fit(xtr, ytr)
    pred = model.predict(xte)
    out = {"pred": pred, "C": float(np.ravel(model[-1].C_)[0])}
    if test_y is not None:
        out["balanced_acc"] = balanced_accuracy(np.asarray(test_y).reshape(-1), pred)
    return out


def csp_lda(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, val_x: np.ndarray | None = None,
            val_y: np.ndarray | None = None, n_components: Sequence[int] = (4, 6, 8), sfreq: float | None = None,
            band: tuple[float, float] | None = (8.0, 30.0)) -> dict:
    """Common spatial patterns + linear discriminant analysis, the classic motor-imagery decoder.

    The trials are band-passed to `band` (MNE's FIR filter; the mu and beta rhythms by default, as in
    MNE's motor-imagery example: without it the log-variances follow the 1/f low frequencies and the
    blinks, and CSP decodes at chance), then MNE's `CSP` (log-variance features of the most
    discriminative spatial filters; several classes through MNE's multi-class handling) followed by
    scikit-learn's LDA, both fitted on the training trials alone. The number of components is chosen
    on the validation trials when they are given (the first candidate otherwise).

    Args:
        train_x, test_x (and val_x): `(trials, channels, samples)`.
        train_y (and val_y): `(trials,)` integer labels.
        n_components: candidates (each capped at the channel count).
        sfreq: the trials' sampling rate in Hz (needed when `band` is set).
        band: `(low, high)` Hz of the band-pass, or None to use the trials as they are.

    Returns:
        `{"pred": (test,) labels, "n_components": chosen}`.
    """
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    xtr, xte = np.asarray(train_x, dtype=np.float64), np.asarray(test_x, dtype=np.float64)
    xva = np.asarray(val_x, dtype=np.float64) if val_x is not None else None
    ytr = np.asarray(train_y).reshape(-1)
    if xtr.ndim != 3 or xte.ndim != 3 or xtr.shape[1:] != xte.shape[1:] or ytr.shape[0] != xtr.shape[0]:
        raise DataError(f"train_x {xtr.shape}, train_y {ytr.shape} and test_x {xte.shape} must be (trials, channels, "
                        f"samples) with matching channels and samples")
    if np.unique(ytr).size < 2:
        raise DataError("CSP needs at least two classes among the training trials")
    candidates = sorted({int(min(k, xtr.shape[1])) for k in n_components})
    if band is not None:
        if sfreq is None:
            raise ConfigError("csp_lda with a band-pass needs the trials' sampling rate: pass sfreq=<Hz> (or band=None)")
        lo, hi = (float(b) for b in band)
        if not 0.0 < lo < hi < float(sfreq) / 2:
            raise ConfigError(f"band {band} must satisfy 0 < low < high < sfreq / 2 = {float(sfreq) / 2:g} Hz")
        from mne.filter import filter_data

        def bandpass(a):
            return filter_data(a, float(sfreq), lo, hi, verbose="error") if a.size else a

        xtr, xte = bandpass(xtr), bandpass(xte)
        xva = bandpass(xva) if xva is not None else None

    from mne.utils import use_log_level

    # CSP's filters and their order do not depend on how many are kept, and each log-power feature is
    # computed on its own: one fit with the most components gives every candidate as a prefix
    csp = CSP(n_components=candidates[-1], log=True, reg="ledoit_wolf")
    with use_log_level("WARNING"):  # MNE logs every covariance estimate
        ftr = csp.fit_transform(xtr, ytr)
        fte = csp.transform(xte)
        choose = xva is not None and len(xva) > 0 and val_y is not None and len(candidates) > 1
        fva = csp.transform(xva) if choose else None

    def lda(k: int) -> LinearDiscriminantAnalysis:
        return LinearDiscriminantAnalysis().fit(ftr[:, :k], ytr)

    chosen = candidates[0]
    if choose:
        scores = [balanced_accuracy(np.asarray(val_y).reshape(-1), lda(k).predict(fva[:, :k])) for k in candidates]
        chosen = candidates[int(np.nanargmax(scores))]
    return {"pred": lda(chosen).predict(fte[:, :chosen]), "n_components": chosen}
