"""SpikeDataModule: batch contract, token/truth agreement, behaviour scaling, contract errors."""

import numpy as np
import pytest
import torch

from neurofound.data.contracts import SpikeContract
from neurofound.data.datamodule import SpikeDataModule
from neurofound.data.records import SpikeRecording
from neurofound.errors import ConfigError, ContractError, DataError
from neurofound.tokenizers.spike import SpikeTokenizer

N, DURATION = 8, 20.0
TOK = dict(dt=0.01, window=0.05, window_prev=0.1, block_size=24, block_size_prev=40,
           frame_window=0.15, frame_rate=20.0)


def _recording(trials=None, frame_rate=20.0, frame_shape=(6, 10)):
    rng = np.random.default_rng(0)
    n_spikes = int(N * 8.0 * DURATION)
    n_frames = int(DURATION * frame_rate)
    return SpikeRecording(
        spike_times=rng.uniform(0, DURATION, n_spikes),
        unit_ids=rng.integers(0, N, n_spikes),
        n_neurons=N,
        duration=DURATION,
        frames=rng.random((n_frames, *frame_shape)).astype(np.float32),
        frame_rate=frame_rate,
        behavior={"speed": (5 + 2 * rng.standard_normal(int(DURATION * 20)), 20.0),
                  "pupil": (rng.random(int(DURATION * 20)), 20.0)},
        segments=[(0.0, 12.0), (12.0, DURATION)],
        trials=trials,
    )


@pytest.fixture(scope="module")
def dm():
    module = SpikeDataModule(_recording(), SpikeTokenizer(N, **TOK), batch_size=16,
                             behavior_inputs=["pupil"], behavior_targets=["speed"], frame_shape=(6, 10))
    module.setup()
    return module


