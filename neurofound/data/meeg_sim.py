"""Embedded default EEG/MEG data (simulator v1): cortical dipoles in MNE's 4-layer sphere seen through six real devices.

No real raw EEG/MEG installs offline (`../shared/specs/data.md` §3-§4), so the default BrainOmni data
are simulated from what MNE does ship: real sensor definitions (standard montages, the canonical
Neuromag-306 / CTF-151 / CTF-275 helmets with their coil types) and its forward model. Each recording
is an `mne.io.RawArray` at its device's NATIVE rate, with real MNE channel info, and then goes
through the same preprocessing as a user's file (`neurofound.data.mne_io.to_recording`: notch,
resampling to 256 Hz, band-pass, bad-channel detection and interpolation), so that preprocessing
really runs on simulated line noise and bad channels. The parameters fixed by issue 6 ("Embedded
default data") are implemented as given; every choice the issue leaves open is listed here.

**Head model** (seed-independent, built once, gains cached on disk):

1. MNE's 4-layer sphere (`mne.make_sphere_model`: relative radii 0.90/0.92/0.97/1, conductivities
   0.33/1/0.004/0.33 S/m), radius 95 mm, centre r0 = (0, 10, 40) mm in the head frame (it fits the
   10-20 cap: MNE's own sphere fit to `standard_1020` gives (-1, 14, 37) mm, 99 mm).
2. 1,000 dipoles on a cortical shell: area-uniform (Fibonacci) directions over the cap above
   cos(polar angle) = -0.55 (down to the temporal poles; no cerebellum), radius U(70, 82) mm (the
   brain sphere ends at 85.5 mm; the jitter stands for gyral crowns and sulcal depths). Orientations
   mimic folded cortex: tilted from the outward radial direction by U(0, 90) degrees, towards a
   uniformly random tangential direction (crowns radial, sulcal walls tangential), so that the
   sphere's MEG, which is blind to radial dipoles, sees most of them. Positions and orientations come
   from a fixed generator (`ANATOMY_SEED`), never from `data.seed`.
3. Functional generators are single dipoles of that shell, chosen once: the dipole nearest to
   76 mm along the direction (from r0) of a 10-20 electrode, among those tilted 30-60 degrees (a
   sulcal wall, seen by both EEG and MEG, as the calcarine, rolandic and supratemporal generators
   are): occipital alpha under O1 and O2; the hand areas under C3 (right hand) and C4 (left hand),
   the foot area under Cz; auditory cortex (N1) under T7 and T8; the P3 generator under Pz.
4. The ocular source: one dipole per eye at 80 mm from r0 towards the eyes (the sphere has no
   orbits, so the source sits just inside the brain sphere, behind the eyes), along the anterior
   corneo-retinal axis (0, 1, 0): a blink is the lid sliding over the positive cornea, which
   modulates that dipole as seen from the forehead. With the average reference this gives the
   textbook topography: Fp1/Fp2 150 µV, F3/Fz/F4 ~40 µV, Cz ~-15 µV, O1/O2 ~-60 µV (an upward,
   Bell's-phenomenon orientation would put the maximum at F3/Fz/F4, not at Fp1/Fp2).
5. Devices (`DEVICES`): EEG 10-20 (19 channels of `standard_1020`, which MNE >= 1.13 calls
   `colin27_1020`), GSN-HydroCel-128 (its 128 electrodes; the vertex reference is not a channel),
   biosemi64, all in the head frame through `set_montage`; Neuromag-306, CTF-151 and CTF-275 from
   `mne.channels.read_meg_canonical_info` (CTF-275 has 274 channels, as real systems do). The
   device-to-head transform is a pure translation that centres each helmet's best-fit sensor sphere
   on r0 (device axes = head axes, x right, y anterior, z up): sensor-to-scalp gaps of 25-27 mm at
   the vertex and >= 9.6 mm everywhere (CTF-151's lowest rim).
6. Gains: `mne.make_forward_solution` on a discrete source space (free orientation, then projected
   on each dipole's orientation), one matrix per device. EEG is simulated against the average
   reference of the device's channels (the gain's mean over channels is subtracted): the forward
   model is reference-free, and public datasets are mostly shared re-referenced to the average.

**Sources per subject** (redrawn by `data.seed`):

* 200 background dipoles (drawn among the non-functional ones), each with independent 1/f^beta
  activity, beta ~ U(1, 2) per dipole, flat below 1 Hz, 15 nAm RMS each: the expected RMS of the
  continuous process over 0-500 Hz, the fastest device's band; a device that samples slower records
  the same process without its part above the Nyquist (at 250 Hz up to 19 % of the power for
  beta = 1, 3 % for beta = 1.5).
* Occipital alpha: two independent narrowband processes (left and right generators), IAF ~ N(10, 1)
  Hz per subject (clipped to 7-13 Hz), Gaussian spectral peak of s.d. 0.8 Hz (waxing and waning
  bursts of ~0.3 s), 40 nAm RMS each with eyes open, x2 in amplitude with eyes closed (0.5-s
  raised-cosine transitions).
* Mu (11 Hz, s.d. 0.8 Hz, 30 nAm RMS) and beta (21 Hz, s.d. 2 Hz, 15 nAm RMS) over each of the left
  hand, right hand and foot areas: independent narrowband processes, i.e. waxing and waning.
  Amplitudes are not fixed by the issue: set once so that the mu peak over C3/C4 stands out of the
  background as in awake EEG.

**Paradigms** (the labels are unused in pretraining): drawn per session with probabilities 40 %
rest, 30 % motor imagery, 30 % auditory oddball (a group of n sessions gets floor(n p) of each, the
remainder drawn with probabilities proportional to the fractional parts).

* Rest: 20-s blocks alternating eyes open / eyes closed (the first block's state drawn), in
  `meta["blocks"]` as `{"onset", "duration", "condition"}` (seconds).
* Motor imagery: 2 s of rest, then trials of a cue (MNE event at its onset, `{"left": 1, "right": 2,
  "feet": 3}`), 4 s of imagery and U(1.5, 2.5) s of rest; classes balanced (each class equally
  often, shuffled; pretraining sessions repeat a shuffled triplet as often as the duration allows).
  During imagery the contralateral area's mu and beta power drops by the subject's ERD depth
  ~ U(15 %, 45 %) (power, the ERD convention; amplitude x sqrt(1 - depth)); the ipsilateral area's
  power rises 10 % (ERS). Left hand: right-hemisphere hand area contralateral, left one ipsilateral;
  right hand the reverse; feet: the foot area contralateral, both hand areas ipsilateral ("focal
  ERD / surround ERS"). The foot area is left alone by hand imagery. 0.5-s raised-cosine onset and
  offset ramps.
* Auditory oddball: tones from 1 s on, every U(0.9, 1.1) s, exactly 20 % of them deviants (random
  positions); events `{"standard": 10, "deviant": 11}` at the tone onsets. Every tone evokes an N1
  (bilateral auditory dipoles, Gaussian of s.d. 20 ms peaking at 100 ms); deviants add a P3 (the Pz
  dipole, s.d. 80 ms, peak at 350 ms). The moments are set ONCE from the 10-20 gains (average
  reference) so that the N1 peak is -4 µV at Cz and the P3 peak +8 µV at Pz (`erp_calibration`);
  a single deviant's P3 is then well below the ongoing EEG (SNR < 0 dB, see `erp_snr_db`).

**Noise and artefacts:**

* Sensor noise, white: EEG 1.5 µV RMS per sample; MAG 4 fT/sqrt(Hz), planar GRAD 4 fT/cm/sqrt(Hz),
  CTF axial gradiometers 5 fT/sqrt(Hz) (RMS per sample = density * sqrt(fs / 2)).
* Line noise at 50 or 60 Hz (per session: the simultaneous recordings of a session share their lab),
  harmonics x2 and x3 below the device's Nyquist at relative amplitudes 0.3 and 0.1; first-harmonic
  amplitude per channel `line_amplitude` x U(0.5, 1.5) (EEG 5 µV, MAG 0.5 pT, planar GRAD
  1 pT/m = 10 fT/cm, CTF 50 fT: the axial gradiometers reject the far field), phase common to the
  recording plus a per-channel jitter of s.d. 0.2 rad.
* Blinks: 15 per minute with eyes open (gamma-distributed intervals, shape 4; none with eyes closed),
  asymmetric raised-cosine pulses (rise 150 ms, fall 250 ms) scaled U(0.8, 1.2) per blink, through
  the ocular source. The source is scaled per modality (the sphere cannot place it in the orbits):
  EEG moment so that the mean blink peak at the 10-20 Fp1/Fp2 is 150 µV, MEG moment so that the
  largest Neuromag magnetometer peak (a frontal one) is 1.5 pT; each moment then serves every device
  of its modality.
* EMG bursts: 2 per minute (Poisson), U(0.5, 2) s long, over the left, right or both temporalis
  muscles (on the scalp sphere, direction (+-1, 0.2, -0.1) from r0); broadband 20-150 Hz noise
  independent per channel, weighted by exp(-d^2 / (2 * 30 mm^2)) with d the sensor-muscle distance,
  RMS at weight 1 (x U(0.5, 1.5) per burst): EEG 20 µV, MAG 0.5 pT, planar GRAD 10 pT/m (0.1 pT/cm),
  CTF 0.4 pT; 0.1-s raised-cosine edges. The burst times are the subject's (shared by simultaneous
  recordings), the per-channel noise the recording's.
* Bad channels: one per EEG recording and, with probability 1/4, one per MEG recording; a uniformly
  drawn channel and kind: "flat" (constant zero), "nan" (every sample NaN, as a dead channel exported
  by some systems) or "noisy" (white noise of 10x the channel's RMS added: the log-PSD rule's
  case). The truth is in `meta["bad_channel"]`; the preprocessing must find it.

**Native rates:** 10-20 250 Hz, GSN-HydroCel-128 500, biosemi64 512, Neuromag-306 1000, CTF 600.

**Corpus** (`SIZES`): pretraining devices (splits "train" and "val"): 10-20, GSN-HydroCel-128,
Neuromag-306, CTF-151; held out of every stage (splits "unseen" and "downstream"): biosemi64 and
CTF-275. Sessions recorded on several devices (held-in test: the four pretraining devices;
unseen-device test: both held-out devices) are SIMULTANEOUS: one source activity (every source
process is synthesised on a frequency grid shared by all rates, then sampled at each device's
times), projected through each device; they share the subject id, the sensor noise, line noise
and bad channel are each recording's own. About 12 % of the held-out devices' sensors lie within
5 mm of a pretraining sensor of the same modality (`near_sensor_fraction`: biosemi64 0 %, CTF-275
15 %).

Sizes: "full" = 10 subjects x 30 s per pretraining device (different subjects per device) + 1
validation subject per device; 2 held-in test subjects (x 4 devices, simultaneous); 3 unseen-device
subjects (x 2); 8 downstream subjects per held-out device, 30 motor-imagery trials each (about
182 s). "ci" = the same structure with 2 subjects x 10 s, 1 validation, 1 test and 1 unseen subject,
5 downstream subjects (five subject-wise folds) x 9 trials (3 per class: 10 cannot be balanced).
Subject ids: `sub-<split>-<device>-<i>` (`sub-test-<i>`, `sub-unseen-<i>` for simultaneous sessions).
Each `SensorRecording.meta` holds, besides `mne_io.to_recording`'s (`preprocessing` steps,
`bad_channels` found, `native_sfreq`, ...): `paradigm`, `line_freq`, `bad_channel` (the truth:
name and kind, or None), `blocks`, `iaf_hz`, `erd_depth`, `emg_bursts`, `simultaneous_devices`.

`data.seed` redraws the subjects only (their source parameters, paradigms, events, artefacts,
noise and bad channels); the head model, dipoles, generators, calibration and gains never change.

**Measured** (seed 0 tuned, seeds 1-2 reported; `amplitude_statistics`: median over channels of the
RMS of the 1-40 Hz band-passed raw): EEG 11-14 µV (10-20, GSN-128, biosemi64), Neuromag MAG
0.51-0.58 pT, planar GRAD 110-120 fT/cm, CTF 0.41-0.45 pT. Calibrated moments: N1 40 nAm per
auditory dipole, P3 49 nAm. Single-trial P3 SNR at Pz (`erp_snr_db`): -8, -6, -3.5 dB for seeds
0-2. Speed on one core: the full corpus simulates and preprocesses in 100-135 s (simulation ~40 s,
MNE preprocessing ~60 s, of which the MEG field interpolation of bad channels is ~30 s), the ci
corpus in ~21 s; a cached corpus loads in ~3 s (full) / 0.4 s (ci).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from neurofound.data.cache import cached
from neurofound.data.sensors import SensorCorpus
from neurofound.errors import ConfigError, DataError

if TYPE_CHECKING:  # annotations only: mne is imported where it is used
    import mne

SIM_VERSION = "v1"
ANATOMY_SEED = 20240617  # the fixed generator of the dipoles' positions and orientations (never data.seed)
F_REF = 500.0  # Hz: the band over which a source's RMS is defined (the fastest device's Nyquist)
_BLOCK_BINS = 512  # frequency bins per random block: a source's coefficients do not depend on a device's rate

EEG_1020_19 = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
               "P7", "P3", "Pz", "P4", "P8", "O1", "O2")


@dataclass(frozen=True)
class Device:
    """A recording device: its MNE sensor definition, native rate and role."""

    name: str
    modality: str  # "EEG" | "MEG"
    definition: str  # montage name (EEG) or canonical MEG info name
    sfreq: float  # native sampling rate (Hz)
    pretrain: bool  # seen in pretraining (train/val/test) or held out (unseen/downstream)
    channels: tuple[str, ...] | None = None  # a subset of the montage (None: all of it)


DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("standard_1020_19", "EEG", "standard_1020", 250.0, True, EEG_1020_19),
    Device("GSN-HydroCel-128", "EEG", "GSN-HydroCel-128", 500.0, True),
    Device("neuromag306", "MEG", "neuromag", 1000.0, True),
    Device("ctf151", "MEG", "ctf151", 600.0, True),
    Device("biosemi64", "EEG", "biosemi64", 512.0, False),
    Device("ctf275", "MEG", "ctf275", 600.0, False),
)}
PRETRAIN_DEVICES: tuple[str, ...] = tuple(n for n, d in DEVICES.items() if d.pretrain)
HELDOUT_DEVICES: tuple[str, ...] = tuple(n for n, d in DEVICES.items() if not d.pretrain)
_DEVICE_CODE = {name: i for i, name in enumerate(DEVICES)}

PARADIGMS: tuple[str, ...] = ("rest", "motor_imagery", "oddball")
MI_EVENT_ID = {"left": 1, "right": 2, "feet": 3}
ODDBALL_EVENT_ID = {"standard": 10, "deviant": 11}
BAD_KINDS: tuple[str, ...] = ("flat", "nan", "noisy")
COMPONENTS: tuple[str, ...] = ("background", "alpha", "mu_beta", "erp", "blink", "emg", "sensor_noise", "line",
                               "bad_channel")
# noise classes of the sensors: EEG, Neuromag magnetometer, planar gradiometer, CTF axial gradiometer
_NOISE_CLASSES = ("eeg", "mag", "planar", "axial")

# Functional generators: (name, 10-20 electrode whose direction from r0 they lie under).
_GENERATORS = (("alpha_left", "O1"), ("alpha_right", "O2"), ("hand_right", "C3"), ("hand_left", "C4"),
               ("feet", "Cz"), ("auditory_left", "T7"), ("auditory_right", "T8"), ("p3", "Pz"))
_AREAS = ("hand_left", "hand_right", "feet")  # named by the limb: hand_left = right-hemisphere hand area
# motor imagery: (contralateral area, ipsilateral areas) per class
_MI_AREAS = {"left": ("hand_left", ("hand_right",)), "right": ("hand_right", ("hand_left",)),
             "feet": ("feet", ("hand_left", "hand_right"))}

DEFAULT_CONFIG: dict[str, Any] = {
    # --- head model (seed-independent; module docstring "Head model")
    "head_radius_m": 0.095,
    "head_r0_m": [0.0, 0.010, 0.040],
    "n_dipoles": 1000,
    "shell_radius_m": [0.070, 0.082],
    "shell_min_cos": -0.55,
    "generator_depth_m": 0.076,
    "generator_tilt_deg": [30.0, 60.0],
    "ocular_radius_m": 0.080,
    # --- sources
    "n_background": 200,
    "background_rms_nam": 15.0,
    "background_beta": [1.0, 2.0],
    "background_knee_hz": 1.0,
    "alpha_iaf_hz": [10.0, 1.0],  # mean, s.d.
    "alpha_iaf_clip_hz": [7.0, 13.0],
    "alpha_rms_nam": 40.0,
    "alpha_eyes_closed_gain": 2.0,
    "alpha_sd_hz": 0.8,
    "mu_hz": 11.0,
    "mu_sd_hz": 0.8,
    "mu_rms_nam": 30.0,
    "beta_hz": 21.0,
    "beta_sd_hz": 2.0,
    "beta_rms_nam": 15.0,
    # --- paradigms
    "paradigm_probs": [0.4, 0.3, 0.3],  # rest, motor imagery, oddball
    "rest_block_s": 20.0,
    "transition_s": 0.5,
    "mi_lead_s": 2.0,
    "mi_trial_s": 4.0,
    "mi_rest_s": [1.5, 2.5],
    "erd_depth": [0.15, 0.45],
    "ers_gain": 0.10,
    "oddball_start_s": 1.0,
    "oddball_soa_s": [0.9, 1.1],
    "oddball_deviant_frac": 0.2,
    "n1_latency_s": 0.100,
    "n1_sd_s": 0.020,
    "n1_cz_uv": -4.0,
    "p3_latency_s": 0.350,
    "p3_sd_s": 0.080,
    "p3_pz_uv": 8.0,
    # --- noise and artefacts
    "eeg_noise_uv": 1.5,
    "mag_noise_ft_rthz": 4.0,
    "grad_noise_ft_cm_rthz": 4.0,
    "ctf_noise_ft_rthz": 5.0,
    "line_freqs_hz": [50.0, 60.0],
    "line_harmonics": [1.0, 0.3, 0.1],
    "line_amplitude": {"eeg": 5e-6, "mag": 0.5e-12, "planar": 1e-12, "axial": 0.05e-12},
    "line_phase_jitter_rad": 0.2,
    "blink_per_min": 15.0,
    "blink_interval_shape": 4.0,
    "blink_rise_s": 0.15,
    "blink_fall_s": 0.25,
    "blink_eeg_uv": 150.0,
    "blink_meg_pt": 1.5,
    "emg_per_min": 2.0,
    "emg_duration_s": [0.5, 2.0],
    "emg_band_hz": [20.0, 150.0],
    "emg_sd_m": 0.030,
    "emg_amplitude": {"eeg": 20e-6, "mag": 0.5e-12, "planar": 1e-11, "axial": 0.4e-12},
    "bad_meg_prob": 0.25,
    "bad_noisy_factor": 10.0,
}

# Corpus sizes (module docstring "Corpus"); `seconds` is the length of every non-downstream recording.
SIZES: dict[str, dict[str, Any]] = {
    "full": {"train_subjects": 10, "val_subjects": 1, "test_subjects": 2, "unseen_subjects": 3,
             "downstream_subjects": 8, "downstream_trials": 30, "seconds": 30.0},
    "ci": {"train_subjects": 2, "val_subjects": 1, "test_subjects": 1, "unseen_subjects": 1,
           "downstream_subjects": 5, "downstream_trials": 9, "seconds": 10.0},
}


def code_version() -> str:
    """The cache key's simulator version: `SIM_VERSION` plus the MNE release (its forward model and filters)."""
    import mne

    return f"{SIM_VERSION}+mne{mne.__version__}"


