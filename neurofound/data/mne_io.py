"""A user's own EEG/MEG recordings, read with MNE and preprocessed as the BrainOmni reference does.

Any recording MNE reads (FIF, EDF/BDF, BrainVision, EEGLAB, or a BIDS dataset through mne-bids)
becomes a `SensorRecording`: the signal at 256 Hz in SI units, and per channel its sensor type
and a 6-vector of geometry (BrainOmni spec §1; reference `factory/utils.py`).

1. **Channels** (`select_channels`): EEG and MEG only. Reference MEG channels, stim, EOG, ECG,
   EMG, misc and every other type are dropped, and so are EEG-typed channels whose name starts
   with one of `PreprocessConfig.exclude` (typeless formats such as EDF call an EOG lead "EEG";
   the reference drops HEO/VEO/EKG/EMG by name, `filter_channel`). A file without EEG or MEG
   channels is a `DataError`.
2. **Geometry** (`sensor_geometry`): the sensor type comes from the coil type, as the reference
   (`extract_pos_sensor_type`): EEG 0; MEG coils whose FIFF name says MAG are MAG 1 (Neuromag
   3021-3025, Magnes, BabyMEG, OPMs); planar and axial gradiometers are GRAD 2 (Neuromag
   3011-3015 and Neuromag-122; CTF 5001, KIT 6001, Magnes/BabyMEG/Artemis/KRISS/Compumedics
   axial gradiometers, even though MNE calls an axial gradiometer "mag"). Any other MEG coil
   type (MCG coils, `FIFFV_COIL_NONE`, an unknown id) is a `DataError` naming it. Orientation:
   `loc[3:6]` (the gradient direction) for planar gradiometers, `loc[9:12]` (the coil normal)
   for the other MEG coils, zeros for EEG. Positions `loc[0:3]` are normalised per modality
   (EEG; MEG = MAG and GRAD together) over every channel of that modality in the file: subtract
   the centroid, divide by sqrt(3 * mean ||p||^2); orientations are left as they are (spec §1
   step 3; the fixture README "Geometry follows the reference preprocessing"). EEG channels
   without a position are a `DataError` that says to set a montage (`data.montage=<name>`).
3. **Filters** (`preprocess`), in the reference's order (`filter_resample_preprocess`): notch at
   the line frequencies (and their harmonics below the output Nyquist, see `line_harmonics`),
   cHPI removal when the file describes HPI coils (`mne.chpi.filter_chpi`, line noise left to
   the notch; the reference applies it to the datasets in its `HPI_LIST`, here any file whose
   `info["hpi_meas"]` gives coil frequencies), resampling to 256 Hz, band-pass 0.1-96 Hz (MNE's
   zero-phase FIR defaults). A native rate below `min_sfreq` (192 Hz) is a `DataError`:
   resampling up to 256 Hz would invent the top of the 0.1-96 Hz band.
4. **Bad channels**: channels with NaN/Inf samples (zero-filled, since NaN poisons every
   filter) and flat channels are found BEFORE filtering; after it, the reference's log-PSD rule
   (`_auto_detect_bad_channels`) runs per sensor-type group (the reference: EEG only); channels
   already marked bad in the file stay bad. They are repaired with `raw.interpolate_bads`
   (spherical splines for EEG, field interpolation `mode="accurate"` for MEG, origin
   (0, 0, 0.04) m as the reference). A group whose channels are all bad, or an interpolation MNE
   cannot do, is a `DataError` naming the channels.

Every step is recorded, in words, for the model card (`SensorRecording.meta["preprocessing"]`).
No per-segment normalisation happens here: the datamodule does it (`normalize_segment`).
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import mne
import numpy as np
from mne.io.constants import FIFF
from scipy.spatial.distance import cdist

from neurofound.data.sensors import EEG, GRAD, MAG, SENSOR_TYPES, SensorRecording
from neurofound.errors import ConfigError, DataError, MissingFileError, UnsupportedError

SUPPORTED: tuple[str, ...] = (".fif", ".fif.gz", ".edf", ".bdf", ".vhdr", ".set")  # plus BIDS roots / BIDS paths
# What a BIDS dataset may hold of these (a BIDS FIF file is `.fif`, never `.fif.gz`).
_BIDS_EXTENSIONS = [".fif", ".edf", ".bdf", ".vhdr", ".set"]
_BIDS_DATATYPES = ["eeg", "meg"]

# FIFF coil-type id -> constant name ("FIFFV_COIL_VV_PLANAR_T1"), to map a coil by its family.
_COIL_NAMES: dict[int, str] = {int(v): k for k, v in FIFF.items() if k.startswith("FIFFV_COIL_")}
# Planar gradiometers whose FIFF name does not say PLANAR.
_PLANAR_UNNAMED = {int(FIFF.FIFFV_COIL_NM_122)}
_UNITS = {int(FIFF.FIFF_UNIT_V): "V", int(FIFF.FIFF_UNIT_T): "T", int(FIFF.FIFF_UNIT_T_M): "T/m"}
# MNE's display scalings (V -> µV, T -> fT, T/m -> fT/cm) relate the units of the three types;
# they scale the reference's EEG floor of the log-PSD (1e-16 V^2/Hz) to MEG (see `_psd_outliers`).
_TYPE_SCALING = {EEG: 1e6, MAG: 1e15, GRAD: 1e13}
_PSD_FLOOR_EEG = 1e-16


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class PreprocessConfig:
    """How a recording is cleaned before it becomes a `SensorRecording` (module docstring, steps 1-4).

    Args:
        line_freqs: mains frequencies to notch out (Hz); empty = no notch. Both 50 and 60 Hz by
            default, as the reference (which does not know the country of a recording).
        line_harmonics: also notch the harmonics of `line_freqs` below the output Nyquist
            (`sfreq / 2`) and the native one. The reference notches 50 and 60 Hz only, but MNE's
            0.1-96 Hz band-pass has its upper transition band at 96-120 Hz and keeps most of a
            100 Hz harmonic; `False` restores the reference.
        sfreq: output sampling rate (Hz); the BrainOmni models run at 256 Hz.
        l_freq: high-pass edge of the band-pass (Hz); 0 = low-pass only.
        h_freq: low-pass edge of the band-pass (Hz); must be below `sfreq / 2`.
        min_sfreq: lowest native rate accepted (Hz): below `2 * h_freq` resampling up would
            invent the top of the band.
        chpi: remove continuous HPI signals (`mne.chpi.filter_chpi`) when the file gives coil
            frequencies; files without HPI information skip it (recorded in the steps).
        bad_channels: detect bad channels (NaN/Inf, flat, log-PSD outliers). Off: channels marked
            bad in the file are still repaired, but a NaN/Inf sample is a `DataError`.
        flat_ratio: a channel is flat when the standard deviation of its first differences (which
            ignores offsets and slow drifts) is at most this fraction of the median over its
            sensor-type group (exactly constant channels always are).
        psd_iqr_factor: the log-PSD rule's threshold: a channel is an outlier when its mean
            log-PSD distance to the other channels of its group lies beyond Q1 - k*IQR or
            Q3 + k*IQR (reference: 10).
        interpolate: repair bad channels with `raw.interpolate_bads`; `False` drops them instead.
        origin: sphere origin for the interpolation, head frame, metres (reference: (0, 0, 0.04)).
        exclude: name prefixes (case-insensitive) of EEG-typed channels that are not scalp EEG
            and are dropped (EOG, ECG, EMG and BioSemi EXG leads that a typeless format such as
            EDF calls EEG; the reference drops HEO, VEO, EKG and EMG by name).
    """

    line_freqs: tuple[float, ...] = (50.0, 60.0)
    line_harmonics: bool = True
    sfreq: float = 256.0
    l_freq: float = 0.1
    h_freq: float = 96.0
    min_sfreq: float = 192.0
    chpi: bool = True
    bad_channels: bool = True
    flat_ratio: float = 1e-3
    psd_iqr_factor: float = 10.0
    interpolate: bool = True
    origin: tuple[float, float, float] = (0.0, 0.0, 0.04)
    exclude: tuple[str, ...] = ("HEO", "VEO", "EOG", "EKG", "ECG", "EMG", "EXG")

    def __post_init__(self) -> None:
        # YAML gives lists; keep tuples so that the config hashes and prints the same way
        self.line_freqs = tuple(float(f) for f in (self.line_freqs or ()))
        self.origin = tuple(float(o) for o in self.origin)
        self.exclude = tuple(str(e) for e in (self.exclude or ()))
        for name in ("sfreq", "h_freq", "min_sfreq", "psd_iqr_factor"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"PreprocessConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.l_freq < self.h_freq < self.sfreq / 2:
            raise ConfigError(f"PreprocessConfig needs 0 <= l_freq < h_freq < sfreq / 2, got l_freq={self.l_freq}, "
                              f"h_freq={self.h_freq}, sfreq={self.sfreq}; lower h_freq or raise sfreq")
        if not 0 <= self.flat_ratio < 1:
            raise ConfigError(f"PreprocessConfig.flat_ratio must be in [0, 1), got {self.flat_ratio}")
        if len(self.origin) != 3:
            raise ConfigError(f"PreprocessConfig.origin must be 3 numbers (x, y, z in metres), got {self.origin}")
        if any(f <= 0 for f in self.line_freqs):
            raise ConfigError(f"PreprocessConfig.line_freqs must be positive frequencies, got {self.line_freqs}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PreprocessConfig":
        """From a config mapping (`data.preprocessing`); an unknown key is a ConfigError."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown preprocessing option(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)


