"""SpikeTokenizer: reference parity (fixture), fixed-quirk behaviour, vectorised-vs-oracle, bad input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from neurofound.tokenizers.spike import SpikeTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("NEUROFOUND_FIXTURES", REPO_ROOT / "tests" / "fixtures" / "reference"))
NF_FIXTURE = FIXTURES / "neuroformer"


@pytest.fixture(scope="module")
def fixture_io() -> dict[str, np.ndarray]:
    path = NF_FIXTURE / "io.safetensors"
    if not path.is_file():
        pytest.fail(f"reference fixture missing: {path} (set NEUROFOUND_FIXTURES to the folder holding neuroformer/)")
    return load_file(str(path))


def fixture_tokenizer(reference_compat: bool) -> SpikeTokenizer:
    # config.json of the fixture: 10 neurons, dt 0.01, windows curr 0.05 / prev 0.1 / frame 0.2,
    # block_size id 12 / prev_id 20.
    return SpikeTokenizer(
        n_neurons=10,
        dt=0.01,
        window=0.05,
        window_prev=0.1,
        block_size=12,
        block_size_prev=20,
        frame_window=0.2,
        frame_rate=20.0,
        reference_compat=reference_compat,
    )


# --- reference parity --------------------------------------------------------------------------------
def test_compat_matches_fixture_token_for_token(fixture_io):
    tok = fixture_tokenizer(reference_compat=True)
    out = tok.encode_raster(fixture_io["tok.raster"], fixture_io["tok.intervals"])
    for ours, ref in [
        ("id", "id_full"),
        ("dt", "dt_full"),
        ("id_prev", "id_prev_full"),
        ("dt_prev", "dt_prev_full"),
        ("pad", "pad"),
        ("pad_prev", "pad_prev"),
    ]:
        np.testing.assert_array_equal(out[ours], fixture_io[f"tok.{ref}"], err_msg=ours)
    np.testing.assert_array_equal(out["curr_window"], fixture_io["tok.curr_window"])
    np.testing.assert_array_equal(out["prev_window"], fixture_io["tok.prev_window"])
    np.testing.assert_array_equal(out["interval"], fixture_io["tok.intervals"])
    # the model inputs/targets of the fixture are the next-token shift of the full sequences
    np.testing.assert_array_equal(out["id"][:, :-1], fixture_io["in.id"])
    np.testing.assert_array_equal(out["dt"][:, 1:], fixture_io["in.target.dt"])
    np.testing.assert_array_equal(out["id_prev"][:, :-1], fixture_io["in.id_prev"])
    # 25 current events in sample 0 -> truncated to the last 10 (T4)
    np.testing.assert_array_equal(out["n_events"], [25, 9, 0])
    np.testing.assert_array_equal(out["n_truncated"], [15, 0, 0])
    np.testing.assert_array_equal(out["n_events_prev"], [13, 17, 8])


def test_compat_vocab_and_frames_match_fixture(fixture_io):
    tok = fixture_tokenizer(reference_compat=True)
    assert (tok.n_dt, tok.id_vocab_size, tok.dt_vocab_size) == (11, 13, 14)
    np.testing.assert_array_equal(tok.dt_values, fixture_io["tok.dt_vocab_values"])
    np.testing.assert_array_equal([tok.id_sos, tok.id_eos, tok.id_pad], fixture_io["tok.id_special"])
    np.testing.assert_array_equal([tok.dt_sos, tok.dt_eos, tok.dt_pad], fixture_io["tok.dt_special"])
    n_stim = fixture_io["tok.stimulus"].shape[0]
    start, stop = tok.frame_slice(fixture_io["tok.intervals"], n_stim)
    np.testing.assert_array_equal(start, fixture_io["tok.frame_start"])
    np.testing.assert_array_equal(stop - start, tok.n_frames)
    assert tok.n_frames == fixture_io["in.frames"].shape[2] == 4
    stim = fixture_io["tok.stimulus"]
    for b, t in enumerate(fixture_io["tok.intervals"]):
        s, e = tok.frame_slice(float(t), n_stim)
        np.testing.assert_array_equal(stim[s:e], fixture_io["in.frames"][b, 0])


def test_spike_time_path_equals_raster_path(fixture_io):
    """Spike times on the bin edges (0.03 / 0.01 = 2.999...) and mid-bin give the raster's tokens."""
    raster = fixture_io["tok.raster"]
    units, bins = np.nonzero(raster)
    reps = raster[units, bins]
    units, bins = np.repeat(units, reps), np.repeat(bins, reps)
    for compat in (True, False):
        tok = fixture_tokenizer(compat)
        ref = tok.encode_raster(raster, fixture_io["tok.intervals"])
        for offset in (0.0, 0.5, 0.999):
            rng = np.random.default_rng(0)
            order = rng.permutation(units.size)  # arbitrary input order must not matter
            out = tok.encode((bins[order] + offset) * 0.01, units[order], fixture_io["tok.intervals"])
            for key in ref:
                np.testing.assert_array_equal(out[key], ref[key], err_msg=f"{key} offset={offset} compat={compat}")


