"""Generic metrics (neurofound.eval.metrics): hand values, scikit-learn parity, NaN and shape rules."""

import numpy as np
import pytest
from sklearn import metrics as sk

from neurofound.errors import DataError
from neurofound.eval import metrics as M

RNG = np.random.default_rng(0)
Y = RNG.normal(size=50)
YHAT = Y + RNG.normal(scale=0.5, size=50) + 0.3


def test_behavior_scores_match_hand_and_sklearn():
    y = np.array([1.0, 2, 3, 4])
    yhat = np.array([1.0, 2, 3, 5])
    out = M.behavior_scores(y, yhat)
    assert out["r2"] == pytest.approx(0.8)  # 1 - 1 / 5
    assert out["r"] == pytest.approx(np.corrcoef(y, yhat)[0, 1])
    Y2 = np.stack([y, -y], 1)
    H2 = np.stack([yhat, -y + 1], 1)
    assert M.r2_score(Y2, H2) == pytest.approx(sk.r2_score(Y2, H2))
    assert M.r2_score(y, np.full(4, 2.5)) == pytest.approx(0.0)
    with pytest.raises(DataError, match="same shape"):
        M.behavior_scores(y, yhat[:3])


def test_pearson_r():
    assert M.pearson_r([1.0, 2, 3], [2.0, 4, 6]) == pytest.approx(1.0)
    assert M.pearson_r([1.0, 2, 3], [3.0, 2, 1]) == pytest.approx(-1.0)
    assert M.pearson_r(Y, YHAT) == pytest.approx(np.corrcoef(Y, YHAT)[0, 1])
    assert np.isnan(M.pearson_r([1.0, 2, 3], [5.0, 5, 5]))  # constant prediction: undefined


def test_mae_and_explained_variance_by_hand_and_sklearn():
    assert M.mae([1.0, 2, 3], [2.0, 2, 1]) == pytest.approx((1 + 0 + 2) / 3)
    assert M.mae(Y, YHAT) == pytest.approx(sk.mean_absolute_error(Y, YHAT))
    # a constant offset costs R^2 but not explained variance
    assert M.explained_variance([1.0, 2, 3], [11.0, 12, 13]) == pytest.approx(1.0)
    assert M.r2_score([1.0, 2, 3], [11.0, 12, 13]) < 0
    assert M.explained_variance(Y, YHAT) == pytest.approx(sk.explained_variance_score(Y, YHAT))
    Y2, H2 = np.stack([Y, 2 * Y], 1), np.stack([YHAT, Y ** 2], 1)
    assert M.explained_variance(Y2, H2) == pytest.approx(sk.explained_variance_score(Y2, H2))
    assert M.mae(Y2, H2) == pytest.approx(sk.mean_absolute_error(Y2, H2))
    assert M.explained_variance([2.0, 2, 2], [1.0, 1, 1]) == 1.0  # constant target, constant residual
    assert M.explained_variance([2.0, 2, 2], [1.0, 2, 1]) == 0.0


def test_balanced_accuracy_by_hand_and_sklearn():
    # class 0: 3 of 4 right; class 1: 1 of 2; class 2: 0 of 1 -> (0.75 + 0.5 + 0) / 3
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 1])
    assert M.balanced_accuracy(y, p) == pytest.approx(1.25 / 3)
    assert M.balanced_accuracy(y, p) == pytest.approx(sk.balanced_accuracy_score(y, p))
    # majority-class prediction of an unbalanced target is chance, not the majority frequency
    assert M.balanced_accuracy([0] * 9 + [1], [0] * 10) == pytest.approx(0.5)
    scores = np.eye(3)[p] + 0.1  # (samples, classes): the arg-max is the label
    assert M.balanced_accuracy(y, scores) == pytest.approx(1.25 / 3)
    assert M.balanced_accuracy(["a", "b", "b"], ["a", "b", "a"]) == pytest.approx(0.75)


def test_auroc_binary_and_multiclass():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert M.auroc(y, s) == pytest.approx(0.75)
    assert M.auroc(y.astype(bool), s) == pytest.approx(0.75)
    assert np.isnan(M.auroc([1, 1, 1], [0.2, 0.3, 0.4]))  # one class: undefined
    labels = RNG.integers(0, 3, 60)
    scores = RNG.random((60, 3)) + np.eye(3)[labels] * 0.5
    expected = np.mean([sk.roc_auc_score(labels == c, scores[:, c]) for c in range(3)])
    assert M.auroc(labels, scores) == pytest.approx(expected)
    probs = scores / scores.sum(1, keepdims=True)
    assert M.auroc(labels, probs) == pytest.approx(sk.roc_auc_score(labels, probs, multi_class="ovr"))
    with pytest.raises(DataError, match="two classes"):
        M.auroc(labels, scores[:, 0])
    with pytest.raises(DataError, match="labels 0..1"):
        M.auroc(labels, scores[:, :2])


@pytest.mark.parametrize("fn", [M.pearson_r, M.r2_score, M.explained_variance, M.mae])
def test_regression_metrics_skip_nan_samples(fn):
    y, yhat = Y.copy(), YHAT.copy()
    y[3], yhat[7] = np.nan, np.nan
    keep = np.ones(50, bool)
    keep[[3, 7]] = False
    assert fn(y, yhat) == pytest.approx(fn(Y[keep], YHAT[keep]))
    assert np.isnan(fn([np.nan, 1.0], [1.0, np.nan]))  # nothing left: undefined, no warning
    with pytest.raises(DataError, match="Inf"):
        fn(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.inf, 3.0]))
    with pytest.raises(DataError, match=r"\(3,\).*\(2,\)"):
        fn(np.ones(3), np.ones(2))


@pytest.mark.parametrize("fn", [M.balanced_accuracy, M.auroc])
def test_classification_metrics_skip_nan_samples_and_check_shapes(fn):
    y = np.array([0.0, 1, np.nan, 1, 0, 1])
    s = np.array([0.0, 1, 1, np.nan, 0, 1])
    assert fn(y, s) == pytest.approx(fn(y[[0, 1, 4, 5]], s[[0, 1, 4, 5]]))
    assert fn(y, s) == pytest.approx(1.0)
    with pytest.raises(DataError, match="y_true"):
        fn(np.zeros(3), np.zeros(4))
    with pytest.raises(DataError, match="Inf"):
        fn(np.array([0.0, 1.0]), np.array([0.0, np.inf]))


def test_returns_python_floats():
    for fn in (M.pearson_r, M.r2_score, M.explained_variance, M.mae, M.balanced_accuracy):
        assert type(fn([0.0, 1, 1], [0.0, 1, 0])) is float
    assert type(M.auroc([0, 1, 1], [0.1, 0.8, 0.3])) is float