# ------------------------------------------------------------------------------------------------
# finding and reading files
# ------------------------------------------------------------------------------------------------
def _supported_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(SUPPORTED, key=len, reverse=True) if name.endswith(s)), None)


def _is_continuation(path: Path) -> bool:
    """A later part of a split FIF file, which MNE reads through the first part."""
    name = path.name
    split = re.search(r"_split-(\d+)_", name)
    if split and int(split.group(1)) > 1:
        return path.with_name(name.replace(split.group(0), "_split-01_")).exists()
    part = re.match(r"^(.*)-(\d+)(\.fif(?:\.gz)?)$", name)
    return bool(part) and path.with_name(part.group(1) + part.group(3)).exists()


def _is_bids_root(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_description.json").is_file()


def find_recordings(path: str | os.PathLike | Any) -> list[Any]:
    """The recordings at `path`: a file, a folder of files (searched recursively), or a BIDS root.

    Args:
        path: a recording file (one of `SUPPORTED`), a folder, a BIDS root (a folder holding
            `dataset_description.json`: its EEG and MEG recordings through
            `mne_bids.find_matching_paths`) or an `mne_bids.BIDSPath`.

    Returns:
        Sorted `Path`s, or `BIDSPath`s for a BIDS root. Later parts of split FIF files are left
        out (MNE reads them through the first part).

    Raises:
        MissingFileError: the path does not exist, or a folder holds no supported recording.
        UnsupportedError: a file whose format is not supported.
    """
    from mne_bids import BIDSPath, find_matching_paths

    if isinstance(path, BIDSPath):
        if path.fpath is None or not Path(path.fpath).exists():
            raise MissingFileError(f"BIDS path {path} points at no file ({path.fpath}); check its entities and root")
        return [path]
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"recording {path} does not exist; check data.path")
    if path.is_file():
        if _supported_suffix(path) is None:
            raise UnsupportedError(f"{path.name}: unsupported recording format; supported: {', '.join(SUPPORTED)}, "
                                   f"a folder of them or a BIDS root (convert other formats with MNE first)")
        return [path]
    if _is_bids_root(path):
        found = find_matching_paths(path, datatypes=_BIDS_DATATYPES, suffixes=_BIDS_DATATYPES,
                                    extensions=_BIDS_EXTENSIONS)
        found = sorted((p for p in found if p.split in (None, "01")), key=lambda p: str(p.fpath))
        if not found:
            raise MissingFileError(f"BIDS root {path} holds no EEG or MEG recording in {', '.join(_BIDS_EXTENSIONS)}")
        return found
    found = sorted(p for p in path.rglob("*") if p.is_file() and _supported_suffix(p) and not _is_continuation(p))
    if not found:
        raise MissingFileError(f"folder {path} holds no recording in a supported format ({', '.join(SUPPORTED)})")
    return found


