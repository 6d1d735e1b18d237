"""Hand-computed cases for neurofound.eval.spike_metrics."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from neurofound.errors import DataError
from neurofound.eval import spike_metrics as M

# Six windows covering every branch of the reference's compute_scores (spec 4.2).
TRUE = [{1, 2, 3}, [1, 1, 2], {1}, {7}, set(), set()]
PRED = [{2, 3, 4}, [1], {1, 5, 6}, set(), {3}, set()]


def test_set_f1_ref_reproduces_reference_branches():
    # Windows 4 and 5 (no true spike) are absent from the reference's table -> skipped.
    # Per kept window (P, R, F1): (2/3, 2/3, 2/3), (1, 1, 1) [FP empty bug],
    # (1, 1, 1) [FN empty bug], (0, 0, 0) [empty generation].
    out = M.set_f1_ref(TRUE, PRED)
    assert out["n_windows"] == 4
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert M.set_f1(TRUE, PRED, reference=True) == out
    assert np.isnan(M.set_f1_ref([set()], [{1}])["f1"])


def test_set_f1_corrected():
    # Per window (P, R, F1): (2/3, 2/3, 2/3), (1, 1/2, 2/3), (1/3, 1, 1/2), (0, 0, 0),
    # (0, 0, 0) [spurious spikes in a silent window], (1, 1, 1) [both empty].
    out = M.set_f1(TRUE, PRED)
    assert out["n_windows"] == 6
    assert out["precision"] == pytest.approx(3 / 6)
    assert out["recall"] == pytest.approx(19 / 36)
    assert out["f1"] == pytest.approx(17 / 36)
    with pytest.raises(DataError, match="windows"):
        M.set_f1(TRUE, PRED[:-1])


def test_empty_window_frac():
    sets = [np.array([1, 5]), np.array([], int), np.array([5, 2]), np.array([], int)]
    assert M.empty_window_frac(sets) == 0.5
    assert M.empty_window_frac(np.array([0, 3, 1, 0, 0])) == pytest.approx(0.6)
    with pytest.raises(DataError, match="at least one window"):
        M.empty_window_frac([])


def test_timing_f1_hand_case():
    # window 0: neuron 1 true 0.00, 0.02 / generated 0.01, 0.03 -> 2 matches (one-to-one; a
    #           nearest-first matcher could pair 0.02 with 0.01 and find only 1);
    #           neuron 2 true twice at 0.01 / generated once -> 1 match (counts matter)
    #           -> P = 3/3, R = 3/4, F1 = 6/7
    # window 1: no true spike, one generated (neuron 3 at 0.10) -> 0, 0, 0
    # window 2: true neuron 3 at 0.10 (its twin is in window 1: no match across windows);
    #           generated neuron 4 at 0.10 (wrong neuron) -> 0, 0, 0
    # window 3: exactly one dt bin apart in floating point (0.2 vs 0.2 + 0.01) -> 1, 1, 1
    tt = [0.00, 0.02, 0.01, 0.01, 0.10, 0.20]
    tu = [1, 1, 2, 2, 3, 5]
    tw = [0, 0, 0, 0, 2, 3]
    pt = [0.01, 0.03, 0.01, 0.10, 0.10, 0.2 + 0.01]
    pu = [1, 1, 2, 4, 3, 5]
    pw = [0, 0, 0, 2, 1, 3]
    out = M.timing_f1(tt, tu, tw, pt, pu, pw, n_windows=4)
    assert out["precision"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert out["recall"] == pytest.approx((0.75 + 0 + 0 + 1) / 4)
    assert out["f1"] == pytest.approx((6 / 7 + 0 + 0 + 1) / 4)
    assert out["f1_pooled"] == pytest.approx(2 * 4 / (6 + 6))  # 4 matches, 6 generated, 6 true
    # tol = 0: only the neuron-2 pair at exactly 0.01 matches
    strict = M.timing_f1(tt, tu, tw, pt, pu, pw, n_windows=4, tol=0.0)
    assert strict["f1_pooled"] == pytest.approx(2 * 1 / (6 + 6))
    # an empty window in both counts as perfect
    assert M.timing_f1([], [], [], [], [], [], n_windows=2)["f1"] == 1.0
    with pytest.raises(DataError, match="special tokens"):
        M.timing_f1([0.0], [-1], [0], [0.0], [1], [0], n_windows=1)


def test_timing_f1_greedy_is_a_maximum_matching():
    rng = np.random.default_rng(0)
    for _ in range(40):
        nt, npred = rng.integers(1, 8, size=2)
        tt = np.round(rng.uniform(0, 0.1, nt), 2)
        pt = np.round(rng.uniform(0, 0.1, npred), 2)
        adj = np.abs(tt[:, None] - pt[None, :]) <= 0.01 + 1e-9
        rows, cols = linear_sum_assignment(-adj.astype(float))
        best = int(adj[rows, cols].sum())
        out = M.timing_f1(tt, np.zeros(nt), np.zeros(nt), pt, np.zeros(npred), np.zeros(npred), n_windows=1)
        assert out["f1_pooled"] == pytest.approx(2 * best / (nt + npred))


def test_psth_corr():
    true = np.array([[1, 2, 3], [1, 1, 1], [0, 1, 0], [1, 2, 3]], float)
    pred = np.array([[2, 4, 6], [1, 2, 3], [0, 0, 0], [3, 2, 1]], float)
    out = M.psth_corr(true, pred)
    assert out["r"] == pytest.approx(0.0)  # mean of +1 and -1
    assert (out["n_used"], out["n_excluded"]) == (2, 2)
    np.testing.assert_allclose(out["per_neuron"], [1, np.nan, np.nan, -1])
    assert M.DEFAULT_PSTH_BIN == 0.5
    with pytest.raises(DataError, match="must both be"):
        M.psth_corr(true, pred[:, :2])
