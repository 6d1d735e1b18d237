"""Connectivity from attention: accumulator arithmetic, scoring, and raster baselines."""

import numpy as np
import pytest

from neurofound.errors import ConfigError, DataError
from neurofound.eval import connectivity as C


def _layer1():
    # heads summed: [[0.6, 0.35, 1.05], [0.2, 1.2, 0.6]]
    w = np.array([[[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]],
                  [[0.1, 0.1, 0.8], [0.0, 1.0, 0.0]]])[None]  # (1, 2 heads, 2 q, 3 k)
    return w, np.array([[0, 1]]), np.array([[1, 2, 1]])


def _layer1_batch2():
    # query 0 is special (-1), key 1 is special: only row 1 -> keys 0 and 2 count
    w = np.zeros((1, 1, 2, 3))
    w[0, 0, 0] = [9.0, 9.0, 9.0]
    w[0, 0, 1] = [0.3, 5.0, 0.7]
    return w, np.array([[-1, 0]]), np.array([[1, -1, 2]])


def test_accumulator_cooccurrence_normalisation_by_hand():
    acc = C.AttentionConnectivity(n_neurons=3)
    acc.update("state/0", *_layer1())
    expected = np.zeros((3, 3))
    expected[0, 1] = (0.6 + 1.05) / 2
    expected[0, 2] = 0.35
    expected[1, 1] = (0.2 + 0.6) / 2
    expected[1, 2] = 1.2
    np.testing.assert_allclose(acc.matrix(), expected)
    acc.update("state/0", *_layer1_batch2())
    expected[0, 1] = (0.6 + 1.05 + 0.3) / 3
    expected[0, 2] = (0.35 + 0.7) / 2
    np.testing.assert_allclose(acc.matrix(), expected)
    counts = np.zeros((3, 3))
    counts[0, 1], counts[0, 2], counts[1, 1], counts[1, 2] = 3, 2, 2, 1
    np.testing.assert_array_equal(acc.counts("state/0"), counts)
    # a second layer with doubled attention on the same tokens: the layer mean is 1.5x
    w, q, k = _layer1()
    w2, q2, k2 = _layer1_batch2()
    acc.update("state/1", 2 * w, q, k)
    acc.update("state/1", 2 * w2, q2, k2)
    np.testing.assert_allclose(acc.matrix(), 1.5 * expected)
    assert acc.layers == ["state/0", "state/1"]


def test_causal_counts_and_layer_mean():
    n, length = 4, 4
    ids = np.arange(length)[None]
    w = np.ones((1, 1, length, length))
    acc = C.AttentionConnectivity(n)
    acc.update("l", w, ids, ids, causal=True)
    np.testing.assert_array_equal(acc.counts(), np.tril(np.ones((n, n))))
    # a single decode step (Lq = 1) sees every cached key
    acc1 = C.AttentionConnectivity(n)
    acc1.update("l", np.ones((1, 1, 1, length)), np.array([[2]]), ids, causal=True)
    np.testing.assert_array_equal(acc1.counts()[2], np.ones(n))
    # non-causal, two layers (1x and 3x the attention): per co-occurrence, then the layer mean
    both = C.AttentionConnectivity(n)
    both.update("a", w, ids, ids)
    both.update("b", 3 * w, ids, ids)
    np.testing.assert_allclose(both.matrix(), 2 * np.ones((n, n)))
    np.testing.assert_allclose(both.matrix(["b"]), 3 * np.ones((n, n)))
    with pytest.raises(KeyError, match="not accumulated"):
        both.matrix(["c"])


def test_accumulator_rejects_bad_input():
    acc = C.AttentionConnectivity(3)
    w, q, k = _layer1()
    with pytest.raises(DataError, match="n_neurons"):
        acc.update("l", w, q + 3, k)
    with pytest.raises(DataError, match="do not match"):
        acc.update("l", w, q[:, :1], k)
    with pytest.raises(RuntimeError, match="update"):
        C.AttentionConnectivity(3).matrix()


