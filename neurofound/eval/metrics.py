"""Metrics on numpy arrays: teacher-forced token scores, generated-spike scores, rates, behaviour.

Everything here takes plain arrays (or lists of per-window id collections) that a task hands
over after moving tensors to the CPU; nothing imports a model, Lightning or Hydra.

Reference definitions: ``shared/specs/neuroformer.md`` section 4.2.

* ``set_f1(..., reference=True)`` / ``set_f1_ref`` reproduces the reference
  ``analysis.compute_scores`` exactly, bugs included (see ``set_f1_ref``).
* ``set_f1`` (default) is the corrected per-window set precision/recall/F1.
* ``timing_f1`` also asks for the spike time (within ``tol``) and counts every spike.
* ``psth_corr`` is the per-neuron rate correlation (``analysis.calc_corr_psth``).
* ``behavior_scores`` gives Pearson r and the scikit-learn style R^2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "token_accuracy",
    "cross_entropy",
    "group_by_window",
    "set_f1",
    "set_f1_ref",
    "timing_f1",
    "empty_window_frac",
    "bin_spikes",
    "psth_corr",
    "pearson_r",
    "r2_score",
    "behavior_scores",
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
# Teacher-forced token metrics
# --------------------------------------------------------------------------------------------


def _as_predictions(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim == target.ndim + 1:  # logits (..., classes) -> arg-max class
        return pred.argmax(axis=-1)
    if pred.shape != target.shape:
        raise ValueError(
            f"predictions have shape {pred.shape} but targets {target.shape}: pass class ids of "
            "the target's shape or logits with one extra trailing class axis"
        )
    return pred


def token_accuracy(pred: np.ndarray, target: np.ndarray, *, ignore_index: int | None = None) -> float:
    """Top-1 accuracy of next-token predictions, ignoring ``ignore_index`` (PAD) targets.

    This equals the reference's torchmetrics "precision/recall/F1" logged during training
    (multiclass, default micro average, spec 4.2).

    Args:
        pred: predicted class ids ``(batch, tokens)`` or logits ``(batch, tokens, classes)``.
        target: target ids ``(batch, tokens)``.
        ignore_index: target value that does not count (the PAD id); ``None`` counts all.

    Returns:
        Fraction of counted targets predicted correctly; NaN when no target counts.
    """
    target = np.asarray(target)
    pred = _as_predictions(pred, target)
    keep = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    n = int(keep.sum())
    if n == 0:
        return float("nan")
    return float((pred[keep] == target[keep]).sum() / n)


def cross_entropy(logits: np.ndarray, target: np.ndarray, *, ignore_index: int | None = None) -> float:
    """Mean cross-entropy (nats) of ``logits`` against ``target``, ignoring ``ignore_index``.

    Args:
        logits: ``(..., classes)`` unnormalised scores.
        target: ``(...)`` integer class ids.
        ignore_index: target value to skip (the PAD id).

    Returns:
        Mean negative log-likelihood over counted targets; NaN when none counts.
    """
    logits = np.asarray(logits, dtype=np.float64)
    target = np.asarray(target)
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {logits.shape} do not match targets {target.shape} + (classes,)")
    keep = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    if not keep.any():
        return float("nan")
    z = logits[keep]
    t = target[keep].astype(np.int64)
    if t.min() < 0 or t.max() >= z.shape[-1]:
        raise ValueError(f"target ids must lie in [0, {z.shape[-1]}); got {t.min()}..{t.max()}")
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return float(np.mean(log_norm - z[np.arange(len(t)), t]))


# --------------------------------------------------------------------------------------------
# Generated spikes: set F1, timing F1, empty windows
# --------------------------------------------------------------------------------------------


def group_by_window(unit_ids: np.ndarray, window_index: np.ndarray, n_windows: int) -> list[np.ndarray]:
    """Split a flat spike list into per-window arrays of neuron ids.

    Args:
        unit_ids: ``(spikes,)`` neuron id of each spike.
        window_index: ``(spikes,)`` window (row) each spike belongs to, in ``[0, n_windows)``.
        n_windows: number of windows, so that silent windows appear as empty arrays.

    Returns:
        ``n_windows`` arrays of neuron ids (with repeats, in input order).
    """
    unit_ids = np.asarray(unit_ids)
    window_index = np.asarray(window_index, dtype=np.int64)
    if unit_ids.shape != window_index.shape:
        raise ValueError(f"unit_ids {unit_ids.shape} and window_index {window_index.shape} differ")
    if window_index.size and (window_index.min() < 0 or window_index.max() >= n_windows):
        raise ValueError(f"window_index must lie in [0, {n_windows}); increase n_windows")
    order = np.argsort(window_index, kind="stable")
    splits = np.searchsorted(window_index[order], np.arange(1, n_windows))
    return np.split(unit_ids[order], splits)


def _check_windows(true_sets: Sequence, pred_sets: Sequence) -> None:
    if len(true_sets) != len(pred_sets):
        raise ValueError(
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
        true_sets: one collection of neuron ids per window (see ``group_by_window``).
        pred_sets: generated neuron ids, same windows in the same order.
        reference: if True, return ``set_f1_ref`` (the reference's buggy definition) instead.

    Returns:
        ``{"precision", "recall", "f1", "n_windows"}``.
    """
    if reference:
        return set_f1_ref(true_sets, pred_sets)
    _check_windows(true_sets, pred_sets)
    if len(true_sets) == 0:
        raise ValueError("set_f1 needs at least one window")
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
        raise ValueError(f"tol must be >= 0 seconds, got {tol}")
    arrays = []
    for name, (t, u, w) in {"true": (true_times, true_ids, true_windows),
                            "pred": (pred_times, pred_ids, pred_windows)}.items():
        t = np.asarray(t, dtype=np.float64).ravel()
        u = np.asarray(u, dtype=np.int64).ravel()
        w = np.asarray(w, dtype=np.int64).ravel()
        if not (t.shape == u.shape == w.shape):
            raise ValueError(f"{name} times/ids/windows have different lengths: {t.shape}, {u.shape}, {w.shape}")
        if w.size and (w.min() < 0 or w.max() >= n_windows):
            raise ValueError(f"{name} window indices must lie in [0, {n_windows})")
        if u.size and u.min() < 0:
            raise ValueError(f"{name} neuron ids must be >= 0 (drop special tokens first)")
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
        raise ValueError("empty_window_frac needs at least one window")
    return float(np.mean(counts == 0))


