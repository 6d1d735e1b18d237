"""Embedded default spike data: a brian2 network of leaky integrate-and-fire neurons.

The network is the offline stand-in for a two-photon / Neuropixels recording of mouse visual
cortex during running (the Neuroformer "visnav" setting) and for the paper's simulated hub
network (ground-truth connectivity with a few hub neurons, `../shared/specs/neuroformer.md` §5):

1. 100 current-based LIF neurons (80 excitatory, 20 inhibitory), tau_m = 20 ms, rest -70 mV,
   threshold -50 mV, reset -60 mV, 2 ms refractory period.
2. Random recurrent connections with probability 0.05 (no autapses) as instantaneous voltage
   jumps: +1.0 mV per excitatory spike, -4.0 mV per inhibitory spike. 1 mV sits in the
   0.5-1.5 mV range of unitary EPSPs between cortical L2/3 pyramidal cells; inhibition is 4x
   stronger so that the 4:1 E:I population is roughly balanced (Brunel 2000, g = 4). Three
   excitatory "hub" neurons each add projections to 30 random targets at 3x the excitatory
   weight (3 mV, a strong but observed unitary EPSP). Delays are uniform in [1, 4] ms.
   These values were set once and are not tuned to any model metric.
3. Background drive: a constant input (with per-neuron jitter) plus white noise, set once so
   that mean rates lie in 5-15 Hz (fluctuation-driven regime, mean voltage below threshold).
4. Stimulus: drifting crops of scikit-image photographs (`stimulus.py`) at 20 Hz, seen through
   random zero-mean Gabor receptive fields; neuron i gets `gain(t) * stim_gain * z_i(frame)`,
   where z is the RF projection in units of its standard deviation over the movie.
5. Behaviour: running speed, `scale * softplus(OU)` with a 2 s time constant, sampled at 20 Hz.
   It multiplies the stimulus drive (`gain = speed / speed_ref`) and the crop's drift speed.

`data.seed` picks the realisation of everything random (network, receptive fields, movie,
running speed, noise): seed 0 is for development, seeds 1 and 2 for reporting.

The simulation uses brian2's numpy code generation (no compiler needed) and a single
`Network.run` call; 300 s of 100 neurons at dt = 0.5 ms takes about 35 s on one core.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import numpy as np

from neurofound.data.cache import cached
from neurofound.data.records import SpikeRecording
from neurofound.data.stimulus import (
    DEFAULT_IMAGES,
    drifting_crops,
    gabor_receptive_fields,
    load_images,
    running_speed,
)
from neurofound.errors import ConfigError

# Bump whenever the generated data for a given config changes (it is part of the cache key).
CODE_VERSION = "lif-1"


def cache_version() -> str:
    """`CODE_VERSION` plus the installed brian2 version: the cache key's simulator version.

    brian2 draws the noise; another brian2 release may give other spikes for the same config and
    seed, so its cached recordings must not be reused.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{CODE_VERSION}+brian2-{version('brian2')}"
    except PackageNotFoundError:
        return f"{CODE_VERSION}+brian2-missing"

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "duration": 300.0,  # s
    "dt": 0.0005,  # s, simulation step
    # --- neurons
    "n_exc": 80,
    "n_inh": 20,
    "tau_m_ms": 20.0,
    "v_rest_mv": -70.0,
    "v_thresh_mv": -50.0,
    "v_reset_mv": -60.0,
    "refractory_ms": 2.0,
    # --- connectivity (fixed from the literature, see the module docstring)
    "p_connect": 0.05,
    "w_exc_mv": 1.0,
    "w_inh_mv": -4.0,
    "n_hubs": 3,
    "hub_targets": 30,
    "hub_weight_factor": 3.0,
    "delay_ms": [1.0, 4.0],
    # --- background drive (set once for 5-15 Hz mean rates)
    "drive_mv": 14.5,
    "drive_jitter_mv": 1.0,
    "noise_mv": 4.0,
    # --- stimulus
    "stim_gain_mv": 3.0,
    "frame_rate": 20.0,
    "frame_height": 32,
    "frame_width": 56,
    "images": list(DEFAULT_IMAGES),
    "image_short_side": 96,
    "scene_duration": 5.0,  # s
    "drift_px_per_s": 20.0,
    # --- behaviour
    "speed_tau_s": 2.0,
    "speed_scale_cm_s": 10.0,
    "speed_ref_cm_s": 8.0,
}


