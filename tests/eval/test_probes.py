"""Ridge probe: CV on train only, refit, predictions and scores on test."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from neurofound.errors import ConfigError, DataError
from neurofound.eval.probes import DEFAULT_ALPHAS, ridge_probe


def _data(n=240, d=8, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, size=d)  # unequal scales: standardisation matters
    y = x @ rng.normal(size=d) + noise * rng.normal(size=n)
    return x, y


def test_probe_recovers_linear_map_and_matches_manual_ridge():
    x, y = _data()
    out = ridge_probe(x[:180], y[:180], x[180:], y[180:])
    assert out["pred"].shape == (60,)
    assert out["alpha"] in DEFAULT_ALPHAS
    assert out["r"] > 0.99 and out["r2"] > 0.98
    # the same fit by hand: train statistics, chosen alpha, sklearn Ridge
    mu, sd = x[:180].mean(0), x[:180].std(0)
    manual = Ridge(alpha=out["alpha"]).fit((x[:180] - mu) / sd, y[:180]).predict((x[180:] - mu) / sd)
    np.testing.assert_allclose(out["pred"], manual, rtol=1e-8, atol=1e-8)


def test_probe_regularises_noise_targets_strongly():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 30))
    y = rng.normal(size=100)  # unrelated to x
    out = ridge_probe(x[:80], y[:80], x[80:], y[80:])
    assert out["alpha"] >= 100.0
    assert abs(out["r2"]) < 0.2
    multi = ridge_probe(x[:80], np.stack([y[:80], 2 * y[:80]], 1), x[80:])
    assert multi["pred"].shape == (20, 2) and "r" not in multi


def test_probe_rejects_bad_input():
    x, y = _data(n=20)
    with pytest.raises(DataError, match="equal features"):
        ridge_probe(x, y, x[:, :3])
    with pytest.raises(ConfigError, match="cv"):
        ridge_probe(x[:3], y[:3], x, cv=5)
    with pytest.raises(DataError, match="NaN"):
        ridge_probe(np.where(x > 1, np.nan, x), y, x)


def test_logistic_probe_scores_balanced_accuracy_and_refuses_bad_input():
    from sklearn.metrics import balanced_accuracy_score

    from neurofound.eval.probes import logistic_probe

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 4)) + np.eye(4)[y] * 3.0
    order = rng.permutation(120)
    x, y = x[order], y[order]
    out = logistic_probe(x[:90], y[:90], x[90:], y[90:])
    assert out["pred"].shape == (30,) and out["C"] > 0
    assert out["balanced_acc"] == pytest.approx(balanced_accuracy_score(y[90:], out["pred"]))
    assert out["balanced_acc"] > 0.8
    with pytest.raises(DataError, match="two classes"):
        logistic_probe(x[:10], np.zeros(10), x[10:20])
    with pytest.raises(DataError, match="do not fit together"):
        logistic_probe(x[:10], y[:9], x[10:20])
