"""Sensor datamodules: per-segment normalisation, padded mixed-device batches, stateful sampling, trial folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofound.data.sensor_datamodule import (DeviceBatchSampler, SensorDataModule, TrialDataModule, assign_splits,
                                               collate_sensors, normalize_segment)
from neurofound.data.sensors import EEG, GRAD, MAG, SensorCorpus, SensorRecording
from neurofound.errors import ConfigError, DataError


def _rec(device: str, n_ch: int, seconds: float, split: str, subject: str, *, types=None, seed=0, events=None):
    rng = np.random.default_rng(seed)
    t = int(seconds * 256)
    types = np.zeros(n_ch, int) if types is None else np.asarray(types)
    pos = np.concatenate([rng.standard_normal((n_ch, 3)), np.zeros((n_ch, 3))], 1)
    return SensorRecording(rng.standard_normal((n_ch, t)) * 1e-5, 256.0, [f"{device}{i}" for i in range(n_ch)], types,
                           pos, device=device, subject=subject, split=split, events=events,
                           event_id={"left": 1, "right": 2} if events is not None else {})


def _corpus():
    recs = [_rec("eeg", 5, 9.0, "train", "a", seed=1), _rec("meg", 8, 9.0, "train", "b", types=[1, 1, 2, 2, 2, 2, 1, 2],
                                                         seed=2),
            _rec("eeg", 5, 5.0, "val", "c", seed=3), _rec("eeg", 5, 5.0, "test", "d", seed=4),
            _rec("meg2", 6, 5.0, "unseen", "e", types=[1] * 6, seed=5)]
    return SensorCorpus(recs)


def test_sensortype_normalisation_is_common_average_and_one_group_std():
    rng = np.random.default_rng(0)
    types = np.array([EEG, EEG, EEG, MAG, MAG, GRAD, GRAD, GRAD])
    scale = np.array([1e-5, 2e-5, 3e-5, 1e-11, 1e-11, 5e-11, 5e-11, 5e-11])[:, None]
    x = rng.standard_normal((8, 1000)) * scale
    out = normalize_segment(x, types)
    for t in (EEG, MAG, GRAD):
        g = out[types == t]
        np.testing.assert_allclose(g.mean(0), 0.0, atol=1e-5)  # common average per type at every sample
        assert g.std(ddof=1) == pytest.approx(1.0, rel=1e-4)  # ONE std for the whole group
    # relative amplitudes between channels survive (the reference's reason not to z-score per channel)
    eeg = out[types == EEG]
    assert eeg[2].std() > eeg[0].std()
    # units do not matter with the relative epsilon; the reference's absolute one shrinks EEG by about a third
    np.testing.assert_allclose(normalize_segment(x * 1e6, types), out, atol=1e-5)
    ref = normalize_segment(x, types, reference_compat=True)
    assert ref[types == EEG].std(ddof=1) < 0.8 and ref[types == MAG].std(ddof=1) == pytest.approx(1.0, rel=3e-2)


def test_channel_normalisation_and_flat_groups_stay_finite():
    x = np.zeros((3, 512))
    x[0] = np.sin(np.arange(512))
    out = normalize_segment(x, np.array([EEG, MAG, MAG]), mode="channel")
    assert np.isfinite(out).all() and out[0].std() == pytest.approx(1.0, rel=1e-3) and not out[1:].any()
    assert not normalize_segment(np.zeros((4, 512)), np.zeros(4, int)).any()
    with pytest.raises(ConfigError, match="normalization"):
        normalize_segment(x, np.zeros(3, int), mode="zscore")


def test_collate_pads_channels_with_a_mask():
    a = {"x": torch.ones(3, 512), "positions": torch.ones(3, 6), "types": torch.tensor([0, 0, 0]), "recording": 0,
         "start": 0, "label": -1}
    b = {"x": torch.ones(5, 512) * 2, "positions": torch.ones(5, 6), "types": torch.tensor([1, 2, 2, 1, 2]),
         "recording": 1, "start": 512, "label": 1}
    batch = collate_sensors([a, b])
    assert batch["x"].shape == (2, 5, 512) and batch["mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert not batch["x"][0, 3:].any() and not batch["positions"][0, 3:].any()
    assert batch["start"].tolist() == [0, 512] and batch["label"].tolist() == [-1, 1]
    assert batch["dataset"].tolist() == [0, 0]  # items made outside SensorSegments carry no dataset key
    del b["label"]
    assert collate_sensors([a, b])["label"].tolist() == [-1, -1]  # no label reads as unlabelled


def test_segments_grid_tail_and_splits():
    dm = SensorDataModule(_corpus(), segment_seconds=4.0, batch_size=2)
    assert len(dm.datasets["train"]) == 4  # two 9-s recordings: segments at 0 and 4 s, tail not trained on
    assert [it.start for it in dm.datasets["val"].items] == [0, 256]  # scored splits cover the tail
    assert len(dm.datasets["unseen"]) == 2
    assert {r.device for r in dm.datasets["unseen"].recordings} == {"meg2"}
    c = dm.input_contract()
    assert c.sampling_rate == 256.0 and c.window == 512 and set(c.sensor_types) == {"EEG", "MAG", "GRAD"}
    with pytest.raises(ConfigError, match="shorter than one tokenizer window"):
        SensorDataModule(_corpus(), segment_seconds=1.0)


def test_device_batches_and_channel_budget():
    dm = SensorDataModule(_corpus(), segment_seconds=2.0, batch_size=4, channel_budget=16)
    batches = list(dm.datasets["train"] and DeviceBatchSampler(dm.datasets["train"], 4, channel_budget=16))
    ds = dm.datasets["train"]
    for b in batches:
        assert len({ds.device_of(i) for i in b}) == 1  # one device per batch
        n_ch = ds.recordings[ds.items[b[0]].recording].n_channels
        assert len(b) <= max(1, 16 // n_ch)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    mixed = list(DeviceBatchSampler(ds, 4, by_device=False, seed=0))
    assert any(len({ds.device_of(i) for i in b}) > 1 for b in mixed)
    x = next(iter(SensorDataModule(_corpus(), segment_seconds=2.0, batch_size=8, batching="mixed").train_dataloader()))
    assert x["x"].shape[1] == 8 and (~x["mask"]).any()  # EEG items padded to the MEG channel count


def test_sampler_state_resumes_the_same_batches():
    ds = SensorDataModule(_corpus(), segment_seconds=2.0).datasets["train"]
    s = DeviceBatchSampler(ds, 2, seed=3)
    it = iter(s)
    first = [next(it) for _ in range(2)]
    state = s.state_dict()
    rest = list(it) + list(s)  # the rest of epoch 0, then epoch 1
    s2 = DeviceBatchSampler(ds, 2, seed=3)
    s2.load_state_dict(state)
    assert list(s2) + list(s2) == rest
    assert first + rest[:len(rest) // 2] != rest[len(rest) // 2:]  # a new epoch is a new order


def test_wrong_sampling_rate_is_a_clear_error():
    rec = _rec("eeg", 3, 4.0, "train", "a")
    rec.sfreq = 250.0
    with pytest.raises(DataError, match="256 Hz.*250 Hz"):
        SensorDataModule(SensorCorpus([rec]))


def _trial_corpus(n_subjects=6):
    recs = []
    for s in range(n_subjects):
        onsets = np.arange(0, 20 * 256, 2 * 256)
        ev = np.stack([onsets, np.zeros_like(onsets), 1 + (np.arange(len(onsets)) % 2)], 1)
        recs.append(_rec("bio", 4, 22.0, "downstream", f"s{s}", seed=s, events=ev))
    return SensorCorpus(recs)


def test_trial_folds_are_subject_wise_and_cover_every_subject_once():
    dm = TrialDataModule(_trial_corpus(), trial_seconds=2.0, n_folds=5)
    assert dm.classes == ["left", "right"]
    tested = []
    for k in range(5):
        dm.set_fold(k)
        subj = {split: {dm.recordings[it.recording].subject for it in dm.datasets[split].items}
                for split in ("train", "val", "test")}
        assert not (subj["train"] & subj["test"]) and not (subj["train"] & subj["val"]) and not (subj["val"] & subj["test"])
        tested += sorted(subj["test"])
    assert sorted(tested) == [f"s{i}" for i in range(6)]
    x, y = dm.arrays("train")
    assert x.ndim == 3 and x.shape[2] == 512 and set(y.tolist()) == {0, 1}
    with pytest.raises(DataError, match="at least 5 subjects"):
        TrialDataModule(_trial_corpus(3), trial_seconds=2.0, n_folds=5)


def test_assign_splits_by_time_and_by_file():
    recs = [_rec("eeg", 3, 10.0, "test", "a")]
    out = assign_splits(recs, "auto")
    assert [r.split for r in out] == ["train", "val", "test"]
    assert sum(r.n_samples for r in out) == recs[0].n_samples
    np.testing.assert_array_equal(np.concatenate([r.data for r in out], 1), recs[0].data)
    files = [_rec("eeg", 3, 4.0, "test", s) for s in "abcde"]
    roles = [r.split for r in assign_splits(files, "auto")]
    assert roles.count("test") >= 1 and roles.count("val") >= 1 and roles.count("train") >= 1
    assert all(r.split == "test" for r in assign_splits(files, "test"))
    with pytest.raises(ConfigError, match="at least 3"):
        assign_splits(files[:2], "by_file")
