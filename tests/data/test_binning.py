"""One binning rule: `bin_spikes`, `SpikeRecording.raster`, `GenerationResult.counts` and
`SpikeDataModule.held_out_counts` count the same spikes into the same bins."""

import numpy as np
import pytest
import torch

from neurofound.data.binning import BIN_EPS, bin_grid, bin_spikes
from neurofound.data.datamodule import SpikeDataModule
from neurofound.data.records import SpikeRecording
from neurofound.errors import DataError
from neurofound.models.neuroformer_generate import GenerationResult
from neurofound.tokenizers.spike import SpikeTokenizer, _time_to_bin

N, DURATION, BIN = 3, 20.0, 0.05
TOK = dict(dt=0.01, window=0.05, window_prev=0.1, block_size=24, block_size_prev=40)


def _edge_spikes():
    """Spikes on bin edges (as k * BIN and as rounded decimals), a hair before edges, mid-bin,
    and 0.2 bins before an edge, spread over the units."""
    k = np.arange(int(DURATION / BIN))
    times = np.concatenate([
        k * BIN,                          # exactly on the edge (float product)
        np.round(k * BIN + BIN, 6)[:-1],  # the next edge written as a decimal
        k[1:] * BIN - 1e-9,               # a hair (2e-8 bins) before an edge: counts on the edge
        k * BIN + BIN / 2,                # mid-bin
        k[1:] * BIN - 0.2 * BIN,          # clearly in the bin before
    ])
    units = np.arange(times.size) % N
    return times, units


def _generation(times, units):
    empty = torch.zeros(0, dtype=torch.long)
    return GenerationResult(id_tokens=empty, dt_tokens=empty, n_tokens=empty, id_prev_used=empty,
                            dt_prev_used=empty, spike_times=np.asarray(times, np.float64),
                            unit_ids=np.asarray(units, np.int64), window=np.zeros(len(times), np.int64),
                            segment=np.zeros(len(times), np.int64), intervals=np.zeros(1), segments=np.zeros(1))


def test_four_paths_agree_on_edge_spikes():
    times, units = _edge_spikes()
    rec = SpikeRecording(spike_times=times, unit_ids=units, n_neurons=N, duration=DURATION)
    grid = bin_grid(0.0, DURATION, BIN)
    direct = bin_spikes(times, units, N, grid, BIN)
    assert direct.shape == (N, 400) and direct.dtype == np.int64 and direct.sum() == times.size

    np.testing.assert_array_equal(rec.raster(BIN), direct)
    np.testing.assert_array_equal(_generation(times, units).counts(N, 0.0, DURATION, BIN), direct)

    dm = SpikeDataModule(rec, SpikeTokenizer(N, **TOK), frames=False)
    for split in ("train", "val", "test"):
        held, starts = dm.held_out_counts(split, BIN)
        cols = np.round(starts / BIN).astype(int)  # the held-out bins lie on the same grid here
        assert held.shape == (N, starts.size) and starts.size > 0
        np.testing.assert_array_equal(held, direct[:, cols])
        gen_held, _ = dm.held_out_counts(split, BIN, spike_times=times, unit_ids=units)
        np.testing.assert_array_equal(gen_held, held)


def test_edge_rule_matches_the_tokenizer():
    """A spike a hair before an edge is on the edge, as the tokenizer bins it."""
    times = np.array([0.0, 0.05 - 1e-9, 0.05, 0.1 - 0.01, 0.3 * 3 / 3])  # 0.3*3/3 = 0.29999999999999993
    counts = bin_spikes(times, np.zeros(5, np.int64), 1, bin_grid(0.0, 0.4, BIN), BIN)
    expected = np.bincount([_time_to_bin(t, BIN) for t in times], minlength=8)
    np.testing.assert_array_equal(counts[0], expected)
    assert counts[0].tolist() == [1, 3, 0, 0, 0, 0, 1, 0]


def test_grid_drops_a_partial_last_bin_and_keeps_float_multiples():
    assert bin_grid(0.0, 0.3, 0.1).size == 3  # 0.3 / 0.1 = 2.9999999999999996
    assert bin_grid(0.0, 0.34, 0.1).size == 3
    assert bin_grid(1.0, 1.0, 0.1).size == 0
    np.testing.assert_allclose(bin_grid(2.0, 2.5, 0.25), [2.0, 2.25])


def test_gaps_between_bins_are_not_counted():
    starts = np.array([0.0, 0.1, 1.0])
    counts = bin_spikes([0.05, 0.15, 0.5, 1.05, 1.2, -0.5], [0, 0, 0, 1, 1, 1], 2, starts, 0.1)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 0, 1]])


def test_empty_inputs():
    rec = SpikeRecording(spike_times=[], unit_ids=[], n_neurons=N, duration=1.0)
    zeros = np.zeros((N, 20), np.int64)
    np.testing.assert_array_equal(rec.raster(BIN), zeros)
    np.testing.assert_array_equal(_generation([], []).counts(N, 0.0, 1.0, BIN), zeros)
    np.testing.assert_array_equal(bin_spikes([], [], N, bin_grid(0.0, 1.0, BIN), BIN), zeros)
    assert bin_spikes([0.1], [0], N, np.zeros(0), BIN).shape == (N, 0)
    dm = SpikeDataModule(SpikeRecording(spike_times=[], unit_ids=[], n_neurons=N, duration=DURATION),
                         SpikeTokenizer(N, **TOK), frames=False)
    held, starts = dm.held_out_counts("test", BIN)
    assert held.shape == (N, starts.size) and held.sum() == 0


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.1], [3], N, [0.0], BIN), "unit_ids must lie"),
        (([0.1], [-1], N, [0.0], BIN), "unit_ids must lie"),
        (([0.1, 0.2], [0], N, [0.0], BIN), "same length"),
        (([np.nan], [0], N, [0.0], BIN), "NaN"),
        (([0.1], [0], N, [0.0, 0.01], BIN), "overlap"),
        (([0.1], [0], N, [0.0], 0.0), "bin_size"),
    ],
)
def test_errors(args, match):
    with pytest.raises(DataError, match=match):
        bin_spikes(*args)
    assert BIN_EPS == 1e-6