# ================================================================================================================
# configuration
# ================================================================================================================
def _like(default: Any, value: Any, key: str) -> Any:
    try:
        if isinstance(default, dict):
            if not isinstance(value, Mapping) or set(value) != set(default):
                raise ConfigError(f"simulator key {key!r} must be a dict with keys {sorted(default)}, got {value!r}")
            return {k: _like(default[k], value[k], f"{key}.{k}") for k in default}
        if isinstance(default, list):
            value = list(value)
            if len(value) != len(default):
                raise ConfigError(f"simulator key {key!r} must be a list of {len(default)} numbers, got {value!r}")
            return [_like(d, v, key) for d, v in zip(default, value)]
        if isinstance(default, bool) or isinstance(default, str):
            return value
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            if int(value) != value:
                raise ConfigError(f"simulator key {key!r} must be an integer, got {value!r}")
            return int(value)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"simulator key {key!r}: {value!r} is not a {type(default).__name__}") from err
    return value


def sim_config(seed: int = 0, size: str = "full", preprocessing: dict | None = None,
               **overrides: Any) -> dict[str, Any]:
    """The FULL simulator config (the cache key): version, size, seed, every parameter and the preprocessing.

    Args:
        seed: redraws the subjects (`data.seed`).
        size: "full" or "ci" (`SIZES`).
        preprocessing: `neurofound.data.mne_io.PreprocessConfig` fields (defaults filled in).
        **overrides: any key of `DEFAULT_CONFIG` or of the size (`train_subjects`, `seconds`, ...).

    Raises:
        ConfigError: an unknown size or key, or a value of the wrong type.
    """
    from neurofound.data.mne_io import PreprocessConfig

    if size not in SIZES:
        raise ConfigError(f"unknown simulator size {size!r}; use one of {sorted(SIZES)} (data.size=...)")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ConfigError(f"data.seed must be a non-negative integer, got {seed!r}")
    cfg = {**copy.deepcopy(DEFAULT_CONFIG), **copy.deepcopy(SIZES[size])}
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ConfigError(f"unknown simulator keys {unknown}; valid keys: {sorted(cfg)}")
    defaults = {**DEFAULT_CONFIG, **SIZES[size]}
    for key, value in overrides.items():
        cfg[key] = _like(defaults[key], value, key)
    if abs(sum(cfg["paradigm_probs"]) - 1) > 1e-9 or min(cfg["paradigm_probs"]) < 0:
        raise ConfigError(f"paradigm_probs must be 3 non-negative numbers summing to 1 (rest, motor imagery, "
                          f"oddball), got {cfg['paradigm_probs']}")
    if cfg["seconds"] < 4 or cfg["downstream_trials"] < 3:
        raise ConfigError(f"seconds must be >= 4 and downstream_trials >= 3, got {cfg['seconds']} and "
                          f"{cfg['downstream_trials']}")
    if not 0 < cfg["n_background"] <= cfg["n_dipoles"] - len(_GENERATORS):
        raise ConfigError(f"n_background must be in 1..{cfg['n_dipoles'] - len(_GENERATORS)}, got "
                          f"{cfg['n_background']}")
    try:
        pp = PreprocessConfig(**(preprocessing or {})).to_dict()
    except TypeError as err:
        raise ConfigError(f"data.preprocessing: {err}; valid fields: {sorted(PreprocessConfig().to_dict())}") from err
    return {"simulator": "meeg_sim", "version": SIM_VERSION, "size": size, "seed": int(seed), **cfg,
            "preprocessing": pp}


