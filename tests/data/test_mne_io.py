"""mne_io: a user's EEG/MEG files through MNE, the reference geometry and the reference preprocessing.

Small realistic recordings are built here (EEG on MNE's standard 10-20 positions, MEG on MNE's
canonical Neuromag-306 / CTF-151 / CTF-275 helmets), written in every supported format and read
back; the geometry is checked against the BrainTokenizer fixture's `in.pos` (made with the
reference's `factory/utils.py`), and every bad input gets its error or documented behaviour.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

mne = pytest.importorskip("mne")
mne_bids = pytest.importorskip("mne_bids")
from mne.io.constants import FIFF  # noqa: E402

from neurofound.data import mne_io  # noqa: E402
from neurofound.data.mne_io import (  # noqa: E402
    PreprocessConfig, find_recordings, preprocess, read_raw, read_recordings, sensor_geometry, to_recording,
)
from neurofound.data.sensors import EEG, GRAD, MAG, SensorRecording  # noqa: E402
from neurofound.errors import ConfigError, DataError, MissingFileError, UnsupportedError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(os.environ.get("NEUROFOUND_FIXTURES", ROOT / "tests" / "fixtures" / "reference")) / "brainomni_tokenizer"

EEG19 = "Fp1 Fp2 F7 F3 Fz F4 F8 T7 C3 Cz C4 T8 P7 P3 Pz P4 P8 O1 O2".split()
# the reference's standard_1020 positions, by the name this MNE gives them (colin27_1020 from 1.13)
MONTAGE = mne_io.montage_name("standard_1020")


@pytest.fixture(autouse=True)
def _quiet_mne():
    with mne.utils.use_log_level("error"):
        yield


def _montage_positions(names) -> np.ndarray:
    info = mne.create_info(names, 100.0, "eeg")
    info.set_montage(MONTAGE)
    return np.array([ch["loc"][:3] for ch in info["chs"]])


def _smooth_signal(xyz: np.ndarray, sfreq: float, seconds: float, seed: int, scale: float) -> np.ndarray:
    """EEG/MEG-like data: 4 sources (alpha, beta, theta, 1/f drift) seen through spatially smooth
    (linear in position) weights, per-channel noise, 50 Hz mains. `(C, T)`."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sfreq))
    t = np.arange(n) / sfreq
    sources = np.stack([np.sin(2 * np.pi * 10 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t)),
                        np.sin(2 * np.pi * 21 * t + 1.0), np.sin(2 * np.pi * 6 * t + 2.0),
                        np.cumsum(rng.standard_normal(n)) / np.sqrt(sfreq)])
    centred = (xyz - xyz.mean(0)) / np.linalg.norm(xyz - xyz.mean(0), axis=1).mean()
    weights = np.c_[centred, np.ones(len(xyz))] @ rng.standard_normal((4, 4))  # (C, 4) smooth over the head
    x = weights @ sources + 0.1 * rng.standard_normal((len(xyz), n)) + 0.5 * np.sin(2 * np.pi * 50 * t)
    return x * scale


def eeg_raw(sfreq=500.0, seconds=12.0, seed=0, extra=True) -> mne.io.RawArray:
    """19 EEG channels on the 10-20 cap (+ an EOG and a stim channel), in volts."""
    names = EEG19 + (["EOG", "STI"] if extra else [])
    info = mne.create_info(names, sfreq, ["eeg"] * 19 + (["eog", "stim"] if extra else []))
    info.set_montage(MONTAGE)
    x = _smooth_signal(_montage_positions(EEG19), sfreq, seconds, seed, 2e-5)
    if extra:
        stim = np.zeros((1, x.shape[1]))
        stim[0, int(0.5 * sfreq)] = 1
        if seconds > 3:
            stim[0, int(2.5 * sfreq)] = 2
        x = np.r_[x, 5e-5 * np.random.default_rng(seed + 1).standard_normal((1, x.shape[1])), stim]
    return mne.io.RawArray(x, info, verbose="error")


