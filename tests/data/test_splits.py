"""Leakage-safe splits: no past or current window of one split touches another's current window."""

import numpy as np
import pytest

from neurofound.data.splits import (
    SPLITS,
    Splits,
    check_no_leakage,
    resolve_split_mode,
    split_by_group,
    split_intervals,
    split_time_blocks,
    split_trials,
)
from neurofound.errors import ConfigError, DataError

W, WP = 0.05, 0.1


def _brute_force_overlaps(splits, window, window_prev):
    """Every (split a, split b != a) pair of (past+current of a) and (current of b) overlapping."""
    bad = []
    for a in SPLITS:
        for b in SPLITS:
            if a == b:
                continue
            for t in splits.intervals[a]:
                lo, hi = t - window - window_prev, t
                cur_lo = splits.intervals[b] - window
                cur_hi = splits.intervals[b]
                hit = (cur_lo < hi - 1e-9) & (cur_hi > lo + 1e-9)
                if hit.any():
                    bad.append((a, t, b))
    return bad


@pytest.mark.parametrize("mode", ["blocks", "trials"])
def test_no_overlap_between_splits(mode):
    spans = [(0.0, 10.0), (10.0, 16.0), (16.0, 25.0)] if mode == "blocks" else [
        (float(k), float(k + 1)) for k in range(10)
    ]
    splits = split_intervals(spans, W, WP, mode=mode, seed=3)
    assert all(splits.intervals[s].size > 0 for s in SPLITS)
    assert _brute_force_overlaps(splits, W, WP) == []
    check_no_leakage(splits, W, WP)  # the library's own check agrees


def test_blocks_layout_and_gaps():
    splits = split_intervals([(0.0, 10.0)], W, WP)
    train, val, test = (splits.intervals[s] for s in SPLITS)
    # val | train | test in time order, so training sits right before the test block
    assert splits.blocks["val"][0] == pytest.approx((0.0, 1.0))
    assert splits.blocks["train"][0] == pytest.approx((1.0, 8.0))
    assert splits.blocks["test"][0] == pytest.approx((8.0, 10.0))
    assert train.max() <= 8.0 + 1e-9 and train.min() - W - WP >= 1.0 - 1e-9
    # Each block's first current window starts one past window after its boundary.
    assert val.min() - W == pytest.approx(0.0 + WP)
    assert train.min() - W == pytest.approx(1.0 + WP)
    assert test.min() - W == pytest.approx(8.0 + WP)
    assert test.max() == pytest.approx(10.0)
    # Windows tile each block on the window grid.
    np.testing.assert_allclose(np.diff(train), W)


def test_leakage_check_catches_a_bad_split():
    leaky = Splits(
        intervals={"train": np.array([1.0, 1.05]), "val": np.array([1.1]), "test": np.array([5.0])},
        segments={s: np.zeros(1, np.int64) for s in SPLITS},
    )
    with pytest.raises(DataError, match="leakage"):
        check_no_leakage(leaky, W, WP)


def test_train_fraction_is_contiguous_end_of_train():
    full = split_intervals([(0.0, 100.0)], W, WP)
    part = split_intervals([(0.0, 100.0)], W, WP, train_fraction=0.01)
    n_full = full.intervals["train"].size
    assert part.intervals["train"].size == int(np.ceil(0.01 * n_full))
    np.testing.assert_allclose(np.diff(part.intervals["train"]), W)  # contiguous
    np.testing.assert_array_equal(part.intervals["train"], full.intervals["train"][-part.intervals["train"].size :])
    # Held-out splits are untouched; the kept block ends one past window before the test block starts.
    np.testing.assert_array_equal(part.intervals["test"], full.intervals["test"])
    assert part.intervals["test"].min() - W - part.intervals["train"].max() == pytest.approx(WP)
    check_no_leakage(part, W, WP)


def test_trials_are_whole():
    spans = [(float(k), float(k) + 0.8) for k in range(10)]
    splits = split_intervals(spans, W, WP, mode="trials", seed=1)
    owner = {}
    for s in SPLITS:
        for k in np.unique(splits.segments[s]):
            assert k not in owner, f"trial {k} is in both {owner.get(k)} and {s}"
            owner[k] = s
    assert sorted(owner) == list(range(10))
    assert [len(splits.blocks[s]) for s in SPLITS] == [7, 1, 2]
    # Every window lies inside its own trial, past window included.
    for s in SPLITS:
        starts = np.array([spans[k][0] for k in splits.segments[s]])
        stops = np.array([spans[k][1] for k in splits.segments[s]])
        assert np.all(splits.intervals[s] - W - WP >= starts - 1e-9)
        assert np.all(splits.intervals[s] <= stops + 1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="train_fraction"):
        split_intervals([(0.0, 10.0)], W, WP, train_fraction=0.0)
    with pytest.raises(ValueError, match="sum to < 1"):
        split_intervals([(0.0, 10.0)], W, WP, val_frac=0.5, test_frac=0.5)
    with pytest.raises(ValueError, match="too few"):
        split_intervals([(0.0, 1.0), (1.0, 2.0)], W, WP, mode="trials")
    with pytest.raises(ValueError, match="too short"):
        split_intervals([(0.0, 0.1)], W, WP)