def read_raw(path: str | os.PathLike | Any, *, montage: str | None = None) -> mne.io.BaseRaw:
    """Read one recording with MNE, preloaded.

    Args:
        path: a file of one of the `SUPPORTED` formats or an `mne_bids.BIDSPath` (read with
            `mne_bids.read_raw_bids`, which applies the dataset's channel types, bad channels
            and electrode positions).
        montage: an MNE montage name (`mne.channels.get_builtin_montages()`, e.g. "standard_1020",
            which MNE 1.13 calls "colin27_1020": both work) or montage object that sets (and
            replaces) the EEG positions; channel names are matched case-insensitively, and EEG
            channels the montage lacks keep no position (the geometry check then names them).
            EDF, BDF and MNE's BrainVision export store no positions, so they need one.

    Raises:
        MissingFileError / UnsupportedError: see `find_recordings`.
        DataError: MNE cannot read the file.
        ConfigError: an unknown montage name.
    """
    from mne_bids import BIDSPath, read_raw_bids

    if not isinstance(path, BIDSPath) and Path(path).is_dir():
        raise DataError(f"read_raw reads one recording file and {path} is a folder; use read_recordings (or "
                        f"find_recordings) for a folder or a BIDS root")
    (path,) = find_recordings(path)
    try:
        with _quiet():
            if isinstance(path, BIDSPath):
                raw = read_raw_bids(path, verbose="error")
                raw.load_data()
            else:
                # EDF labels such as "EEG Fp1" / "EOG left" carry the channel type: MNE splits them off
                kwargs = {"infer_types": True} if _supported_suffix(path) in (".edf", ".bdf") else {}
                raw = mne.io.read_raw(path, preload=True, verbose="error", **kwargs)
    # readers of damaged files fail in many ways (MNE's EDF reader even asserts)
    except (ValueError, RuntimeError, OSError, KeyError, IndexError, TypeError, AssertionError, EOFError) as err:
        raise DataError(f"MNE could not read {path} as a raw recording ({type(err).__name__}: {err}); "
                        f"check that it is a continuous {', '.join(SUPPORTED)} recording") from err
    if montage is not None:
        set_montage(raw, montage)
    return raw


# MNE 1.13 renamed the montages on the Colin27 template ("standard_1020" -> "colin27_1020", same
# positions) and drops the old names in 1.14; either name works here.
_RENAMED_MONTAGES = {f"standard_{k}": f"colin27_{k}" for k in ("1005", "1020", "alphabetic", "postfixed",
                                                                  "prefixed", "primed")}