def test_fixed_default_differs_from_reference_only_in_the_quirks(fixture_io):
    raster, intervals = fixture_io["tok.raster"], fixture_io["tok.intervals"]
    compat = fixture_tokenizer(True).encode_raster(raster, intervals)
    fixed = fixture_tokenizer(False).encode_raster(raster, intervals)
    # IDs never change; only dt and frames do.
    for key in ("id", "id_prev", "pad", "pad_prev", "n_events", "n_truncated"):
        np.testing.assert_array_equal(fixed[key], compat[key], err_msg=key)
    # T6 fixed: sample 0 is truncated; SOS dt is 0 instead of the dropped event's 3.
    assert compat["dt"][0, 0] == 3 and fixed["dt"][0, 0] == 0
    np.testing.assert_array_equal(fixed["dt"][:, 1:], compat["dt"][:, 1:])
    np.testing.assert_array_equal(fixed["dt"][1:], compat["dt"][1:])
    # T3 fixed: sample 2's past window starts at -0.05 s: offsets from its true start (+5 bins).
    n_ev = int(fixed["n_events_prev"][2])
    np.testing.assert_array_equal(fixed["dt_prev"][2, 1 : 1 + n_ev], compat["dt_prev"][2, 1 : 1 + n_ev] + 5)
    np.testing.assert_array_equal(fixed["dt_prev"][2, 1 + n_ev :], compat["dt_prev"][2, 1 + n_ev :])
    np.testing.assert_array_equal(fixed["dt_prev"][:2], compat["dt_prev"][:2])
    # T8 fixed: the clip ends at the window's end, one frame earlier (unless clamped at the start).
    n_stim = fixture_io["tok.stimulus"].shape[0]
    start_fixed, _ = fixture_tokenizer(False).frame_slice(intervals, n_stim)
    np.testing.assert_array_equal(start_fixed, [5, 1, 0])
    np.testing.assert_array_equal(fixture_io["tok.frame_start"], [6, 2, 0])


# --- an independent per-window oracle written from the fixture README (T1-T7) -----------------------
def oracle(raster, t, w, wp, dt, block, block_prev, compat):
    """Straight Python transcription of rules T1-T7 (one window at a time, seconds-based)."""
    n_neurons, n_bins = raster.shape
    K = round(max(w, wp) / dt) + 1
    sos, eos, pad = n_neurons, n_neurons + 1, n_neurons + 2
    dt_eos, dt_pad = K + 1, K + 2

    def g(v):
        return round(dt * round(v / dt), 6)

    def index(v):
        i = round(v / dt)
        return max(i, 0) if compat else i

    def one(start, end, S):
        events = []
        for i in range(index(start), index(end)):
            if not 0 <= i < n_bins:
                continue
            if compat:
                off = round((i * dt - start) / dt) if start > 0 else i
            else:
                off = i - round(start / dt)
            for n in range(n_neurons):
                events += [(n, off)] * int(round(raster[n, i]))
        kept = events[len(events) - min(len(events), S - 2) :]
        ids = [sos] + [e[0] for e in kept] + [eos]
        n_pad = S + 1 - len(ids)
        if compat:
            dts = ([0] + [e[1] for e in events] + [dt_eos])[-S:]
        else:
            dts = [0] + [e[1] for e in kept] + [dt_eos]
        return ids + [pad] * n_pad, dts + [dt_pad] * n_pad, n_pad

    cs = g(t - w)
    ce = g(cs + w)
    ps = g(cs - wp)
    return one(cs, ce, block), one(ps, cs, block_prev)


