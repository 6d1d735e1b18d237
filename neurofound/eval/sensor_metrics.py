"""Metrics of sensor-signal tokenizers and token models: arrays in, numbers out (no model imports).

* `window_pcc`: the Pearson correlation of every (recording, channel, window) row of a
  reconstruction with its target, the BrainOmni tokenizer's reconstruction figure (spec §2.6,
  Table 4): rows are scored separately and averaged, padded channels and samples left out.
* `codebook_usage`: per RVQ level, the fraction of codes used and the perplexity of their use.
* `unigram_accuracy`: the accuracy of always predicting the most frequent training code, the
  baseline a masked-token model must beat.
"""

from __future__ import annotations

import numpy as np

from neurofound.errors import DataError

__all__ = ["codebook_usage", "unigram_accuracy", "window_pcc", "window_mse"]


def _rows(reconstruction: np.ndarray, target: np.ndarray, valid: np.ndarray | None) -> tuple:
    rec = np.asarray(reconstruction, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if rec.shape != tgt.shape:
        raise DataError(f"reconstruction {rec.shape} and target {tgt.shape} must have the same shape")
    if not (np.isfinite(rec).all() and np.isfinite(tgt).all()):
        raise DataError("reconstruction or target holds NaN/Inf")
    rec = rec.reshape(-1, rec.shape[-1])
    tgt = tgt.reshape(-1, tgt.shape[-1])
    if valid is None:
        w = np.ones_like(rec)
    else:
        w = np.broadcast_to(np.asarray(valid, dtype=bool), reconstruction.shape).reshape(rec.shape).astype(np.float64)
    return rec, tgt, w


def window_pcc(reconstruction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pearson r of each row (last axis = samples of one window) of `reconstruction` with `target`.

    Args:
        reconstruction, target: `(..., L)`, e.g. `(B, C, N, L)`.
        valid: boolean mask broadcastable to that shape (False = padding: a padded channel, the
            padded tail of a window). Rows with fewer than 2 valid samples, or a constant
            reconstruction or target, are NaN (and skipped by `np.nanmean`).

    Returns:
        `(rows,)` correlations, rows in C order of the leading axes.
    """
    rec, tgt, w = _rows(reconstruction, target, valid)
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mr = (rec * w).sum(1) / n
        mt = (tgt * w).sum(1) / n
        dr = (rec - mr[:, None]) * w
        dt = (tgt - mt[:, None]) * w
        r = (dr * dt).sum(1) / np.sqrt((dr ** 2).sum(1) * (dt ** 2).sum(1))
    r[(n < 2) | ~np.isfinite(r)] = np.nan
    return r


def window_mse(reconstruction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean squared error over the valid samples."""
    rec, tgt, w = _rows(reconstruction, target, valid)
    if w.sum() == 0:
        return float("nan")
    return float((((rec - tgt) ** 2) * w).sum() / w.sum())


def codebook_usage(codes: np.ndarray, codebook_size: int) -> dict[str, np.ndarray]:
    """Per level: the fraction of the `codebook_size` codes used at least once, and the perplexity.

    Args:
        codes: `(n, Q)` integer codes of n vectors at Q levels.
        codebook_size: K.

    Returns:
        `{"usage": (Q,) fractions, "perplexity": (Q,) exp(entropy) of the code distribution (1..K)}`.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise DataError(f"codes must be (vectors, levels) with at least one vector, got {codes.shape}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise DataError(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    usage, perplexity = [], []
    for q in range(codes.shape[1]):
        counts = np.bincount(codes[:, q], minlength=codebook_size).astype(np.float64)
        p = counts / counts.sum()
        nz = p[p > 0]
        usage.append(float((counts > 0).mean()))
        perplexity.append(float(np.exp(-(nz * np.log(nz)).sum())))
    return {"usage": np.asarray(usage), "perplexity": np.asarray(perplexity)}


def unigram_accuracy(train_codes: np.ndarray, test_codes: np.ndarray) -> float:
    """Accuracy on `test_codes` of always predicting the most frequent code of `train_codes` (1-D arrays)."""
    train_codes = np.asarray(train_codes).reshape(-1)
    test_codes = np.asarray(test_codes).reshape(-1)
    if not train_codes.size or not test_codes.size:
        raise DataError("unigram_accuracy needs training and test codes")
    mode = np.bincount(train_codes).argmax()
    return float((test_codes == mode).mean())
