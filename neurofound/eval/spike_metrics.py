"""Metrics of spike trains: generated-spike scores (set F1, timing F1, empty windows) and rates.

Everything here takes plain arrays (or lists of per-window id collections) that a task hands
over after moving tensors to the CPU; nothing imports a model, Lightning or Hydra. Metrics that
fit any modality (r, R^2, balanced accuracy, ...) are in ``neurofound.eval.metrics``.

Reference definitions: ``shared/specs/neuroformer.md`` section 4.2.

* ``set_f1(..., reference=True)`` / ``set_f1_ref`` reproduces the reference
  ``analysis.compute_scores`` exactly, bugs included (see ``set_f1_ref``).
* ``set_f1`` (default) is the corrected per-window set precision/recall/F1.
* ``timing_f1`` also asks for the spike time (within ``tol``) and counts every spike.
* ``psth_corr`` is the per-neuron rate correlation (``analysis.calc_corr_psth``) of binned counts
  (bin them with ``neurofound.data.binning.bin_spikes``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from neurofound.errors import DataError

__all__ = [
    "set_f1",
    "set_f1_ref",
    "timing_f1",
    "empty_window_frac",
    "psth_corr",
    "DEFAULT_PSTH_BIN",
    "DEFAULT_TIMING_TOL",
]

# 0.5 s is the bin of the reference's V1AL GLM comparison (spec 4.2, ``T_BIN = 0.5``): keeping
# it makes our per-neuron r comparable with the published 0.3 ± numbers, and at typical cortical
# rates (1-10 Hz) a 0.5 s bin holds a few spikes, so r is not dominated by Poisson noise as it
# would be with 10-50 ms bins.
DEFAULT_PSTH_BIN = 0.5

# One dt bin of the spike tokenizer (0.01 s): a generated spike in the neighbouring bin counts.
DEFAULT_TIMING_TOL = 0.01

# Spike times are multiples of dt reconstructed in floating point (window start + k * dt), so
# a difference of exactly one bin may come out as 0.010000000000000009; this slack absorbs it.
_TIME_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# Generated spikes: set F1, timing F1, empty windows
# --------------------------------------------------------------------------------------------


def _check_windows(true_sets: Sequence, pred_sets: Sequence) -> None:
    if len(true_sets) != len(pred_sets):
        raise DataError(
            f"{len(true_sets)} true windows but {len(pred_sets)} generated windows: pass one "
            "collection of neuron ids per window for both (empty for a silent window)"
        )


def _id_set(ids: Iterable) -> set[int]:
    if isinstance(ids, (set, frozenset)):
        return {int(i) for i in ids}
    return {int(i) for i in np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).ravel()}


def _set_counts(true_ids: Iterable, pred_ids: Iterable) -> tuple[int, int, int]:
    """(TP, FP, FN) of the neuron-id SETS of one window."""
    t, p = _id_set(true_ids), _id_set(pred_ids)
    return len(t & p), len(p - t), len(t - p)


def set_f1_ref(true_sets: Sequence, pred_sets: Sequence) -> dict[str, float]:
    """Set F1 exactly as the reference ``analysis.compute_scores`` computes it (spec 4.2).

    Our reading of the reference code, reproduced branch by branch:

    * Windows are the (interval, trial) pairs found in the TRUE spike table, so a window with no
      true spike is skipped altogether, whatever was generated in it (spurious spikes in silent
      windows are never penalised).
    * Per window with ``TP = |true & pred|``, ``FP = |pred - true|``, ``FN = |true - pred|``:
      if TP, FP, FN are all non-zero: P = TP / (TP + FP), R = TP / (TP + FN);
      else if TP == 0 (this includes an empty generated window): P = R = 0;
      else if FP == 0: P = R = 1 (bug: R should be TP / (TP + FN));
      else (FN == 0): P = R = 1 (bug: P should be TP / (TP + FP)).
    * F1 = 2PR / (P + R), 0 when P + R = 0; P, R and F1 are each averaged over windows.

    Args:
        true_sets: one collection of neuron ids per window (repeats allowed; only the set counts).
        pred_sets: the generated ids, same windows in the same order.

    Returns:
        ``{"precision", "recall", "f1", "n_windows"}``; NaN scores when no window has a true
        spike (the reference divides by zero there).
    """
    _check_windows(true_sets, pred_sets)
    ps, rs, fs = [], [], []
    for true_ids, pred_ids in zip(true_sets, pred_sets):
        tp, fp, fn = _set_counts(true_ids, pred_ids)
        if tp + fn == 0:  # no true spike: this window is absent from the reference's table
            continue
        if tp and fp and fn:
            p, r = tp / (tp + fp), tp / (tp + fn)
        elif tp == 0:
            p = r = 0.0
        else:  # FP == 0 or FN == 0: the reference sets both to 1 (quirk kept, spec 4.2)
            p = r = 1.0
        ps.append(p)
        rs.append(r)
        fs.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    if not ps:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan"), "n_windows": 0}
    return {"precision": float(np.mean(ps)), "recall": float(np.mean(rs)), "f1": float(np.mean(fs)),
            "n_windows": len(ps)}


def _prf(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window precision, recall, F1 with the corrected empty-window conventions.

    Both empty: P = R = F1 = 1 (nothing to find, nothing invented). Only one empty: 0.
    """
    tp, n_pred, n_true = (np.asarray(a, dtype=np.float64) for a in (tp, n_pred, n_true))
    both_empty = (n_pred == 0) & (n_true == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n_pred > 0, tp / n_pred, 0.0)
        r = np.where(n_true > 0, tp / n_true, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    p[both_empty] = r[both_empty] = f[both_empty] = 1.0
    return p, r, f


def set_f1(true_sets: Sequence, pred_sets: Sequence, reference: bool = False) -> dict[str, float]:
    """Per-window set precision / recall / F1 of generated spikes, averaged over windows.

    Only which neurons fired in a window counts (not when, not how often), as in the reference.
    Corrected conventions: both sets empty -> P = R = F1 = 1; exactly one empty -> 0; every
    window counts, silent ones included.

    Args:
        true_sets: one collection of neuron ids per window (e.g. ``held_out_spikes(split)["sets"]``).
        pred_sets: generated neuron ids, same windows in the same order.
        reference: if True, return ``set_f1_ref`` (the reference's buggy definition) instead.

    Returns:
        ``{"precision", "recall", "f1", "n_windows"}``.
    """
    if reference:
        return set_f1_ref(true_sets, pred_sets)
    _check_windows(true_sets, pred_sets)
    if len(true_sets) == 0:
        raise DataError("set_f1 needs at least one window")
    counts = np.array([_set_counts(t, p) for t, p in zip(true_sets, pred_sets)], dtype=np.int64)
    tp, fp, fn = counts.T
    p, r, f = _prf(tp, tp + fp, tp + fn)
    return {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean()),
            "n_windows": len(true_sets)}


