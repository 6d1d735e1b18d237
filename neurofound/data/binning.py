"""Spike counts in time bins: the one binning rule used by records, datamodules, generation and eval.

A bin is the half-open interval `[start, start + bin_size)`. A spike belongs to the bin whose
start is the largest one at or before `time + BIN_EPS * bin_size`: a spike a hair (at most 1e-6
of a bin) before an edge counts as on that edge. Spike times reconstructed in floating point
(`window_start + k * dt`) land a few ulps off the edge they belong to; the tolerance is the same
as the spike tokenizer's (`floor(t / dt + 1e-6)`), so a raster at `dt` and the tokens agree.

Bins may have gaps between them (the held-out windows of a split are runs of time with holes in
between); spikes in a gap, before the first bin or after the last one are not counted.
"""

from __future__ import annotations

import math

import numpy as np

from neurofound.errors import DataError

__all__ = ["BIN_EPS", "bin_grid", "bin_spikes"]

# In units of one bin; the tokenizer's `_BIN_EPS` (10 ns at dt = 10 ms).
BIN_EPS = 1e-6


def bin_grid(start: float, stop: float, bin_size: float) -> np.ndarray:
    """Starts of the whole bins of `bin_size` seconds tiling `[start, stop)`.

    A partial last bin is dropped (its count would not be comparable with the others).

    Returns:
        (T,) float64 bin starts `start + k * bin_size`, `T = floor((stop - start) / bin_size)`.
    """
    if not bin_size > 0:
        raise DataError(f"bin_size must be > 0 s, got {bin_size}")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise DataError(f"start and stop must be finite, got {start}, {stop}")
    n = max(0, int(math.floor((stop - start) / bin_size + BIN_EPS)))
    return float(start) + float(bin_size) * np.arange(n, dtype=np.float64)


def bin_spikes(
    spike_times: np.ndarray,
    unit_ids: np.ndarray,
    n_neurons: int,
    bin_starts: np.ndarray,
    bin_size: float,
) -> np.ndarray:
    """Spike counts per unit in the bins `[bin_starts[k], bin_starts[k] + bin_size)`.

    Args:
        spike_times: (spikes,) seconds, any order.
        unit_ids: (spikes,) unit index of each spike, in `[0, n_neurons)`.
        n_neurons: number of units N (rows of the result; silent units give zero rows).
        bin_starts: (T,) increasing bin starts, at least `bin_size` apart (gaps allowed); see
            `bin_grid` for a regular grid.
        bin_size: bin width in seconds.

    Returns:
        (N, T) int64 counts.
    """
    if not bin_size > 0:
        raise DataError(f"bin_size must be > 0 s, got {bin_size}")
    times = np.asarray(spike_times, dtype=np.float64).reshape(-1)
    units = np.asarray(unit_ids).reshape(-1)
    starts = np.asarray(bin_starts, dtype=np.float64).reshape(-1)
    if times.shape != units.shape:
        raise DataError(f"spike_times {times.shape} and unit_ids {units.shape} must have the same length")
    if not np.all(np.isfinite(times)):
        raise DataError("spike_times contain NaN/Inf; drop them before binning")
    if units.size and (units.min() < 0 or units.max() >= n_neurons):
        raise DataError(
            f"unit_ids must lie in [0, n_neurons={n_neurons}), got {units.min()}..{units.max()}; "
            "drop special tokens or pass the right n_neurons"
        )
    if starts.size > 1 and np.any(np.diff(starts) < bin_size * (1 - BIN_EPS)):
        raise DataError("bin_starts must be increasing and at least bin_size apart (bins may not overlap)")
    n_bins = starts.size
    counts = np.zeros(n_neurons * n_bins, dtype=np.int64)
    if n_bins and times.size:
        shifted = times + BIN_EPS * bin_size
        pos = np.searchsorted(starts, shifted, side="right") - 1
        inside = pos >= 0
        inside[inside] &= shifted[inside] < starts[pos[inside]] + bin_size
        flat = units[inside].astype(np.int64) * n_bins + pos[inside]
        counts += np.bincount(flat, minlength=n_neurons * n_bins)
    return counts.reshape(n_neurons, n_bins)