def meg_raw(system="neuromag", sfreq=1000.0, seconds=4.0, seed=0) -> mne.io.RawArray:
    info = mne.channels.read_meg_canonical_info(system)
    xyz = np.array([ch["loc"][:3] for ch in info["chs"]])
    x = _smooth_signal(xyz, info["sfreq"], seconds, seed, 1.0)
    types = np.array(info.get_channel_types())
    x[types == "mag"] *= 3e-13
    x[types == "grad"] *= 5e-11 if system == "neuromag" else 3e-13 / 5e-11  # CTF axial "grad" data are in T
    return mne.io.RawArray(x, info, verbose="error")


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
def _combined_info(eeg_names):
    """One device: the EEG cap (10-20 positions) plus the whole Neuromag-306 helmet."""
    meg = meg_raw(seconds=0.01)
    eeg_info = mne.create_info(eeg_names, meg.info["sfreq"], "eeg")
    eeg_info.set_montage(MONTAGE)
    eeg = mne.io.RawArray(np.zeros((len(eeg_names), meg.n_times)), eeg_info, verbose="error")
    meg.add_channels([eeg], force_update_info=True)
    return meg.info


def test_geometry_reproduces_the_fixture_positions():
    """The fixture's `in.pos` rows from MNE geometry: EEG19 = the 10-20 cap, EEG32 = BioSemi-32's
    electrode names on the standard_1020 positions, MEG = all 306 Neuromag sensors."""
    if not (FIXTURE / "io.safetensors").is_file():
        pytest.skip(f"BrainTokenizer fixture not found at {FIXTURE} (set NEUROFOUND_FIXTURES)")
    from safetensors.numpy import load_file

    io = load_file(str(FIXTURE / "io.safetensors"))
    batch = json.loads((FIXTURE / "config.json").read_text())["batch"]
    caps = {"EEG19": EEG19, "EEG32": mne.channels.make_standard_montage("biosemi32").ch_names}
    for b, (names, cap) in enumerate(zip(batch["channel_names"], batch["eeg_position_normalisation_cap"])):
        info = _combined_info(caps[cap])
        types, positions, picks = sensor_geometry(info)
        rows = [picks.index(info["ch_names"].index(n)) for n in names]
        np.testing.assert_array_equal(types[rows], io["in.sensor_type"][b])
        np.testing.assert_allclose(positions[rows], io["in.pos"][b], atol=2e-7, rtol=0)


def test_neuromag_coil_types_and_orientations():
    info = meg_raw(seconds=0.01).info
    types, positions, picks = sensor_geometry(info)
    assert len(picks) == 306 and (types == MAG).sum() == 102 and (types == GRAD).sum() == 204
    for row, idx in enumerate(picks):
        ch = info["chs"][idx]
        planar = int(ch["coil_type"]) == FIFF.FIFFV_COIL_VV_PLANAR_T1
        assert types[row] == (GRAD if planar else MAG)
        np.testing.assert_array_equal(positions[row, 3:], ch["loc"][3:6] if planar else ch["loc"][9:12])
    # the two gradiometers of a triplet differ in orientation only (xxx2, xxx3 share the position)
    r2, r3 = info["ch_names"].index("MEG 0112"), info["ch_names"].index("MEG 0113")
    np.testing.assert_array_equal(positions[r2, :3], positions[r3, :3])
    assert abs(positions[r2, 3:] @ positions[r3, 3:]) < 0.05


@pytest.mark.parametrize("system,n", [("ctf151", 151), ("ctf275", 274)])
def test_ctf_axial_gradiometers_are_grad(system, n):
    info = mne.channels.read_meg_canonical_info(system)
    assert {int(ch["coil_type"]) for ch in info["chs"]} == {FIFF.FIFFV_COIL_CTF_GRAD}
    assert set(info.get_channel_types()) == {"mag"}  # MNE's name for them
    types, positions, _ = sensor_geometry(info)
    assert len(types) == n and (types == GRAD).all()
    np.testing.assert_array_equal(positions[:, 3:], np.array([ch["loc"][9:12] for ch in info["chs"]]))