# --------------------------------------------------------------------------------------------
# Rates (PSTH) correlation
# --------------------------------------------------------------------------------------------


def bin_spikes(spike_times: np.ndarray, unit_ids: np.ndarray, n_neurons: int, t_start: float,
               t_stop: float, bin_width: float = DEFAULT_PSTH_BIN) -> np.ndarray:
    """Count spikes per neuron in bins of ``bin_width`` seconds over ``[t_start, t_stop)``.

    Returns:
        counts ``(neurons, bins)`` float64 with ``bins = ceil((t_stop - t_start) / bin_width)``;
        spikes outside the range are dropped.
    """
    if bin_width <= 0 or t_stop <= t_start:
        raise ValueError(f"need bin_width > 0 and t_stop > t_start, got {bin_width}, [{t_start}, {t_stop})")
    t = np.asarray(spike_times, dtype=np.float64).ravel()
    u = np.asarray(unit_ids, dtype=np.int64).ravel()
    if t.shape != u.shape:
        raise ValueError(f"spike_times {t.shape} and unit_ids {u.shape} differ")
    n_bins = int(np.ceil((t_stop - t_start) / bin_width - 1e-9))
    b = np.floor((t - t_start) / bin_width + 1e-9).astype(np.int64)
    keep = (t >= t_start) & (t < t_stop) & (u >= 0) & (u < n_neurons) & (b < n_bins)
    flat = u[keep] * n_bins + b[keep]
    return np.bincount(flat, minlength=n_neurons * n_bins).reshape(n_neurons, n_bins).astype(np.float64)


def psth_corr(true_counts: np.ndarray, pred_counts: np.ndarray) -> dict:
    """Per-neuron Pearson r between true and generated binned counts (``calc_corr_psth``).

    Neurons whose true or generated counts are constant have no defined r; they are excluded
    from the mean and counted in ``n_excluded`` (a model that never fires a neuron is thus
    visible there rather than silently scored).

    Args:
        true_counts: ``(neurons, bins)`` counts (see ``bin_spikes``; concatenate trials on the
            bin axis).
        pred_counts: ``(neurons, bins)`` generated counts on the same bins.

    Returns:
        ``{"r": mean r over valid neurons (NaN if none), "n_used", "n_excluded",
        "per_neuron": (neurons,) r with NaN for excluded neurons}``.
    """
    x = np.asarray(true_counts, dtype=np.float64)
    y = np.asarray(pred_counts, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"true_counts {x.shape} and pred_counts {y.shape} must both be (neurons, bins)")
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


# --------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------


def _pair(y: np.ndarray, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"y {y.shape} and yhat {yhat.shape} must have the same shape")
    if y.ndim == 1:
        y, yhat = y[:, None], yhat[:, None]
    if y.ndim != 2 or y.shape[0] < 2:
        raise ValueError(f"need (samples,) or (samples, outputs) with >= 2 samples, got {y.shape}")
    return y, yhat


def pearson_r(y: np.ndarray, yhat: np.ndarray) -> float:
    """Pearson correlation; for ``(samples, outputs)`` the mean over outputs. NaN if constant."""
    y, yhat = _pair(y, yhat)
    yc, hc = y - y.mean(0), yhat - yhat.mean(0)
    den = np.sqrt((yc**2).sum(0) * (hc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (yc * hc).sum(0) / den, np.nan)
    return float(np.mean(r))


def r2_score(y: np.ndarray, yhat: np.ndarray) -> float:
    """Coefficient of determination as scikit-learn computes it (uniform average over outputs).

    1 - SS_res / SS_tot; can be negative. A constant target scores 1 if predicted exactly,
    else 0 (scikit-learn's convention).
    """
    y, yhat = _pair(y, yhat)
    ss_res = ((y - yhat) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(r2))


def behavior_scores(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """Pearson r and R^2 of behaviour predictions.

    Args:
        y: true values ``(samples,)`` or ``(samples, outputs)``.
        yhat: predictions, same shape.

    Returns:
        ``{"r": ..., "r2": ...}``.
    """
    return {"r": pearson_r(y, yhat), "r2": r2_score(y, yhat)}