def _match_count(true_key: np.ndarray, true_t: np.ndarray, pred_key: np.ndarray, pred_t: np.ndarray,
                 tol: float) -> np.ndarray:
    """Greedy one-to-one matching of sorted spikes within groups; returns matched true indices.

    Inputs are sorted by (key, time). Within one group (same window and neuron) the two-pointer
    rule "match the two earliest unmatched spikes if they are within tol, else drop the earlier
    one" gives a MAXIMUM matching: tolerance matching on a line is an interval (convex) bipartite
    graph, where this earliest-first greedy choice is optimal.
    """
    matched = np.zeros(len(true_t), bool)
    i = j = 0
    n_t, n_p = len(true_t), len(pred_t)
    tk, pk = true_key.tolist(), pred_key.tolist()
    tt, pt = true_t.tolist(), pred_t.tolist()
    while i < n_t and j < n_p:
        if tk[i] < pk[j]:
            i += 1
        elif pk[j] < tk[i]:
            j += 1
        elif abs(tt[i] - pt[j]) <= tol + _TIME_EPS:
            matched[i] = True
            i += 1
            j += 1
        elif tt[i] < pt[j]:
            i += 1
        else:
            j += 1
    return matched


def timing_f1(true_times: np.ndarray, true_ids: np.ndarray, true_windows: np.ndarray,
              pred_times: np.ndarray, pred_ids: np.ndarray, pred_windows: np.ndarray,
              *, n_windows: int, tol: float = DEFAULT_TIMING_TOL) -> dict[str, float]:
    """Timing-aware F1: a generated spike matches a true one of the same neuron in the same
    window within ``|time difference| <= tol``, one-to-one (so spike counts matter).

    Matching is a maximum one-to-one matching per (window, neuron) (see ``_match_count``).
    Per window: P = matches / generated spikes, R = matches / true spikes, with the corrected
    empty conventions of ``set_f1``; then averaged over windows. ``f1_pooled`` is the F1 of the
    totals over all windows (dominated by busy windows, insensitive to silent ones).

    Args:
        true_times, true_ids, true_windows: ``(spikes,)`` time (s), neuron id and window index
            of every true spike.
        pred_times, pred_ids, pred_windows: the same for the generated spikes.
        n_windows: number of windows (silent windows included).
        tol: matching tolerance in seconds (default one dt bin, 0.01 s).

    Returns:
        ``{"precision", "recall", "f1", "f1_pooled", "n_windows"}``.
    """
    if tol < 0:
        raise DataError(f"tol must be >= 0 seconds, got {tol}")
    arrays = []
    for name, (t, u, w) in {"true": (true_times, true_ids, true_windows),
                            "pred": (pred_times, pred_ids, pred_windows)}.items():
        t = np.asarray(t, dtype=np.float64).ravel()
        u = np.asarray(u, dtype=np.int64).ravel()
        w = np.asarray(w, dtype=np.int64).ravel()
        if not (t.shape == u.shape == w.shape):
            raise DataError(f"{name} times/ids/windows have different lengths: {t.shape}, {u.shape}, {w.shape}")
        if w.size and (w.min() < 0 or w.max() >= n_windows):
            raise DataError(f"{name} window indices must lie in [0, {n_windows})")
        if u.size and u.min() < 0:
            raise DataError(f"{name} neuron ids must be >= 0 (drop special tokens first)")
        arrays.append((t, u, w))
    (tt, tu, tw), (pt, pu, pw) = arrays
    n_units = int(max(tu.max(initial=-1), pu.max(initial=-1))) + 1
    t_key = tw * n_units + tu
    p_key = pw * n_units + pu
    t_ord = np.lexsort((tt, t_key))
    p_ord = np.lexsort((pt, p_key))
    matched = _match_count(t_key[t_ord], tt[t_ord], p_key[p_ord], pt[p_ord], tol)
    tp = np.bincount(tw[t_ord][matched], minlength=n_windows)
    n_true = np.bincount(tw, minlength=n_windows)
    n_pred = np.bincount(pw, minlength=n_windows)
    p, r, f = _prf(tp, n_pred, n_true)
    total_tp, total_pred, total_true = tp.sum(), n_pred.sum(), n_true.sum()
    _, _, f_pool = _prf(np.array([total_tp]), np.array([total_pred]), np.array([total_true]))
    return {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean()),
            "f1_pooled": float(f_pool[0]), "n_windows": int(n_windows)}