def test_score_hand_auroc_auprc_and_nonhub():
    w = np.zeros((3, 3))
    w[1, 0] = w[2, 0] = 1.0  # source 0 is the hub
    w[2, 1] = -0.5  # inhibitory edges count as edges
    m = np.array([[100.0, 0.4, 0.1],  # the diagonal is never scored
                  [0.9, 100.0, 0.2],
                  [0.8, 0.3, 100.0]])
    out = C.score(m, w, hub_ids=[0])
    assert out["auroc"] == pytest.approx(8 / 9)
    assert out["auprc"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert out["auroc_nonhub"] == pytest.approx(2 / 3)
    assert out["edge_density"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="both connected and unconnected"):
        C.score(m, np.zeros((3, 3)))
    with pytest.raises(DataError, match="same"):
        C.score(m[:2], w)


def test_random_attention_on_random_truth_is_chance():
    rng = np.random.default_rng(0)
    n = 40
    truth = (rng.random((n, n)) < 0.2).astype(float)
    acc = C.AttentionConnectivity(n)
    for _ in range(20):
        ids = rng.integers(-1, n, size=(4, 30))
        w = rng.dirichlet(np.ones(30), size=(4, 2, 30))
        acc.update("l", w, ids, ids, causal=False)
    assert abs(C.score(acc.matrix(), truth)["auroc"] - 0.5) < 0.06


def test_baselines_match_direct_formulas():
    rng = np.random.default_rng(1)
    r = rng.poisson(0.5, size=(5, 400)).astype(float)
    lag = C.lagged_corr(r, absolute=False)
    for i in range(5):
        for j in range(5):
            if i != j:
                assert lag[i, j] == pytest.approx(np.corrcoef(r[i, 1:], r[j, :-1])[0, 1])
    corr = C.zero_lag_corr(r, absolute=False)
    np.testing.assert_allclose(corr, np.corrcoef(r) - np.eye(5), atol=1e-12)
    # partial correlation = correlation of residuals after regressing out the other neurons
    pc = C.partial_corr(r, ridge=0.0, absolute=False)
    x = r - r.mean(1, keepdims=True)
    others = x[2:].T
    res = [x[i] - others @ np.linalg.lstsq(others, x[i], rcond=None)[0] for i in (0, 1)]
    assert pc[0, 1] == pytest.approx(np.corrcoef(res[0], res[1])[0, 1])
    assert np.all(C.partial_corr(r) >= 0) and np.allclose(C.partial_corr(r), C.partial_corr(r).T)
    # a pure one-bin copy is a perfect lagged correlation in one direction only
    s = (rng.random(300) < 0.3).astype(float)
    r2 = np.stack([s, np.roll(s, 1)])
    lag2 = C.lagged_corr(r2)
    assert lag2[1, 0] == pytest.approx(1.0)
    assert lag2[0, 1] < 0.3
    silent = np.zeros((2, 50))
    assert np.all(C.zero_lag_corr(silent) == 0)


def _simulate_directed_network(n=30, t=20000, seed=0):
    """Linear-Poisson (Bernoulli) network: a source spike raises its targets' rates one bin later."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n, n))
    edges = rng.random((n, n)) < 0.1
    np.fill_diagonal(edges, False)
    edges &= ~edges.T  # no reciprocal pairs, so W and W.T disagree on every edge
    w[edges] = rng.choice([0.25, -0.04], size=edges.sum(), p=[0.8, 0.2])
    base = 0.05
    spikes = np.zeros((n, t))
    prev = np.zeros(n)
    for k in range(t):
        rate = np.clip(base + w @ prev, 0.0, 1.0)
        prev = (rng.random(n) < rate).astype(float)
        spikes[:, k] = prev
    return spikes, w


def test_lagged_baseline_finds_direction_and_correlation_cannot():
    raster, w = _simulate_directed_network()
    lag = C.lagged_corr(raster)
    corr = C.zero_lag_corr(raster)
    s_lag, s_lag_t = C.score(lag, w), C.score(lag, w.T)
    assert s_lag["auroc"] > 0.9
    assert s_lag_t["auroc"] < s_lag["auroc"] - 0.3
    # symmetric measures score the transposed truth exactly the same
    assert C.score(corr, w)["auroc"] == pytest.approx(C.score(corr, w.T)["auroc"], abs=1e-12)
    pc = C.partial_corr(raster)
    assert C.score(pc, w)["auroc"] == pytest.approx(C.score(pc, w.T)["auroc"], abs=1e-12)
    flat = C.connectivity_metrics(w, attention=lag, raster=raster, hub_ids=[0])
    assert flat["connectivity_auroc"] == pytest.approx(s_lag["auroc"])
    assert flat["baseline_lagged_corr_auroc"] == pytest.approx(s_lag["auroc"])
    assert {"baseline_corr_auprc", "baseline_partial_corr_auroc_nonhub", "connectivity_edge_density"} <= set(flat)


# ---------------------------------------------------------------------------------------------
# readout options used by the quickstart (relative to chance, double centring, layer selection)
# ---------------------------------------------------------------------------------------------
def test_relative_to_chance_removes_the_causal_mask_artefact():
    """Uniform attention over the visible keys scores exactly 1 everywhere relative to chance."""
    from neurofound.eval.connectivity import AttentionConnectivity

    rng = np.random.default_rng(0)
    b, lq = 6, 5
    q = rng.integers(0, 4, size=(b, lq))
    k = rng.integers(0, 4, size=(b, lq))
    visible = np.tri(lq, lq, dtype=bool)
    w = np.where(visible, 1.0, 0.0) / visible.sum(1, keepdims=True)  # uniform over keys j <= i
    acc = AttentionConnectivity(4)
    acc.update("l0", np.broadcast_to(w, (b, 1, lq, lq)).copy(), q, k, causal=True)
    chance = acc.matrix(relative_to="chance")
    seen = acc.counts("l0") > 0
    np.testing.assert_allclose(chance[seen], 1.0)
    # per-count attention is NOT flat: pairs seen at early positions get more weight
    assert np.ptp(acc.matrix()[seen]) > 0.1


def test_double_centring_keeps_only_the_pair_specific_part():
    from neurofound.eval.connectivity import normalize_attention

    n = 5
    rows, cols = np.arange(n)[:, None] * 0.3, np.arange(n)[None, :] * 0.7
    pair = np.zeros((n, n))
    pair[2, 4] = 1.0
    m = np.exp(1.0 + rows + cols + pair)  # multiplicative row/column effects + one synapse
    np.fill_diagonal(m, 0.0)
    out = normalize_attention(m, mode="log_centred_abs")
    off = ~np.eye(n, dtype=bool)
    assert np.argmax(np.where(off, out, -1)) == 2 * n + 4  # the synapse stands out
    flat = normalize_attention(np.where(off, 0.25, 0.0), mode="centred")
    np.testing.assert_allclose(flat[off], 0.0, atol=1e-12)  # a constant has no pair-specific part
    with pytest.raises(ConfigError, match="mode"):
        normalize_attention(m, mode="nope")


def test_layer_selection_averages_only_the_chosen_layers():
    from neurofound.eval.connectivity import AttentionConnectivity

    q = np.array([[1, 0]])
    k = np.array([[0, 1]])
    acc = AttentionConnectivity(2)
    acc.update("a", np.array([[[[1.0, 0.0], [0.0, 1.0]]]]), q, k)
    acc.update("b", np.array([[[[0.0, 1.0], [1.0, 0.0]]]]), q, k)
    np.testing.assert_allclose(acc.matrix(["a"])[1, 0], 1.0)
    np.testing.assert_allclose(acc.matrix(["b"])[1, 0], 0.0)
    np.testing.assert_allclose(acc.matrix()[1, 0], 0.5)
    with pytest.raises(ConfigError, match="relative_to"):
        acc.matrix(relative_to="nope")
