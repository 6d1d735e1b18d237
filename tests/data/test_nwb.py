"""read_nwb on a tiny NWB file written here with pynwb (units, speed, ImageSeries, trials)."""

from datetime import datetime, timezone

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
from pynwb import NWBHDF5IO, NWBFile, TimeSeries  # noqa: E402
from pynwb.behavior import BehavioralTimeSeries  # noqa: E402
from pynwb.image import ImageSeries  # noqa: E402

from neurofound.data.nwb import read_nwb  # noqa: E402

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
    with pytest.raises(ValueError, match=r"\['running'\].*'pupil', 'speed'"):
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
    with pytest.raises(FileNotFoundError):
        read_nwb(tmp_path / "nope.nwb")