def montage_name(name: str) -> str:
    """The name this MNE knows a built-in montage by (old and new Colin27 names both accepted).

    Raises:
        ConfigError: not a built-in montage.
    """
    builtin = mne.channels.get_builtin_montages()
    if name in builtin:
        return name
    renamed = {**_RENAMED_MONTAGES, **{v: k for k, v in _RENAMED_MONTAGES.items()}}
    if renamed.get(name) in builtin:
        return renamed[name]
    raise ConfigError(f"unknown montage {name!r}; use one of MNE's: {', '.join(builtin)} (data.montage=<name>)")


def set_montage(raw: mne.io.BaseRaw, montage: Any) -> mne.io.BaseRaw:
    """`raw.set_montage(montage)` with case-insensitive names; EEG channels it lacks keep no position."""
    if isinstance(montage, str):
        montage = mne.channels.make_standard_montage(montage_name(montage))
    try:
        with _quiet():
            raw.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
    except ValueError as err:  # e.g. two channels matching one montage name case-insensitively
        raise DataError(f"could not set the montage on {raw.filenames[0] if raw.filenames else 'the recording'}: "
                        f"{err}; rename the channels to the montage's names") from err
    return raw


# ------------------------------------------------------------------------------------------------
# channels and geometry
# ------------------------------------------------------------------------------------------------
def select_channels(info: mne.Info, config: PreprocessConfig | None = None) -> tuple[list[int], dict[str, list[str]]]:
    """The EEG and MEG channels a model reads (module docstring, step 1).

    Returns:
        picks: indices into `info["chs"]` of the kept channels, in file order.
        excluded: names of the dropped channels by reason (their MNE type, or "by name").

    Raises:
        DataError: no EEG or MEG channel is left.
    """
    config = config or PreprocessConfig()
    prefixes = tuple(e.upper() for e in config.exclude)
    types = info.get_channel_types()
    picks, excluded = [], {}
    for i, (name, kind) in enumerate(zip(info["ch_names"], types)):
        if kind == "eeg" and prefixes and name.strip().upper().startswith(prefixes):
            excluded.setdefault("by name", []).append(name)
        elif kind in ("eeg", "mag", "grad"):
            picks.append(i)
        else:
            excluded.setdefault(kind, []).append(name)
    if not picks:
        found = ", ".join(f"{k} {len(v)}" for k, v in excluded.items()) or "none"
        raise DataError(f"the recording has no EEG or MEG channel (channels found: {found}); neurofound's sensor "
                        f"models read EEG and MEG only (set the channel types with raw.set_channel_types if they are "
                        f"wrong)")
    return picks, excluded


def _meg_family(coil_type: int) -> tuple[int, bool] | None:
    """(sensor type, planar) of a MEG coil type from its FIFF name, None when it is not a brain sensor we know."""
    coil = int(coil_type)
    name = _COIL_NAMES.get(coil)
    if name is None or "_REF_" in name or "_R_" in name:
        return None
    if "PLANAR" in name or coil in _PLANAR_UNNAMED:
        return GRAD, True
    if "MAG" in name:
        return MAG, False
    if "GRAD" in name:  # axial gradiometers: CTF 5001, KIT 6001, Magnes, BabyMEG, ... (reference: GRAD)
        return GRAD, False
    return None


