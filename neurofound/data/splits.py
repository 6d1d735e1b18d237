"""Leakage-safe train / val / test splits, for any kind of record.

The helpers take plain spans of time or group labels, never a particular record type, so spike,
sensor or imaging data split the same way:

* `split_time_blocks(spans, ...)`: each span (segment) is cut, in time order, into val / train /
  test blocks of the given fractions of its length (default 10 / 70 / 20 %). Training sits right
  before the test block, so a few-shot `train_fraction` (taken from the end of training) is the
  block of training data that precedes the test block, one past window before it.
* `split_trials(trials, ...)`: whole trials are assigned to splits (shuffled with `seed`).
* `split_by_group(group_ids, ...)`: whole groups (subjects, sessions, ...) are assigned to
  splits, so that a subject's or a session's items all land in one split.
* `resolve_split_mode("auto", trials)`: whole trials when the record has trials, time blocks
  otherwise.

Windowed samples. A sample is a window end t: its current window is `[t - w, t)` and its past
(context) window `[t - w - wp, t - w)`. Random window-level splits leak, because the past window
of a test sample is training data and vice versa. `split_intervals` therefore draws the windows
of each split from its blocks (or trials), keeping a window only if BOTH its past and its current
window lie inside the block, i.e. `block_start <= t - w - wp` and `t <= block_stop`. So no past or
current window of one split ever overlaps a current window of another, and there is a gap of one
past window (`wp` of unused time) after each boundary.

`train_fraction < 1` keeps a contiguous run of the training windows, taken from the END of
the training split (so it is the training data closest in time to the held-out blocks and is
still separated from them by the one-past-window gap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from neurofound.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("auto", "blocks", "trials")
_EPS = 1e-9

Span = tuple[float, float]


@dataclass
class Splits:
    """Window ends per split.

    Attributes:
        intervals: split -> (n,) float64 window ends t, sorted by (segment, t).
        segments: split -> (n,) int64 index of the segment (or trial) each window belongs to.
        blocks: split -> list of (start, stop) time blocks the split was drawn from.
        spans: list of (start, stop) of every segment / trial indexed by `segments`.
    """

    intervals: dict[str, np.ndarray]
    segments: dict[str, np.ndarray]
    blocks: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    spans: list[tuple[float, float]] = field(default_factory=list)


def check_fractions(val_frac: float, test_frac: float) -> None:
    """Raise `ConfigError` unless `val_frac, test_frac >= 0` and `val_frac + test_frac < 1`."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(
            f"val_frac ({val_frac}) and test_frac ({test_frac}) must be >= 0 and sum to < 1"
        )


def resolve_split_mode(mode: str, trials: Sequence[Span] | None) -> str:
    """The concrete split mode: "auto" is "trials" when there are trials, else "blocks".

    Raises:
        ConfigError: unknown mode. DataError: "trials" without trials.
    """
    if mode not in SPLIT_MODES:
        raise ConfigError(f"split_mode must be one of {SPLIT_MODES}, got {mode!r}")
    if mode == "auto":
        return "trials" if trials else "blocks"
    if mode == "trials" and not trials:
        raise DataError("split_mode='trials' but the recording has no trials; use 'blocks' or 'auto'")
    return mode


def _assign_groups(n: int, val_frac: float, test_frac: float, seed: int, what: str) -> np.ndarray:
    """Split name of each of `n` groups: a seeded shuffle, then val / test counts rounded from the
    fractions (a requested held-out split gets at least one group, never silently none)."""
    check_fractions(val_frac, test_frac)
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_frac * n))) if test_frac > 0 else 0
    n_val = max(1, int(round(val_frac * n))) if val_frac > 0 else 0
    if n_test + n_val >= n:
        raise DataError(
            f"{n} {what} are too few for val_frac={val_frac} and test_frac={test_frac}: no training "
            f"{what.rstrip('s')} would remain"
            + ("; use split_mode='blocks'" if what == "trials" else "")
        )
    names = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    out = np.empty(n, dtype=object)
    out[order] = names
    return out