def test_trial_assignment_is_unchanged():
    """Whole-trial splits still follow the seeded shuffle they always did (same trials per split)."""
    spans = [(float(k), float(k) + 0.8) for k in range(13)]
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(13)
        expected = {"train": sorted(order[:9]), "val": sorted(order[9:10]), "test": sorted(order[10:])}
        got = split_trials(spans, 0.1, 0.2, seed)
        assert {s: [k for k, _ in got[s]] for s in SPLITS} == expected
        windows = split_intervals(spans, W, WP, mode="trials", seed=seed)
        assert {s: sorted(set(windows.segments[s].tolist())) for s in SPLITS} == expected


@pytest.mark.parametrize("groups", [
    np.repeat(np.arange(10), 7),                                  # subjects as ints
    np.array([f"mouse-{k % 6}" for k in range(40)]),              # sessions / animals as strings
])
def test_split_by_group_keeps_each_group_in_one_split(groups):
    out = split_by_group(groups, val_frac=0.2, test_frac=0.2, seed=1)
    all_idx = np.concatenate([out[s] for s in SPLITS])
    assert np.array_equal(np.sort(all_idx), np.arange(groups.size))  # every item exactly once
    owners = {s: set(groups[out[s]].tolist()) for s in SPLITS}
    assert not (owners["train"] & owners["val"] or owners["train"] & owners["test"] or owners["val"] & owners["test"])
    n = len(set(groups.tolist()))
    assert len(owners["test"]) == max(1, round(0.2 * n)) and len(owners["val"]) == max(1, round(0.2 * n))
    again = split_by_group(groups, val_frac=0.2, test_frac=0.2, seed=1)
    assert all(np.array_equal(out[s], again[s]) for s in SPLITS)
    other = split_by_group(groups, val_frac=0.2, test_frac=0.2, seed=2)
    assert any(not np.array_equal(out[s], other[s]) for s in SPLITS) or n < 4


def test_split_by_group_of_unique_ids_is_the_trial_split():
    for seed in range(3):
        by_group = split_by_group(np.arange(11), seed=seed)
        by_trial = split_trials([(k, k + 1) for k in range(11)], seed=seed)
        assert {s: by_group[s].tolist() for s in SPLITS} == {s: [k for k, _ in by_trial[s]] for s in SPLITS}


def test_split_by_group_errors():
    with pytest.raises(DataError, match="2 groups are too few.*no training group"):
        split_by_group(["a", "a", "b", "b"])
    with pytest.raises(DataError, match="NaN"):
        split_by_group([0.0, np.nan, 1.0])
    with pytest.raises(DataError, match="non-empty"):
        split_by_group([])
    with pytest.raises(ConfigError, match="sum to < 1"):
        split_by_group(np.arange(10), val_frac=0.6, test_frac=0.6)
    assert split_by_group(np.arange(5), val_frac=0.0, test_frac=0.2)["val"].size == 0


def test_split_time_blocks_of_any_spans():
    blocks = split_time_blocks([(0.0, 10.0), (20.0, 30.0)], val_frac=0.1, test_frac=0.2)
    assert blocks["val"] == [(0, (0.0, 1.0)), (1, (20.0, 21.0))]
    assert [k for k, _ in blocks["train"]] == [0, 1] and blocks["train"][1][1] == pytest.approx((21.0, 28.0))
    assert blocks["test"][0][1] == pytest.approx((8.0, 10.0))
    assert split_time_blocks([(0.0, 10.0)], val_frac=0.0, test_frac=0.2)["val"] == []


def test_resolve_split_mode():
    assert resolve_split_mode("auto", [(0.0, 1.0)]) == "trials"
    assert resolve_split_mode("auto", None) == "blocks"
    assert resolve_split_mode("auto", []) == "blocks"
    assert resolve_split_mode("blocks", [(0.0, 1.0)]) == "blocks"
    with pytest.raises(DataError, match="no trials"):
        resolve_split_mode("trials", None)
    with pytest.raises(ConfigError, match="split_mode must be one of"):
        resolve_split_mode("random", None)
