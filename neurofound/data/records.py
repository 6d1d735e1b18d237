"""`SpikeRecording`: the modality-neutral record of a multi-neuron spiking experiment.

A recording holds sorted spike times with their unit ids, the number of units and the recording
duration, plus optional time-aligned side channels: a stimulus movie (`frames`), behaviour
variables each with its own sampling rate, independent stretches of time (`segments`), trials,
and, for simulations, the ground-truth connectivity. Everything is validated on construction so
that a reader or simulator bug surfaces as a clear error here rather than as a shape error deep
inside a model.

Recordings are saved as a folder of Arrow tables written with Hugging Face `datasets`
(`save`/`load`), which the on-disk cache (`neurofound.data.cache`) memory-maps on the second run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from neurofound.data.binning import bin_grid, bin_spikes
from neurofound.errors import ConfigError, DataError, MissingFileError

FORMAT_VERSION = 1
_META_FILE = "recording.json"


def _as_float_array(name: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric; could not convert it to float64 ({err})") from err
    return arr


@dataclass
class SpikeRecording:
    """Spike times of `n_neurons` units over `[0, duration]` seconds, with optional side channels.

    Args:
        spike_times: (n_spikes,) spike times in seconds, float64; sorted on construction
            (by time, then unit id).
        unit_ids: (n_spikes,) integer unit index of each spike, in `[0, n_neurons)`.
        n_neurons: number of units N (units that never fire still count).
        duration: recording length in seconds; every spike lies in `[0, duration]`.
        frames: optional stimulus movie `(T, H, W)`, float32, frame k covers
            `[k / frame_rate, (k + 1) / frame_rate)`.
        frame_rate: frames per second of `frames` (20 Hz for the embedded data).
        behavior: `{name: (values (n_samples,), rate_hz)}`; sample k is at time `k / rate_hz`.
        segments: list of `(start, stop)` independent stretches of time (default
            `[(0, duration)]`). Nothing that depends on history may straddle a boundary.
        trials: optional list of `(start, stop)` trials; splits use whole trials when present.
        true_weights: optional `(N, N)` ground-truth weights `W[target, source]`.
        hubs: optional indices of hub neurons (simulations).
        meta: free-form JSON-serialisable dict (`source`, `config`, ...).
    """

    format_version: ClassVar[int] = FORMAT_VERSION  # of `save`; part of the cache key

    spike_times: np.ndarray
    unit_ids: np.ndarray
    n_neurons: int
    duration: float
    frames: np.ndarray | None = None
    frame_rate: float = 20.0
    behavior: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    segments: list[tuple[float, float]] | None = None
    trials: list[tuple[float, float]] | None = None
    true_weights: np.ndarray | None = None
    hubs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate_core()
        self._validate_frames()
        self._validate_behavior()
        self._validate_intervals()
        self._validate_truth()
        self.meta = dict(self.meta or {})

    # ------------------------------------------------------------------ validation
    def _validate_core(self) -> None:
        if isinstance(self.n_neurons, bool) or int(self.n_neurons) != self.n_neurons or self.n_neurons < 1:
            raise DataError(f"n_neurons must be a positive integer, got {self.n_neurons!r}")
        self.n_neurons = int(self.n_neurons)
        self.duration = float(self.duration)
        if not math.isfinite(self.duration) or self.duration <= 0:
            raise DataError(f"duration must be a finite number of seconds > 0, got {self.duration}")
        times = _as_float_array("spike_times", self.spike_times).reshape(-1)
        units = np.asarray(self.unit_ids).reshape(-1)
        if times.shape != units.shape:
            raise DataError(
                f"spike_times and unit_ids must have the same length, got {times.shape[0]} times "
                f"and {units.shape[0]} unit ids"
            )
        if units.size and not np.issubdtype(units.dtype, np.integer):
            if not np.all(np.isfinite(units)) or not np.all(units == np.round(units)):
                raise TypeError("unit_ids must be integers (neuron indices); got non-integer values")
        units = units.astype(np.int64)
        bad = ~np.isfinite(times)
        if bad.any():
            raise DataError(
                f"spike_times contains {int(bad.sum())} NaN/Inf values (first at index "
                f"{int(np.flatnonzero(bad)[0])}); drop or fix them before building a SpikeRecording"
            )
        out = (times < 0) | (times > self.duration)
        if out.any():
            raise DataError(
                f"{int(out.sum())} spike times lie outside [0, duration={self.duration}] s "
                f"(min {times.min():.6g}, max {times.max():.6g}); shift times to start at 0 or pass "
                "a longer duration"
            )
        bad_units = (units < 0) | (units >= self.n_neurons)
        if bad_units.any():
            raise DataError(
                f"unit_ids must lie in [0, n_neurons={self.n_neurons}); got values from "
                f"{units.min()} to {units.max()}; pass the correct n_neurons or re-index the units"
            )
        order = np.lexsort((units, times))
        self.spike_times = times[order]
        self.unit_ids = units[order]

    def _validate_frames(self) -> None:
        self.frame_rate = float(self.frame_rate)
        if self.frames is None:
            return
        frames = np.asarray(self.frames)
        if frames.ndim != 3:
            raise DataError(
                f"frames must have shape (T, H, W) (grayscale movie), got ndim={frames.ndim} with "
                f"shape {frames.shape}; convert colour frames to grayscale first"
            )
        if not np.issubdtype(frames.dtype, np.floating):
            raise TypeError(
                f"frames must be float in [0, 1], got dtype {frames.dtype}; divide integer images "
                "by their maximum (e.g. 255) first"
            )
        frames = frames.astype(np.float32, copy=False)
        if not np.all(np.isfinite(frames)):
            raise DataError("frames contain NaN/Inf values")
        if not (math.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise DataError(f"frame_rate must be > 0 Hz, got {self.frame_rate}")
        self.frames = frames

    def _validate_behavior(self) -> None:
        behavior = {}
        for name, item in (self.behavior or {}).items():
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"behavior[{name!r}] must be a (values, rate_hz) pair, got {type(item).__name__}"
                )
            values, rate = item
            values = _as_float_array(f"behavior[{name!r}]", values)
            if values.ndim != 1:
                raise DataError(f"behavior[{name!r}] values must be 1-D, got shape {values.shape}")
            if not np.all(np.isfinite(values)):
                n_bad = int((~np.isfinite(values)).sum())
                raise DataError(
                    f"behavior[{name!r}] contains {n_bad} NaN/Inf samples; interpolate or drop "
                    "them before building a SpikeRecording"
                )
            rate = float(rate)
            if not (math.isfinite(rate) and rate > 0):
                raise DataError(f"behavior[{name!r}] rate must be > 0 Hz, got {rate}")
            behavior[str(name)] = (values, rate)
        self.behavior = behavior

    def _check_spans(self, name: str, spans) -> list[tuple[float, float]]:
        out = []
        for span in spans:
            start, stop = (float(v) for v in span)
            if not (0.0 <= start < stop <= self.duration + 1e-9):
                raise DataError(
                    f"{name} entry ({start}, {stop}) must satisfy 0 <= start < stop <= duration "
                    f"({self.duration})"
                )
            out.append((start, min(stop, self.duration)))
        out.sort()
        for (a0, a1), (b0, _) in zip(out, out[1:]):
            if b0 < a1 - 1e-9:
                raise DataError(f"{name} overlap: ({a0}, {a1}) and one starting at {b0}")
        return out

    def _validate_intervals(self) -> None:
        if self.segments is None or len(self.segments) == 0:
            self.segments = [(0.0, self.duration)]
        self.segments = self._check_spans("segments", self.segments)
        if self.trials is not None:
            self.trials = self._check_spans("trials", self.trials) or None

    def _validate_truth(self) -> None:
        n = self.n_neurons
        if self.true_weights is not None:
            w = _as_float_array("true_weights", self.true_weights)
            if w.shape != (n, n):
                raise DataError(f"true_weights must have shape (N, N) = ({n}, {n}), got {w.shape}")
            self.true_weights = w
        if self.hubs is not None:
            hubs = np.asarray(self.hubs, dtype=np.int64).reshape(-1)
            if hubs.size and (hubs.min() < 0 or hubs.max() >= n):
                raise DataError(f"hubs must be neuron indices in [0, {n}), got {hubs.tolist()}")
            self.hubs = hubs

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_raster(
        cls, counts: np.ndarray, dt: float, convert: str | None = None, **kwargs: Any
    ) -> "SpikeRecording":
        """Build a recording from binned spike counts.

        A count c in bin k gives c spikes at time `k * dt` (bin start), the same convention as
        `SpikeTokenizer.encode_raster`, so that re-binning at `dt` returns the raster exactly.

        Args:
            counts: (N, T) non-negative spike counts binned at `dt` seconds.
            dt: bin width in seconds.
            convert: how to turn non-integer values (e.g. deconvolved calcium) into counts:
                None (refuse), "round" or "floor".
            **kwargs: forwarded to the constructor (frames, behavior, ...); `duration` defaults
                to `T * dt`.

        Returns:
            A `SpikeRecording` with `n_neurons = N`.
        """
        counts = np.asarray(counts)
        if counts.ndim != 2:
            raise ConfigError(f"counts must be a (N, T) raster, got shape {counts.shape}")
        if not (dt > 0):
            raise ConfigError(f"dt must be > 0 s, got {dt}")
        values = counts.astype(np.float64)
        if np.isnan(values).any():
            raise DataError("counts contain NaN; fill or drop the missing bins first")
        if np.isinf(values).any():
            raise DataError("counts contain Inf values")
        if (values < 0).any():
            raise DataError(
                f"counts must be >= 0 (spike counts), got a minimum of {values.min():.6g}; "
                "baseline-corrected traces need a spike inference step first"
            )
        if convert is None:
            if not np.all(values == np.round(values)):
                raise DataError(
                    "counts contain non-integer values (e.g. calcium traces or rates); pass "
                    "convert='round' or convert='floor' to turn them into spike counts explicitly"
                )
        elif convert == "round":
            values = np.round(values)
        elif convert == "floor":
            values = np.floor(values)
        else:
            raise ConfigError(f"convert must be None, 'round' or 'floor', got {convert!r}")
        n, t = values.shape
        c = values.astype(np.int64)
        unit_idx, bin_idx = np.nonzero(c)
        reps = c[unit_idx, bin_idx]
        times = np.repeat(bin_idx * float(dt), reps)
        units = np.repeat(unit_idx, reps)
        kwargs.setdefault("duration", t * float(dt))
        return cls(spike_times=times, unit_ids=units, n_neurons=n, **kwargs)

    # ------------------------------------------------------------------ views
    @property
    def n_spikes(self) -> int:
        return int(self.spike_times.size)

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        return None if self.frames is None else tuple(int(s) for s in self.frames.shape[1:])

    def rates(self) -> np.ndarray:
        """Mean firing rate of every unit in Hz, shape (N,)."""
        return np.bincount(self.unit_ids, minlength=self.n_neurons) / self.duration

    def raster(self, bin_size: float, start: float = 0.0, stop: float | None = None) -> np.ndarray:
        """Spike counts (N, T) int64 in bins `[start + k * bin_size, start + (k + 1) * bin_size)`
        over `[start, stop)` (default the whole recording); see `neurofound.data.binning`."""
        stop = self.duration if stop is None else stop
        grid = bin_grid(start, stop, bin_size)
        return bin_spikes(self.spike_times, self.unit_ids, self.n_neurons, grid, bin_size)

    def __repr__(self) -> str:
        extras = []
        if self.frames is not None:
            extras.append(f"frames={tuple(self.frames.shape)}@{self.frame_rate:g}Hz")
        if self.behavior:
            extras.append("behavior=" + ",".join(self.behavior))
        if self.true_weights is not None:
            extras.append("true_weights")
        return (
            f"SpikeRecording(n_neurons={self.n_neurons}, duration={self.duration:g}s, "
            f"n_spikes={self.n_spikes}, segments={len(self.segments)}"
            + ("".join(", " + e for e in extras))
            + ")"
        )

    # ------------------------------------------------------------------ Arrow I/O
    def save(self, directory: str | os.PathLike) -> None:
        """Write the recording as Arrow tables (HF `datasets.save_to_disk`) plus `recording.json`.

        The folder is written next to its destination and renamed into place, so a crashed run
        never leaves a half-written cache entry.
        """
        import datasets
        import pyarrow as pa
        from datasets.table import InMemoryTable

        def as_dataset(table: pa.Table) -> datasets.Dataset:
            return datasets.Dataset(InMemoryTable(table))

        directory = os.fspath(directory)
        tmp = directory + ".tmp-" + str(os.getpid())
        shutil.rmtree(tmp, ignore_errors=True)
        parts = {
            "spikes": as_dataset(
                pa.table({"time": self.spike_times, "unit": self.unit_ids.astype(np.int32)})
            )
        }
        if self.frames is not None:
            t, h, w = self.frames.shape
            flat = pa.array(np.ascontiguousarray(self.frames).reshape(-1), type=pa.float32())
            parts["frames"] = as_dataset(
                pa.table({"frame": pa.FixedSizeListArray.from_arrays(flat, h * w)})
            )
        for i, (name, (values, _)) in enumerate(self.behavior.items()):
            parts[f"behavior_{i}"] = as_dataset(pa.table({"value": values}))
        if self.true_weights is not None:
            n = self.n_neurons
            flat = pa.array(self.true_weights.reshape(-1), type=pa.float64())
            parts["weights"] = as_dataset(
                pa.table({"row": pa.FixedSizeListArray.from_arrays(flat, n)})
            )
        # The save progress bars are noise for a cache write; restore the user's setting after.
        bars_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            datasets.DatasetDict(parts).save_to_disk(tmp)
        finally:
            if bars_on:
                datasets.enable_progress_bars()
        header = {
            "format_version": FORMAT_VERSION,
            "n_neurons": self.n_neurons,
            "duration": self.duration,
            "frame_rate": self.frame_rate,
            "frame_shape": None if self.frames is None else list(self.frames.shape),
            "behavior": [[name, rate] for name, (_, rate) in self.behavior.items()],
            "segments": [list(s) for s in self.segments],
            "trials": None if self.trials is None else [list(s) for s in self.trials],
            "hubs": None if self.hubs is None else self.hubs.tolist(),
            "meta": self.meta,
        }
        with open(os.path.join(tmp, _META_FILE), "w") as f:
            json.dump(header, f, indent=1, default=_json_default)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
        os.replace(tmp, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SpikeRecording":
        """Load a recording written by `save` (memory-mapped Arrow, then copied to numpy)."""
        import datasets

        directory = os.fspath(directory)
        meta_path = os.path.join(directory, _META_FILE)
        if not os.path.exists(meta_path):
            raise MissingFileError(f"{directory} is not a saved SpikeRecording (no {_META_FILE})")
        with open(meta_path) as f:
            header = json.load(f)
        if header.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{directory} was written with format_version {header.get('format_version')}, this "
                f"code reads {FORMAT_VERSION}; delete the folder to regenerate it"
            )
        parts = datasets.load_from_disk(directory)

        def column(part: str, name: str):
            return parts[part].data.table.column(name).combine_chunks()

        frames = None
        if header["frame_shape"] is not None:
            frames = column("frames", "frame").flatten().to_numpy().reshape(header["frame_shape"])
        behavior = {
            name: (column(f"behavior_{i}", "value").to_numpy().copy(), rate)
            for i, (name, rate) in enumerate(header["behavior"])
        }
        weights = None
        if "weights" in parts:
            n = header["n_neurons"]
            weights = column("weights", "row").flatten().to_numpy().reshape(n, n).copy()
        return cls(
            spike_times=column("spikes", "time").to_numpy().copy(),
            unit_ids=column("spikes", "unit").to_numpy().astype(np.int64),
            n_neurons=header["n_neurons"],
            duration=header["duration"],
            frames=None if frames is None else frames.astype(np.float32, copy=True),
            frame_rate=header["frame_rate"],
            behavior=behavior,
            segments=[tuple(s) for s in header["segments"]],
            trials=None if header["trials"] is None else [tuple(s) for s in header["trials"]],
            true_weights=weights,
            hubs=header["hubs"],
            meta=header["meta"],
        )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON-serialisable")