def test_positions_are_normalised_per_modality_over_the_whole_device():
    info = _combined_info(EEG19)
    types, positions, picks = sensor_geometry(info)
    for members in ([EEG], [MAG, GRAD]):
        mask = np.isin(types, members)
        np.testing.assert_allclose(positions[mask, :3].mean(0), 0, atol=1e-12)
        np.testing.assert_allclose(np.mean(np.sum(positions[mask, :3] ** 2, 1)), 1 / 3, rtol=1e-12)
    # a part of the device is normalised differently: the statistics are the whole device's
    part = [i for i, t in zip(picks, types) if t != EEG][:30]
    _, part_positions, _ = sensor_geometry(mne.pick_info(info, part))
    assert np.abs(part_positions[:, :3] - positions[[picks.index(i) for i in part], :3]).max() > 0.1
    # by hand for EEG, and EEG does not move the MEG rows
    raw_xyz = _montage_positions(EEG19)
    expected = (raw_xyz - raw_xyz.mean(0)) / np.sqrt(3 * np.mean(np.sum((raw_xyz - raw_xyz.mean(0)) ** 2, 1)))
    np.testing.assert_allclose(positions[types == EEG, :3], expected, atol=1e-12)
    np.testing.assert_array_equal(positions[types == EEG, 3:], 0)
    _, meg_only, _ = sensor_geometry(meg_raw(seconds=0.01).info)
    np.testing.assert_allclose(positions[types != EEG], meg_only, atol=1e-12)
    # orientations are not rescaled: unit vectors stay unit vectors
    np.testing.assert_allclose(np.linalg.norm(positions[types != EEG, 3:], axis=1), 1, atol=1e-3)  # MNE's csv: 6 digits


@pytest.mark.parametrize("coil,expected,planar", [
    (FIFF.FIFFV_COIL_KIT_GRAD, GRAD, False), (FIFF.FIFFV_COIL_MAGNES_MAG, MAG, False),
    (FIFF.FIFFV_COIL_QUSPIN_ZFOPM_MAG2, MAG, False), (FIFF.FIFFV_COIL_NM_122, GRAD, True),
    (FIFF.FIFFV_COIL_VV_MAG_T1, MAG, False), (FIFF.FIFFV_COIL_VV_PLANAR_T3, GRAD, True),
])
def test_other_meg_coils_map_by_family(coil, expected, planar):
    info = mne.channels.read_meg_canonical_info("neuromag")
    with info._unlock():
        info["chs"][0]["coil_type"] = coil
    types, positions, _ = sensor_geometry(info)
    assert types[0] == expected
    loc = info["chs"][0]["loc"]
    np.testing.assert_array_equal(positions[0, 3:], loc[3:6] if planar else loc[9:12])


@pytest.mark.parametrize("coil", [FIFF.FIFFV_COIL_NONE, FIFF.FIFFV_COIL_NM_MCG_AXIAL, 4242])
def test_unsupported_meg_coil_type_is_an_error(coil):
    info = mne.channels.read_meg_canonical_info("neuromag")
    with info._unlock():
        info["chs"][5]["coil_type"] = coil
    with pytest.raises(DataError, match=rf"coil type {int(coil)} .*{info['ch_names'][5]}"):
        sensor_geometry(info)


# ------------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------------
def _write(raw, path: Path) -> None:
    if path.name.endswith((".fif", ".fif.gz")):
        raw.save(path, overwrite=True, verbose="error")
    else:  # these formats store events as annotations, not as a stim channel
        stim = [raw.ch_names[i] for i in mne.pick_types(raw.info, meg=False, stim=True)]
        mne.export.export_raw(path, raw.copy().drop_channels(stim), overwrite=True, verbose="error")


# file name, needs a montage on reading (no positions stored), relative precision of the samples
FORMATS = [("rec_raw.fif", False, 1e-6), ("rec_raw.fif.gz", False, 1e-6), ("rec.edf", True, 2.0 ** -15),
           ("rec.bdf", True, 2.0 ** -23), ("rec.vhdr", True, 1e-6), ("rec.set", False, 1e-6)]


@pytest.mark.parametrize("name,needs_montage,precision", FORMATS)
def test_eeg_round_trip(tmp_path, name, needs_montage, precision):
    raw = eeg_raw()
    path = tmp_path / name
    _write(raw, path)
    assert find_recordings(tmp_path) == [path]
    back = read_raw(path, montage=MONTAGE if needs_montage else None)
    assert back.info["sfreq"] == raw.info["sfreq"]
    assert back.ch_names[:19] == EEG19
    tol = precision * np.ptp(raw.get_data(picks=EEG19))
    np.testing.assert_allclose(back.get_data(picks=EEG19), raw.get_data(picks=EEG19), atol=tol, rtol=0)
    _, pos, _ = sensor_geometry(mne.pick_info(back.info, mne.pick_channels(back.ch_names, EEG19, ordered=True)))
    _, pos0, _ = sensor_geometry(mne.pick_info(raw.info, list(range(19))))
    np.testing.assert_allclose(pos, pos0, atol=1e-6)
    # end to end: the same recording whatever the format (EDF calls its EOG lead EEG: dropped by name)
    cfg = PreprocessConfig()
    rec, rec0 = to_recording(back, cfg), to_recording(raw, cfg)
    assert rec.ch_names == tuple(EEG19) and rec.sfreq == 256.0
    assert rec.meta["bad_channels"] == rec0.meta["bad_channels"] == []
    np.testing.assert_allclose(rec.data, rec0.data, atol=max(tol, 1e-3 * np.abs(rec0.data).max()))
    np.testing.assert_allclose(rec.positions, rec0.positions, atol=1e-6)


