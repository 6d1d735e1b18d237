"""SpikeRecording: validation, raster conversion and the Arrow save/load round trip."""

import numpy as np
import pytest

from neurofound.data.records import SpikeRecording
from neurofound.errors import DataError, MissingFileError


def _recording(**kw):
    rng = np.random.default_rng(0)
    args = dict(
        spike_times=rng.uniform(0, 2.0, 50),
        unit_ids=rng.integers(0, 5, 50),
        n_neurons=5,
        duration=2.0,
    )
    args.update(kw)
    return SpikeRecording(**args)


def test_sorted_and_defaults():
    rec = _recording()
    assert np.all(np.diff(rec.spike_times) >= 0)
    assert rec.spike_times.dtype == np.float64 and rec.unit_ids.dtype == np.int64
    assert rec.segments == [(0.0, 2.0)]
    assert rec.rates().shape == (5,) and rec.rates().sum() == pytest.approx(50 / 2.0)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(spike_times=[0.1, np.nan], unit_ids=[0, 1]), "NaN/Inf"),
        (dict(spike_times=[0.1, 2.5], unit_ids=[0, 1]), "outside"),
        (dict(spike_times=[-0.1, 0.5], unit_ids=[0, 1]), "outside"),
        (dict(spike_times=[0.1, 0.5], unit_ids=[0, 5]), "unit_ids must lie"),
        (dict(spike_times=[0.1, 0.5], unit_ids=[0]), "same length"),
        (dict(behavior={"speed": (np.array([1.0, np.nan]), 20.0)}), "NaN"),
        (dict(behavior={"speed": (np.ones((2, 2)), 20.0)}), "1-D"),
        (dict(frames=np.zeros((4, 3), np.float32)), "ndim=2"),
        (dict(frames=np.zeros((4, 3, 3, 3), np.float32)), "ndim=4"),
        (dict(segments=[(0.0, 1.5), (1.0, 2.0)]), "overlap"),
        (dict(true_weights=np.zeros((4, 4))), r"\(N, N\)"),
        (dict(duration=0.0, spike_times=[], unit_ids=[]), "duration"),
    ],
)
def test_validation_errors(kw, match):
    with pytest.raises(DataError, match=match):
        _recording(**kw)


def test_integer_frames_are_refused():
    with pytest.raises(TypeError, match="float in \\[0, 1\\]"):
        _recording(frames=np.zeros((4, 3, 3), np.uint8))


def test_from_raster_round_trip():
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.3, size=(4, 200))
    rec = SpikeRecording.from_raster(counts, dt=0.01)
    assert rec.n_neurons == 4 and rec.duration == pytest.approx(2.0)
    assert rec.n_spikes == counts.sum()
    np.testing.assert_array_equal(rec.raster(0.01), counts)


def test_from_raster_errors_and_convert():
    with pytest.raises(ValueError, match="NaN"):
        SpikeRecording.from_raster(np.array([[0.0, np.nan]]), dt=0.01)
    with pytest.raises(ValueError, match=">= 0"):
        SpikeRecording.from_raster(np.array([[0, -1]]), dt=0.01)
    with pytest.raises(ValueError, match="convert='round'"):
        SpikeRecording.from_raster(np.array([[0.2, 1.7]]), dt=0.01)
    with pytest.raises(ValueError, match="convert must be"):
        SpikeRecording.from_raster(np.array([[0.2, 1.7]]), dt=0.01, convert="nearest")
    rec = SpikeRecording.from_raster(np.array([[0.2, 1.7]]), dt=0.01, convert="round")
    np.testing.assert_array_equal(rec.raster(0.01), [[0, 2]])
    rec = SpikeRecording.from_raster(np.array([[0.2, 1.7]]), dt=0.01, convert="floor")
    np.testing.assert_array_equal(rec.raster(0.01), [[0, 1]])


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    rec = _recording(
        frames=rng.random((40, 6, 7)).astype(np.float32),
        behavior={"speed": (rng.random(40), 20.0), "pupil": (rng.random(10), 5.0)},
        segments=[(0.0, 1.0), (1.0, 2.0)],
        trials=[(0.1, 0.9), (1.1, 1.9)],
        true_weights=rng.normal(size=(5, 5)),
        hubs=[1, 3],
        meta={"source": "test", "config": {"seed": 3}},
    )
    rec.save(tmp_path / "rec")
    back = SpikeRecording.load(tmp_path / "rec")
    np.testing.assert_array_equal(back.spike_times, rec.spike_times)
    np.testing.assert_array_equal(back.unit_ids, rec.unit_ids)
    np.testing.assert_array_equal(back.frames, rec.frames)
    assert back.frames.dtype == np.float32
    assert back.behavior.keys() == rec.behavior.keys()
    for name, (values, rate) in rec.behavior.items():
        np.testing.assert_array_equal(back.behavior[name][0], values)
        assert back.behavior[name][1] == rate
    np.testing.assert_array_equal(back.true_weights, rec.true_weights)
    np.testing.assert_array_equal(back.hubs, [1, 3])
    assert back.segments == rec.segments and back.trials == rec.trials
    assert back.meta == rec.meta and back.duration == rec.duration


def test_load_missing_folder(tmp_path):
    with pytest.raises(MissingFileError, match="not a saved SpikeRecording"):
        SpikeRecording.load(tmp_path)
