"""The embedded brian2 LIF network: structure, rates, stimulus, behaviour and the cache."""

import numpy as np
import pytest

from neurofound.data import simulate
from neurofound.data.simulate import lif_config, simulate_lif_network

SHORT = 5.0  # s of biological time per test simulation


@pytest.fixture(scope="module")
def recordings():
    return {seed: simulate_lif_network(seed=seed, duration=SHORT, use_cache=False) for seed in (0, 1, 2)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_rate_in_range(recordings, seed):
    rate = recordings[seed].rates().mean()
    assert 5.0 <= rate <= 15.0, f"seed {seed}: mean rate {rate:.2f} Hz outside 5-15 Hz"


def test_connectivity_structure(recordings):
    rec = recordings[0]
    w = rec.true_weights
    cfg = rec.meta["config"]
    assert w.shape == (100, 100) and np.all(np.diag(w) == 0)
    n_exc = cfg["n_exc"]
    assert np.all(w[:, :n_exc] >= 0) and np.all(w[:, n_exc:] <= 0)
    assert set(np.unique(w[:, n_exc:])) <= {0.0, cfg["w_inh_mv"]}
    assert len(rec.hubs) == 3 and np.all(rec.hubs < n_exc)
    hub_w = cfg["hub_weight_factor"] * cfg["w_exc_mv"]
    for hub in rec.hubs:
        assert np.sum(w[:, hub] == hub_w) == 30
    non_hub_exc = np.setdiff1d(np.arange(n_exc), rec.hubs)
    assert np.all(np.isin(w[:, non_hub_exc], [0.0, cfg["w_exc_mv"]]))
    # ~5 % random connectivity besides the hub projections.
    density = np.mean(w[:, non_hub_exc] != 0)
    assert 0.03 < density < 0.07
    delays = np.asarray(rec.meta["delays_ms"])
    assert np.all((delays[w != 0] >= 1.0) & (delays[w != 0] <= 4.0))


def test_stimulus_and_behaviour(recordings):
    rec = recordings[1]
    assert rec.frames.shape == (int(SHORT * 20), 32, 56)
    assert rec.frames.dtype == np.float32
    assert rec.frames.min() >= 0.0 and rec.frames.max() <= 1.0
    assert rec.frames.std() > 0.05  # real image content, not a blank
    speed, rate = rec.behavior["speed"]
    assert rate == 20.0 and speed.shape == (int(SHORT * 20),)
    assert np.all(speed >= 0)
    # Smooth: consecutive 50-ms samples are far closer than independent draws.
    assert np.std(np.diff(speed)) < 0.5 * np.std(speed)


def test_connectivity_is_visible_in_spikes(recordings):
    """A presynaptic spike changes the target's firing 1-5 ms later (the synaptic delays):
    hubs and excitatory cells raise it, inhibitory cells lower it (vs the 1-5 ms before)."""
    rec = recordings[0]
    w, times, units = rec.true_weights, rec.spike_times, rec.unit_ids
    by_unit = [times[units == i] for i in range(rec.n_neurons)]

    def lagged_count(src, tgt, lo, hi):
        t_tgt = by_unit[tgt]
        return sum(
            np.searchsorted(t_tgt, t + hi) - np.searchsorted(t_tgt, t + lo) for t in by_unit[src]
        )

    def ratio(pairs):
        after = sum(lagged_count(s, t, 0.001, 0.005) for s, t in pairs)
        before = sum(lagged_count(s, t, -0.005, -0.001) for s, t in pairs)
        return after / max(before, 1)

    cfg = rec.meta["config"]
    hub_pairs = [(h, t) for h in rec.hubs for t in np.flatnonzero(w[:, h] > 0)]
    inh_targets, inh_sources = np.nonzero(w == cfg["w_inh_mv"])
    assert ratio(hub_pairs) > 2.0
    assert ratio(list(zip(inh_sources, inh_targets))) < 0.8


def test_seeds_differ_and_are_reproducible(recordings):
    again = simulate_lif_network(seed=2, duration=SHORT, use_cache=False)
    np.testing.assert_array_equal(again.spike_times, recordings[2].spike_times)
    assert not np.array_equal(recordings[1].true_weights, recordings[2].true_weights)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROFOUND_CACHE", str(tmp_path))
    first = simulate_lif_network(seed=3, duration=1.0)
    entries = list((tmp_path / "lif").iterdir())
    assert len(entries) == 1 and (entries[0] / "recording.json").exists()

    def fail(cfg):
        raise AssertionError("the second run must load from the cache, not simulate")

    monkeypatch.setattr(simulate, "_simulate", fail)
    second = simulate_lif_network(seed=3, duration=1.0)
    np.testing.assert_array_equal(second.spike_times, first.spike_times)
    np.testing.assert_array_equal(second.frames, first.frames)
    np.testing.assert_array_equal(second.true_weights, first.true_weights)
    with pytest.raises(AssertionError, match="cache"):
        simulate_lif_network(seed=4, duration=1.0)  # another seed is another cache key


def test_unknown_config_key():
    with pytest.raises(ValueError, match="unknown LIF simulation keys"):
        lif_config(n_neuron=10)
