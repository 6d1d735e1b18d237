"""Sensor metrics, the CSP baseline and the sensor plots."""

from __future__ import annotations

import numpy as np
import pytest

from neurofound.errors import ConfigError, DataError
from neurofound.eval.probes import csp_lda
from neurofound.eval.sensor_metrics import codebook_usage, unigram_accuracy, window_mse, window_pcc


def test_window_pcc_scores_each_row_and_skips_padding():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((2, 3, 4, 64))
    r = window_pcc(target, target)
    assert r.shape == (24,) and np.allclose(r, 1.0)
    assert np.allclose(window_pcc(-target, target), -1.0)
    valid = np.ones((2, 3, 4, 64), bool)
    valid[:, 2] = False  # a padded channel
    noisy = target.copy()
    noisy[:, 2] = rng.standard_normal((2, 4, 64))  # garbage where the channel is padding
    r = window_pcc(noisy, target, valid).reshape(2, 3, 4)
    assert np.allclose(r[:, :2], 1.0) and np.isnan(r[:, 2]).all()
    # a padded tail changes nothing of the real samples' correlation
    tail = np.ones((2, 3, 4, 64), bool)
    tail[..., 40:] = False
    rec = target + 0.1 * rng.standard_normal(target.shape)
    rec2 = rec.copy()
    rec2[..., 40:] = 100.0
    np.testing.assert_allclose(window_pcc(rec, target, tail), window_pcc(rec2, target, tail))
    assert window_mse(target, target) == 0.0
    with pytest.raises(DataError, match="NaN"):
        window_pcc(np.full((1, 4), np.nan), np.zeros((1, 4)))


def test_codebook_usage_and_perplexity():
    codes = np.stack([np.arange(8) % 4, np.zeros(8, int)], 1)  # level 1: 4 of 8 codes uniformly; level 2: one code
    u = codebook_usage(codes, 8)
    np.testing.assert_allclose(u["usage"], [0.5, 0.125])
    np.testing.assert_allclose(u["perplexity"], [4.0, 1.0])
    with pytest.raises(DataError, match="lie in"):
        codebook_usage(codes + 10, 8)
    assert unigram_accuracy(np.array([1, 1, 2]), np.array([1, 2, 1, 1])) == 0.75


def test_csp_lda_decodes_band_power_differences():
    rng = np.random.default_rng(1)
    n, c, t = 90, 6, 256
    y = np.arange(n) % 3
    x = rng.standard_normal((n, c, t))
    x[np.arange(n), y] *= 2.5  # class k: more power on channel k
    res = csp_lda(x[:60], y[:60], x[60:], val_x=x[45:60], val_y=y[45:60], n_components=(2, 4), band=None)
    assert (res["pred"] == y[60:]).mean() > 0.8 and res["n_components"] in (2, 4)
    # the class lives in a 10-Hz rhythm under a strong slow drift: broadband CSP follows the drift, the
    # band-passed one the rhythm
    tt = np.arange(t) / 128.0
    rhythm = np.sin(2 * np.pi * 10 * tt + rng.uniform(0, 2 * np.pi, (n, c, 1)))
    drift = 20 * np.cumsum(rng.standard_normal((n, c, t)), axis=-1) / np.sqrt(t)
    x2 = drift + 0.3 * rng.standard_normal((n, c, t)) + rhythm * np.where(np.arange(c)[None, :, None] == y[:, None, None],
                                                                          1.0, 0.2)
    banded = csp_lda(x2[:60], y[:60], x2[60:], n_components=(4,), sfreq=128.0, band=(8.0, 13.0))
    assert (banded["pred"] == y[60:]).mean() >= 0.7
    broad = csp_lda(x2[:60], y[:60], x2[60:], n_components=(4,), band=None)
    assert (broad["pred"] == y[60:]).mean() < 0.5  # chance is 1/3
    with pytest.raises(ConfigError, match="sampling rate"):
        csp_lda(x2[:60], y[:60], x2[60:])
    with pytest.raises(DataError, match="two classes"):
        csp_lda(x[:10], np.zeros(10, int), x[10:])


def test_sensor_plots_write_pngs(tmp_path):
    from neurofound.eval.sensor_plots import (plot_codebook_usage, plot_level_accuracy, plot_reconstruction,
                                              plot_topomaps)

    rng = np.random.default_rng(2)
    sphere = rng.standard_normal((40, 3))
    sphere[:, 2] = np.abs(sphere[:, 2])
    types = np.array([0] * 20 + [1] * 10 + [2] * 10)
    paths = [plot_topomaps(rng.uniform(0, 1, 40), sphere, types, tmp_path / "t.png"),
             plot_codebook_usage([0.9, 0.5], [300.0, 100.0], 512, tmp_path / "u.png"),
             plot_level_accuracy([0.3, 0.1], [0.05, 0.02], tmp_path / "a.png"),
             plot_reconstruction(rng.standard_normal((3, 100)), rng.standard_normal((3, 100)), tmp_path / "r.png")]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