def test_batch_contract(dm):
    batch = next(iter(dm.train_dataloader()))
    b, s, sp = 16, TOK["block_size"], TOK["block_size_prev"]
    for key, shape in [("id", (b, s)), ("dt", (b, s)), ("target_id", (b, s)), ("target_dt", (b, s)),
                       ("id_prev", (b, sp)), ("dt_prev", (b, sp))]:
        assert batch[key].shape == shape and batch[key].dtype == torch.int64, key
    assert torch.equal(batch["target_id"][:, :-1], batch["id"][:, 1:])
    assert torch.equal(batch["target_dt"][:, :-1], batch["dt"][:, 1:])
    assert batch["frames"].shape == (b, 1, 3, 6, 10) and batch["frames"].dtype == torch.float32
    assert batch["behavior"]["pupil"].shape == (b, 1, 1) and batch["behavior"]["pupil"].dtype == torch.float32
    assert batch["behavior_dt"]["pupil"].shape == (b, 1)
    assert batch["behavior_target"]["speed"].shape == (b, 1)
    assert "speed" not in batch["behavior"] and "pupil" not in batch["behavior_target"]
    assert batch["interval"].dtype == torch.float64 and batch["interval"].shape == (b,)
    assert batch["segment"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    # Rows are the split table's rows: interval and segment agree with it.
    idx = batch["index"].numpy()
    np.testing.assert_array_equal(batch["interval"].numpy(), dm.intervals["train"][idx])
    np.testing.assert_array_equal(batch["segment"].numpy(), dm.splits.segments["train"][idx])


def test_frames_follow_the_tokenizer(dm):
    batch = next(iter(dm.dataloader("test")))
    for row, t in enumerate(batch["interval"].numpy()):
        start, stop = dm.tokenizer.frame_slice(float(t), dm.recording.frames.shape[0])
        np.testing.assert_array_equal(batch["frames"][row, 0].numpy(), dm.recording.frames[start:stop])


def test_tokens_decode_to_the_held_out_spikes(dm):
    tok, table = dm.tokenizer, dm.tables["test"]
    truth = dm.held_out_spikes("test")
    assert len(truth["sets"]) == dm.intervals["test"].size > 0
    for i, t in enumerate(dm.intervals["test"][:50]):
        times, units = tok.decode(table["id"][i], table["dt"][i], t - tok.window)
        if truth["sets"][i].size <= TOK["block_size"] - 2:  # not truncated
            assert sorted(units.tolist()) == sorted(truth["sets"][i].tolist())
            np.testing.assert_allclose(np.sort(times), np.sort(np.floor(truth["times"][truth["window"] == i] / 0.01 + 1e-6) * 0.01), atol=1e-9)
        # The past window holds exactly the spikes of [t - w - wp, t - w).
        rec = dm.recording
        lo, hi = t - tok.window - tok.window_prev, t - tok.window
        past = rec.unit_ids[(rec.spike_times >= lo - 1e-8) & (rec.spike_times < hi - 1e-8)]
        _, past_units = tok.decode(table["id_prev"][i], table["dt_prev"][i], lo)
        if past.size <= TOK["block_size_prev"] - 2:
            assert sorted(past_units.tolist()) == sorted(past.tolist())


def test_behaviour_is_z_scored_with_train_statistics(dm):
    stats = dm.behavior_stats["speed"]
    train = dm.tables["train"]["behavior/speed"]
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-4
    raw = dm.tables["test"]["behavior_raw/speed"]
    np.testing.assert_allclose(dm.denormalize_behavior("speed", dm.tables["test"]["behavior/speed"]), raw, rtol=1e-5)
    assert stats["std"] == pytest.approx(dm.tables["train"]["behavior_raw/speed"].std())
    # The value is the sample at the current window's start.
    t = dm.intervals["val"][3]
    assert dm.tables["val"]["behavior_raw/speed"][3] == dm.recording.behavior["speed"][0][round((t - 0.05) * 20)]
    plain = SpikeDataModule(dm.recording, dm.tokenizer, behavior_targets=["speed"], normalize_behavior=False)
    plain.setup()
    np.testing.assert_allclose(plain.tables["test"]["behavior/speed"], raw, rtol=1e-6)


def test_splits_are_leakage_free_and_inside_segments(dm):
    w, wp = TOK["window"], TOK["window_prev"]
    spans = dm.recording.segments
    for split, t in dm.intervals.items():
        seg = dm.splits.segments[split]
        starts = np.array([spans[k][0] for k in seg])
        assert np.all(t - w - wp >= starts - 1e-9)
    assert set(np.unique(dm.splits.segments["test"])) == {0, 1}


def test_train_fraction_and_loaders():
    rec, tok = _recording(), SpikeTokenizer(N, **TOK)
    full = SpikeDataModule(rec, tok, batch_size=8, frames=False)
    part = SpikeDataModule(rec, tok, batch_size=8, frames=False, train_fraction=0.1)
    full.setup(), part.setup()
    n = part.intervals["train"].size
    assert n == int(np.ceil(0.1 * full.intervals["train"].size))
    np.testing.assert_array_equal(part.intervals["train"], full.intervals["train"][-n:])
    assert len(part.train_dataloader()) == int(np.ceil(n / 8))
    assert "frames" not in next(iter(part.val_dataloader()))
    # Shuffling is reproducible from the seed.
    first = [b["index"] for b in part.train_dataloader()]
    again = [b["index"] for b in part.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_single_item_and_default_collate(dm):
    item = dm.datasets["train"][0]
    assert item["id"].shape == (TOK["block_size"],) and item["frames"].shape == (1, 3, 6, 10)
    assert item["behavior"]["pupil"].shape == (1, 1) and item["interval"].dtype == torch.float64


def test_held_out_counts(dm):
    counts, starts = dm.held_out_counts("test", TOK["window"])
    truth = dm.held_out_spikes("test")
    assert counts.shape == (N, dm.intervals["test"].size)
    np.testing.assert_array_equal(counts.sum(0), [s.size for s in truth["sets"]])
    coarse, coarse_starts = dm.held_out_counts("test", 0.5)
    assert coarse.shape[1] == coarse_starts.size and coarse.sum() <= counts.sum()
    # Generated spikes are binned on the same grid.
    gen, _ = dm.held_out_counts("test", 0.5, spike_times=truth["times"], unit_ids=truth["unit_ids"])
    np.testing.assert_array_equal(gen, coarse)


def test_input_contract(dm):
    c = dm.input_contract()
    assert isinstance(c, SpikeContract)
    assert c.n_neurons == N and c.frame_shape == (3, 6, 10) and c.frame_rate == 20.0
    assert c.dt == 0.01 and c.window == 0.05 and c.window_prev == 0.1
    assert c.behavior_inputs == ("pupil",) and c.behavior_targets == ("speed",)
    plain = SpikeDataModule(dm.recording, dm.tokenizer, frames=False).input_contract()
    assert plain.frame_shape is None and plain.frame_rate is None


def test_trials_mode():
    trials = [(float(k), float(k) + 1.5) for k in range(0, 20, 2)]
    module = SpikeDataModule(_recording(trials=trials), SpikeTokenizer(N, **TOK), split_mode="trials", seed=4)
    module.setup()
    owners = [set(np.unique(module.splits.segments[s]).tolist()) for s in ("train", "val", "test")]
    assert sum(len(o) for o in owners) == 10 and not (owners[0] & owners[1] or owners[0] & owners[2])
    batch = next(iter(module.dataloader("test")))
    for t, k in zip(batch["interval"].numpy(), batch["segment"].numpy()):
        assert trials[k][0] <= t - 0.15 + 1e-9 and t <= trials[k][1] + 1e-9


@pytest.mark.parametrize("trials, expected", [(None, "blocks"), ([(float(k), k + 1.5) for k in range(0, 20, 2)], "trials")])
def test_auto_split_mode(trials, expected):
    module = SpikeDataModule(_recording(trials=trials), SpikeTokenizer(N, **TOK), split_mode="auto", frames=False)
    assert module.split_mode == expected
    module.setup()
    if expected == "trials":  # whole trials: each trial's windows are in one split only
        owners = [set(np.unique(module.splits.segments[s]).tolist()) for s in ("train", "val", "test")]
        assert sum(len(o) for o in owners) == len(trials)
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    else:
        assert module.splits.blocks["test"] == [pytest.approx((9.6, 12.0)), pytest.approx((18.4, 20.0))]


@pytest.mark.parametrize(
    "make, match, error",
    [
        (lambda: (_recording(frame_rate=10.0), SpikeTokenizer(N, **TOK), {}), "frame rate mismatch.*10 Hz.*20 Hz", ContractError),
        (lambda: (_recording(), SpikeTokenizer(N, **TOK), {"frame_shape": (32, 56)}), r"expects.*\(32, 56\).*\(6, 10\)", ContractError),
        (lambda: (_recording(), SpikeTokenizer(N + 1, **TOK), {}), "n_neurons=9.*8 units", ContractError),
        (lambda: (_recording(), SpikeTokenizer(N, **TOK), {"behavior_targets": ["gaze"]}), r"'gaze'.*\['pupil', 'speed'\]", DataError),
        (lambda: (_recording(), SpikeTokenizer(N, **TOK), {"split_mode": "trials"}), "no trials", DataError),
        (lambda: (_recording(), SpikeTokenizer(N, **TOK), {"split_mode": "random"}), "split_mode must be one of", ConfigError),
        (lambda: (_recording(), SpikeTokenizer(N, **TOK), {"batch_size": 0}), "batch_size", ConfigError),
        (lambda: (_recording(), SpikeTokenizer(N, **{**TOK, "window": 0.02, "window_prev": 0.02}),
                  {"behavior_inputs": ["speed"]}), "below one sample per current window", DataError),
    ],
)
def test_contract_errors(make, match, error):
    rec, tok, kw = make()
    with pytest.raises(error, match=match):
        SpikeDataModule(rec, tok, **kw)


def test_frames_requested_but_missing():
    rec = _recording()
    rec.frames = None
    with pytest.raises(ValueError, match="frames=False"):
        SpikeDataModule(rec, SpikeTokenizer(N, **TOK))


def test_behaviour_target_specs():
    rec, tok = _recording(), SpikeTokenizer(N, **TOK)
    plain = SpikeDataModule(rec, tok, frames=False, behavior_targets=["speed", "pupil"])
    assert plain.behavior_target_specs() == {"speed": {"objective": "regression"}, "pupil": {"objective": "regression"}}
    dm = SpikeDataModule(rec, tok, frames=False, behavior_targets=["speed", "pupil"],
                         behavior_classes={"speed": {"bin_edges": [4, 6]}})
    assert dm.behavior_target_specs() == {"speed": {"objective": "classification", "n_classes": 3, "bin_edges": [4.0, 6.0]},
                                          "pupil": {"objective": "regression"}}
    dm.setup()
    # a classification target stays in raw units (the model bins it with the same edges); regression is z-scored
    np.testing.assert_allclose(dm.tables["test"]["behavior/speed"], dm.tables["test"]["behavior_raw/speed"], rtol=1e-6)
    assert "speed" not in dm.behavior_stats and "pupil" in dm.behavior_stats
    batch = next(iter(dm.dataloader("val")))
    assert batch["behavior_target"]["speed"].dtype == torch.float32 and batch["behavior_target"]["speed"].shape[1] == 1


def test_class_index_targets_without_edges_must_be_class_indices():
    rec = _recording()
    state = np.random.default_rng(1).integers(0, 3, int(DURATION * 20)).astype(float)
    rec.behavior["state"] = (state, 20.0)
    tok = SpikeTokenizer(N, **TOK)
    ok = SpikeDataModule(rec, tok, frames=False, behavior_targets=["state"],
                         behavior_classes={"state": {"n_classes": 3}})
    ok.setup()
    assert set(np.unique(ok.tables["train"]["behavior/state"]).tolist()) == {0.0, 1.0, 2.0}
    bad = SpikeDataModule(rec, tok, frames=False, behavior_targets=["state"],
                          behavior_classes={"state": {"n_classes": 2}})
    with pytest.raises(DataError, match="class indices 0..1"):
        bad.setup()


@pytest.mark.parametrize("classes, kw, match", [
    ({"gaze": {"n_classes": 2}}, {}, r"\['gaze'\].*not behaviour targets"),
    ({"speed": {}}, {}, "n_classes >= 2 or bin_edges"),
    ({"speed": {"n_classes": 1}}, {}, "n_classes >= 2 or bin_edges"),
    ({"speed": {"bin_edges": [6.0, 4.0]}}, {}, "strictly increasing"),
    ({"speed": {"bin_edges": [4.0, float("nan")]}}, {}, "finite"),
    ({"speed": {"bin_edges": [4.0], "n_classes": 3}}, {}, "1 bin_edges make 2 classes"),
    ({"speed": {"n_classes": 2, "edges": [1.0]}}, {}, r"unknown keys \['edges'\]"),
    ({"pupil": {"n_classes": 2}}, {"behavior_inputs": ["pupil"]}, "both an input"),
])
def test_behaviour_classes_errors(classes, kw, match):
    with pytest.raises(ConfigError, match=match):
        SpikeDataModule(_recording(), SpikeTokenizer(N, **TOK), frames=False, behavior_targets=["speed", "pupil"],
                        behavior_classes=classes, **kw)