def test_meg_fif_round_trip(tmp_path):
    raw = meg_raw(seconds=1.0)
    path = tmp_path / "meg_raw.fif"
    _write(raw, path)
    back = read_raw(path)
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=0)
    assert back.ch_names == raw.ch_names
    for a, b in zip(sensor_geometry(back.info)[:2], sensor_geometry(raw.info)[:2]):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_bids_root(tmp_path):
    root = tmp_path / "bids"
    eeg = eeg_raw(seconds=6.0)
    eeg.info["line_freq"] = 50
    mne_bids.write_raw_bids(eeg, mne_bids.BIDSPath(subject="01", task="rest", root=root, datatype="eeg"),
                            format="BrainVision", allow_preload=True, verbose=False)
    meg = meg_raw(seconds=1.0)
    meg.info["line_freq"] = 50
    _write(meg, tmp_path / "meg_raw.fif")
    meg_file = mne.io.read_raw_fif(tmp_path / "meg_raw.fif", verbose="error")
    mne_bids.write_raw_bids(meg_file, mne_bids.BIDSPath(subject="02", task="rest", root=root, datatype="meg"),
                            verbose=False)
    found = find_recordings(root)
    assert [p.subject for p in found] == ["01", "02"] and all(isinstance(p, mne_bids.BIDSPath) for p in found)
    back = read_raw(found[0])  # positions from electrodes.tsv: no montage needed
    np.testing.assert_allclose(back.get_data(picks=EEG19), eeg.get_data(picks=EEG19), rtol=0,
                               atol=1e-6 * np.ptp(eeg.get_data(picks=EEG19)))
    np.testing.assert_allclose(sensor_geometry(mne.pick_info(back.info, list(range(19))))[1],
                               sensor_geometry(mne.pick_info(eeg.info, list(range(19))))[1], atol=1e-6)
    assert back.get_channel_types(picks=["EOG"]) == ["eog"]
    recs = read_recordings(root, PreprocessConfig(bad_channels=False))
    assert [(r.subject, r.device, r.split) for r in recs] == [("01", "EEG19", "test"), ("02", "MEG306", "test")]
    assert recs[1].meta["source"].endswith("sub-02_task-rest_meg.fif")
    np.testing.assert_allclose(recs[1].positions, sensor_geometry(meg.info)[1], atol=1e-6)


