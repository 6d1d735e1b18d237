"""Directed connectivity from attention maps, spike-raster baselines, and their scores.

Reference procedure (spec section 5): run the trained model over many windows, read the softmax
attention, sum over heads, and add the attention from each query token (the neuron being
PREDICTED there) to each key token's neuron, skipping special tokens. We follow the spec's
recommendation and also divide by how often each (query neuron, key neuron) pair co-occurred, so
a frequently firing neuron does not look "connected" merely because it is often in context, and
average over layers and windows.

Convention everywhere: ``matrix[target, source]`` (row = neuron being predicted / influenced,
column = neuron attended to / influencing), the same layout as the ground truth ``W[target,
source]``. Direction matters: nothing here symmetrises.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from neurofound.errors import ConfigError, DataError, UnknownNameError
from neurofound.eval.metrics import auroc

__all__ = [
    "AttentionConnectivity",
    "normalize_attention",
    "NORMALIZATIONS",
    "score",
    "zero_lag_corr",
    "lagged_corr",
    "partial_corr",
    "baseline_matrices",
    "connectivity_metrics",
]


class AttentionConnectivity:
    """Accumulates attention into an ``(N_target, N_source)`` matrix over batches and layers.

    For each layer (any hashable name, e.g. ``"state/0"``), it keeps the summed attention from
    query neuron to key neuron and the number of times that pair co-occurred (was visible to each
    other). ``matrix()`` is, per layer, sum / count (0 where the pair never co-occurred), then the
    mean over layers.

    Example:
        >>> acc = AttentionConnectivity(n_neurons=300)
        >>> for batch, out in ...:  # out.attentions["state"] is a list over layers
        ...     for l, w in enumerate(out.attentions["state"]):
        ...         acc.update(f"state/{l}", w.numpy(), q_ids, k_ids, causal=True)
        >>> m = acc.matrix()
    """

    def __init__(self, n_neurons: int):
        if n_neurons < 1:
            raise ConfigError(f"n_neurons must be >= 1, got {n_neurons}")
        self.n_neurons = int(n_neurons)
        self._sums: dict[Hashable, np.ndarray] = {}
        self._counts: dict[Hashable, np.ndarray] = {}
        self._chance: dict[Hashable, np.ndarray] = {}

    @property
    def layers(self) -> list[Hashable]:
        """Names of the layers seen so far, in first-seen order."""
        return list(self._sums)

    def update(self, layer: Hashable, weights: np.ndarray, query_ids: np.ndarray,
               key_ids: np.ndarray, *, causal: bool = False) -> None:
        """Add one batch of attention weights of one layer.

        Args:
            layer: name of the layer (accumulated separately, averaged in ``matrix``).
            weights: softmax attention ``(batch, heads, queries, keys)``; summed over heads.
            query_ids: ``(batch, queries)`` the neuron PREDICTED at each query position (the
                next-token target id), -1 for special/invalid targets (SOS, EOS, PAD).
            key_ids: ``(batch, keys)`` the neuron of each key token, -1 for special tokens.
            causal: if True, query i only co-occurs with keys ``j <= i + (keys - queries)`` (the
                bottom-right alignment of ``nn.attention``); masked-out future keys do not count
                towards the co-occurrence, since the model could not attend to them.
        """
        w = np.asarray(weights)
        q = np.asarray(query_ids, dtype=np.int64)
        k = np.asarray(key_ids, dtype=np.int64)
        if w.ndim != 4:
            raise DataError(f"weights must be (batch, heads, queries, keys), got shape {w.shape}")
        b, h, lq, lk = w.shape
        if q.shape != (b, lq) or k.shape != (b, lk):
            raise DataError(
                f"query_ids {q.shape} / key_ids {k.shape} do not match weights {w.shape}: expected "
                f"({b}, {lq}) and ({b}, {lk})"
            )
        n = self.n_neurons
        for name, ids in (("query_ids", q), ("key_ids", k)):
            if ids.size and ids.max() >= n:
                raise DataError(f"{name} contain {ids.max()} >= n_neurons={n}; map special tokens to -1")
        w = w.sum(axis=1, dtype=np.float64)  # (b, lq, lk): heads summed, as in the reference
        valid = (q >= 0)[:, :, None] & (k >= 0)[:, None, :]
        if causal:
            valid &= np.tri(lq, lk, k=lk - lq, dtype=bool)[None]
        flat = (q[:, :, None] * n + k[:, None, :])[valid]
        if layer not in self._sums:
            self._sums[layer] = np.zeros(n * n)
            self._counts[layer] = np.zeros(n * n)
        self._sums[layer] += np.bincount(flat, weights=w[valid], minlength=n * n)
        self._counts[layer] += np.bincount(flat, minlength=n * n)
        # chance attention: what each co-occurrence would get from uniform attention over the keys
        # the query could see (all of them, or the causal prefix), summed over heads like w
        n_visible = np.minimum(np.arange(lq) + 1 + (lk - lq), lk) if causal else np.full(lq, lk)
        chance = np.broadcast_to((h / np.maximum(n_visible, 1))[None, :, None], valid.shape)
        if layer not in self._chance:
            self._chance[layer] = np.zeros(n * n)
        self._chance[layer] += np.bincount(flat, weights=chance[valid], minlength=n * n)

    def counts(self, layer: Hashable | None = None) -> np.ndarray:
        """Co-occurrence counts ``(N_target, N_source)`` of one layer (default: the first)."""
        if not self._counts:
            raise RuntimeError("no attention accumulated yet: call update() first")
        layer = self.layers[0] if layer is None else layer
        return self._counts[layer].reshape(self.n_neurons, self.n_neurons).copy()

    def matrix(self, layers: Sequence[Hashable] | None = None, *, normalize: str = "none",
               relative_to: str = "count") -> np.ndarray:
        """Attention per co-occurrence, (normalised and) averaged over layers: ``(N_target, N_source)``.

        Args:
            layers: the layers to average (default: all). Names not seen raise an ``UnknownNameError`` (a ``KeyError``).
            normalize: per-layer normalisation applied BEFORE the layer mean, see
                ``normalize_attention``: ``"none"`` (attention per co-occurrence), ``"centred"``
                or ``"log_centred_abs"``.
            relative_to: ``"count"`` (default, the reference): summed attention / number of
                co-occurrences. ``"chance"``: summed attention / summed chance attention, the
                attention a uniform softmax over the keys the query could see would have given
                those co-occurrences. A uniform (e.g. untrained) attention then gives a constant
                matrix; with ``"count"`` the causal mask alone (a query early in the window
                spreads over fewer keys) makes pairs that fire close in time look attended.
        """
        if relative_to not in ("count", "chance"):
            raise ConfigError(f"relative_to must be 'count' or 'chance', got {relative_to!r}")
        if not self._sums:
            raise RuntimeError("no attention accumulated yet: call update() first")
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        names = self.layers if layers is None else list(layers)
        missing = [name for name in names if name not in self._sums]
        if missing or not names:
            raise UnknownNameError(f"layers {missing or names} not accumulated; available: {self.layers}")
        n = self.n_neurons
        per_layer = []
        for layer in names:
            s, c = self._sums[layer], self._counts[layer]
            d = c if relative_to == "count" else self._chance[layer]
            m = np.divide(s, d, out=np.zeros_like(s), where=c > 0).reshape(n, n)
            if normalize != "none":
                m = normalize_attention(m, c.reshape(n, n) > 0, mode=normalize)
            per_layer.append(m)
        return np.mean(per_layer, axis=0)


NORMALIZATIONS = ("none", "centred", "log_centred_abs")


def normalize_attention(matrix: np.ndarray, observed: np.ndarray | None = None, *,
                        mode: str = "log_centred_abs") -> np.ndarray:
    """Attention relative to what each target and each source receive anyway: ``(N, N)``.

    The raw per-co-occurrence attention mixes three things: how much a source neuron is attended
    to whatever is predicted (e.g. a frequently firing or recently active neuron), how peaked the
    attention is when a given target is predicted, and the pair-specific part that reflects a
    synapse. Double centring (subtract each row's and each column's mean, add back the grand mean;
    means over off-diagonal observed pairs only) keeps the pair-specific part.

    * ``"centred"``: double-centred attention (excess attention, signed).
    * ``"log_centred_abs"``: ``|double-centred log attention|``, the magnitude of the log ratio
      to the pair's expected attention. An inhibitory synapse makes its target rarely fire just
      after the source, so that source gets LESS attention than expected when that target is
      predicted; scoring the magnitude treats excitation and inhibition alike, as the raster
      baselines do with ``|corr|``.

    Args:
        matrix: ``(N_target, N_source)`` attention per co-occurrence.
        observed: ``(N, N)`` bool, pairs that co-occurred at least once (default: ``matrix > 0``);
            unobserved pairs and the diagonal are left out of the means and score 0.
        mode: ``"centred"`` or ``"log_centred_abs"`` (``"none"`` returns a copy).

    Returns:
        ``(N_target, N_source)`` normalised scores.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"matrix must be square (N, N), got shape {m.shape}")
    if mode not in NORMALIZATIONS:
        raise ConfigError(f"mode must be one of {NORMALIZATIONS}, got {mode!r}")
    if mode == "none":
        return m.copy()
    obs = (m > 0) if observed is None else np.asarray(observed, dtype=bool)
    if obs.shape != m.shape:
        raise DataError(f"observed {obs.shape} must match matrix {m.shape}")
    keep = obs & ~np.eye(m.shape[0], dtype=bool)
    if mode == "log_centred_abs":
        # a floor keeps log finite for observed pairs that got (numerically) zero attention
        pos = keep & (m > 0)
        floor = max(float(m[pos].min()), 1e-300) if pos.any() else 1.0
        x = np.log(np.maximum(m, floor))
    else:
        x = m.copy()
    x = np.where(keep, x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows/columns of silent neurons
        row = np.nan_to_num(np.nanmean(x, axis=1, keepdims=True))
        col = np.nan_to_num(np.nanmean(x, axis=0, keepdims=True))
        grand = float(np.nan_to_num(np.nanmean(x))) if keep.any() else 0.0
    out = np.where(keep, x - row - col + grand, 0.0)
    return np.abs(out) if mode == "log_centred_abs" else out


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _check_square(matrix: np.ndarray, true_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(matrix, dtype=np.float64)
    w = np.asarray(true_weights, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape != w.shape:
        raise DataError(f"matrix {m.shape} and true_weights {w.shape} must be the same (N, N) shape")
    if not np.all(np.isfinite(m)):
        raise DataError("matrix has NaN/inf entries; replace them (e.g. np.nan_to_num) before scoring")
    return m, w


def score(matrix: np.ndarray, true_weights: np.ndarray, *, hub_ids: Sequence[int] | None = None) -> dict[str, float]:
    """AUROC / AUPRC of a directed score matrix against the true connections.

    Positives are every off-diagonal ``true_weights[target, source] != 0`` (excitatory and
    inhibitory alike); the diagonal is excluded. Higher score = more likely connected, so pass
    magnitudes for signed measures (the baselines here do so by default). The matrix is scored
    as it is: a symmetric measure cannot tell ``W[i, j]`` from ``W[j, i]``.

    Args:
        matrix: ``(N_target, N_source)`` scores.
        true_weights: ``(N_target, N_source)`` ground-truth weights.
        hub_ids: optional hub neuron ids; adds ``auroc_nonhub``, the AUROC with the hub SOURCE
            columns removed (can the method find the weak non-hub edges?).

    Returns:
        ``{"auroc", "auprc", "edge_density"}`` (+ ``"auroc_nonhub"``); ``edge_density`` is the
        AUPRC of a random score, the chance level to compare against.
    """
    m, w = _check_square(matrix, true_weights)
    n = m.shape[0]
    off = ~np.eye(n, dtype=bool)
    y, s = (w[off] != 0), m[off]
    if y.all() or not y.any():
        raise DataError("true_weights must contain both connected and unconnected off-diagonal pairs")
    out = {"auroc": auroc(y, s), "auprc": float(average_precision_score(y, s)),
           "edge_density": float(y.mean())}
    if hub_ids is not None:
        keep = off.copy()
        keep[:, np.asarray(hub_ids, dtype=np.int64)] = False
        yk = w[keep] != 0
        out["auroc_nonhub"] = auroc(yk, m[keep])  # NaN when the hub columns held every edge
    return out


# --------------------------------------------------------------------------------------------
# Baselines from the spike raster
# --------------------------------------------------------------------------------------------


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm; constant rows become 0 (no correlation)."""
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("nt,nt->n", x, x))
    x /= np.where(norm > 0, norm, 1.0)[:, None]
    return x


def _raster(raster: np.ndarray, min_bins: int) -> np.ndarray:
    r = np.asarray(raster, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < min_bins:
        raise DataError(f"raster must be (neurons, bins) with >= {min_bins} bins, got {r.shape}")
    return r


def zero_lag_corr(raster: np.ndarray, *, absolute: bool = True) -> np.ndarray:
    """Pearson correlation of binned activity at zero lag: ``(N, N)``, symmetric.

    We score |corr| by default: the truth includes inhibitory edges, which show up as negative
    correlation. Being symmetric, it cannot tell the direction of an edge.

    Args:
        raster: spike counts ``(neurons, bins)`` binned at the tokenizer's dt.
        absolute: return the magnitude (default) or the signed correlation.
    """
    z = _zscore_rows(_raster(raster, 2))
    c = z @ z.T
    np.fill_diagonal(c, 0.0)
    return np.abs(c) if absolute else c


def lagged_corr(raster: np.ndarray, *, lag: int = 1, absolute: bool = True) -> np.ndarray:
    """Directed lagged correlation ``M[target, source] = corr(x_target[t], x_source[t - lag])``.

    With the source one bin before the target (``lag=1``), a synapse that raises the target's
    rate in the next bin shows up in ``M[target, source]`` and not in ``M[source, target]``.

    Args:
        raster: spike counts ``(neurons, bins)``.
        lag: source lead in bins (>= 1).
        absolute: return the magnitude (default, see ``zero_lag_corr``) or the signed value.
    """
    if lag < 1:
        raise ConfigError(f"lag must be >= 1 bin, got {lag}")
    r = _raster(raster, lag + 2)
    target = _zscore_rows(r[:, lag:])
    source = _zscore_rows(r[:, :-lag])
    c = target @ source.T
    np.fill_diagonal(c, 0.0)
    return np.abs(c) if absolute else c


def partial_corr(raster: np.ndarray, *, ridge: float = 1e-3, absolute: bool = True) -> np.ndarray:
    """Zero-lag partial correlation from the (ridge-regularised) precision matrix; symmetric.

    ``pc[i, j] = -P[i, j] / sqrt(P[i, i] P[j, j])`` with ``P = inv(C + ridge * mean(diag C) I)``
    and ``C`` the correlation matrix; the ridge (relative to the mean variance) keeps the inverse
    stable when neurons are silent or collinear. It removes indirect (shared-input) correlations
    but, like correlation, has no direction.

    Args:
        raster: spike counts ``(neurons, bins)``.
        ridge: relative ridge added to the diagonal before inverting.
        absolute: return the magnitude (default) or the signed value.
    """
    if ridge < 0:
        raise ConfigError(f"ridge must be >= 0, got {ridge}")
    z = _zscore_rows(_raster(raster, 2))
    c = z @ z.T
    c[np.diag_indices_from(c)] += ridge * max(float(np.mean(np.diag(c))), 1e-12)
    p = np.linalg.inv(c)
    d = np.sqrt(np.clip(np.diag(p), 1e-300, None))
    pc = -p / np.outer(d, d)
    # symmetric in exact arithmetic; averaging removes the round-off of inv() so that ties (and
    # hence AUROC) are identical for W and W.T
    pc = 0.5 * (pc + pc.T)
    np.fill_diagonal(pc, 0.0)
    return np.abs(pc) if absolute else pc


def baseline_matrices(raster: np.ndarray) -> dict[str, np.ndarray]:
    """All raster baselines (magnitudes) by name: ``corr``, ``lagged_corr``, ``partial_corr``."""
    return {"corr": zero_lag_corr(raster), "lagged_corr": lagged_corr(raster),
            "partial_corr": partial_corr(raster)}


def connectivity_metrics(true_weights: np.ndarray, *, attention: np.ndarray | None = None,
                         raster: np.ndarray | None = None,
                         hub_ids: Sequence[int] | None = None) -> dict[str, float]:
    """Flat metric dict for a run: the attention matrix and every raster baseline, scored.

    Names: ``connectivity_auroc``, ``connectivity_auprc``, ``connectivity_auroc_nonhub``,
    ``connectivity_edge_density`` for the attention; ``baseline_<name>_auroc`` / ``_auprc`` /
    ``_auroc_nonhub`` for ``<name>`` in ``baseline_matrices``. ``report.write_report`` turns
    these into plain-words notes.
    """
    out: dict[str, float] = {}
    if attention is not None:
        s = score(attention, true_weights, hub_ids=hub_ids)
        out.update({f"connectivity_{k}": v for k, v in s.items()})
    if raster is not None:
        for name, m in baseline_matrices(raster).items():
            s = score(m, true_weights, hub_ids=hub_ids)
            s.pop("edge_density")
            out.update({f"baseline_{name}_{k}": v for k, v in s.items()})
    return out
