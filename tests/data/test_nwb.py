"""read_nwb on a tiny NWB file written here with pynwb (units, speed, ImageSeries, trials)."""

from datetime import datetime, timezone

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
from pynwb import NWBHDF5IO, NWBFile, TimeSeries  # noqa: E402
from pynwb.behavior import BehavioralTimeSeries  # noqa: E402
from pynwb.image import ImageSeries  # noqa: E402

from neurofound.data.datamodule import SpikeDataModule  # noqa: E402
from neurofound.data.nwb import read_nwb  # noqa: E402
from neurofound.errors import DataError, MissingFileError  # noqa: E402
from neurofound.tokenizers.spike import SpikeTokenizer  # noqa: E402

SPIKES = [np.array([0.1, 0.5, 1.2]), np.array([0.3, 1.9]), np.array([0.05, 0.7, 1.0, 1.95])]


def _write(path, speed_values=None):
    nwb = NWBFile(
        session_description="neurofound test",
        identifier="nf-test",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    for times in SPIKES:
        nwb.add_unit(spike_times=times)
    # Speed at 10 Hz, linear in time (so 20 Hz linear interpolation is exact): speed = 3 t + 1.
    t = np.arange(21) / 10.0
    speed = 3 * t + 1 if speed_values is None else speed_values
    module = nwb.create_processing_module("behavior", "behaviour")
    module.add(BehavioralTimeSeries(time_series=[TimeSeries(name="speed", data=speed, timestamps=t, unit="cm/s")]))
    nwb.add_acquisition(TimeSeries(name="pupil", data=np.ones(5), rate=2.5, starting_time=0.0, unit="a.u."))
    # 4 RGB images shown at 0, 0.5, 1.0, 1.5 s; image k is uniform gray level 60 * k.
    images = np.stack([np.full((6, 8, 3), 60 * k, np.uint8) for k in range(4)])
    nwb.add_stimulus(ImageSeries(name="movie", data=images, timestamps=[0.0, 0.5, 1.0, 1.5], unit="n.a."))
    nwb.add_trial(start_time=0.0, stop_time=0.9)
    nwb.add_trial(start_time=1.0, stop_time=2.0)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture(scope="module")
def nwb_path(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("nwb") / "test.nwb")


def test_units_trials_behaviour_stimulus(nwb_path):
    rec = read_nwb(nwb_path, behavior=["speed", "pupil"], stimulus="movie")
    assert rec.n_neurons == 3 and rec.duration == pytest.approx(2.0)
    for unit, times in enumerate(SPIKES):
        np.testing.assert_allclose(np.sort(rec.spike_times[rec.unit_ids == unit]), times)
    assert rec.trials == [(0.0, 0.9), (1.0, 2.0)] and rec.segments == rec.trials

    speed, rate = rec.behavior["speed"]
    assert rate == 20.0 and speed.shape == (40,)
    np.testing.assert_allclose(speed, 3 * np.arange(40) / 20.0 + 1)
    np.testing.assert_allclose(rec.behavior["pupil"][0], 1.0)

    assert rec.frames.shape == (40, 6, 8) and rec.frames.dtype == np.float32
    # Frame slot k (k / 20 s) shows the latest image at or before it: image floor(k / 10).
    expected = (60 * (np.arange(40) // 10)) / 255.0
    np.testing.assert_allclose(rec.frames[:, 0, 0], expected, atol=1e-3)
    assert rec.frames.min() >= 0 and rec.frames.max() <= 1


def test_missing_names_list_what_the_file_has(nwb_path):
    with pytest.raises(DataError, match=r"\['running'\].*'pupil', 'speed'"):
        read_nwb(nwb_path, behavior=["running"])
    with pytest.raises(ValueError, match=r"'video' not found.*\['movie'\]"):
        read_nwb(nwb_path, stimulus="video")


def test_nan_behaviour_is_an_error(tmp_path):
    values = np.linspace(0, 1, 21)
    values[4] = np.nan
    path = _write(tmp_path / "nan.nwb", speed_values=values)
    with pytest.raises(ValueError, match="NaN"):
        read_nwb(path, behavior=["speed"])


def test_true_weights(nwb_path, tmp_path):
    good = tmp_path / "w.npy"
    np.save(good, np.eye(3)[::-1])
    rec = read_nwb(nwb_path, true_weights=good)
    np.testing.assert_array_equal(rec.true_weights, np.eye(3)[::-1])
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        read_nwb(nwb_path, true_weights=bad)


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError):
        read_nwb(tmp_path / "nope.nwb")
    with pytest.raises(MissingFileError, match="true_weights"):
        read_nwb(_session(tmp_path / "s.nwb"), true_weights=tmp_path / "nope.npy")


def _session(path, *, spikes=None, speed_until=None, trials=(), obs_intervals=None):
    """A spontaneous session: units (optionally with obs_intervals), an optional 10 Hz speed
    series from 0 to `speed_until` s, optional trials; no stimulus."""
    nwb = NWBFile(session_description="spontaneous", identifier="nf-spont",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    rng = np.random.default_rng(0)
    for times in spikes if spikes is not None else [np.sort(rng.uniform(0, 30.0, 150)) for _ in range(4)]:
        kw = {} if obs_intervals is None else {"obs_intervals": obs_intervals}
        nwb.add_unit(spike_times=times, **kw)
    if speed_until is not None:
        t = np.arange(int(round(speed_until * 10)) + 1) / 10.0
        nwb.add_acquisition(TimeSeries(name="speed", data=np.sin(t), timestamps=t, unit="cm/s"))
    for start, stop in trials:
        nwb.add_trial(start_time=start, stop_time=stop)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_file_without_trials_table(tmp_path):
    rec = read_nwb(_session(tmp_path / "spont.nwb", speed_until=30.0), behavior=["speed"])
    assert rec.trials is None and rec.segments == [(0.0, 30.0)]
    assert rec.n_neurons == 4 and rec.n_spikes == 600


def test_duration_is_the_session_not_the_last_spike(tmp_path):
    # the last spike is at 1.2 s; the behaviour runs to 5 s
    path = _session(tmp_path / "late.nwb", spikes=[np.array([0.1, 1.2]), np.array([0.4])], speed_until=5.0)
    rec = read_nwb(path, behavior=["speed"])
    assert rec.duration == pytest.approx(5.0)
    speed, rate = rec.behavior["speed"]
    assert speed.shape == (100,) and rate == 20.0
    np.testing.assert_allclose(speed, np.sin(np.arange(100) / 20.0), atol=2e-3)  # linear interpolation
    assert rec.raster(0.5).shape == (2, 10)


def test_duration_from_obs_intervals(tmp_path):
    path = _session(tmp_path / "obs.nwb", spikes=[np.array([0.1, 1.2]), np.array([0.4])], speed_until=5.0,
                    obs_intervals=[[0.0, 8.0]])
    assert read_nwb(path, behavior=["speed"]).duration == pytest.approx(8.0)
    assert read_nwb(path).duration == pytest.approx(8.0)


def test_duration_from_trials_or_last_spike(tmp_path):
    spikes = [np.array([0.1, 1.2]), np.array([0.4])]
    with_trials = _session(tmp_path / "trials.nwb", spikes=spikes, trials=[(0.0, 1.0), (1.5, 3.0)])
    assert read_nwb(with_trials).duration == pytest.approx(3.0)
    bare = _session(tmp_path / "bare.nwb", spikes=spikes)
    assert read_nwb(bare).duration == pytest.approx(1.2)  # nothing else to go by


@pytest.mark.parametrize("n_trials, expected", [(0, "blocks"), (10, "trials")])
def test_auto_split_holds_out_whole_trials_only_when_there_are_trials(tmp_path, n_trials, expected):
    trials = [(3.0 * k, 3.0 * k + 2.5) for k in range(n_trials)]
    rec = read_nwb(_session(tmp_path / "s.nwb", speed_until=30.0, trials=trials), behavior=["speed"])
    tok = SpikeTokenizer(rec.n_neurons, dt=0.01, window=0.05, window_prev=0.1, block_size=24, block_size_prev=40)
    dm = SpikeDataModule(rec, tok, split_mode="auto", frames=False, behavior_targets=["speed"])
    dm.setup()
    assert dm.split_mode == expected
    if expected == "trials":
        owner = {}
        for split in ("train", "val", "test"):
            for k in np.unique(dm.splits.segments[split]).tolist():
                assert owner.setdefault(k, split) == split
        assert len(owner) == n_trials


def test_nwb_config_defaults_to_auto_split():
    from pathlib import Path

    from omegaconf import OmegaConf

    import neurofound

    cfg = OmegaConf.load(Path(neurofound.__file__).parent / "configs" / "data" / "nwb.yaml")
    assert cfg.split_mode == "auto"
    assert OmegaConf.to_container(cfg.datamodule)["split_mode"] == "${data.split_mode}"