_GEOMETRY_KEYS = ("head_radius_m", "head_r0_m", "n_dipoles", "shell_radius_m", "shell_min_cos", "generator_depth_m",
                  "generator_tilt_deg", "ocular_radius_m")


# ================================================================================================================
# devices and head model
# ================================================================================================================
def _fit_sphere(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre of `(n, 3)` points."""
    a = np.c_[2 * points, np.ones(len(points))]
    sol = np.linalg.lstsq(a, (points ** 2).sum(1), rcond=None)[0]
    return sol[:3]


def _montage(name: str):
    import mne

    from neurofound.data.mne_io import montage_name

    return mne.channels.make_standard_montage(montage_name(name))


def device_info(device: str, sfreq: float | None = None, r0: Sequence[float] = (0.0, 0.010, 0.040)) -> "mne.Info":
    """Real MNE measurement info of a device at `sfreq` (default: its native rate).

    EEG: the montage's positions (head frame). MEG: the canonical sensor definitions (positions,
    orientations, coil types) in the device frame, with `dev_head_t` the translation that centres
    the helmet's best-fit sensor sphere on `r0` (module docstring, head model item 5).

    Raises:
        ConfigError: an unknown device.
    """
    import mne

    if device not in DEVICES:
        raise ConfigError(f"unknown simulated device {device!r}; use one of {list(DEVICES)}")
    dev = DEVICES[device]
    sfreq = float(sfreq or dev.sfreq)
    if dev.modality == "EEG":
        montage = _montage(dev.definition)
        names = list(dev.channels or montage.ch_names)
        info = mne.create_info(names, sfreq, "eeg")
        with mne.utils.use_log_level("error"):
            info.set_montage(montage)
        return info
    canonical = mne.channels.read_meg_canonical_info(dev.definition)
    types = ["grad" if int(ch["coil_type"]) == mne.io.constants.FIFF.FIFFV_COIL_VV_PLANAR_T1 else "mag"
             for ch in canonical["chs"]]
    info = mne.create_info(canonical["ch_names"], sfreq, types)
    for ch, ref in zip(info["chs"], canonical["chs"]):
        for key in ("coil_type", "unit", "unit_mul", "kind", "coord_frame"):
            ch[key] = ref[key]
        ch["loc"] = np.array(ref["loc"], dtype=np.float64)
    centre = _fit_sphere(np.array([ch["loc"][:3] for ch in canonical["chs"]]))
    trans = np.eye(4)
    trans[:3, 3] = np.asarray(r0, dtype=np.float64) - centre
    info["dev_head_t"] = mne.transforms.Transform("meg", "head", trans)
    return info


def sensor_positions_head(info) -> np.ndarray:
    """`(C, 3)` sensor positions in the head frame (MEG through `dev_head_t`)."""
    import mne
    from mne.io.constants import FIFF

    pos = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    is_meg = np.array([int(ch["kind"]) == FIFF.FIFFV_MEG_CH for ch in info["chs"]])
    if is_meg.any():
        pos[is_meg] = mne.transforms.apply_trans(info["dev_head_t"], pos[is_meg])
    return pos


def noise_classes(info) -> np.ndarray:
    """`(C,)` noise class per channel: "eeg", "mag" (Neuromag), "planar" (Neuromag) or "axial" (CTF)."""
    from mne.io.constants import FIFF

    out = []
    for ch in info["chs"]:
        coil = int(ch["coil_type"])
        if int(ch["kind"]) == FIFF.FIFFV_EEG_CH:
            out.append("eeg")
        elif coil == FIFF.FIFFV_COIL_VV_PLANAR_T1:
            out.append("planar")
        elif coil == FIFF.FIFFV_COIL_VV_MAG_T3:
            out.append("mag")
        elif coil == FIFF.FIFFV_COIL_CTF_GRAD:
            out.append("axial")
        else:
            raise DataError(f"channel {ch['ch_name']}: coil type {coil} is not one the simulator models")
    return np.array(out)


class GainSet:
    """The head model's arrays (dipoles, generators, ocular source, per-device gains), cached on disk.

    `arrays`: `rr`, `nn` `(N, 3)` cortical dipoles (head frame, m); `ocular_rr`, `ocular_nn` `(2, 3)`;
    `generators` `(len(_GENERATORS),)` dipole indices; `gain/<device>` `(C, N + 2)` in V/(A m), T/(A m)
    or T/m/(A m) (the last two columns: the ocular dipoles), EEG average-referenced.
    """

    format_version = 1

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None):
        self.arrays, self.meta = arrays, dict(meta or {})

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "gains.npz", **{k.replace("/", "__"): v for k, v in self.arrays.items()})
        (directory / "meta.json").write_text(json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "GainSet":
        directory = Path(directory)
        with np.load(directory / "gains.npz") as z:
            arrays = {k.replace("__", "/"): z[k] for k in z.files}
        return cls(arrays, json.loads((directory / "meta.json").read_text()))


@dataclass
class HeadModel:
    """The fixed head model: dipoles, generators, ocular source and every device's gain (module docstring)."""

    rr: np.ndarray
    nn: np.ndarray
    ocular_rr: np.ndarray
    ocular_nn: np.ndarray
    generators: dict[str, int]
    gains: dict[str, np.ndarray]
    infos: dict[str, Any]
    config: dict[str, Any]

    @property
    def n_dipoles(self) -> int:
        return int(len(self.rr))

    def gain(self, device: str) -> np.ndarray:
        """`(C, N + 2)` gain of `device` (cortical dipoles, then the two ocular dipoles)."""
        return self.gains[device]

    def channel(self, device: str, name: str) -> int:
        return self.infos[device]["ch_names"].index(name)


