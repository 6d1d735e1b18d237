"""Read a Neurodata Without Borders (NWB) file into a `SpikeRecording` with pynwb.

What is read:

* the units table: every row is a unit (its row index is the unit id), `spike_times` its spikes;
* optional behaviour `TimeSeries`, found by name in `acquisition` or in the `behavior`
  processing module (directly or inside a container such as `BehavioralTimeSeries`), linearly
  interpolated onto a regular grid (`behavior_rate`, 20 Hz by default);
* an optional stimulus `ImageSeries` (in `stimulus` or `acquisition`), converted to grayscale
  float in [0, 1] and resampled to `frame_rate` by taking, for every frame slot, the most recent
  image shown at or before its start (nearest-previous);
* the trials table, if any, whose `start_time`/`stop_time` rows become the recording's trials and
  segments (`split_mode="auto"`, the NWB default, then holds out whole trials; without a trials
  table it holds out time blocks);
* the session's duration: the end of the units' `obs_intervals`, else the last timestamp of the
  series read and of the trials (not the last spike);
* optionally a ground-truth weight matrix from a `.npy` file (`W[target, source]`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from neurofound.data.records import SpikeRecording
from neurofound.errors import DataError, MissingFileError

log = logging.getLogger(__name__)


def _timestamps(series: Any) -> np.ndarray:
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64)
    n = len(series.data)
    start = float(series.starting_time or 0.0)
    return start + np.arange(n, dtype=np.float64) / float(series.rate)


def _series_by_name(nwbfile: Any) -> dict[str, Any]:
    """Every TimeSeries of acquisition and of the `behavior` processing module, by name."""
    found: dict[str, Any] = {}

    def visit(obj: Any) -> None:
        if hasattr(obj, "time_series"):  # BehavioralTimeSeries, Position, ... containers
            for name, ts in obj.time_series.items():
                found.setdefault(name, ts)
        elif hasattr(obj, "spatial_series"):
            for name, ts in obj.spatial_series.items():
                found.setdefault(name, ts)
        elif hasattr(obj, "data") and (hasattr(obj, "timestamps") or hasattr(obj, "rate")):
            found.setdefault(obj.name, obj)

    for obj in nwbfile.acquisition.values():
        visit(obj)
    for module_name in ("behavior", "behaviour"):
        if module_name in nwbfile.processing:
            for obj in nwbfile.processing[module_name].data_interfaces.values():
                visit(obj)
    return found


def _to_gray_unit(data: np.ndarray, name: str) -> np.ndarray:
    """(T, H, W[, C]) images -> (T, H, W) float32 in [0, 1]."""
    if np.issubdtype(data.dtype, np.integer):  # scale by the dtype range before mixing colours
        data = data.astype(np.float64) / float(np.iinfo(data.dtype).max)
    elif np.issubdtype(data.dtype, np.bool_):
        data = data.astype(np.float64)
    else:
        data = data.astype(np.float64)
        if not np.all(np.isfinite(data)):
            raise DataError(f"stimulus {name!r} contains NaN/Inf pixels")
        lo, hi = data.min(), data.max()
        if lo < 0 or hi > 1:  # arbitrary float units: stretch to [0, 1]
            data = (data - lo) / (hi - lo if hi > lo else 1.0)
    if data.ndim == 4:
        if data.shape[-1] in (3, 4):
            data = data[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
        elif data.shape[-1] == 1:
            data = data[..., 0]
        else:
            raise DataError(
                f"stimulus {name!r} has shape {data.shape}; expected (T, H, W) grayscale or "
                "(T, H, W, 3|4) colour images"
            )
    elif data.ndim != 3:
        raise DataError(f"stimulus {name!r} must be (T, H, W) images, got shape {data.shape}")
    return np.clip(data, 0.0, 1.0).astype(np.float32)


def _session_end(
    path: str, units: Any, flat: np.ndarray, trials: list[tuple[float, float]] | None, read_series: list[Any]
) -> float:
    """When the recording ends: the units' observation intervals when the file has them, else the
    last timestamp of any series read (behaviour, stimulus) or trial; never before the last spike.

    The last spike is only a fallback: a neuron that is silent for the last minutes of a
    session would otherwise shorten the recording and drop the behaviour of those minutes.
    """
    last_spike = float(flat.max()) if flat.size else 0.0
    if "obs_intervals" in units.colnames:
        intervals = np.asarray(units["obs_intervals_index"].target.data[:], dtype=np.float64).reshape(-1, 2)
        if intervals.size:
            return max(float(intervals[:, 1].max()), last_spike)
    ends = [float(ts[-1]) for ts in (_timestamps(series) for series in read_series) if ts.size]
    ends += [stop for _, stop in trials or ()]
    if not ends:
        log.warning(
            "%s has no units obs_intervals, no trials and no behaviour/stimulus series were read: the "
            "recording is taken to end at the last spike (%.6g s)", path, last_spike,
        )
        return last_spike
    return max(max(ends), last_spike)


def read_nwb(
    path: str | os.PathLike,
    behavior: list[str] | tuple[str, ...] = (),
    stimulus: str | None = None,
    true_weights: str | os.PathLike | None = None,
    *,
    behavior_rate: float = 20.0,
    frame_rate: float = 20.0,
) -> SpikeRecording:
    """Read spikes (and optionally behaviour, stimulus, trials, ground truth) from an NWB file.

    The recording's duration is the session's: the end of the units' `obs_intervals` when the
    file has them, else the last timestamp of the behaviour / stimulus series read and of the
    trials (never before the last spike; the last spike alone only when there is nothing else).

    Args:
        path: the `.nwb` file.
        behavior: names of behaviour TimeSeries to read (1-D data, or (n, 1)).
        stimulus: name of an ImageSeries to use as the stimulus movie, or None.
        true_weights: optional `.npy` file holding `W[target, source]`, shape (N, N).
        behavior_rate: rate (Hz) of the regular grid the behaviour is interpolated onto.
        frame_rate: rate (Hz) of the frame grid the stimulus is resampled onto.

    Returns:
        `SpikeRecording`; `meta["source"]` is the file path and `meta["unit_names"]` the
        units' ids as stored in the file. `trials` is None when the file has no trials table.
    """
    from pynwb import NWBHDF5IO

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingFileError(f"NWB file {path!r} does not exist")
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        units = nwbfile.units
        if units is None or len(units) == 0 or "spike_times" not in units.colnames:
            raise DataError(f"{path} has no units table with spike_times; cannot read spikes")
        # A ragged column: the index holds each unit's end offset into the flat spike times.
        index = units["spike_times_index"]
        flat = np.asarray(index.target.data[:], dtype=np.float64)
        ends = np.asarray(index.data[:], dtype=np.int64)
        n_neurons = len(ends)
        counts = np.diff(np.concatenate([[0], ends]))
        unit_ids = np.repeat(np.arange(n_neurons), counts)
        unit_names = np.asarray(units.id[:]).tolist()

        trials = None  # spontaneous recordings usually have no trials table
        if nwbfile.trials is not None and len(nwbfile.trials) > 0:
            trials = list(
                zip(
                    np.asarray(nwbfile.trials["start_time"][:], dtype=np.float64).tolist(),
                    np.asarray(nwbfile.trials["stop_time"][:], dtype=np.float64).tolist(),
                )
            )

        available = _series_by_name(nwbfile)
        missing = [name for name in behavior if name not in available]
        if missing:
            raise DataError(
                f"behaviour series {missing} not found in {path}; it has {sorted(available)} "
                "(searched acquisition and processing['behavior'])"
            )
        image_series = None
        if stimulus is not None:
            images = {**dict(nwbfile.acquisition), **dict(nwbfile.stimulus)}
            candidates = {k: v for k, v in images.items() if type(v).__name__.endswith("ImageSeries")}
            if stimulus not in candidates:
                raise DataError(
                    f"stimulus {stimulus!r} not found in {path}; its ImageSeries are "
                    f"{sorted(candidates)} (searched stimulus and acquisition)"
                )
            image_series = candidates[stimulus]

        read_series = [available[name] for name in behavior]
        if image_series is not None:
            read_series.append(image_series)
        duration = _session_end(path, units, flat, trials, read_series)
        if duration <= 0:
            raise DataError(f"{path} has neither spikes, trials nor series to define a duration")

        grid = np.arange(int(np.floor(duration * behavior_rate + 1e-9))) / behavior_rate
        beh = {}
        for name in behavior:
            series = available[name]
            values = np.asarray(series.data[:], dtype=np.float64)
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.ndim != 1:
                raise DataError(
                    f"behaviour series {name!r} has shape {values.shape}; only 1-D series are "
                    "supported (store each column as its own TimeSeries)"
                )
            if np.isnan(values).any():
                raise DataError(
                    f"behaviour series {name!r} contains {int(np.isnan(values).sum())} NaN "
                    "samples; linear interpolation would spread them, so fill them first"
                )
            beh[name] = (np.interp(grid, _timestamps(series), values), behavior_rate)

        frames = None
        if image_series is not None:
            if image_series.data is None or len(image_series.data) == 0:
                raise DataError(f"stimulus {stimulus!r} has no embedded image data (external file?)")
            images_arr = _to_gray_unit(np.asarray(image_series.data[:]), stimulus)
            shown_at = _timestamps(image_series)
            n_frames = int(np.floor(duration * frame_rate + 1e-9))
            slots = np.arange(n_frames) / frame_rate
            idx = np.clip(np.searchsorted(shown_at, slots + 1e-9, side="right") - 1, 0, None)
            frames = images_arr[idx]

    weights = None
    if true_weights is not None:
        if not os.path.exists(os.fspath(true_weights)):
            raise MissingFileError(f"true_weights file {os.fspath(true_weights)!r} does not exist")
        weights = np.load(os.fspath(true_weights))
        if weights.shape != (n_neurons, n_neurons):
            raise DataError(
                f"true_weights {true_weights} has shape {weights.shape}, expected "
                f"({n_neurons}, {n_neurons}) = (units, units) as W[target, source]"
            )
    return SpikeRecording(
        spike_times=flat,
        unit_ids=unit_ids,
        n_neurons=n_neurons,
        duration=duration,
        frames=frames,
        frame_rate=frame_rate,
        behavior=beh,
        segments=trials,
        trials=trials,
        true_weights=weights,
        meta={"source": path, "unit_names": unit_names},
    )