def split_by_group(
    group_ids: Sequence[Any] | np.ndarray,
    val_frac: float = 0.1,
    test_frac: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Assign whole groups (subjects, sessions, animals, ...) to train / val / test.

    Leakage-safe by construction: every item of a group lands in the same split. The fractions
    are fractions of GROUPS, not of items.

    Args:
        group_ids: (items,) the group of every item (ints or strings).
        val_frac, test_frac: fractions of the groups held out for validation and test.
        seed: shuffles the groups.

    Returns:
        split -> (n,) int64 sorted indices of the items in that split.
    """
    ids = np.asarray(group_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise DataError(f"group_ids must be a non-empty 1-D sequence, got shape {ids.shape}")
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        raise DataError("group_ids contain NaN; give every item a group")
    try:
        groups, inverse = np.unique(ids, return_inverse=True)
    except TypeError as err:
        raise DataError(f"group_ids must be comparable labels of one type (ints or strings): {err}") from err
    names = _assign_groups(groups.size, val_frac, test_frac, seed, "groups")[inverse.reshape(-1)]
    return {s: np.flatnonzero(names == s).astype(np.int64) for s in SPLITS}


def split_time_blocks(
    spans: Sequence[Span], val_frac: float = 0.1, test_frac: float = 0.2
) -> dict[str, list[tuple[int, Span]]]:
    """Cut every span into val | train | test blocks, in time order, of the given fractions.

    Args:
        spans: (start, stop) seconds of the independent stretches of time (segments).
        val_frac, test_frac: fractions of each span's length; train gets the rest.

    Returns:
        split -> list of (span index, (start, stop)) blocks; empty blocks are left out.
    """
    check_fractions(val_frac, test_frac)
    train_frac = 1.0 - val_frac - test_frac
    blocks: dict[str, list[tuple[int, Span]]] = {s: [] for s in SPLITS}
    for k, (a, b) in enumerate(spans):
        a, b = float(a), float(b)
        length = b - a
        t1, t2 = a + val_frac * length, a + (val_frac + train_frac) * length
        for name, block in (("val", (a, t1)), ("train", (t1, t2)), ("test", (t2, b))):
            if block[1] - block[0] > _EPS:
                blocks[name].append((k, block))
    return blocks


def split_trials(
    trials: Sequence[Span], val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0
) -> dict[str, list[tuple[int, Span]]]:
    """Assign whole trials to train / val / test (shuffled with `seed`).

    Returns:
        split -> list of (trial index, (start, stop)), sorted by trial index.
    """
    names = _assign_groups(len(trials), val_frac, test_frac, seed, "trials")
    return {s: [(k, (float(trials[k][0]), float(trials[k][1]))) for k in np.flatnonzero(names == s)]
            for s in SPLITS}


def window_grid(start: float, stop: float, window: float) -> np.ndarray:
    """Window ends `start + k * window` (k >= 1) that are <= stop, rounded to 1e-6 s."""
    n = int(math.floor((stop - start) / window + 1e-6))
    return np.round(start + window * np.arange(1, n + 1), 6)


def _block_windows(
    grid: np.ndarray, block: tuple[float, float], window: float, window_prev: float
) -> np.ndarray:
    lo, hi = block
    keep = (grid - window - window_prev >= lo - _EPS) & (grid <= hi + _EPS)
    return grid[keep]


def split_intervals(
    spans: list[tuple[float, float]],
    window: float,
    window_prev: float,
    *,
    mode: str = "blocks",
    val_frac: float = 0.1,
    test_frac: float = 0.2,
    train_fraction: float = 1.0,
    seed: int = 0,
    grid_fn: Callable[[float, float], np.ndarray] | None = None,
) -> Splits:
    """Split the windows of `spans` (segments, or trials when `mode="trials"`).

    Args:
        spans: list of (start, stop) seconds: the recording's segments for "blocks", its
            trials for "trials".
        window: current window length w (s).
        window_prev: past window length wp (s).
        mode: "blocks" (`split_time_blocks` inside each span) or "trials" (`split_trials`);
            resolve "auto" with `resolve_split_mode` first.
        val_frac, test_frac: fractions of time (blocks) or of spans (trials); train gets the rest.
        train_fraction: in (0, 1]; keep only this fraction of the training windows, as one
            contiguous run at the end of the training split.
        seed: shuffles the trials in "trials" mode.
        grid_fn: `(duration, start) -> window ends`; defaults to `window_grid` steps of w
            (pass `tokenizer.intervals` to use the tokenizer's own grid).

    Returns:
        `Splits`.
    """
    if mode not in ("blocks", "trials"):
        raise ConfigError(
            f"split mode must be 'blocks' or 'trials', got {mode!r} (resolve 'auto' with resolve_split_mode)"
        )
    check_fractions(val_frac, test_frac)
    if not (0 < train_fraction <= 1):
        raise ConfigError(f"train_fraction must be in (0, 1], got {train_fraction}")
    if not spans:
        raise DataError("no segments/trials to split")

    def grid(start: float, stop: float) -> np.ndarray:
        if grid_fn is None:
            return window_grid(start, stop, window)
        return np.asarray(grid_fn(stop - start, start), dtype=np.float64)

    if mode == "blocks":
        blocks = split_time_blocks(spans, val_frac, test_frac)
    else:
        blocks = split_trials(spans, val_frac, test_frac, seed)

    intervals, segments = {}, {}
    for name in SPLITS:
        ts, ks = [], []
        for k, block in blocks[name]:
            g = _block_windows(grid(*spans[k]), block, window, window_prev)
            ts.append(g)
            ks.append(np.full(g.size, k, dtype=np.int64))
        intervals[name] = np.concatenate(ts) if ts else np.zeros(0)
        segments[name] = np.concatenate(ks) if ks else np.zeros(0, dtype=np.int64)

    if train_fraction < 1.0:
        n_train = intervals["train"].size
        n_keep = max(1, int(math.ceil(train_fraction * n_train))) if n_train else 0
        intervals["train"] = intervals["train"][n_train - n_keep :]
        segments["train"] = segments["train"][n_train - n_keep :]
    if intervals["train"].size == 0:
        raise DataError(
            "the training split has no window: the recording is too short for "
            f"window={window} s + window_prev={window_prev} s per block"
        )
    return Splits(
        intervals=intervals,
        segments=segments,
        blocks={name: [b for _, b in blocks[name]] for name in SPLITS},
        spans=[tuple(s) for s in spans],
    )


def check_no_leakage(splits: Splits, window: float, window_prev: float) -> None:
    """Raise `DataError` if any past or current window of one split overlaps a current window
    of another split (half-open intervals; touching ends do not overlap)."""
    spans = {}
    for name in SPLITS:
        t = splits.intervals[name]
        spans[name] = (t - window - window_prev, t)  # past + current of every window
    for a in SPLITS:
        lo, hi = spans[a]
        for b in SPLITS:
            if a == b or splits.intervals[b].size == 0 or lo.size == 0:
                continue
            cur_lo = np.sort(splits.intervals[b] - window)
            cur_hi = np.sort(splits.intervals[b])
            # Overlap of [lo, hi) with some [c_lo, c_hi): exists c with c_lo < hi and c_hi > lo.
            # Since current windows all have length w and are sorted, check the nearest one.
            idx = np.searchsorted(cur_lo, hi - _EPS, side="left") - 1
            valid = idx >= 0
            overlap = np.zeros(lo.shape, dtype=bool)
            overlap[valid] = cur_hi[idx[valid]] > lo[valid] + _EPS
            if overlap.any():
                i = int(np.flatnonzero(overlap)[0])
                raise DataError(
                    f"leakage: window t={splits.intervals[a][i]:.6f} of {a!r} overlaps a current "
                    f"window of {b!r}"
                )