def normalize_positions(xyz: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Per modality (EEG; MAG and GRAD together): subtract the centroid, divide by sqrt(3 * mean ||p||^2).

    Args:
        xyz: `(C, 3)` positions in metres.
        types: `(C,)` sensor type ids.

    Returns:
        `(C, 3)` normalised positions (reference `normalize_pos`).
    """
    out = np.array(xyz, dtype=np.float64, copy=True)
    for members in ({EEG}, {MAG, GRAD}):
        mask = np.isin(types, list(members))
        if mask.any():
            out[mask] -= out[mask].mean(axis=0, keepdims=True)
            scale = np.sqrt(3 * np.mean(np.sum(out[mask] ** 2, axis=1)))
            if scale > 0:  # one sensor alone sits at its centroid
                out[mask] /= scale
    return out


def sensor_geometry(info: mne.Info) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Sensor types and normalised geometry of the EEG and MEG channels of `info` (module docstring, step 2).

    Args:
        info: an MNE `Info`. Every EEG and (non-reference) MEG channel is used, bad ones
            included (the device's geometry does not depend on today's bad channels).

    Returns:
        types: `(C,)` int64 sensor type ids (0 EEG, 1 MAG, 2 GRAD).
        positions: `(C, 6)` float64: normalised xyz, then orientation xyz (zeros for EEG).
        picks: the C channel indices into `info["chs"]`, in file order.

    Raises:
        DataError: no EEG/MEG channel, EEG channels without positions (set a montage), MEG
            channels of an unsupported coil type or without geometry.
    """
    picks = [int(i) for i in mne.pick_types(info, meg=True, eeg=True, ref_meg=False, exclude=())]
    if not picks:
        raise DataError("the recording has no EEG or MEG channel; neurofound's sensor models read EEG and MEG only")
    types = np.zeros(len(picks), dtype=np.int64)
    positions = np.zeros((len(picks), 6), dtype=np.float64)
    no_position: dict[str, list[str]] = {}
    unsupported: dict[str, list[str]] = {}
    for row, idx in enumerate(picks):
        ch = info["chs"][idx]
        loc = np.asarray(ch["loc"], dtype=np.float64)
        if int(ch["kind"]) == FIFF.FIFFV_EEG_CH:
            types[row] = EEG
            positions[row, :3] = loc[:3]
            if not np.isfinite(loc[:3]).all() or not np.any(loc[:3]):
                no_position.setdefault("EEG", []).append(ch["ch_name"])
            continue
        family = _meg_family(ch["coil_type"])
        if family is None:
            coil = int(ch["coil_type"])
            unsupported.setdefault(f"{coil} ({_COIL_NAMES.get(coil, 'unknown coil type')})", []).append(ch["ch_name"])
            continue
        types[row], planar = family
        # gradient direction of a planar gradiometer, coil normal otherwise (reference extract_pos_sensor_type)
        positions[row] = np.r_[loc[:3], loc[3:6] if planar else loc[9:12]]
        if not np.isfinite(positions[row]).all() or not np.any(loc[:3]):
            no_position.setdefault("MEG", []).append(ch["ch_name"])
    if unsupported:
        listed = "; ".join(f"coil type {k}: {_names(v)}" for k, v in unsupported.items())
        raise DataError(f"MEG channels of a coil type neurofound cannot map to MAG or GRAD ({listed}); drop them "
                        f"(raw.drop_channels) or set their channel type if they are not MEG sensors")
    if "EEG" in no_position:
        raise DataError(f"EEG channels without positions: {_names(no_position['EEG'])}; set a montage: "
                        f"data.montage=<name> (e.g. standard_1020; read_raw(..., montage=...)), or, if they are not "
                        f"scalp EEG channels, exclude them (PreprocessConfig.exclude) or set their channel type")
    if "MEG" in no_position:
        raise DataError(f"MEG channels without sensor geometry: {_names(no_position['MEG'])}; read the recording "
                        f"from its original file, which holds the device's sensor definitions")
    positions[:, :3] = normalize_positions(positions[:, :3], types)
    return types, positions, picks


def _names(names: Sequence[str], limit: int = 10) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _type_groups(info: mne.Info) -> dict[int, list[int]]:
    """Channel indices of `info` (all EEG/MEG, as after `select_channels`) by sensor type id."""
    types, _, picks = sensor_geometry(info)
    groups: dict[int, list[int]] = {}
    for t, idx in zip(types.tolist(), picks):
        groups.setdefault(t, []).append(idx)
    return groups


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------
@contextmanager
def _quiet(notes: list[str] | None = None) -> Iterator[None]:
    """Silence MNE's log; keep the text of its warnings in `notes` (they go into the preprocessing steps).

    MNE sends a warning through `warnings.warn` when its log level lets warnings through, so the
    calls inside leave `verbose` unset.
    """
    with warnings.catch_warnings(record=True) as caught, mne.utils.use_log_level("warning"):
        warnings.simplefilter("always")
        yield
    if notes is not None:
        for w in caught:
            text = f"MNE: {' '.join(str(w.message).split())}"
            if text not in notes:
                notes.append(text)


def _nonfinite_channels(raw: mne.io.BaseRaw, groups: dict[int, list[int]]) -> list[int]:
    return [i for idx in groups.values() for i, ok in zip(idx, np.isfinite(raw.get_data(picks=idx)).all(axis=1))
            if not ok]


def _flat_channels(raw: mne.io.BaseRaw, groups: dict[int, list[int]], skip: list[int], ratio: float) -> list[int]:
    """Channels whose first-difference std is 0 or <= ratio x their group's median (offsets and drifts ignored)."""
    flat = []
    for idx in groups.values():
        idx = [i for i in idx if i not in skip]
        if not idx or raw.n_times < 2:
            continue
        spread = np.std(np.diff(raw.get_data(picks=idx), axis=1), axis=1)
        median = float(np.median(spread))
        flat += [i for i, s in zip(idx, spread) if s == 0 or s <= ratio * median]
    return flat


def _psd_outliers(raw: mne.io.BaseRaw, picks: list[int], sensor_type: int, factor: float) -> list[int]:
    """The reference's log-PSD rule (`_auto_detect_bad_channels`) on one sensor-type group.

    Welch PSD of the whole recording (MNE defaults: 256-sample Hamming segments, mean), log of
    PSD + floor, Euclidean distance between the channels' log-spectra, mean distance per channel,
    outliers beyond Q1 - factor*IQR or Q3 + factor*IQR. The floor is the reference's 1e-16 V^2/Hz
    (10 nV/sqrt(Hz)) for EEG; for MEG it is the same floor in MNE's display units (µV, fT, fT/cm),
    i.e. 1e-34 T^2/Hz for MAG and 1e-30 (T/m)^2/Hz for GRAD: 1e-16 would swamp any MEG spectrum.
    """
    if len(picks) < 3:  # with two channels both mean distances are equal: nothing to find
        return []
    with _quiet():
        spectrum = raw.compute_psd(method="welch", picks=picks, n_fft=int(min(256, raw.n_times)), average="mean")
    floor = _PSD_FLOOR_EEG * (_TYPE_SCALING[EEG] / _TYPE_SCALING[sensor_type]) ** 2
    log_psd = np.log(spectrum.get_data() + floor)
    mean_distance = cdist(log_psd, log_psd).mean(axis=1)
    q1, q3 = np.percentile(mean_distance, [25, 75])
    iqr = q3 - q1
    out = (mean_distance > q3 + factor * iqr) | (mean_distance < q1 - factor * iqr)
    return [p for p, o in zip(picks, out) if o]


def _notch_freqs(config: PreprocessConfig, native_sfreq: float) -> list[float]:
    top = min(config.sfreq, native_sfreq) / 2
    freqs = set()
    for f in config.line_freqs:
        k = 1
        while k * f < top and (k == 1 or config.line_harmonics):
            freqs.add(k * f)
            k += 1
    return sorted(freqs)


def _fmt(freqs: Iterable[float]) -> str:
    return ", ".join(f"{f:g}" for f in freqs)


def _filter(raw: mne.io.BaseRaw, config: PreprocessConfig, has_meg: bool, steps: list[str],
            notes: list[str]) -> None:
    """Notch -> cHPI -> resample -> band-pass, the reference's order (`filter_resample_preprocess`)."""
    native = float(raw.info["sfreq"])
    freqs = _notch_freqs(config, native)
    if freqs:
        with _quiet(notes):
            raw.notch_filter(freqs, picks="data")
        steps.append(f"notch {_fmt(freqs)} Hz (FIR, zero-phase)")
    else:
        steps.append("notch: none")
    if has_meg and config.chpi:
        hpi_freqs, _, _ = mne.chpi.get_chpi_info(raw.info, on_missing="ignore")
        if len(hpi_freqs):
            with _quiet(notes):
                mne.chpi.filter_chpi(raw, include_line=False)  # line noise: the notch above
            steps.append(f"cHPI removed (mne.chpi.filter_chpi; coils at {_fmt(hpi_freqs)} Hz)")
        else:
            steps.append("cHPI: no HPI coil information in the file, skipped")
    elif has_meg:
        steps.append("cHPI: off (PreprocessConfig.chpi=False)")
    if abs(native - config.sfreq) > 1e-9:
        with _quiet(notes):
            raw.resample(config.sfreq)
        steps.append(f"resampled {native:g} -> {config.sfreq:g} Hz")
    else:
        steps.append(f"sampled at {native:g} Hz already, not resampled")
    with _quiet(notes):
        raw.filter(config.l_freq or None, config.h_freq, picks="data")
    steps.append(f"band-pass {config.l_freq:g}-{config.h_freq:g} Hz (FIR, zero-phase)")


def _repair(raw: mne.io.BaseRaw, reasons: dict[str, str], groups: dict[int, list[int]], config: PreprocessConfig,
            steps: list[str], notes: list[str]) -> None:
    """Interpolate (or drop) the bad channels; `reasons` maps each one to why it is bad."""
    names = raw.info["ch_names"]
    for t, idx in groups.items():
        if all(names[i] in reasons for i in idx):
            listed = _names([f"{names[i]} ({reasons[names[i]]})" for i in idx])
            raise DataError(f"every {SENSOR_TYPES[t]} channel is bad ({listed}), so none can be repaired; check the "
                            f"recording, or drop its {SENSOR_TYPES[t]} channels")
    if not reasons:
        steps.append("bad channels: none found")
        return
    for modality, members, how in (("EEG", (EEG,), "spherical-spline interpolation"),
                                   ("MEG", (MAG, GRAD), "field interpolation (mode accurate)")):
        listed = [f"{names[i]} ({reasons[names[i]]})" for t in members for i in groups.get(t, [])
                  if names[i] in reasons]
        if listed:
            fate = f"repaired by {how}" if config.interpolate else "dropped (interpolation off)"
            steps.append(f"bad channels ({modality}): {', '.join(listed)} {fate}")
    bads = [n for n in names if n in reasons]
    raw.info["bads"] = bads
    if not config.interpolate:
        raw.drop_channels(bads)
        return
    try:
        with _quiet(notes):
            raw.interpolate_bads(reset_bads=True, mode="accurate", origin=config.origin)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as err:
        raise DataError(f"MNE could not interpolate the bad channels {_names(bads)} ({err}); drop them instead "
                        f"(PreprocessConfig.interpolate=False) or fix their positions") from err
    if raw.info["bads"]:
        raise DataError(f"MNE left the bad channels {_names(raw.info['bads'])} uninterpolated; drop them instead "
                        f"(PreprocessConfig.interpolate=False)")


def preprocess(raw: mne.io.BaseRaw, config: PreprocessConfig | None = None, *,
               copy: bool = True) -> tuple[mne.io.BaseRaw, list[str], list[str]]:
    """Clean a recording as the reference does (module docstring, steps 1-4).

    Args:
        raw: a recording with positions for its EEG channels (see `read_raw`'s `montage`);
            loaded into memory if it is not.
        config: the preprocessing choices (`PreprocessConfig()` by default).
        copy: work on a copy (the default); `False` changes `raw` in place and saves memory.

    Returns:
        raw: EEG and MEG channels only, at `config.sfreq`, filtered, bad channels repaired (or
            dropped when `config.interpolate` is False), `info["bads"]` empty.
        steps: what was done, one line per step, for the model card (MNE's warnings last).
        bads: names of the channels found or marked bad, in channel order.

    Raises:
        DataError: no EEG/MEG channel, missing geometry, a rate below `min_sfreq`, NaN/Inf
            without bad-channel repair, a whole sensor-type group bad, or an interpolation MNE
            cannot do.
    """
    config = config or PreprocessConfig()
    steps: list[str] = []
    notes: list[str] = []
    picks, excluded = select_channels(raw.info, config)
    # a copy of an unloaded raw holds no data yet: pick first, then load only the kept channels
    raw = raw.copy().pick(picks) if copy else raw.pick(picks)
    if not raw.preload:
        raw.load_data(verbose="error")
    groups = _type_groups(raw.info)  # checks the geometry the interpolation needs, before any filtering
    kept = ", ".join(f"{len(groups[t])} {SENSOR_TYPES[t]}" for t in (EEG, MAG, GRAD) if t in groups)
    dropped = "; ".join(f"{k}: {_names(v)}" for k, v in excluded.items())
    steps.append(f"channels: kept {kept}" + (f"; excluded {dropped}" if dropped else ""))

    native = float(raw.info["sfreq"])
    if native < config.min_sfreq:
        raise DataError(f"sampling rate {native:g} Hz is below the minimum of {config.min_sfreq:g} Hz: resampling to "
                        f"{config.sfreq:g} Hz would invent the top of the {config.l_freq:g}-{config.h_freq:g} Hz band; "
                        f"use a recording sampled at >= {config.min_sfreq:g} Hz")

    names = raw.info["ch_names"]
    reasons = {name: "marked bad in the file" for name in raw.info["bads"]}
    # NaN/Inf and flat channels before filtering: NaN poisons every filter (module docstring, step 4)
    nonfinite = _nonfinite_channels(raw, groups)
    if nonfinite and not config.bad_channels:
        raise DataError(f"channels {_names([names[i] for i in nonfinite])} hold NaN/Inf samples; enable bad-channel "
                        f"repair (PreprocessConfig.bad_channels=True) or drop them")
    if nonfinite:
        raw.apply_function(lambda x: np.zeros_like(x), picks=nonfinite, channel_wise=False)
    for i in nonfinite:
        reasons.setdefault(names[i], "NaN/Inf samples, zero-filled")
    if config.bad_channels:
        for i in _flat_channels(raw, groups, nonfinite, config.flat_ratio):
            reasons.setdefault(names[i], "flat")

    _filter(raw, config, any(t in groups for t in (MAG, GRAD)), steps, notes)

    if config.bad_channels:
        for t, idx in groups.items():
            good = [i for i in idx if names[i] not in reasons]
            for i in _psd_outliers(raw, good, t, config.psd_iqr_factor):
                reasons[names[i]] = "log-PSD outlier"
    reasons = {n: reasons[n] for n in names if n in reasons}  # channel order
    _repair(raw, reasons, groups, config, steps, notes)
    if not np.isfinite(raw.get_data()).all():
        raise DataError("the preprocessed recording still holds NaN/Inf samples; check the file's data")
    return raw, steps + notes, list(reasons)


# ------------------------------------------------------------------------------------------------
# recordings
# ------------------------------------------------------------------------------------------------
def _device_name(types: np.ndarray) -> str:
    """A device label from its channel counts ("EEG19", "MEG306", "EEG60+MEG306") when none is given."""
    n_eeg, n_meg = int((types == EEG).sum()), int(np.isin(types, [MAG, GRAD]).sum())
    return "+".join(f"{m}{n}" for m, n in (("EEG", n_eeg), ("MEG", n_meg)) if n)


def _units(info: mne.Info, types: np.ndarray) -> dict[str, str]:
    units: dict[str, set[str]] = {}
    for ch, t in zip(info["chs"], types):
        units.setdefault(SENSOR_TYPES[t], set()).add(_UNITS.get(int(ch["unit"]), str(ch["unit"])))
    return {k: "/".join(sorted(v)) if len(v) > 1 else next(iter(v)) for k, v in units.items()}


def to_recording(raw: mne.io.BaseRaw, config: PreprocessConfig | None = None, *, device: str = "", subject: str = "",
                 split: str = "train", events: np.ndarray | None = None, event_id: dict[str, int] | None = None,
                 source: str | None = None, copy: bool = True) -> SensorRecording:
    """Preprocess a recording and return it as a `SensorRecording` (float32, SI units, `config.sfreq`).

    Args:
        raw: the recording (see `preprocess`).
        config: the preprocessing choices.
        device: device name (default: from the channel counts, e.g. "EEG19", "MEG306").
        subject: subject identifier (default: `info["subject_info"]["his_id"]`, else "").
        split: one of `neurofound.data.sensors.SPLITS`.
        events: optional `(n, 3)` MNE events on `raw` (samples counted as MNE does, including
            `raw.first_samp`, as `mne.find_events` / `mne.events_from_annotations` return them);
            stored as indices into the returned data at `config.sfreq`.
        event_id: names of the event codes.
        source: where the recording came from (default: the file MNE read).
        copy: leave `raw` untouched (see `preprocess`).

    Returns:
        The recording; `meta` holds the steps (`preprocessing`), `bad_channels`, `native_sfreq`,
        `source`, `units` per sensor type (CTF axial gradiometers are in T), the `excluded`
        channels and the `config`.
    """
    config = config or PreprocessConfig()
    native, first_samp = float(raw.info["sfreq"]), int(raw.first_samp)
    picks, excluded = select_channels(raw.info, config)
    device_info = mne.pick_info(raw.info, picks)
    device_types, device_positions, _ = sensor_geometry(device_info)  # the whole device, bad channels included
    if source is None and raw.filenames and raw.filenames[0] is not None:
        source = str(raw.filenames[0])
    if not subject:
        subject = str((raw.info.get("subject_info") or {}).get("his_id") or "")
    clean, steps, bads = preprocess(raw, config, copy=copy)
    rows = [device_info["ch_names"].index(n) for n in clean.ch_names]
    data = clean.get_data().astype(np.float32)
    if events is not None:
        events = np.array(events, dtype=np.int64).reshape(-1, 3)
        events[:, 0] = np.round((events[:, 0] - first_samp) * config.sfreq / native).astype(np.int64)
        outside = (events[:, 0] < 0) | (events[:, 0] >= data.shape[1])
        if outside.any():
            raise DataError(f"{int(outside.sum())} events lie outside the recording ({source or 'raw'}); pass events "
                            f"counted on this raw (including raw.first_samp, as mne.find_events returns them)")
    meta = {"preprocessing": steps, "bad_channels": bads, "native_sfreq": native, "source": source,
            "units": _units(clean.info, device_types[rows]), "excluded": excluded, "config": config.to_dict()}
    return SensorRecording(data=data, sfreq=float(clean.info["sfreq"]), ch_names=tuple(clean.ch_names),
                           sensor_types=device_types[rows], positions=device_positions[rows],
                           device=device or _device_name(device_types), subject=subject, split=split, events=events,
                           event_id=event_id or {}, meta=meta)


def read_recordings(paths: str | os.PathLike | Any | Sequence[Any], config: PreprocessConfig | None = None, *,
                    montage: str | None = None, split: str = "test", device: str = "") -> list[SensorRecording]:
    """Find, read and preprocess recordings (files, folders, BIDS roots or BIDS paths).

    Args:
        paths: one path or a list of them (see `find_recordings`).
        config: the preprocessing choices.
        montage: MNE montage name for EEG files without positions (see `read_raw`).
        split: the split every recording is tagged with.
        device: device name for all of them (default: from each one's channel counts).

    Returns:
        One `SensorRecording` per recording, in path order; the subject is the BIDS subject or the
        file's name without extension.
    """
    from mne_bids import BIDSPath

    items = [paths] if isinstance(paths, (str, os.PathLike, BIDSPath)) else list(paths)
    if not items:
        raise MissingFileError("no recording given; set data.path to a file, a folder or a BIDS root")
    recordings = []
    for item in items:
        for path in find_recordings(item):
            raw = read_raw(path, montage=montage)
            if isinstance(path, BIDSPath):
                subject, source = path.subject or "", str(path.fpath)
            else:
                subject, source = path.name[: -len(_supported_suffix(path) or "")], str(path)
            rec = to_recording(raw, config, device=device, subject=subject, split=split, source=source, copy=False)
            if montage is not None:
                rec.meta["preprocessing"].insert(0, f"EEG positions from the {montage} montage")
                rec.meta["montage"] = str(montage)
            recordings.append(rec)
    return recordings


__all__ = ["SUPPORTED", "PreprocessConfig", "find_recordings", "montage_name", "normalize_positions", "preprocess",
           "read_raw", "read_recordings", "select_channels", "sensor_geometry", "set_montage", "to_recording"]