def _shell(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """1,000 cortical dipoles: Fibonacci directions over the cap, jittered radius, folded-cortex orientations."""
    rng = np.random.default_rng(ANATOMY_SEED)
    n, zmin = cfg["n_dipoles"], cfg["shell_min_cos"]
    i = np.arange(n) + 0.5
    z = 1 - (1 - zmin) * i / n  # z uniform on the cap = uniform in area
    phi = i * np.pi * (3 - np.sqrt(5))  # golden angle
    u = np.c_[np.sqrt(1 - z ** 2) * np.cos(phi), np.sqrt(1 - z ** 2) * np.sin(phi), z]
    lo, hi = cfg["shell_radius_m"]
    radius = rng.uniform(lo, hi, n)
    rr = np.asarray(cfg["head_r0_m"]) + u * radius[:, None]
    # tangent frame at each point (the pole z=1 is never sampled: z < 1 - (1 - zmin) / 2n)
    t1 = np.cross([0.0, 0.0, 1.0], u)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(u, t1)
    tilt = rng.uniform(0, np.pi / 2, n)
    azimuth = rng.uniform(0, 2 * np.pi, n)
    nn = (np.cos(tilt)[:, None] * u
          + np.sin(tilt)[:, None] * (np.cos(azimuth)[:, None] * t1 + np.sin(azimuth)[:, None] * t2))
    return rr, nn / np.linalg.norm(nn, axis=1, keepdims=True)


def _generators(cfg: dict[str, Any], rr: np.ndarray, nn: np.ndarray) -> dict[str, int]:
    r0 = np.asarray(cfg["head_r0_m"])
    info = device_info("standard_1020_19")
    pos = dict(zip(info["ch_names"], sensor_positions_head(info)))
    radial = (rr - r0) / np.linalg.norm(rr - r0, axis=1, keepdims=True)
    tilt = np.degrees(np.arccos(np.clip((radial * nn).sum(1), -1, 1)))
    lo, hi = cfg["generator_tilt_deg"]
    candidates = np.flatnonzero((tilt >= lo) & (tilt <= hi))
    chosen: dict[str, int] = {}
    for name, electrode in _GENERATORS:
        direction = (pos[electrode] - r0) / np.linalg.norm(pos[electrode] - r0)
        target = r0 + cfg["generator_depth_m"] * direction
        free = np.array([c for c in candidates if c not in chosen.values()])
        chosen[name] = int(free[np.argmin(np.linalg.norm(rr[free] - target, axis=1))])
    return chosen


def _ocular(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    r0 = np.asarray(cfg["head_r0_m"])
    info = device_info("standard_1020_19")
    nasion = next(d["r"] for d in info["dig"] if int(d["ident"]) == 2 and int(d["kind"]) == 1)
    eyes = np.array([nasion + [-0.032, -0.025, -0.015], nasion + [0.032, -0.025, -0.015]])
    direction = (eyes - r0) / np.linalg.norm(eyes - r0, axis=1, keepdims=True)
    rr = r0 + cfg["ocular_radius_m"] * direction
    nn = np.tile(np.array([0.0, 1.0, 0.0]), (2, 1))  # the corneo-retinal axis (module docstring, item 4)
    return rr, nn


def _build_gains(cfg: dict[str, Any]) -> GainSet:
    import mne

    rr, nn = _shell(cfg)
    ocular_rr, ocular_nn = _ocular(cfg)
    generators = _generators(cfg, rr, nn)
    sphere = mne.make_sphere_model(r0=tuple(cfg["head_r0_m"]), head_radius=cfg["head_radius_m"], verbose="error")
    all_rr, all_nn = np.r_[rr, ocular_rr], np.r_[nn, ocular_nn]
    src = mne.setup_volume_source_space(pos=dict(rr=all_rr, nn=all_nn), sphere=sphere, verbose="error")
    trans = mne.transforms.Transform("head", "mri")  # identity: the sources are given in the head frame
    arrays = {"rr": rr, "nn": nn, "ocular_rr": ocular_rr, "ocular_nn": ocular_nn,
              "generators": np.array([generators[n] for n, _ in _GENERATORS])}
    for name, dev in DEVICES.items():
        info = device_info(name, r0=cfg["head_r0_m"])
        fwd = mne.make_forward_solution(info, trans, src, sphere, meg=dev.modality == "MEG",
                                        eeg=dev.modality == "EEG", mindist=0.0, verbose="error")
        if fwd["nsource"] != len(all_rr):
            raise DataError(f"{name}: the forward model kept {fwd['nsource']} of {len(all_rr)} dipoles; the shell "
                            f"must lie inside the brain sphere (shell_radius_m, ocular_radius_m)")
        free = fwd["sol"]["data"].reshape(len(info["ch_names"]), len(all_rr), 3)
        gain = np.einsum("csk,sk->cs", free, all_nn)  # fixed orientation: project the free-orientation gain
        if dev.modality == "EEG":
            gain = gain - gain.mean(axis=0, keepdims=True)  # average reference
        arrays[f"gain/{name}"] = gain
    return GainSet(arrays, {"generators": [n for n, _ in _GENERATORS]})


_HEADS: dict[str, HeadModel] = {}


def head_model(config: dict[str, Any] | None = None, *, use_cache: bool = True) -> HeadModel:
    """The fixed head model for `config`'s geometry keys (gains built once and cached on disk, kind "meeg_gain")."""
    cfg = config or sim_config()
    geo = {k: cfg[k] for k in _GEOMETRY_KEYS}
    key = json.dumps(geo, sort_keys=True)
    if key not in _HEADS:
        gs = cached("meeg_gain", {**geo, "devices": {n: [d.definition, list(d.channels or [])] for n, d in
                                                     DEVICES.items()}, "anatomy_seed": ANATOMY_SEED},
                    code_version(), lambda: _build_gains(cfg), record_type=GainSet, use_cache=use_cache)
        a = gs.arrays
        generators = {n: int(i) for (n, _), i in zip(_GENERATORS, a["generators"])}
        infos = {name: device_info(name, r0=cfg["head_r0_m"]) for name in DEVICES}
        _HEADS[key] = HeadModel(rr=a["rr"], nn=a["nn"], ocular_rr=a["ocular_rr"], ocular_nn=a["ocular_nn"],
                                generators=generators, gains={n: a[f"gain/{n}"] for n in DEVICES}, infos=infos,
                                config=geo)
    return _HEADS[key]


def erp_calibration(head: HeadModel, config: dict[str, Any] | None = None) -> dict[str, float]:
    """Moments (A m) that give the textbook ERP and blink amplitudes (module docstring), set ONCE from the gains.

    Returns:
        `n1`: per auditory dipole (peak moment; the N1 at the 10-20 Cz is `n1_cz_uv`); `p3`: the Pz dipole's
        peak moment (P3 at Pz = `p3_pz_uv`); `blink_eeg` / `blink_meg`: per ocular dipole (peak at Fp1/Fp2 =
        `blink_eeg_uv`; largest Neuromag magnetometer peak = `blink_meg_pt`).
    """
    cfg = config or sim_config()
    g = head.gain("standard_1020_19")
    cz, pz = head.channel("standard_1020_19", "Cz"), head.channel("standard_1020_19", "Pz")
    fp = [head.channel("standard_1020_19", "Fp1"), head.channel("standard_1020_19", "Fp2")]
    gen = head.generators
    n1 = cfg["n1_cz_uv"] * 1e-6 / (g[cz, gen["auditory_left"]] + g[cz, gen["auditory_right"]])
    p3 = cfg["p3_pz_uv"] * 1e-6 / g[pz, gen["p3"]]
    n = head.n_dipoles
    blink_eeg = cfg["blink_eeg_uv"] * 1e-6 / np.mean(g[fp, n] + g[fp, n + 1])
    gm = head.gain("neuromag306")
    mags = np.flatnonzero(noise_classes(head.infos["neuromag306"]) == "mag")
    blink_meg = cfg["blink_meg_pt"] * 1e-12 / np.max(np.abs(gm[mags, n] + gm[mags, n + 1]))
    return {"n1": float(n1), "p3": float(p3), "blink_eeg": float(blink_eeg), "blink_meg": float(blink_meg)}


# ================================================================================================================
# subjects and sessions
# ================================================================================================================
@dataclass
class Subject:
    """One subject's session: the seed-drawn source parameters, paradigm timeline and artefact times.

    A session recorded on several `devices` is simultaneous: the same sources through each device.
    Times are in seconds from the recording start.
    """

    subject: str
    paradigm: str
    duration: float
    entropy: tuple[int, ...]  # seeds every random stream of the session (sources, and each device's noise)
    line_freq: float
    background: np.ndarray  # (200,) dipole indices
    beta: np.ndarray  # (200,) 1/f exponents
    iaf: float
    erd_depth: float
    events: list[tuple[float, int]] = field(default_factory=list)  # (onset s, code)
    event_id: dict[str, int] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # rest: eyes-open / eyes-closed blocks
    blinks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (n, 2): onset s, amplitude scale
    emg: list[tuple[float, float, str, float]] = field(default_factory=list)  # onset s, duration s, side, scale
    devices: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        """The JSON-serialisable parameters (for `SensorRecording.meta`)."""
        return {"paradigm": self.paradigm, "duration_s": self.duration, "line_freq": self.line_freq,
                "iaf_hz": self.iaf, "erd_depth": self.erd_depth, "n_blinks": int(len(self.blinks)),
                "emg_bursts": [[round(o, 3), round(d, 3), s] for o, d, s, _ in self.emg],
                "background_beta_mean": float(self.beta.mean())}


def _eyes_closed(blocks: list[dict[str, Any]], t: np.ndarray) -> np.ndarray:
    closed = np.zeros_like(t, dtype=bool)
    for b in blocks:
        if b["condition"] == "eyes_closed":
            closed |= (t >= b["onset"]) & (t < b["onset"] + b["duration"])
    return closed


def draw_subject(seed: int | Sequence[int], subject: str = "sub-00", *, paradigm: str | None = None,
                 duration: float | None = None, n_trials: int | None = None, devices: Sequence[str] = (),
                 config: dict[str, Any] | None = None) -> Subject:
    """Draw one subject's session.

    Args:
        seed: a non-negative int or a tuple of them seeding the session (the corpus uses `(data.seed, group,
            index)`, a group being a split on a device or a simultaneous session set).
        subject: the subject id.
        paradigm: "rest", "motor_imagery" or "oddball" (None: drawn with `paradigm_probs`).
        duration: seconds, rounded up to a multiple of 0.5 s (an integer sample count at every native
            rate); None: `config["seconds"]`; motor imagery with `n_trials`: as long as the trials need.
        n_trials: motor imagery only: exactly this many trials (balanced classes) and the duration they take.
        devices: the devices that record the session (simultaneously).
        config: `sim_config(...)` (default: seed 0, full size).
    """
    cfg = config or sim_config()
    entropy = tuple(int(s) for s in np.atleast_1d(seed))
    rng = np.random.default_rng(entropy + (0,))
    if paradigm is None:
        paradigm = str(rng.choice(PARADIGMS, p=cfg["paradigm_probs"]))
    if paradigm not in PARADIGMS:
        raise ConfigError(f"unknown paradigm {paradigm!r}; use one of {PARADIGMS}")
    line_freq = float(rng.choice(cfg["line_freqs_hz"]))
    candidates = np.setdiff1d(np.arange(cfg["n_dipoles"]), list(head_model(cfg).generators.values()))
    background = np.sort(rng.choice(candidates, size=cfg["n_background"], replace=False))
    beta = rng.uniform(*cfg["background_beta"], size=cfg["n_background"])
    mean, sd = cfg["alpha_iaf_hz"]
    iaf = float(np.clip(rng.normal(mean, sd), *cfg["alpha_iaf_clip_hz"]))
    erd_depth = float(rng.uniform(*cfg["erd_depth"]))

    events: list[tuple[float, int]] = []
    event_id: dict[str, int] = {}
    blocks: list[dict[str, Any]] = []
    if paradigm == "motor_imagery":
        event_id = dict(MI_EVENT_ID)
        classes = list(MI_EVENT_ID)
        t = cfg["mi_lead_s"]
        if n_trials is not None:  # balanced classes, shuffled; the recording lasts as long as they need
            labels = [classes[k % 3] for k in range(int(n_trials))]
            for k in rng.permutation(len(labels)):
                events.append((float(t), MI_EVENT_ID[labels[k]]))
                t += cfg["mi_trial_s"] + rng.uniform(*cfg["mi_rest_s"])
            duration = float(np.ceil(t))  # whole seconds: an integer sample count at every rate
        else:  # as many trials as fit, classes balanced by shuffled triplets
            duration = float(duration if duration is not None else cfg["seconds"])
            labels = []
            while t + cfg["mi_trial_s"] + cfg["transition_s"] <= duration:
                if len(events) % 3 == 0:
                    labels += [classes[i] for i in rng.permutation(3)]
                events.append((float(t), MI_EVENT_ID[labels[len(events)]]))
                t += cfg["mi_trial_s"] + rng.uniform(*cfg["mi_rest_s"])
    # a multiple of 0.5 s: an integer number of samples at every native rate (the rates' common divisor is 2 Hz)
    duration = float(np.ceil(float(duration if duration is not None else cfg["seconds"]) * 2) / 2)
    if paradigm == "rest":
        closed = bool(rng.integers(2))
        onset = 0.0
        while onset < duration:
            blocks.append({"onset": onset, "duration": min(cfg["rest_block_s"], duration - onset),
                           "condition": "eyes_closed" if closed else "eyes_open"})
            onset += cfg["rest_block_s"]
            closed = not closed
    elif paradigm == "oddball":
        event_id = dict(ODDBALL_EVENT_ID)
        onsets = []
        t = cfg["oddball_start_s"]
        while t + 1.0 <= duration:
            onsets.append(t)
            t += rng.uniform(*cfg["oddball_soa_s"])
        n_dev = int(round(cfg["oddball_deviant_frac"] * len(onsets)))
        deviant = np.zeros(len(onsets), dtype=bool)
        deviant[rng.choice(len(onsets), size=n_dev, replace=False)] = True
        events = [(float(o), ODDBALL_EVENT_ID["deviant" if d else "standard"]) for o, d in zip(onsets, deviant)]

    # blinks: a gamma renewal process, kept where the eyes are open for the whole blink
    mean_interval = 60.0 / cfg["blink_per_min"]
    shape = cfg["blink_interval_shape"]
    blink_len = cfg["blink_rise_s"] + cfg["blink_fall_s"]
    times = []
    t = rng.uniform(0, mean_interval)
    while t + blink_len < duration:
        times.append(t)
        t += rng.gamma(shape, mean_interval / shape)
    times = np.array(times)
    if blocks and len(times):
        open_ = ~_eyes_closed(blocks, times) & ~_eyes_closed(blocks, times + blink_len)
        times = times[open_]
    blinks = np.c_[times, rng.uniform(0.8, 1.2, len(times))] if len(times) else np.zeros((0, 2))

    n_emg = rng.poisson(cfg["emg_per_min"] * duration / 60.0)
    emg = []
    for _ in range(n_emg):
        d = rng.uniform(*cfg["emg_duration_s"])
        emg.append((float(rng.uniform(0, max(duration - d, 0.0))), float(d), str(rng.choice(["left", "right", "both"])),
                    float(rng.uniform(0.5, 1.5))))
    return Subject(subject=subject, paradigm=paradigm, duration=duration, entropy=entropy, line_freq=line_freq,
                   background=background, beta=beta, iaf=iaf, erd_depth=erd_depth, events=events, event_id=event_id,
                   blocks=blocks, blinks=blinks, emg=emg, devices=tuple(devices))


# ================================================================================================================
# signals
# ================================================================================================================
def _spectral_synthesis(amplitude, n_rows: int, duration: float, sfreq: float, entropy: tuple[int, ...]) -> np.ndarray:
    """Gaussian processes of given amplitude spectra, sampled at `sfreq`: `(n_rows, n)`.

    `amplitude(freqs) -> (n_rows, K)` gives A_k at f_k = k / duration (k = 1..K, below the Nyquist);
    x(t) = sum_k A_k Re((a_k + i b_k) e^{2 pi i f_k t}) with a_k, b_k ~ N(0, 1), so E[x^2] = sum_k A_k^2.
    The coefficients are drawn in blocks of `_BLOCK_BINS` frequency bins from their own streams, so a
    source is the same continuous signal at every rate (simultaneous recordings).
    """
    n = int(round(duration * sfreq))
    k_max = (n - 1) // 2  # strictly below the Nyquist bin
    freqs = np.arange(1, k_max + 1) / duration
    amp = amplitude(freqs)
    coef = np.zeros((n_rows, n // 2 + 1), dtype=np.complex128)
    for b in range(int(np.ceil(k_max / _BLOCK_BINS))):
        lo, hi = b * _BLOCK_BINS, min((b + 1) * _BLOCK_BINS, k_max)
        block = amp[:, lo:hi]
        if not block.any():
            continue
        z = np.random.default_rng(entropy + (b,)).standard_normal((n_rows, 2, _BLOCK_BINS))[:, :, : hi - lo]
        coef[:, 1 + lo: 1 + hi] = block * (z[:, 0] + 1j * z[:, 1])
    return np.fft.irfft(coef, n=n, axis=1) * (n / 2)


def _reference_bins(duration: float) -> np.ndarray:
    return np.arange(1, int(round(duration * 2 * F_REF)) // 2) / duration


def _pink_norms(beta: np.ndarray, knee: float, duration: float) -> np.ndarray:
    """sqrt(sum_k max(f_k, knee)^-beta) over the reference bins f_k = k / duration < F_REF, per row.

    The bins at or below the knee are counted; the sum over the others, T^beta sum_k k^-beta, by
    Euler-Maclaurin (integral + end points + first-derivative term: relative error 1e-5 for a 4-s
    recording, 1e-8 for 30 s), which saves summing millions of powers for every source of a long recording.
    """
    n_ref = int(round(duration * 2 * F_REF)) // 2 - 1
    k0 = min(int(np.floor(knee * duration)), n_ref)
    total = k0 * knee ** -beta
    a, b = float(k0 + 1), float(n_ref)
    if b >= a:
        one = np.abs(beta - 1.0) < 1e-9
        safe = np.where(one, 2.0, beta)
        integral = np.where(one, np.log(b / a), (b ** (1 - safe) - a ** (1 - safe)) / (1 - safe))
        tail = integral + (a ** -beta + b ** -beta) / 2 + beta / 12 * (a ** (-beta - 1) - b ** (-beta - 1))
        total = total + duration ** beta * tail
    return np.sqrt(total)


def _pink_amplitude(beta: np.ndarray, rms: float, knee: float, duration: float):
    """Amplitude spectra A_k = rms * max(f_k, knee)^(-beta/2) / norm: expected RMS `rms` over 0-F_REF."""
    norms = _pink_norms(beta, knee, duration)

    def amplitude(freqs: np.ndarray) -> np.ndarray:
        shape = np.exp(np.multiply.outer(-0.5 * beta, np.log(np.maximum(freqs, knee))))
        shape *= (rms / norms)[:, None]
        return shape

    return amplitude


def _peak_amplitude(centres: np.ndarray, sds: np.ndarray, rms: np.ndarray, duration: float):
    ref = _reference_bins(duration)
    norms = np.sqrt(np.exp(-((ref[None, :] - centres[:, None]) ** 2) / (2 * sds[:, None] ** 2)).sum(1))

    def amplitude(freqs: np.ndarray) -> np.ndarray:
        power = np.exp(-((freqs[None, :] - centres[:, None]) ** 2) / (2 * sds[:, None] ** 2))
        power[power < 1e-12] = 0.0  # far from the peak: no coefficients to draw
        return rms[:, None] * np.sqrt(power) / norms[:, None]

    return amplitude


def _ramp(x: np.ndarray) -> np.ndarray:
    """Raised-cosine step: 0 for x <= 0, 1 for x >= 1."""
    x = np.clip(x, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _plateau(t: np.ndarray, start: float, stop: float, ramp: float) -> np.ndarray:
    """0 -> 1 over [start, start + ramp], 1 until stop, 1 -> 0 over [stop, stop + ramp]."""
    return _ramp((t - start) / ramp) * (1.0 - _ramp((t - stop) / ramp))


def _smooth_blocks(blocks: list[dict[str, Any]], t: np.ndarray, ramp: float) -> np.ndarray:
    """Eyes-closed indicator with raised-cosine transitions of `ramp` s centred on the block edges."""
    out = np.zeros_like(t)
    for b in blocks:
        if b["condition"] == "eyes_closed":
            out += _plateau(t, b["onset"] - ramp / 2, b["onset"] + b["duration"] - ramp / 2, ramp)
    return np.clip(out, 0.0, 1.0)


def _add_pulses(out: np.ndarray, t: np.ndarray, sfreq: float, onsets: Iterable[float], scales: Iterable[float],
                shape, support: tuple[float, float]) -> None:
    """out += scale * shape(t - onset) on [onset + support[0], onset + support[1]] for every onset (in place)."""
    n = len(t)
    for onset, scale in zip(onsets, scales):
        a = max(int(np.floor((onset + support[0]) * sfreq)), 0)
        b = min(int(np.ceil((onset + support[1]) * sfreq)) + 1, n)
        if b > a:
            out[a:b] += scale * shape(t[a:b] - onset)


def _blink_shape(rise: float, fall: float):
    def shape(x: np.ndarray) -> np.ndarray:
        up = _ramp(x / rise)
        down = 1.0 - _ramp((x - rise) / fall)
        return np.where(x < rise, up, down) * (x >= 0)
    return shape


def source_activity(subject: Subject, sfreq: float, head: HeadModel, config: dict[str, Any],
                    components: Iterable[str] = COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """The subject's source moments at `sfreq`: dipole indices `(S,)` (N, N + 1 = the ocular dipoles) and `(S, n)` A m.

    Shared by every device of a session (same continuous signals, sampled at each device's rate), except
    that the ocular source is returned in EEG units (its moment is scaled per modality by the caller).
    """
    cfg, comps = config, set(components)
    T = subject.duration
    n = int(round(T * sfreq))
    t = np.arange(n) / sfreq
    base = subject.entropy
    gen = head.generators
    rows: dict[int, np.ndarray] = {}

    def add(index: int, signal: np.ndarray) -> None:
        rows[index] = rows[index] + signal if index in rows else signal

    if "background" in comps:
        amp = _pink_amplitude(subject.beta, cfg["background_rms_nam"] * 1e-9, cfg["background_knee_hz"], T)
        x = _spectral_synthesis(amp, len(subject.background), T, sfreq, base + (1,))
        for i, idx in enumerate(subject.background):
            rows[int(idx)] = x[i]
    if "alpha" in comps:
        amp = _peak_amplitude(np.full(2, subject.iaf), np.full(2, cfg["alpha_sd_hz"]),
                              np.full(2, cfg["alpha_rms_nam"] * 1e-9), T)
        x = _spectral_synthesis(amp, 2, T, sfreq, base + (2,))
        envelope = 1.0 + (cfg["alpha_eyes_closed_gain"] - 1.0) * _smooth_blocks(subject.blocks, t, cfg["transition_s"])
        add(gen["alpha_left"], x[0] * envelope)
        add(gen["alpha_right"], x[1] * envelope)
    if "mu_beta" in comps:
        centres = np.r_[np.full(3, cfg["mu_hz"]), np.full(3, cfg["beta_hz"])]
        sds = np.r_[np.full(3, cfg["mu_sd_hz"]), np.full(3, cfg["beta_sd_hz"])]
        rms = np.r_[np.full(3, cfg["mu_rms_nam"]), np.full(3, cfg["beta_rms_nam"])] * 1e-9
        x = _spectral_synthesis(_peak_amplitude(centres, sds, rms, T), 6, T, sfreq, base + (3,))
        gain = {a: np.ones(n) for a in _AREAS}
        if subject.paradigm == "motor_imagery":
            code_to_class = {v: k for k, v in MI_EVENT_ID.items()}
            contra_factor = np.sqrt(1.0 - subject.erd_depth) - 1.0
            ipsi_factor = np.sqrt(1.0 + cfg["ers_gain"]) - 1.0
            for onset, code in subject.events:
                contra, ipsi = _MI_AREAS[code_to_class[code]]
                window = _plateau(t, onset, onset + cfg["mi_trial_s"] - cfg["transition_s"], cfg["transition_s"])
                gain[contra] += contra_factor * window
                for area in ipsi:
                    gain[area] += ipsi_factor * window
        for k, area in enumerate(_AREAS):
            add(gen[area], (x[k] + x[3 + k]) * gain[area])
    if "erp" in comps and subject.paradigm == "oddball":
        cal = erp_calibration(head, cfg)
        n1 = np.zeros(n)
        p3 = np.zeros(n)
        onsets = [o for o, _ in subject.events]
        lat1, sd1, lat3, sd3 = cfg["n1_latency_s"], cfg["n1_sd_s"], cfg["p3_latency_s"], cfg["p3_sd_s"]
        _add_pulses(n1, t, sfreq, onsets, np.ones(len(onsets)), lambda x: np.exp(-0.5 * ((x - lat1) / sd1) ** 2),
                    (lat1 - 5 * sd1, lat1 + 5 * sd1))
        deviants = [o for o, c in subject.events if c == ODDBALL_EVENT_ID["deviant"]]
        _add_pulses(p3, t, sfreq, deviants, np.ones(len(deviants)), lambda x: np.exp(-0.5 * ((x - lat3) / sd3) ** 2),
                    (lat3 - 5 * sd3, lat3 + 5 * sd3))
        add(gen["auditory_left"], cal["n1"] * n1)
        add(gen["auditory_right"], cal["n1"] * n1)
        add(gen["p3"], cal["p3"] * p3)
    if "blink" in comps and len(subject.blinks):
        blink = np.zeros(n)
        shape = _blink_shape(cfg["blink_rise_s"], cfg["blink_fall_s"])
        _add_pulses(blink, t, sfreq, subject.blinks[:, 0], subject.blinks[:, 1], shape,
                    (0.0, cfg["blink_rise_s"] + cfg["blink_fall_s"]))
        add(head.n_dipoles, blink)  # unit moment: the caller scales it per modality
        add(head.n_dipoles + 1, blink)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, n))
    index = np.array(sorted(rows), dtype=np.int64)
    return index, np.stack([rows[i] for i in index])


def _band_noise(rng: np.random.Generator, n_rows: int, n: int, sfreq: float, band: Sequence[float]) -> np.ndarray:
    """Unit-RMS white noise band-limited to `band` (Hz; the top capped at 0.45 fs) by an FFT mask."""
    spec = np.fft.rfft(rng.standard_normal((n_rows, n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    keep = (freqs >= band[0]) & (freqs <= min(band[1], 0.45 * sfreq))
    spec[:, ~keep] = 0
    x = np.fft.irfft(spec, n=n, axis=1)
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-30)


def _sensor_noise_rms(classes: np.ndarray, sfreq: float, cfg: dict[str, Any]) -> np.ndarray:
    half = np.sqrt(sfreq / 2)  # white noise density -> RMS per sample
    per_class = {"eeg": cfg["eeg_noise_uv"] * 1e-6, "mag": cfg["mag_noise_ft_rthz"] * 1e-15 * half,
                 "planar": cfg["grad_noise_ft_cm_rthz"] * 1e-13 * half,  # fT/cm = 1e-13 T/m
                 "axial": cfg["ctf_noise_ft_rthz"] * 1e-15 * half}
    return np.array([per_class[c] for c in classes])


def _muscles(cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    r0 = np.asarray(cfg["head_r0_m"])
    out = {}
    for side, sign in (("left", -1.0), ("right", 1.0)):
        d = np.array([sign, 0.2, -0.1])
        out[side] = r0 + cfg["head_radius_m"] * d / np.linalg.norm(d)
    return out


def draw_bad_channel(subject: Subject, device: str, config: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """The recording's bad channel `(name, kind)` (EEG: always; MEG: with probability `bad_meg_prob`), or None."""
    cfg = config or sim_config()
    rng = np.random.default_rng(subject.entropy + (4, _DEVICE_CODE[device]))
    info_names = head_model(cfg).infos[device]["ch_names"]
    has_bad = DEVICES[device].modality == "EEG" or rng.random() < cfg["bad_meg_prob"]
    name = info_names[int(rng.integers(len(info_names)))]
    kind = BAD_KINDS[int(rng.integers(len(BAD_KINDS)))]
    return (name, kind) if has_bad else None


def simulate_raw(device: str, subject: Subject, *, config: dict[str, Any] | None = None,
                 components: Iterable[str] = COMPONENTS, bad: tuple[str, str] | None | str = "auto"):
    """One raw recording of `subject` on `device` at the device's native rate (before any preprocessing).

    Args:
        device: a key of `DEVICES`.
        subject: from `draw_subject` (its `duration`, paradigm and artefact times).
        config: `sim_config(...)`.
        components: the parts to include (`COMPONENTS`; tests isolate e.g. the ERP or the noise).
        bad: "auto" (drawn, `draw_bad_channel`), None (no bad channel) or `(channel name, kind)`.

    Returns:
        `mne.io.RawArray` (V, T, T/m) with the device's real info; MNE events of the paradigm in
        `raw.info["description"]`-free form are returned by `events_of(subject, sfreq)`.
    """
    import mne

    cfg = config or sim_config()
    if device not in DEVICES:
        raise ConfigError(f"unknown simulated device {device!r}; use one of {list(DEVICES)}")
    comps = set(components)
    unknown = sorted(comps - set(COMPONENTS))
    if unknown:
        raise ConfigError(f"unknown simulator components {unknown}; use any of {COMPONENTS}")
    head = head_model(cfg)
    dev = DEVICES[device]
    sfreq = dev.sfreq
    n = int(round(subject.duration * sfreq))
    info = head.infos[device].copy()
    classes = noise_classes(info)
    n_ch = len(classes)
    rng = np.random.default_rng(subject.entropy + (5, _DEVICE_CODE[device]))

    # brain and ocular sources: one gain matmul
    index, moments = source_activity(subject, sfreq, head, cfg, comps)
    if len(index):
        gain = head.gain(device)[:, index]
        ocular = index >= head.n_dipoles
        if ocular.any():
            cal = erp_calibration(head, cfg)
            gain = gain.copy()
            gain[:, ocular] *= cal["blink_eeg"] if dev.modality == "EEG" else cal["blink_meg"]
        data = gain @ moments
    else:
        data = np.zeros((n_ch, n))
    del moments
    t = np.arange(n) / sfreq

    if "emg" in comps and subject.emg:
        pos = sensor_positions_head(info)
        amp = np.array([cfg["emg_amplitude"][c] for c in classes])
        weights = {side: np.exp(-np.sum((pos - m) ** 2, axis=1) / (2 * cfg["emg_sd_m"] ** 2))
                   for side, m in _muscles(cfg).items()}
        envelope = {side: np.zeros(n) for side in weights}
        for onset, dur, side, scale in subject.emg:
            for s in (("left", "right") if side == "both" else (side,)):
                envelope[s] += scale * _plateau(t, onset, onset + dur - 0.1, 0.1)
        for side, w in weights.items():
            rows = np.flatnonzero(w > 0.02)
            if len(rows) and envelope[side].any():
                carrier = _band_noise(rng, len(rows), n, sfreq, cfg["emg_band_hz"])
                data[rows] += (amp[rows] * w[rows])[:, None] * carrier * envelope[side][None, :]
    if "line" in comps:
        amp = np.array([cfg["line_amplitude"][c] for c in classes]) * rng.uniform(0.5, 1.5, n_ch)
        weights, basis = [], []
        for h, rel in enumerate(cfg["line_harmonics"], start=1):
            f = h * subject.line_freq
            if f >= sfreq / 2:
                break
            phase = rng.uniform(0, 2 * np.pi) + cfg["line_phase_jitter_rad"] * rng.standard_normal(n_ch)
            # a cos(wt + phi) = a cos(phi) cos(wt) - a sin(phi) sin(wt): one (C, 2H) @ (2H, n) product
            weights += [rel * amp * np.cos(phase), -rel * amp * np.sin(phase)]
            basis += [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
        if weights:
            data += np.stack(weights, axis=1) @ np.stack(basis)
    if "sensor_noise" in comps:
        noise = rng.standard_normal((n_ch, n), dtype=np.float32)  # float32 draws: twice as fast, ample precision
        noise *= _sensor_noise_rms(classes, sfreq, cfg).astype(np.float32)[:, None]
        data += noise
        del noise

    if bad == "auto":
        bad = draw_bad_channel(subject, device, cfg) if "bad_channel" in comps else None
    if bad is not None:
        name, kind = bad
        if name not in info["ch_names"] or kind not in BAD_KINDS:
            raise ConfigError(f"bad channel {bad!r}: the name must be a channel of {device} and the kind one of "
                              f"{BAD_KINDS}")
        i = info["ch_names"].index(name)
        if kind == "flat":
            data[i] = 0.0
        elif kind == "nan":
            data[i] = np.nan
        else:
            rms = np.sqrt(np.mean(data[i] ** 2))
            data[i] += cfg["bad_noisy_factor"] * rms * rng.standard_normal(n)
    raw = mne.io.RawArray(data, info, verbose="error")
    return raw


def events_of(subject: Subject, sfreq: float) -> np.ndarray | None:
    """`(n, 3)` MNE events (sample at `sfreq`, 0, code) of the subject's paradigm, None for rest."""
    if not subject.events:
        return None
    return np.array([[int(round(o * sfreq)), 0, c] for o, c in subject.events], dtype=np.int64)


# ================================================================================================================
# statistics (the tests and the report use these definitions)
# ================================================================================================================
def amplitude_statistics(raw, *, exclude: Sequence[str] = (),
                         band: tuple[float, float] = (1.0, 40.0)) -> dict[str, float]:
    """Median over channels of the RMS of the `band`-passed raw, per noise class ("eeg", "mag", "planar", "axial").

    The textbook-range statistic: MNE's zero-phase FIR band-pass of the raw recording, 1 s trimmed at
    each end (filter edges), RMS per channel, median over the class's channels (`exclude`: the bad one).
    Units: V, T, T/m.
    """
    keep = [n for n in raw.ch_names if n not in set(exclude)]
    filt = raw.copy().pick(keep).filter(*band, picks="all", verbose="error")
    sf = raw.info["sfreq"]
    x = filt.get_data()[:, int(sf): -int(sf)]
    rms = np.sqrt(np.mean(x ** 2, axis=1))
    classes = noise_classes(filt.info)
    return {c: float(np.median(rms[classes == c])) for c in _NOISE_CLASSES if (classes == c).any()}


def erp_snr_db(config: dict[str, Any] | None = None, *, seed: int = 0, duration: float = 120.0,
               channel: str = "Pz", window: tuple[float, float] = (0.25, 0.45)) -> float:
    """Single-trial SNR (dB) of the P3 at `channel` of the 10-20 device.

    Signal: the ERP alone (the `erp` component) on deviant trials; noise: everything else (every
    other component, bad channel excluded), both band-passed 0.1-40 Hz; mean power over the
    `window` after each deviant onset, 10 log10(signal / noise).
    """
    cfg = config or sim_config()
    subj = draw_subject((seed, 99), "sub-snr", paradigm="oddball", duration=duration, config=cfg)
    device = "standard_1020_19"
    rest = [c for c in COMPONENTS if c not in ("erp", "bad_channel")]
    sig = simulate_raw(device, subj, config=cfg, components=("erp",), bad=None)
    noise = simulate_raw(device, subj, config=cfg, components=rest, bad=None)
    ch = sig.ch_names.index(channel)
    sf = sig.info["sfreq"]
    s = sig.filter(0.1, 40.0, verbose="error").get_data()[ch]
    z = noise.filter(0.1, 40.0, verbose="error").get_data()[ch]
    idx = np.concatenate([np.arange(int((o + window[0]) * sf), int((o + window[1]) * sf))
                          for o, c in subj.events if c == ODDBALL_EVENT_ID["deviant"]])
    return float(10 * np.log10(np.mean(s[idx] ** 2) / np.mean(z[idx] ** 2)))


def near_sensor_fraction(distance_m: float = 0.005, config: dict[str, Any] | None = None) -> dict[str, float]:
    """Fraction of the held-out devices' sensors within `distance_m` of a pretraining sensor of the same modality.

    Head-frame positions (MEG through each helmet's device-to-head transform). Returns the fraction
    per held-out device and over all of their sensors ("all").
    """
    from scipy.spatial import cKDTree

    head = head_model(config or sim_config())
    seen = {m: np.concatenate([sensor_positions_head(head.infos[d]) for d in PRETRAIN_DEVICES
                               if DEVICES[d].modality == m]) for m in ("EEG", "MEG")}
    out, hits, total = {}, 0, 0
    for d in HELDOUT_DEVICES:
        dist, _ = cKDTree(seen[DEVICES[d].modality]).query(sensor_positions_head(head.infos[d]))
        near = dist <= distance_m
        out[d] = float(near.mean())
        hits, total = hits + int(near.sum()), total + len(near)
    out["all"] = hits / total
    return out


# ================================================================================================================
# the corpus
# ================================================================================================================
def _paradigm_counts(n: int, probs: Sequence[float], rng: np.random.Generator) -> list[str]:
    """floor(n p) sessions of each paradigm, the remainder drawn by the fractional parts; shuffled."""
    exact = np.asarray(probs) * n
    counts = np.floor(exact).astype(int)
    left = n - counts.sum()
    if left:
        frac = exact - counts
        counts += np.bincount(rng.choice(len(probs), size=left, replace=False, p=frac / frac.sum()),
                              minlength=len(probs))
    out = [p for p, c in zip(PARADIGMS, counts) for _ in range(c)]
    return [out[i] for i in rng.permutation(len(out))]


def corpus_plan(config: dict[str, Any]) -> list[tuple[Subject, str]]:
    """Every session of the corpus with its split (`Subject.devices` says which devices record it)."""
    cfg, seed = config, config["seed"]
    plan: list[tuple[Subject, str]] = []

    def group(split: str, code: int, devices: tuple[str, ...], n: int, label: str, **kw) -> None:
        rng = np.random.default_rng((seed, code, 7))
        if "paradigm" in kw:
            paradigms = [kw.pop("paradigm")] * n
        else:
            paradigms = _paradigm_counts(n, cfg["paradigm_probs"], rng)
        for i in range(n):
            subject = draw_subject((seed, code, i), f"sub-{label}-{i:02d}", paradigm=paradigms[i], devices=devices,
                                   config=cfg, **kw)
            plan.append((subject, split))

    for k, d in enumerate(PRETRAIN_DEVICES):
        group("train", 10 + k, (d,), cfg["train_subjects"], f"train-{d}")
        group("val", 20 + k, (d,), cfg["val_subjects"], f"val-{d}")
    group("test", 30, PRETRAIN_DEVICES, cfg["test_subjects"], "test")
    group("unseen", 31, HELDOUT_DEVICES, cfg["unseen_subjects"], "unseen")
    for k, d in enumerate(HELDOUT_DEVICES):
        group("downstream", 40 + k, (d,), cfg["downstream_subjects"], f"downstream-{d}", paradigm="motor_imagery",
              n_trials=cfg["downstream_trials"])
    return plan


def _build_corpus(cfg: dict[str, Any]) -> SensorCorpus:
    from neurofound.data.mne_io import PreprocessConfig, to_recording

    t0 = time.perf_counter()
    head = head_model(cfg)
    calibration = erp_calibration(head, cfg)
    pp = PreprocessConfig(**cfg["preprocessing"])
    recordings = []
    timing = {"simulate": 0.0, "preprocess": 0.0}
    for subject, split in corpus_plan(cfg):
        for device in subject.devices:
            t1 = time.perf_counter()
            bad = draw_bad_channel(subject, device, cfg)
            raw = simulate_raw(device, subject, config=cfg, bad=bad)
            t2 = time.perf_counter()
            rec = to_recording(raw, pp, device=device, subject=subject.subject, split=split,
                               events=events_of(subject, raw.info["sfreq"]), event_id=subject.event_id,
                               source=f"meeg_sim {SIM_VERSION} (seed {cfg['seed']}, {cfg['size']})", copy=False)
            timing["simulate"] += t2 - t1
            timing["preprocess"] += time.perf_counter() - t2
            rec.meta.update({"simulator": f"meeg_sim {SIM_VERSION}", **subject.params(),
                             "bad_channel": None if bad is None else {"name": bad[0], "kind": bad[1]},
                             "blocks": subject.blocks, "simultaneous_devices": list(subject.devices)})
            recordings.append(rec)
    meta = {"description": f"meeg_sim {SIM_VERSION}: simulated EEG/MEG (seed {cfg['seed']}, size {cfg['size']})",
            "source": f"meeg_sim {SIM_VERSION}", "config": cfg, "code_version": code_version(),
            "pretrain_devices": list(PRETRAIN_DEVICES), "heldout_devices": list(HELDOUT_DEVICES),
            "native_sfreq": {n: d.sfreq for n, d in DEVICES.items()},
            "calibration_nam": {k: v * 1e9 for k, v in calibration.items()},
            "near_sensor_fraction_5mm": near_sensor_fraction(0.005, cfg),
            "build_wall_s": time.perf_counter() - t0, "build_timing_s": timing}
    return SensorCorpus(recordings, meta=meta)


def simulate_meeg(seed: int = 0, size: str = "full", preprocessing: dict | None = None, use_cache: bool = True,
                  **overrides: Any) -> SensorCorpus:
    """Simulate (or load from the cache) the embedded EEG/MEG corpus (module docstring).

    Args:
        seed: `data.seed`: redraws the subjects only (tune on 0; report 1 and 2).
        size: "full" (the default data) or "ci" (same structure, small: for tests).
        preprocessing: `neurofound.data.mne_io.PreprocessConfig` fields (default: the reference's).
        use_cache: read/write the cache under `$NEUROFOUND_CACHE` (kind "meeg_sim", keyed by the full
            config: simulator version, size, seed, every parameter and the preprocessing).
        **overrides: simulator parameters (`DEFAULT_CONFIG` keys) or size keys (`SIZES`).

    Returns:
        A `SensorCorpus` at 256 Hz: splits train/val (pretraining devices), test (new subjects,
        simultaneously on the four pretraining devices), unseen (simultaneously on biosemi64 and
        CTF-275) and downstream (motor imagery with events on each held-out device).
    """
    cfg = sim_config(seed, size, preprocessing, **overrides)
    return cached("meeg_sim", cfg, code_version(), lambda: _build_corpus(cfg), record_type=SensorCorpus,
                  use_cache=use_cache)


def simulate_raw_example(device: str, seed: int = 0, seconds: float = 10.0, paradigm: str = "rest"):
    """One subject's raw recording on `device`, as a user would bring it: native rate, real MNE info (montage or
    coil definitions), line noise, blinks, EMG and the recording's bad channel, before any preprocessing.

    Save it (`raw.save(...)`, `mne.export.export_raw(...)`) and read it back with `data=mne` to try the
    user-file path; the subject is drawn from `seed` outside the corpus' own subjects.
    """
    cfg = sim_config(seed=seed)
    subject = draw_subject((int(seed), 9_999, 0), f"sub-example-{device}", paradigm=paradigm, duration=seconds,
                           devices=(device,), config=cfg)
    return simulate_raw(device, subject, config=cfg)


__all__ = ["BAD_KINDS", "COMPONENTS", "DEFAULT_CONFIG", "DEVICES", "HELDOUT_DEVICES", "MI_EVENT_ID",
           "ODDBALL_EVENT_ID", "PARADIGMS", "PRETRAIN_DEVICES", "SIM_VERSION", "SIZES", "Device", "GainSet",
           "HeadModel", "Subject", "amplitude_statistics", "code_version", "corpus_plan", "device_info",
           "draw_bad_channel", "draw_subject", "erp_calibration", "erp_snr_db", "events_of", "head_model",
           "near_sensor_fraction", "noise_classes", "sensor_positions_head", "sim_config", "simulate_meeg",
           "simulate_raw", "simulate_raw_example"]