def _like(default: Any, value: Any, key: str) -> Any:
    """`value` converted to the type of `default` (lists element-wise)."""
    try:
        if isinstance(default, list):
            value = list(value)
            return [_like(d, v, key) for d, v in zip(default, value)] + value[len(default):]
        if isinstance(default, bool) or isinstance(default, str):
            return value
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            if int(value) != value:
                raise ConfigError(f"LIF simulation key {key!r} must be an integer, got {value!r}")
            return int(value)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"LIF simulation key {key!r}: {value!r} is not a {type(default).__name__}") from err
    return value


def lif_config(config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Full simulation config: `DEFAULT_CONFIG` updated with `config` and `overrides`.

    Unknown keys raise a `ConfigError` naming them (a typo must not silently fall back to a
    default and hit a stale cache entry). Values take the type of their default (`duration=300`
    is `300.0`), so equal configs are equal dicts and share one cache entry.
    """
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    update = {**(config or {}), **overrides}
    unknown = sorted(set(update) - set(cfg))
    if unknown:
        raise ConfigError(f"unknown LIF simulation keys {unknown}; valid keys: {sorted(cfg)}")
    cfg.update(update)
    for key, value in cfg.items():
        cfg[key] = _like(DEFAULT_CONFIG[key], value, key)
    if cfg["duration"] <= 0 or cfg["dt"] <= 0:
        raise ConfigError(f"duration and dt must be > 0, got {cfg['duration']} and {cfg['dt']}")
    if cfg["n_hubs"] > cfg["n_exc"]:
        raise ConfigError(f"n_hubs ({cfg['n_hubs']}) cannot exceed n_exc ({cfg['n_exc']})")
    return cfg


def build_connectivity(cfg: dict[str, Any], rng: np.random.Generator):
    """Ground-truth connectivity.

    Returns:
        weights: (N, N) `W[target, source]` in mV (0 = no synapse, diagonal always 0).
        delays: (N, N) synaptic delays in ms where `weights != 0`.
        hubs: (n_hubs,) indices of the hub neurons (excitatory).
    """
    n_exc, n = cfg["n_exc"], cfg["n_exc"] + cfg["n_inh"]
    connected = rng.random((n, n)) < cfg["p_connect"]
    np.fill_diagonal(connected, False)
    source_weight = np.where(np.arange(n) < n_exc, cfg["w_exc_mv"], cfg["w_inh_mv"])
    weights = connected * source_weight[None, :]
    hubs = np.sort(rng.choice(n_exc, size=cfg["n_hubs"], replace=False))
    for hub in hubs:
        others = np.delete(np.arange(n), hub)
        targets = rng.choice(others, size=min(cfg["hub_targets"], n - 1), replace=False)
        # A hub's projection replaces any random synapse onto the same target.
        weights[targets, hub] = cfg["hub_weight_factor"] * cfg["w_exc_mv"]
    lo, hi = cfg["delay_ms"]
    delays = np.where(weights != 0, rng.uniform(lo, hi, size=(n, n)), 0.0)
    return weights, delays, hubs


def _run_brian(cfg, weights, delays, drive, stim_mv, v0, seed) -> tuple[np.ndarray, np.ndarray]:
    """Run the network once; returns spike times (s) and unit ids."""
    import brian2 as b2
    from brian2 import Hz, ms, mV, second  # noqa: F401  (units used in namespaces)

    b2.prefs.codegen.target = "numpy"
    b2.seed(seed)
    n = weights.shape[0]
    sim_dt = cfg["dt"] * second
    stim = b2.TimedArray(stim_mv * mV, dt=(1.0 / cfg["frame_rate"]) * second)
    eqs = """
    dv/dt = (v_rest - v + mu + stim(t, i) + sigma * sqrt(tau_m) * xi) / tau_m : volt (unless refractory)
    mu : volt (constant)
    """
    namespace = {
        "v_rest": cfg["v_rest_mv"] * mV,
        "tau_m": cfg["tau_m_ms"] * ms,
        "sigma": cfg["noise_mv"] * mV,
        "stim": stim,
    }
    group = b2.NeuronGroup(
        n,
        eqs,
        threshold=f"v > {cfg['v_thresh_mv']}*mV",
        reset=f"v = {cfg['v_reset_mv']}*mV",
        refractory=cfg["refractory_ms"] * ms,
        method="euler",
        namespace=namespace,
        dt=sim_dt,
    )
    group.v = v0 * mV
    group.mu = drive * mV
    target, source = np.nonzero(weights)
    syn = b2.Synapses(group, group, "w : volt (constant)", on_pre="v_post += w", dt=sim_dt)
    syn.connect(i=source, j=target)
    syn.w = weights[target, source] * mV
    syn.delay = delays[target, source] * ms
    monitor = b2.SpikeMonitor(group)
    net = b2.Network(group, syn, monitor)
    net.run(cfg["duration"] * second)
    return np.asarray(monitor.t / second, dtype=np.float64), np.asarray(monitor.i, dtype=np.int64)


def _simulate(cfg: dict[str, Any]) -> SpikeRecording:
    seed = cfg["seed"]
    rng = np.random.default_rng([seed, 20240601])
    n = cfg["n_exc"] + cfg["n_inh"]
    n_frames = int(round(cfg["duration"] * cfg["frame_rate"]))
    h, w = cfg["frame_height"], cfg["frame_width"]

    weights, delays, hubs = build_connectivity(cfg, rng)
    speed = running_speed(
        n_frames, cfg["frame_rate"], tau=cfg["speed_tau_s"], scale=cfg["speed_scale_cm_s"], rng=rng
    )
    gain = speed / cfg["speed_ref_cm_s"]
    images = load_images(cfg["images"], cfg["image_short_side"])
    frames = drifting_crops(
        images,
        n_frames,
        height=h,
        width=w,
        frame_rate=cfg["frame_rate"],
        scene_duration=cfg["scene_duration"],
        drift_px_per_s=cfg["drift_px_per_s"],
        speed_gain=gain,
        rng=rng,
    )
    rfs = gabor_receptive_fields(n, h, w, rng=rng)
    projection = frames.reshape(n_frames, -1) @ rfs.reshape(n, -1).T  # (frames, neurons)
    projection = projection / (projection.std() + 1e-12)
    stim_mv = cfg["stim_gain_mv"] * gain[:, None] * projection
    drive = cfg["drive_mv"] + cfg["drive_jitter_mv"] * rng.standard_normal(n)
    v0 = rng.uniform(cfg["v_reset_mv"], cfg["v_thresh_mv"], size=n)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # brian2 2.9 calls pyparsing's deprecated camelCase API; nothing for our users to act on.
        warnings.filterwarnings("ignore", message=".*deprecated - use")
        times, units = _run_brian(cfg, weights, delays, drive, stim_mv, v0, seed)
    wall = time.perf_counter() - t0
    # brian2 can stamp a spike exactly at the end of the run; keep the recording closed.
    keep = times <= cfg["duration"]
    return SpikeRecording(
        spike_times=times[keep],
        unit_ids=units[keep],
        n_neurons=n,
        duration=cfg["duration"],
        frames=frames,
        frame_rate=cfg["frame_rate"],
        behavior={"speed": (speed, cfg["frame_rate"])},
        true_weights=weights,
        hubs=hubs,
        meta={
            "source": "brian2-lif",
            "config": cfg,
            "code_version": CODE_VERSION,
            "excitatory": list(range(cfg["n_exc"])),
            "weights_unit": "mV (W[target, source])",
            "delays_ms": delays.tolist(),
            "sim_wall_s": wall,
        },
    )


def simulate_lif_network(
    config: dict[str, Any] | None = None, *, use_cache: bool = True, **overrides: Any
) -> SpikeRecording:
    """Simulate (or load from the cache) the embedded default spike recording.

    Args:
        config: simulation parameters overriding `DEFAULT_CONFIG` (e.g. `{"seed": 1}`).
        use_cache: read/write the Arrow cache under `$NEUROFOUND_CACHE` (keyed by the full
            config and `cache_version()`).
        **overrides: more overrides, e.g. `duration=5.0`.

    Returns:
        `SpikeRecording` with frames `(T, 32, 56)` at 20 Hz, behaviour `speed` at 20 Hz,
        `true_weights` `W[target, source]` (mV) and `hubs`.
    """
    cfg = lif_config(config, **overrides)
    return cached("lif", cfg, cache_version(), lambda: _simulate(cfg), record_type=SpikeRecording,
                  use_cache=use_cache)
