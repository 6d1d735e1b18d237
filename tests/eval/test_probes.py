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