def test_find_recordings_folder(tmp_path):
    raw = eeg_raw(seconds=2.0)
    (tmp_path / "a").mkdir()
    _write(raw, tmp_path / "a" / "s1_raw.fif")
    _write(raw, tmp_path / "s2.edf")
    (tmp_path / "notes.txt").write_text("not a recording")
    shutil.copy(tmp_path / "a" / "s1_raw.fif", tmp_path / "a" / "s1_raw-1.fif")  # a split FIF's second part
    assert find_recordings(tmp_path) == [tmp_path / "a" / "s1_raw.fif", tmp_path / "s2.edf"]
    with pytest.raises(UnsupportedError, match=r"notes.txt.*\.fif, \.fif\.gz, \.edf, \.bdf, \.vhdr, \.set"):
        find_recordings(tmp_path / "notes.txt")
    with pytest.raises(MissingFileError, match="does not exist"):
        find_recordings(tmp_path / "nope.fif")
    with pytest.raises(MissingFileError, match="does not exist"):
        read_raw(tmp_path / "nope.fif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="no recording"):
        find_recordings(tmp_path / "empty")
    with pytest.raises(DataError, match="read_recordings"):
        read_raw(tmp_path / "a")
    recs = read_recordings([tmp_path / "a" / "s1_raw.fif", tmp_path / "s2.edf"], PreprocessConfig(), montage=MONTAGE)
    assert [r.subject for r in recs] == ["s1_raw", "s2"]
    assert recs[1].meta["preprocessing"][0] == f"EEG positions from the {MONTAGE} montage"


def test_unreadable_file_is_a_data_error(tmp_path):
    path = tmp_path / "broken.edf"
    path.write_bytes(b"0" * 300)
    with pytest.raises(DataError, match="could not read"):
        read_raw(path)


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------
def test_to_recording_contract_and_steps():
    raw = eeg_raw(sfreq=1000.0, seconds=12.0)
    before = raw.get_data().copy()
    events = mne.find_events(raw, stim_channel="STI", verbose="error")
    rec = to_recording(raw, PreprocessConfig(), subject="s7", split="val", events=events, event_id={"a": 1, "b": 2})
    np.testing.assert_array_equal(raw.get_data(), before)  # the input raw is left alone
    assert isinstance(rec, SensorRecording) and rec.data.dtype == np.float32
    assert rec.sfreq == 256.0 and rec.n_samples == 12 * 256 and rec.ch_names == tuple(EEG19)
    assert rec.device == "EEG19" and rec.subject == "s7" and rec.split == "val"
    assert rec.events[:, 0].tolist() == [128, 640] and rec.event_id == {"a": 1, "b": 2}  # 500 ms, 2.5 s
    # SI units, not rescaled: the band-passed signal keeps the amplitude of the volts given
    assert 0.3 < rec.data.std() / before[:19].std() < 1.5 and 1e-6 < rec.data.std() < 1e-4
    assert rec.meta["units"] == {"EEG": "V"} and rec.meta["native_sfreq"] == 1000.0
    steps = rec.meta["preprocessing"]
    assert steps[:5] == ["channels: kept 19 EEG; excluded eog: EOG; stim: STI",
                         "notch 50, 60, 100, 120 Hz (FIR, zero-phase)", "resampled 1000 -> 256 Hz",
                         "band-pass 0.1-96 Hz (FIR, zero-phase)", "bad channels: none found"]
    # the mains is gone, alpha survives
    spectrum = np.abs(np.fft.rfft(rec.data, axis=1)).mean(0)
    freqs = np.fft.rfftfreq(rec.n_samples, 1 / 256)
    assert spectrum[np.argmin(np.abs(freqs - 50))] < 0.05 * spectrum[np.argmin(np.abs(freqs - 10))]
    json.dumps(rec.meta)  # the model card can store it


def test_reference_harmonics_option():
    _, steps, _ = preprocess(eeg_raw(seconds=4.0), PreprocessConfig(line_harmonics=False, bad_channels=False))
    assert "notch 50, 60 Hz (FIR, zero-phase)" in steps
    _, steps, _ = preprocess(eeg_raw(sfreq=256.0, seconds=4.0), PreprocessConfig(line_freqs=(), bad_channels=False))
    assert "sampled at 256 Hz already, not resampled" in steps and not any(s.startswith("notch 5") for s in steps)


def test_nan_flat_and_noisy_channels_are_found_and_interpolated():
    raw = eeg_raw(seconds=12.0)
    clean = to_recording(raw, PreprocessConfig())
    x = raw.get_data()
    x[EEG19.index("Fz"), 1000:1100] = np.nan
    x[EEG19.index("T7")] = 3e-6  # flat (a constant offset)
    x[EEG19.index("P4")] += 1e-3 * np.random.default_rng(5).standard_normal(x.shape[1])  # broadband noise
    bad = mne.io.RawArray(x, raw.info, verbose="error")
    cleaned, steps, bads = preprocess(bad, PreprocessConfig())
    assert bads == ["Fz", "T7", "P4"] and cleaned.info["bads"] == []
    assert ("bad channels (EEG): Fz (NaN/Inf samples, zero-filled), T7 (flat), P4 (log-PSD outlier) repaired by "
            "spherical-spline interpolation") in steps
    data = cleaned.get_data()
    assert np.isfinite(data).all()
    for name in ("Fz", "T7", "P4"):  # repaired from the neighbours: close to the clean channel
        i = EEG19.index(name)
        assert np.corrcoef(data[i], clean.data[i])[0, 1] > 0.9, name
    others = [i for i, n in enumerate(EEG19) if n not in bads]
    np.testing.assert_allclose(data[others], clean.data[others], atol=1e-3 * np.abs(clean.data).max())


def test_interpolate_off_drops_bad_channels_but_keeps_device_geometry():
    raw = eeg_raw(seconds=6.0)
    raw._data[EEG19.index("Cz")] = 0.0
    rec = to_recording(raw, PreprocessConfig(interpolate=False))
    assert "Cz" not in rec.ch_names and rec.n_channels == 18
    assert "bad channels (EEG): Cz (flat) dropped (interpolation off)" in rec.meta["preprocessing"]
    full = to_recording(eeg_raw(seconds=6.0), PreprocessConfig())
    keep = [full.ch_names.index(n) for n in rec.ch_names]
    np.testing.assert_allclose(rec.positions, full.positions[keep], atol=1e-7)  # normalised over all 19


def test_meg_chpi_and_field_interpolation():
    raw = meg_raw(seconds=4.0)
    t = raw.times
    freqs = [83.0, 143.0, 203.0, 263.0, 323.0]
    with raw.info._unlock():
        raw.info["hpi_meas"] = [{"hpi_coils": [{"number": i + 1, "coil_freq": f} for i, f in enumerate(freqs)]}]
    types = np.array(raw.get_channel_types())
    hpi = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    truth = raw.get_data()
    raw._data[types == "mag"] += 3e-12 * hpi
    raw._data[types == "grad"] += 5e-10 * hpi
    raw._data[raw.ch_names.index("MEG 0113"), 200:300] = np.nan
    raw.info["bads"] = ["MEG 2443"]
    rec = to_recording(raw, PreprocessConfig())
    steps = rec.meta["preprocessing"]
    assert "cHPI removed (mne.chpi.filter_chpi; coils at 83, 143, 203, 263, 323 Hz)" in steps
    assert ("bad channels (MEG): MEG 0113 (NaN/Inf samples, zero-filled), MEG 2443 (marked bad in the file) "
            "repaired by field interpolation (mode accurate)") in steps
    assert rec.meta["bad_channels"] == ["MEG 0113", "MEG 2443"] and rec.meta["units"] == {"GRAD": "T/m", "MAG": "T"}
    assert np.isfinite(rec.data).all() and rec.data[rec.ch_names.index("MEG 0113")].std() > 0
    spectrum = np.abs(np.fft.rfft(rec.data[rec.sensor_types == MAG], axis=1)).mean(0)
    freqs_out = np.fft.rfftfreq(rec.n_samples, 1 / 256)
    reference = to_recording(mne.io.RawArray(truth, raw.info, verbose="error"),
                             PreprocessConfig(chpi=False, bad_channels=False, interpolate=False))
    ref_spectrum = np.abs(np.fft.rfft(reference.data[reference.sensor_types == MAG], axis=1)).mean(0)
    at83 = np.argmin(np.abs(freqs_out - 83))
    assert spectrum[at83] < 3 * ref_spectrum[at83]  # the 3 pT coil signal is gone (it is ~100x the data there)
    no_hpi = preprocess(meg_raw(seconds=1.0), PreprocessConfig(bad_channels=False))[1]
    assert "cHPI: no HPI coil information in the file, skipped" in no_hpi


def test_ctf_recording():
    rec = to_recording(meg_raw("ctf151", seconds=2.0), PreprocessConfig(bad_channels=False))
    assert (rec.sensor_types == GRAD).all() and rec.meta["units"] == {"GRAD": "T"} and rec.device == "MEG151"


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_eeg_without_positions_says_to_set_a_montage(tmp_path):
    raw = mne.io.RawArray(eeg_raw(seconds=2.0, extra=False).get_data(), mne.create_info(EEG19, 500.0, "eeg"),
                          verbose="error")
    with pytest.raises(DataError, match=r"EEG channels without positions: Fp1, .*data\.montage=<name>"):
        to_recording(raw, PreprocessConfig())
    zeros = raw.copy()
    with zeros.info._unlock():
        for ch in zeros.info["chs"]:
            ch["loc"][:] = 0.0
    with pytest.raises(DataError, match="set a montage"):
        sensor_geometry(zeros.info)
    _write(raw, tmp_path / "x.edf")
    with pytest.raises(DataError, match="data.montage"):
        to_recording(read_raw(tmp_path / "x.edf"), PreprocessConfig())
    assert to_recording(read_raw(tmp_path / "x.edf", montage=MONTAGE), PreprocessConfig()).n_channels == 19
    # the reference's name and MNE 1.13's name for the same positions
    old, new = (sensor_geometry(read_raw(tmp_path / "x.edf", montage=m).info)[1]
                for m in ("standard_1020", "colin27_1020"))
    np.testing.assert_array_equal(old, new)
    with pytest.raises(ConfigError, match="unknown montage 'standard_2020'.*biosemi64"):
        read_raw(tmp_path / "x.edf", montage="standard_2020")
    # a channel the montage lacks is named
    raw.rename_channels({"O2": "Xyz"})
    mne_io.set_montage(raw, MONTAGE)
    with pytest.raises(DataError, match=r"without positions: Xyz;"):
        sensor_geometry(raw.info)


def test_other_channel_types_are_excluded_and_listed():
    raw = eeg_raw(seconds=4.0)
    extra = mne.io.RawArray(np.zeros((3, raw.n_times)) + 1e-6,
                            mne.create_info(["LA1", "ECG", "Resp"], raw.info["sfreq"], ["seeg", "ecg", "resp"]),
                            verbose="error")
    raw.add_channels([extra], force_update_info=True)
    raw.set_channel_types({"ECG": "eeg"}, verbose="error")  # an ECG lead a typeless format called EEG
    _, steps, _ = preprocess(raw, PreprocessConfig(bad_channels=False))
    assert steps[0] == "channels: kept 19 EEG; excluded eog: EOG; stim: STI; seeg: LA1; by name: ECG; resp: Resp"
    only = mne.io.RawArray(np.zeros((2, 1000)), mne.create_info(["LA1", "STI"], 500.0, ["seeg", "stim"]),
                           verbose="error")
    with pytest.raises(DataError, match=r"no EEG or MEG channel \(channels found: seeg 1, stim 1\)"):
        to_recording(only, PreprocessConfig())


def test_rate_below_minimum_is_an_error():
    with pytest.raises(DataError, match=r"sampling rate 160 Hz is below the minimum of 192 Hz"):
        preprocess(eeg_raw(sfreq=160.0, seconds=4.0), PreprocessConfig())
    preprocess(eeg_raw(sfreq=200.0, seconds=4.0), PreprocessConfig(bad_channels=False))  # 200 Hz is enough


def test_whole_group_bad_and_nan_without_repair():
    raw = eeg_raw(seconds=4.0)
    raw._data[:19] = np.nan
    with pytest.raises(DataError, match=r"every EEG channel is bad \(Fp1 \(NaN/Inf samples, zero-filled\)"):
        preprocess(raw, PreprocessConfig())
    raw = eeg_raw(seconds=4.0)
    raw._data[3, 10] = np.inf
    with pytest.raises(DataError, match=r"F3 hold NaN/Inf samples; enable bad-channel repair"):
        preprocess(raw, PreprocessConfig(bad_channels=False))


def test_events_outside_the_recording():
    with pytest.raises(DataError, match="events lie outside"):
        to_recording(eeg_raw(seconds=4.0), PreprocessConfig(bad_channels=False), events=[[10_000, 0, 1]])


@pytest.mark.parametrize("kwargs,match", [
    ({"h_freq": 130.0}, "h_freq < sfreq / 2"), ({"l_freq": 50.0, "h_freq": 40.0}, "l_freq < h_freq"),
    ({"flat_ratio": 1.5}, "flat_ratio"), ({"psd_iqr_factor": 0}, "psd_iqr_factor"), ({"origin": (0, 0)}, "origin"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PreprocessConfig(**kwargs)


def test_config_from_yaml_lists():
    cfg = PreprocessConfig(line_freqs=[50], origin=[0, 0, 0.04], exclude=["EOG"])
    assert cfg.line_freqs == (50.0,) and cfg.origin == (0.0, 0.0, 0.04) and cfg.exclude == ("EOG",)
    assert PreprocessConfig(**cfg.to_dict()) == cfg == PreprocessConfig.from_dict(cfg.to_dict())
    with pytest.raises(ConfigError, match=r"unknown preprocessing option\(s\) \['hfreq'\]"):
        PreprocessConfig.from_dict({"hfreq": 40.0})