@pytest.mark.parametrize("compat", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_encoder_matches_per_window_oracle(compat, seed, caplog):
    rng = np.random.default_rng(seed)
    n_neurons, n_bins = int(rng.integers(1, 12)), int(rng.integers(20, 80))
    dt = [0.01, 0.005, 0.02][seed]
    w = dt * int(rng.integers(1, 7))
    wp = dt * int(rng.integers(1, 12))
    block, block_prev = int(rng.integers(2, 14)), int(rng.integers(2, 30))
    raster = rng.poisson(rng.uniform(0.05, 0.8), size=(n_neurons, n_bins))
    grid = np.arange(0, n_bins * dt, w)
    intervals = np.concatenate([grid, rng.uniform(-0.05, n_bins * dt + 0.05, 15)])  # off-grid and negative
    tok = SpikeTokenizer(n_neurons, dt=dt, window=w, window_prev=wp, block_size=block,
                         block_size_prev=block_prev, reference_compat=compat)
    with caplog.at_level(logging.WARNING):
        out = tok.encode_raster(raster, intervals)
    for row, t in enumerate(intervals):
        (ids, dts, n_pad), (ids_p, dts_p, n_pad_p) = oracle(raster, float(t), w, wp, dt, block, block_prev, compat)
        assert out["id"][row].tolist() == ids, (row, t)
        assert out["dt"][row].tolist() == dts, (row, t)
        assert out["id_prev"][row].tolist() == ids_p, (row, t)
        assert out["dt_prev"][row].tolist() == dts_p, (row, t)
        assert out["pad"][row] == n_pad and out["pad_prev"][row] == n_pad_p
    assert out["dt"].max() < tok.dt_vocab_size and out["dt_prev"][:, 1:].max() <= tok.dt_pad


# --- vocabulary, layout, truncation ----------------------------------------------------------------------
def test_default_vocabulary_layout():
    tok = SpikeTokenizer(n_neurons=7)  # window 0.05, dt 0.01 -> K = 6 numeric dts, 9 dt tokens
    assert (tok.id_sos, tok.id_eos, tok.id_pad, tok.id_vocab_size) == (7, 8, 9, 10)
    assert (tok.n_dt, tok.dt_sos, tok.dt_eos, tok.dt_pad, tok.dt_vocab_size) == (6, 6, 7, 8, 9)
    assert tok.n_frames == 3  # 0.15 s at 20 Hz
    np.testing.assert_allclose(tok.dt_values, [0, 0.01, 0.02, 0.03, 0.04, 0.05])
    big = SpikeTokenizer(n_neurons=40_000)
    out = big.encode([0.001], [39_999], [0.05])
    assert out["id"].dtype == np.int32 and out["id"][0, 1] == 39_999
    small = tok.encode([0.001], [3], [0.05])
    assert small["id"].dtype == np.int16 and small["dt"].dtype == np.int16
    assert small["id"].shape == (1, 101) and small["id_prev"].shape == (1, 701)


def test_empty_window_is_sos_eos_then_padding():
    tok = SpikeTokenizer(n_neurons=3, block_size=6, block_size_prev=5)
    out = tok.encode(np.array([]), np.array([], dtype=int), [0.05, 1.0])
    for row in range(2):
        assert out["id"][row].tolist() == [3, 4, 5, 5, 5, 5, 5]
        assert out["dt"][row].tolist() == [0, tok.dt_eos] + [tok.dt_pad] * 5
        assert out["id_prev"][row].tolist() == [3, 4, 5, 5, 5, 5]
    np.testing.assert_array_equal(out["pad"], [5, 5])
    np.testing.assert_array_equal(out["n_events"], [0, 0])


def test_ordering_within_a_bin_and_repeated_counts():
    tok = SpikeTokenizer(n_neurons=4, block_size=10)
    # bin 1 holds neurons 3, 0, 0 (given out of order), bin 0 neuron 2; window [0, 0.05)
    out = tok.encode([0.015, 0.012, 0.018, 0.001], [3, 0, 0, 2], [0.05])
    assert out["id"][0, :6].tolist() == [4, 2, 0, 0, 3, 5]
    assert out["dt"][0, :6].tolist() == [0, 0, 1, 1, 1, tok.dt_eos]
    counts = np.zeros((4, 5), dtype=np.int64)
    counts[3, 1], counts[0, 1], counts[2, 0] = 1, 2, 1
    np.testing.assert_array_equal(tok.encode_raster(counts, [0.05])["id"], out["id"])


def test_truncation_keeps_last_events_counts_and_warns_once(caplog):
    tok = SpikeTokenizer(n_neurons=2, block_size=5, block_size_prev=4)  # keep 3 current / 2 past events
    counts = np.zeros((2, 10), dtype=np.int64)
    counts[0, 5:10] = 1  # 5 events in current window [0.05, 0.1)
    counts[1, 0:5] = 2  # 10 events in past window [0, 0.05)
    with caplog.at_level(logging.WARNING, logger="neurofound.tokenizers.spike"):
        out = tok.encode_raster(counts, [0.1, 0.2])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "current windows: 1 of 2" in msg and "2 earliest events dropped" in msg
    assert "past windows: 1 of 2" in msg and "8 earliest events dropped" in msg
    assert out["id"][0].tolist() == [2, 0, 0, 0, 3, 4]
    assert out["dt"][0].tolist() == [0, 2, 3, 4, tok.dt_eos, tok.dt_pad]  # kept = last three bins
    np.testing.assert_array_equal(out["n_truncated"], [2, 0])
    np.testing.assert_array_equal(out["n_truncated_prev"], [8, 0])
    np.testing.assert_array_equal(out["pad"], [1, 4])
    compat = SpikeTokenizer(n_neurons=2, block_size=5, block_size_prev=4, reference_compat=True)
    assert compat.encode_raster(counts, [0.1])["dt"][0, 0] == 1  # T6: latest dropped event is in bin 6

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neurofound.tokenizers.spike"):
        tok.encode_raster(counts[:, :1] * 0, [0.05])
    assert not caplog.records  # no truncation, no warning


def test_default_past_window_before_zero_uses_true_start():
    tok = SpikeTokenizer(n_neurons=1, window=0.05, window_prev=0.1, block_size=4, block_size_prev=6)
    # t = 0.1: past window [-0.05, 0.05); a spike at 0.0 sits 5 bins after the true start.
    out = tok.encode([0.0, 0.021], [0, 0], [0.1])
    assert out["dt_prev"][0, 1:3].tolist() == [5, 7]
    compat = SpikeTokenizer(n_neurons=1, window=0.05, window_prev=0.1, block_size=4, block_size_prev=6,
                            reference_compat=True)
    assert compat.encode([0.0, 0.021], [0, 0], [0.1])["dt_prev"][0, 1:3].tolist() == [0, 2]
    # a spike before time 0 belongs to the default window only (compat clips the window at bin 0)
    assert tok.encode([-0.03], [0], [0.1])["n_events_prev"][0] == 1
    assert compat.encode([-0.03], [0], [0.1])["n_events_prev"][0] == 0


def test_decode_inverts_encode_and_intervals_grid():
    rng = np.random.default_rng(3)
    tok = SpikeTokenizer(n_neurons=5, block_size=200, block_size_prev=200)
    intervals = tok.intervals(1.0)
    np.testing.assert_allclose(intervals, np.arange(1, 21) * 0.05)
    assert tok.intervals(1.0, start=2.0)[0] == pytest.approx(2.05)
    bins = rng.integers(0, 100, 300)
    units = rng.integers(0, 5, 300)
    out = tok.encode(bins * 0.01, units, intervals)
    recovered_t, recovered_u = [], []
    for row in range(intervals.size):
        times, ids = tok.decode(out["id"][row], out["dt"][row], out["curr_window"][row, 0])
        recovered_t.append(times)
        recovered_u.append(ids)
    got = sorted(zip(np.round(np.concatenate(recovered_t) / 0.01).astype(int), np.concatenate(recovered_u)))
    assert got == sorted(zip(bins.tolist(), units.tolist()))
    with pytest.raises(ValueError, match="non-numeric dt token"):
        tok.decode([5, 1, 6], [0, tok.dt_eos, tok.dt_pad], 0.0)


# --- bad input ---------------------------------------------------------------------------------------------
def test_bad_spike_inputs_raise_clear_errors():
    tok = SpikeTokenizer(n_neurons=4)
    with pytest.raises(ValueError, match="NaN/Inf"):
        tok.encode([0.1, np.nan], [0, 1], [0.2])
    with pytest.raises(ValueError, match="NaN/Inf"):
        tok.encode([0.1, np.inf], [0, 1], [0.2])
    with pytest.raises(ValueError, match="3 entries but unit_ids has 2"):
        tok.encode([0.1, 0.2, 0.3], [0, 1], [0.2])
    with pytest.raises(ValueError, match="n_neurons=4"):
        tok.encode([0.1], [4], [0.2])
    with pytest.raises(ValueError, match="valid ids 0..3"):
        tok.encode([0.1], [-1], [0.2])
    with pytest.raises(TypeError, match="integer neuron indices"):
        tok.encode([0.1], [1.5], [0.2])
    with pytest.raises(ValueError, match="intervals holds NaN"):
        tok.encode([0.1], [1], [np.nan])


def test_bad_raster_inputs_raise_clear_errors():
    tok = SpikeTokenizer(n_neurons=2)
    with pytest.raises(ValueError, match="NaN/Inf"):
        tok.encode_raster(np.array([[0.0, np.nan], [1.0, 0.0]]), [0.05])
    with pytest.raises(ValueError, match="NaN/Inf"):
        tok.encode_raster(np.array([[0.0, np.inf], [1.0, 0.0]]), [0.05])
    with pytest.raises(ValueError, match="negative"):
        tok.encode_raster(np.array([[0, -1], [1, 0]]), [0.05])
    with pytest.raises(ValueError, match="negative"):
        tok.encode_raster(np.array([[0.0, -0.5], [1.0, 0.0]]), [0.05], convert="round")
    with pytest.raises(ValueError, match="convert='round'"):
        tok.encode_raster(np.array([[0.4, 1.6], [1.0, 0.0]]), [0.05])
    with pytest.raises(ValueError, match="transposed"):
        tok.encode_raster(np.zeros((5, 2)), [0.05])
    with pytest.raises(ValueError, match="convert must be one of"):
        tok.encode_raster(np.zeros((2, 5)), [0.05], convert="ceil")
    rates = np.array([[0.4, 1.6, 2.5], [1.0, 0.0, 0.7]])
    rounded = tok.encode_raster(rates, [0.05], convert="round")
    floored = tok.encode_raster(rates, [0.05], convert="floor")
    assert rounded["n_events"][0] == 0 + 2 + 2 + 1 + 0 + 1  # half to even: 2.5 -> 2
    assert floored["n_events"][0] == 0 + 1 + 2 + 1 + 0 + 0
    # integer-valued floats need no conversion
    np.testing.assert_array_equal(tok.encode_raster(np.rint(rates), [0.05])["id"], rounded["id"])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="whole number"):
        SpikeTokenizer(n_neurons=3, dt=0.01, window=0.055)
    with pytest.raises(ValueError, match="block_size must be >= 2"):
        SpikeTokenizer(n_neurons=3, block_size=1)
    with pytest.raises(TypeError, match="n_neurons must be an int"):
        SpikeTokenizer(n_neurons=3.0)
    with pytest.raises(ValueError, match="dt must be finite and > 0"):
        SpikeTokenizer(n_neurons=3, dt=0.0)
    with pytest.raises(ValueError, match="clip needs 3"):
        SpikeTokenizer(n_neurons=3).frame_slice(0.5, 2)


def test_inputs_are_not_modified_and_may_be_read_only():
    tok = SpikeTokenizer(n_neurons=3)
    times = np.array([0.001, 0.011, 0.012, 0.03])
    units = np.array([2, 0, 1, 1], dtype=np.int16)  # already sorted, already the compact dtype
    times.flags.writeable = False
    units.flags.writeable = False
    out = tok.encode(times, units, [0.05])
    assert out["id"][0, :6].tolist() == [3, 2, 0, 1, 1, 4]
    np.testing.assert_array_equal(units, [2, 0, 1, 1])
    shuffled = tok.encode(times[::-1], units[::-1], [0.05])
    np.testing.assert_array_equal(shuffled["id"], out["id"])
    np.testing.assert_array_equal(units, [2, 0, 1, 1])
