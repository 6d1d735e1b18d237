"""Neuroformer spike tokenizer: spikes -> parallel (neuron ID, time offset) token sequences.

One sample is identified by an interval value ``t``, the END of its current window. With
``w = window``, ``wp = window_prev`` (both whole numbers of ``dt`` bins):

* current window = ``[t - w, t)``, past window = ``[t - w - wp, t - w)``; a time ``v`` lies in bin
  ``floor(v / dt)`` and a window covers the bins ``[start_bin, end_bin)`` with
  ``start_bin = round((t - w) / dt)``. Intervals that are not on the ``dt`` grid are therefore
  snapped to the nearest bin edge (as the reference does).
* Events of a window are ordered bin by bin in time, and inside a bin by ascending neuron index;
  a count ``c`` in a raster gives ``c`` identical consecutive events (fixture README T1, T2).
* ID tokens: ``0..N-1`` neurons, then ``SOS=N``, ``EOS=N+1``, ``PAD=N+2``.
  dt tokens: ``0..K-1`` offsets ``k * dt`` of the event's bin from its window's start,
  ``K = round(max(w, wp) / dt) + 1``, then ``SOS=K``, ``EOS=K+1``, ``PAD=K+2``; current and past
  windows share the dt vocabulary. The dt ``SOS`` token is never emitted (the SOS position carries
  offset 0), exactly like the reference.
* A window with block size ``S`` becomes ``[SOS] + ids + [EOS] + [PAD] * pad`` of length ``S + 1``
  (model input ``full[:, :-1]``, target ``full[:, 1:]``); only the LAST ``S - 2`` events are kept
  (truncation is counted per window in ``n_truncated`` and summarised in one logged warning).

``reference_compat=True`` restores three quirks of the reference code (a-antoniades/Neuroformer
NF 1.5, ``NFDataloader``), so that token sequences match its checkpoints' training data exactly:

* T3: a window starting at ``<= 0`` s is clipped to bin 0 and its dts are ABSOLUTE bin indices,
  not offsets from the window's start. Fixed default: offsets from the window's true (possibly
  negative) start bin; bins before 0 simply hold no events.
* T6: after truncation the SOS position inherits the dt of the latest dropped event. Fixed: 0.
* T8: the frame clip ends one frame AFTER the current window (``round((t + w) * rate)``). Fixed:
  the newest frame is the one covering ``[t - 1/rate, t)``.

Everything is vectorised over the whole recording: events are binned and sorted once, each
window's event range is found with ``searchsorted`` and the ``(windows, S + 1)`` token arrays are
filled with one scatter per stream; there is no Python loop over windows.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from neurofound.errors import ConfigError, DataError
from neurofound.tokenizers import register
from neurofound.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

# Spike times are binned with floor(time / dt + _BIN_EPS): a spike exactly on a bin edge such as
# 0.03 s (0.03 / 0.01 = 2.9999999999999996 in floating point) must land in bin 3, not bin 2.
# 1e-6 bins is 10 ns at dt = 10 ms, far below any recording's timing precision.
_BIN_EPS = 1e-6
# Tolerance (in bins) for "window is a whole number of dt bins".
_GRID_TOL = 1e-6
_CONVERT = (None, "round", "floor")
# Spike times are binned in chunks of this many (bounded float64 scratch memory, cache friendly).
_CHUNK = 1 << 20


def _smallest_int(max_value: int) -> type[np.signedinteger]:
    """int16 when every token fits (halves memory of the large past arrays), else int32."""
    return np.int16 if max_value <= np.iinfo(np.int16).max else np.int32


class SpikeVocabulary:
    """The Neuroformer token layout, shared by the tokenizer and the model config.

    IDs ``0..N-1`` are neurons, then SOS = N, EOS = N+1, PAD = N+2; dt tokens ``0..K-1`` are the
    numeric offsets ``k * dt``, then SOS = K, EOS = K+1, PAD = K+2. A subclass provides ``n_neurons``
    (N) and ``n_dt`` (K).
    """

    n_neurons: int
    n_dt: int

    @property
    def id_sos(self) -> int:
        return self.n_neurons

    @property
    def id_eos(self) -> int:
        return self.n_neurons + 1

    @property
    def id_pad(self) -> int:
        return self.n_neurons + 2

    @property
    def id_vocab_size(self) -> int:
        return self.n_neurons + 3

    @property
    def dt_sos(self) -> int:
        return self.n_dt

    @property
    def dt_eos(self) -> int:
        return self.n_dt + 1

    @property
    def dt_pad(self) -> int:
        return self.n_dt + 2

    @property
    def dt_vocab_size(self) -> int:
        return self.n_dt + 3


@register("spike")
class SpikeTokenizer(Tokenizer, SpikeVocabulary):
    """Neuroformer two-stream spike tokenizer (neuron ID + quantised time offset).

    Args:
        n_neurons: N, number of neurons (ID vocabulary ``0..N-1`` + SOS/EOS/PAD).
        dt: time resolution in seconds (bin width of the dt tokens and of rasters).
        window: current-window length ``w`` in seconds (a whole number of ``dt``).
        window_prev: past-window length ``wp`` in seconds (a whole number of ``dt``).
        block_size: S, current tokens fed to the model; full sequences have ``S + 1`` tokens and
            keep at most ``S - 2`` events.
        block_size_prev: Sp, the same for the past window.
        frame_window: stimulus clip length in seconds (``ceil(frame_rate * frame_window)`` frames).
        frame_rate: stimulus frame rate in Hz (frame ``j`` covers ``[j / rate, (j + 1) / rate)``).
        reference_compat: restore the reference quirks T3, T6, T8 (see the module docstring).
    """

    def __init__(
        self,
        n_neurons: int,
        dt: float = 0.01,
        window: float = 0.05,
        window_prev: float = 0.05,
        block_size: int = 100,
        block_size_prev: int = 700,
        frame_window: float = 0.15,
        frame_rate: float = 20.0,
        reference_compat: bool = False,
    ) -> None:
        n_neurons = _as_int("n_neurons", n_neurons, minimum=1)
        block_size = _as_int("block_size", block_size, minimum=2)
        block_size_prev = _as_int("block_size_prev", block_size_prev, minimum=2)
        dt = _as_positive_float("dt", dt)
        window = _as_positive_float("window", window)
        window_prev = _as_positive_float("window_prev", window_prev)
        frame_window = _as_positive_float("frame_window", frame_window)
        frame_rate = _as_positive_float("frame_rate", frame_rate)
        if not isinstance(reference_compat, (bool, np.bool_)):
            raise TypeError(f"reference_compat must be a bool, got {reference_compat!r}.")
        for key, value in (("window", window), ("window_prev", window_prev)):
            ratio = value / dt
            if round(ratio) < 1 or abs(ratio - round(ratio)) > _GRID_TOL:
                raise ConfigError(
                    f"{key}={value} s is not a whole number (>= 1) of dt={dt} s bins ({ratio:.6g} bins); "
                    f"choose {key} as a multiple of dt, e.g. {max(round(ratio), 1) * dt:.6g}."
                )
        self._set_config(
            n_neurons=n_neurons,
            dt=dt,
            window=window,
            window_prev=window_prev,
            block_size=block_size,
            block_size_prev=block_size_prev,
            frame_window=frame_window,
            frame_rate=frame_rate,
            reference_compat=bool(reference_compat),
        )
        self.n_neurons = n_neurons
        self.dt = dt
        self.window = window
        self.window_prev = window_prev
        self.block_size = block_size
        self.block_size_prev = block_size_prev
        self.frame_window = frame_window
        self.frame_rate = frame_rate
        self.reference_compat = bool(reference_compat)
        self._w_bins = round(window / dt)
        self._wp_bins = round(window_prev / dt)
        self._id_dtype = _smallest_int(self.id_vocab_size - 1)
        self._dt_dtype = _smallest_int(self.dt_vocab_size - 1)
        self._unit_dtype = _smallest_int(n_neurons - 1)

    # --- vocabulary (layout in SpikeVocabulary) ----------------------------------------------------
    @property
    def n_dt(self) -> int:
        """K, the number of numeric dt tokens (offsets ``0, dt, ..., (K-1) dt``)."""
        return max(self._w_bins, self._wp_bins) + 1

    @property
    def dt_values(self) -> np.ndarray:
        """Seconds of the numeric dt tokens, ``(K,)`` float64 (token ``k`` <-> ``k * dt``)."""
        return np.round(np.arange(self.n_dt) * self.dt, 9)

    @property
    def n_frames(self) -> int:
        """Frames per stimulus clip, ``ceil(frame_rate * frame_window)``."""
        return max(1, math.ceil(self.frame_rate * self.frame_window - _GRID_TOL))

    # --- public encoding API ------------------------------------------------------------------------
    def encode(self, spike_times: Any, unit_ids: Any, intervals: Any) -> dict[str, np.ndarray]:
        """Tokenize a spike-time recording for every interval.

        Args:
            spike_times: ``(n_spikes,)`` spike times in seconds (any order; finite).
            unit_ids: ``(n_spikes,)`` neuron index of each spike, integers in ``[0, n_neurons)``.
            intervals: ``(n,)`` interval values ``t`` (END of each current window), seconds.

        Returns:
            Dict of numpy arrays, one row per interval:
            ``id``, ``dt`` ``(n, S+1)``; ``id_prev``, ``dt_prev`` ``(n, Sp+1)`` (int16, or int32 for
            vocabularies above 32767); ``pad``, ``pad_prev``, ``n_events``, ``n_events_prev``,
            ``n_truncated``, ``n_truncated_prev`` ``(n,)`` int32; ``interval`` ``(n,)`` float64;
            ``curr_window``, ``prev_window`` ``(n, 2)`` float64 [start, end) seconds.

        Raises:
            ValueError: NaN/Inf times, mismatched lengths, neuron ids outside ``[0, n_neurons)``.
            TypeError: non-numeric times or non-integer neuron ids.
        """
        times = np.asarray(spike_times)
        units = np.asarray(unit_ids)
        if times.ndim != 1 or units.ndim != 1:
            raise DataError(
                f"spike_times and unit_ids must be 1-D, got shapes {times.shape} and {units.shape}; "
                "flatten them or pass one (n_spikes,) array each."
            )
        if times.shape != units.shape:
            raise DataError(
                f"spike_times has {times.size} entries but unit_ids has {units.size}; they must pair up "
                "one neuron id per spike."
            )
        if not (np.issubdtype(times.dtype, np.integer) or np.issubdtype(times.dtype, np.floating)):
            raise TypeError(f"spike_times must be real numbers (seconds), got dtype {times.dtype}.")
        times = times.astype(np.float64, copy=False)
        if times.size and not np.isfinite(times).all():
            bad = int(np.count_nonzero(~np.isfinite(times)))
            raise DataError(f"spike_times holds {bad} NaN/Inf value(s); drop or fix those spikes before tokenizing.")
        units = self._check_units(units)

        # Bin once, bin = floor(t / dt + eps), straight into one (bin, neuron) sort key. The float
        # work runs in fixed-size chunks so that no recording-sized float64 temporary is allocated.
        n = self.n_neurons
        lo_bin = _time_to_bin(times.min(), self.dt) if times.size else 0
        hi_bin = _time_to_bin(times.max(), self.dt) if times.size else 0
        # int32 key when it fits: faster sort and half the memory of int64.
        key_dtype = np.int32 if (hi_bin - lo_bin + 1) * n < np.iinfo(np.int32).max else np.int64
        key = np.empty(times.size, dtype=key_dtype)
        buf = np.empty(min(times.size, _CHUNK), dtype=np.float64)
        for i in range(0, times.size, _CHUNK):
            chunk = buf[: min(_CHUNK, times.size - i)]
            np.divide(times[i : i + _CHUNK], self.dt, out=chunk)
            chunk += _BIN_EPS
            np.floor(chunk, out=chunk)
            chunk -= lo_bin
            key[i : i + chunk.size] = chunk
        del buf
        key *= key_dtype(n)
        key += units
        if key.size > 1 and not (key[1:] >= key[:-1]).all():
            key.sort()
            units = np.empty(key.size, dtype=self._unit_dtype)
            # in place: key becomes the relative bin, units the neuron of the sorted events
            np.divmod(key, key_dtype(n), out=(key, units), casting="unsafe")
        else:  # already in (bin, neuron) order: keep the caller's units untouched
            np.floor_divide(key, key_dtype(n), out=key)
        rel_bins, units_sorted = key, units
        return self._encode_sorted(rel_bins, units_sorted, lo_bin, intervals)

    def encode_raster(self, counts: Any, intervals: Any, *, convert: str | None = None) -> dict[str, np.ndarray]:
        """Tokenize a spike-count raster binned at ``dt`` (bin ``i`` covers ``[i dt, (i+1) dt)``).

        Args:
            counts: ``(N, T)`` non-negative spike counts (neurons, bins).
            intervals: ``(n,)`` interval values ``t`` (END of each current window), seconds.
            convert: how to turn non-integer float counts into integers: ``"round"`` (half to even,
                like the reference's Python ``round``) or ``"floor"``. Integer-valued floats need
                no conversion.

        Returns:
            Same dict as ``encode``.

        Raises:
            ValueError: wrong shape, NaN/Inf, negative or (without ``convert``) non-integer counts.
            TypeError: non-numeric counts.
        """
        if convert not in _CONVERT:
            raise ConfigError(f"convert must be one of {_CONVERT}, got {convert!r}.")
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[0] != self.n_neurons:
            raise DataError(
                f"counts must have shape (n_neurons={self.n_neurons}, bins), got {counts.shape}"
                + ("; it looks transposed, pass counts.T." if counts.ndim == 2 and counts.shape[1] == self.n_neurons else ".")
            )
        if counts.dtype == np.bool_:
            counts = counts.astype(np.int8)
        if np.issubdtype(counts.dtype, np.floating):
            if not np.isfinite(counts).all():
                raise DataError(
                    f"counts holds {int(np.count_nonzero(~np.isfinite(counts)))} NaN/Inf value(s); "
                    "replace them (e.g. np.nan_to_num) before tokenizing."
                )
            if (counts < 0).any():
                raise DataError(f"counts holds negative values (min {counts.min():g}); spike counts must be >= 0.")
            if convert == "round":
                counts = np.rint(counts)
            elif convert == "floor":
                counts = np.floor(counts)
            elif not (counts == np.floor(counts)).all():
                raise DataError(
                    "counts holds non-integer values (e.g. rates or calcium traces); convert them to spike "
                    "counts first, or pass convert='round' or convert='floor'."
                )
        elif np.issubdtype(counts.dtype, np.integer):
            if counts.size and counts.min() < 0:
                raise DataError(f"counts holds negative values (min {counts.min()}); spike counts must be >= 0.")
        else:
            raise TypeError(f"counts must be a numeric array, got dtype {counts.dtype}.")

        # nonzero of the (bins, neurons) view returns entries in (bin, neuron) order: already sorted.
        view = counts.T
        bins, units = np.nonzero(view)
        reps = view[bins, units].astype(np.int64)
        if reps.size and reps.max() > 1:
            bins = np.repeat(bins, reps)
            units = np.repeat(units, reps)
        bin_dtype = np.int32 if counts.shape[1] < np.iinfo(np.int32).max else np.int64
        return self._encode_sorted(bins.astype(bin_dtype), units.astype(self._unit_dtype), 0, intervals)

    def frame_slice(self, t: Any, n_available_frames: int) -> tuple[Any, Any]:
        """Stimulus frames ``[start, stop)`` of the clip for interval ``t`` (scalar or array).

        Default: the newest frame is the one covering ``[t - 1/rate, t)`` (the clip ends with the
        current window). ``reference_compat``: it covers ``[t, t + 1/rate)`` (T8 look-ahead). The
        clip is shifted to stay inside ``[0, n_available_frames)``.

        Returns:
            ``(start, stop)`` as ints for scalar ``t``, else as ``(n,)`` int64 arrays.
        """
        n_frames = self.n_frames
        if n_available_frames < n_frames:
            raise DataError(
                f"the stimulus has {n_available_frames} frames but a clip needs {n_frames} "
                f"(frame_window={self.frame_window} s at {self.frame_rate} Hz); shorten frame_window."
            )
        t_arr = np.asarray(t, dtype=np.float64)
        if not np.isfinite(t_arr).all():
            raise DataError("frame_slice got a NaN/Inf interval; pass finite interval ends in seconds.")
        frame_period = 1.0 / self.frame_rate  # 1/20 == 0.05 exactly as in the reference's division
        end_time = t_arr + self.window if self.reference_compat else t_arr
        stop = np.rint(end_time / frame_period).astype(np.int64)
        stop = np.minimum(np.maximum(stop, n_frames), n_available_frames)
        start = stop - n_frames
        if t_arr.ndim == 0:
            return int(start), int(stop)
        return start, stop

    def decode(self, id_seq: Any, dt_seq: Any, window_start: float) -> tuple[np.ndarray, np.ndarray]:
        """Turn one token sequence back into spikes (bin-start times).

        Special tokens (SOS/EOS/PAD) are dropped; tokens after the first EOS are ignored (a generator
        may continue past it).

        Args:
            id_seq: ``(L,)`` ID tokens.
            dt_seq: ``(L,)`` dt tokens aligned with ``id_seq``.
            window_start: start of the window in seconds (``curr_window[:, 0]`` of ``encode``).

        Returns:
            ``(spike_times (n,) float64, unit_ids (n,) int64)``.
        """
        ids = np.asarray(id_seq).astype(np.int64).reshape(-1)
        dts = np.asarray(dt_seq).astype(np.int64).reshape(-1)
        if ids.shape != dts.shape:
            raise DataError(f"id_seq ({ids.size} tokens) and dt_seq ({dts.size} tokens) must have the same length.")
        eos = np.flatnonzero(ids == self.id_eos)
        if eos.size:
            ids, dts = ids[: eos[0]], dts[: eos[0]]
        is_event = (ids >= 0) & (ids < self.n_neurons)
        ids, dts = ids[is_event], dts[is_event]
        bad = (dts < 0) | (dts >= self.n_dt)
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} neuron token(s) carry a non-numeric dt token (e.g. {int(dts[bad][0])}; numeric "
                f"dts are 0..{self.n_dt - 1}); sample dt only from the numeric part of the vocabulary."
            )
        start_bin = int(np.rint(float(window_start) / self.dt))
        if self.reference_compat:
            start_bin = max(start_bin, 0)  # T3: windows starting at <= 0 carry absolute dts
        times = np.round((start_bin + dts) * self.dt, 9)
        return times, ids

    def intervals(self, duration: float, start: float = 0.0) -> np.ndarray:
        """Interval ends ``t = start + k * window`` (k = 1, 2, ...) with ``t <= start + duration``.

        Every current window ``[t - window, t)`` then lies inside ``[start, start + duration]``.

        Returns:
            ``(n,)`` float64, rounded to 9 decimals.
        """
        if not (math.isfinite(duration) and math.isfinite(start)) or duration < 0:
            raise DataError(f"duration must be finite and >= 0 and start finite, got {duration}, {start}.")
        n = math.floor(duration / self.window + _GRID_TOL)
        return np.round(start + self.window * np.arange(1, n + 1), 9)

    # --- internals --------------------------------------------------------------------------------
    def _check_units(self, units: np.ndarray) -> np.ndarray:
        """Validate neuron ids and return them in the compact unit dtype."""
        if np.issubdtype(units.dtype, np.floating):
            if units.size and not (np.isfinite(units).all() and (units == np.floor(units)).all()):
                raise TypeError("unit_ids must be integer neuron indices; got non-integer (or NaN/Inf) floats.")
        elif not np.issubdtype(units.dtype, np.integer):
            raise TypeError(f"unit_ids must be integer neuron indices, got dtype {units.dtype}.")
        if units.size:
            lo, hi = units.min(), units.max()
            if lo < 0 or hi >= self.n_neurons:
                raise DataError(
                    f"unit_ids range over [{lo:g}, {hi:g}] but the tokenizer has n_neurons={self.n_neurons} "
                    f"(valid ids 0..{self.n_neurons - 1}); remap the ids or build the tokenizer with more neurons."
                )
        return units.astype(self._unit_dtype, copy=False)

    def _window_bins(self, intervals: Any) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(intervals, dtype=np.float64)
        if t.ndim != 1:
            raise DataError(f"intervals must be 1-D (one end time per sample), got shape {t.shape}.")
        if not np.isfinite(t).all():
            raise DataError("intervals holds NaN/Inf; pass finite window end times in seconds.")
        # start bin = round((t - w) / dt), as the reference's grid rounding (T1); off-grid t snap.
        start = np.rint((t - self.window) / self.dt).astype(np.int64)
        return t, start

    def _encode_sorted(
        self, rel_bins: np.ndarray, units: np.ndarray, bin_offset: int, intervals: Any
    ) -> dict[str, np.ndarray]:
        """Tokenize events sorted by (bin, neuron); event bins are ``rel_bins + bin_offset``."""
        t, start = self._window_bins(intervals)
        curr = (start, start + self._w_bins)
        prev = (start - self._wp_bins, start)
        out: dict[str, np.ndarray] = {"interval": t}
        out["curr_window"] = np.round(np.stack(curr, axis=1) * self.dt, 9)
        out["prev_window"] = np.round(np.stack(prev, axis=1) * self.dt, 9)
        summary = []
        for suffix, (lo_b, hi_b), block in (("", curr, self.block_size), ("_prev", prev, self.block_size_prev)):
            if self.reference_compat:
                # T3: every bin index <= 0 becomes 0 (negative window starts are clipped).
                lo_b, hi_b = np.maximum(lo_b, 0), np.maximum(hi_b, 0)
            ids, dts, n_events, n_kept = self._fill(rel_bins, units, lo_b - bin_offset, hi_b - bin_offset, block)
            out["id" + suffix] = ids
            out["dt" + suffix] = dts
            out["pad" + suffix] = (block - 1 - n_kept).astype(np.int32)
            out["n_events" + suffix] = n_events.astype(np.int32)
            out["n_truncated" + suffix] = (n_events - n_kept).astype(np.int32)
            dropped = n_events - n_kept
            if dropped.any():
                summary.append(
                    f"{'past' if suffix else 'current'} windows: {int(np.count_nonzero(dropped))} of {t.size} over "
                    f"{block - 2} events, {int(dropped.sum())} earliest events dropped"
                )
        if summary:
            logger.warning(
                "SpikeTokenizer truncation (keeps the last block_size-2 events per window): %s. "
                "Per-window counts are in n_truncated / n_truncated_prev; raise block_size to keep more.",
                "; ".join(summary),
            )
        return out

    def _fill(
        self, bins: np.ndarray, units: np.ndarray, lo_bin: np.ndarray, hi_bin: np.ndarray, block: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Build the ``(n, block+1)`` ID and dt arrays of one stream.

        Args:
            bins, units: events sorted by (bin, neuron), bins relative to the caller's offset.
            lo_bin, hi_bin: ``(n,)`` window bins ``[lo, hi)`` in the same relative units; dts are
                measured from ``lo_bin``.
            block: block size S.

        Returns:
            ``(ids, dts, n_events, n_kept)``.
        """
        n = lo_bin.size
        width = block + 1
        # Query in the events' dtype so that searchsorted does not copy the whole event array.
        info = np.iinfo(bins.dtype)
        lo_q = np.clip(lo_bin, info.min, info.max).astype(bins.dtype)
        hi_q = np.clip(hi_bin, info.min, info.max).astype(bins.dtype)
        lo = np.searchsorted(bins, lo_q, side="left")
        hi = np.searchsorted(bins, hi_q, side="left")
        n_events = hi - lo
        n_kept = np.minimum(n_events, block - 2)  # T4: keep the LAST S-2 events
        first = hi - n_kept

        ids = np.full((n, width), self.id_pad, dtype=self._id_dtype)
        dts = np.full((n, width), self.dt_pad, dtype=self._dt_dtype)
        rows = np.arange(n)
        ids[:, 0] = self.id_sos
        ids[rows, n_kept + 1] = self.id_eos
        dts[rows, n_kept + 1] = self.dt_eos
        if self.reference_compat:
            # T6: the SOS position inherits the dt of the latest DROPPED event (0 without truncation).
            truncated = n_events > n_kept
            if truncated.any():
                last_dropped = bins[first[truncated] - 1].astype(np.int64)
                dts[truncated, 0] = last_dropped - lo_bin[truncated]
            dts[~truncated, 0] = 0
        else:
            dts[:, 0] = 0

        total = int(n_kept.sum())
        if total == 0:
            return ids, dts, n_events, n_kept
        # int32 positions when they fit: half the memory traffic of int64 for the same scatter speed.
        pos_dtype = np.int32 if max(n * width, int(hi[-1]) + 1) < np.iinfo(np.int32).max else np.int64
        offset = (np.cumsum(n_kept) - n_kept).astype(pos_dtype)  # first kept event of each row among all kept
        step = np.arange(total, dtype=pos_dtype)
        if n == 1 or np.array_equal(first[1:], hi[:-1]):
            # Windows tile the event list in order (e.g. consecutive past windows without truncation):
            # the kept events are one contiguous slice, no gather needed.
            ev_units = units[first[0] : hi[-1]]
            ev_bins = bins[first[0] : hi[-1]]
        else:
            src = np.repeat(first.astype(pos_dtype) - offset, n_kept)
            src += step
            ev_units = units[src]
            ev_bins = bins[src]
            del src
        dest = np.repeat((rows * width + 1).astype(pos_dtype) - offset, n_kept)
        dest += step
        del step
        ids.reshape(-1)[dest] = ev_units
        # dt = event bin - window start bin (T3 handled by the caller's clipping of lo_bin); in place.
        ev_dt = np.repeat(lo_bin.astype(bins.dtype), n_kept)
        np.subtract(ev_bins, ev_dt, out=ev_dt)
        dts.reshape(-1)[dest] = ev_dt
        return ids, dts, n_events, n_kept


def _time_to_bin(time: float, dt: float) -> int:
    """Bin index of one time, by exactly the rule the vectorised binning uses."""
    return int(np.floor(np.float64(time) / dt + _BIN_EPS))


def _as_int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{key} must be an int, got {value!r}.")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}.")
    return int(value)


def _as_positive_float(key: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{key} must be a number of seconds (or Hz), got {value!r}.")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be finite and > 0, got {value}.")
    return value