def empty_window_frac(windows: Sequence | np.ndarray) -> float:
    """Fraction of windows without any spike.

    Report it for the generated windows beside the same number for the true windows: a model
    that emits EOS at once scores well on silent windows and the F1 alone hides it.

    Args:
        windows: one collection of neuron ids per window, or an array of spike counts
            ``(windows,)``.

    Returns:
        Fraction in [0, 1].
    """
    if isinstance(windows, np.ndarray) and windows.dtype != object and windows.ndim == 1:
        counts = windows
    else:
        counts = np.array([len(w) for w in windows])
    if len(counts) == 0:
        raise DataError("empty_window_frac needs at least one window")
    return float(np.mean(counts == 0))


# --------------------------------------------------------------------------------------------
# Rates (PSTH) correlation
# --------------------------------------------------------------------------------------------


def psth_corr(true_counts: np.ndarray, pred_counts: np.ndarray) -> dict:
    """Per-neuron Pearson r between true and generated binned counts (``calc_corr_psth``).

    Neurons whose true or generated counts are constant have no defined r; they are excluded
    from the mean and counted in ``n_excluded`` (a model that never fires a neuron is thus
    visible there rather than silently scored).

    Args:
        true_counts: ``(neurons, bins)`` counts (``neurofound.data.binning.bin_spikes``;
            concatenate trials on the bin axis).
        pred_counts: ``(neurons, bins)`` generated counts on the same bins.

    Returns:
        ``{"r": mean r over valid neurons (NaN if none), "n_used", "n_excluded",
        "per_neuron": (neurons,) r with NaN for excluded neurons}``.
    """
    x = np.asarray(true_counts, dtype=np.float64)
    y = np.asarray(pred_counts, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise DataError(f"true_counts {x.shape} and pred_counts {y.shape} must both be (neurons, bins)")
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    sx = np.sqrt((xc**2).sum(axis=1))
    sy = np.sqrt((yc**2).sum(axis=1))
    valid = (sx > 0) & (sy > 0)
    r = np.full(x.shape[0], np.nan)
    r[valid] = (xc[valid] * yc[valid]).sum(axis=1) / (sx[valid] * sy[valid])
    n_used = int(valid.sum())
    return {"r": float(np.mean(r[valid])) if n_used else float("nan"), "n_used": n_used,
            "n_excluded": int(x.shape[0] - n_used), "per_neuron": r}
