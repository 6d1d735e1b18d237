"""EEG/MEG recordings -> normalised segments or labelled trials, in batches that may mix devices.

What a sensor model sees of a recording (BrainOmni spec §1):

1. **Segments** (pretraining): contiguous stretches of `segment_seconds` cut from each recording
   on a grid that starts at 0; the last segment is aligned to the recording's end so that no
   sample is dropped when a split is scored (it overlaps the one before). Training uses the
   grid only (non-overlapping, as the reference).
   **Trials** (downstream): `trial_seconds` from each event onset, labelled by its event name.
2. **Normalisation, per segment** (`normalize_segment`): the reference's `sensortype_wise_normalize`:
   within each sensor-type group (EEG, MAG, GRAD) subtract the across-channel mean at every time
   point (a common average per type), then divide by ONE standard deviation of the whole group, so
   that relative amplitudes between channels survive. The reference adds an absolute epsilon in SI
   units (1e-5 for EEG, 1e-13 for MEG), which shrinks a 20 µV EEG group by a third; by default the
   epsilon here is relative to the group's own scale (`eps_rel`), and `reference_compat=True`
   restores the absolute one. Per-channel z-scoring (`normalization="channel"`) is an option.
3. **Batches**: items of one batch may come from different devices. `collate_sensors` right-pads
   the channel axis and returns `mask (B, C)` (True = real channel); padded channels are zeros
   with zero positions, and the model keeps them out of attention, loss and correlation.
   `batching="device"` (the default, as the reference's bucket sampler) draws each batch from one
   device, which wastes no compute on padding; `batching="mixed"` draws across devices.

The training loader is stateful (torchdata) with a sampler that owns its generator, so a killed
run resumes on the same batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from neurofound.data.contracts import SensorContract
from neurofound.data.sensors import EEG, GRAD, MAG, SENSOR_TYPES, SensorCorpus, SensorRecording
from neurofound.errors import ConfigError, DataError

log = logging.getLogger("neurofound")

NORMALIZATIONS = ("sensortype", "channel", "none")
BATCHING = ("device", "mixed")
# The reference's absolute epsilon per type group, in SI units (fixture README "Inputs").
REFERENCE_EPS = {EEG: 1e-5, MAG: 1e-13, GRAD: 1e-13}


# ------------------------------------------------------------------------------------------------
# normalisation
# ------------------------------------------------------------------------------------------------
def normalize_segment(x: np.ndarray, types: np.ndarray, *, mode: str = "sensortype", eps_rel: float = 1e-6,
                      reference_compat: bool = False) -> np.ndarray:
    """Normalise one segment `(C, T)` (see the module docstring, step 2).

    Args:
        x: `(C, T)` signal of ONE recording (no padded channels).
        types: `(C,)` sensor type ids.
        mode: "sensortype" (common average + group std per type), "channel" (per-channel z-score)
            or "none".
        eps_rel: relative epsilon: the denominator is `std + eps_rel * rms`, `rms` the group's (or
            channel's) root-mean-square before re-referencing; an all-zero group stays zero.
        reference_compat: the reference's absolute epsilon (`REFERENCE_EPS`) instead; needs SI units.

    Returns:
        `(C, T)` float32.
    """
    if mode not in NORMALIZATIONS:
        raise ConfigError(f"normalization={mode!r} is not one of {NORMALIZATIONS}")
    x = np.asarray(x, dtype=np.float64)
    if mode == "none":
        return x.astype(np.float32)
    out = np.zeros_like(x)
    if mode == "channel":
        mean = x.mean(axis=1, keepdims=True)
        std = x.std(axis=1, ddof=0, keepdims=True)
        rms = np.sqrt((x ** 2).mean(axis=1, keepdims=True))
        denom = std + eps_rel * rms
        np.divide(x - mean, denom, out=out, where=denom > 0)
        return out.astype(np.float32)
    for t in np.unique(types):
        rows = types == t
        group = x[rows]
        centred = group - group.mean(axis=0, keepdims=True)
        # ONE std over the whole group (channels and time), unbiased as torch's `Tensor.std`
        std = float(centred.std(ddof=1)) if centred.size > 1 else 0.0
        if reference_compat:  # the reference's absolute epsilon, in SI units
            out[rows] = centred / (std + REFERENCE_EPS[int(t)])
            continue
        denom = std + eps_rel * float(np.sqrt((group ** 2).mean()))
        if denom > 0:
            out[rows] = centred / denom
    return out.astype(np.float32)


def normalization_step(mode: str, reference_compat: bool) -> str:
    """The model card's line for the per-segment normalisation."""
    if mode == "sensortype":
        eps = "absolute epsilon 1e-5 (EEG) / 1e-13 (MEG), as the reference" if reference_compat else \
            "relative epsilon"
        return f"per segment and sensor type: common average, then divided by the group's std ({eps})"
    if mode == "channel":
        return "per segment: each channel z-scored"
    return "no per-segment normalisation"


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    recording: int
    start: int
    label: int = -1


class SensorSegments(Dataset):
    """Fixed-length pieces of recordings (segments or trials), normalised on access.

    Args:
        recordings: the recordings (all at the same sampling rate).
        items: which piece of which recording.
        length: samples per piece.
        normalization, eps_rel, reference_compat: see `normalize_segment`.
        key: an integer naming this set of recordings (items carry it as `dataset`, so that a piece is
            identified by `(dataset, recording, start)` across the splits of one datamodule).
    """

    def __init__(self, recordings: Sequence[SensorRecording], items: Sequence[_Item], length: int, *,
                 normalization: str = "sensortype", eps_rel: float = 1e-6, reference_compat: bool = False,
                 key: int = 0):
        self.key = int(key)
        self.recordings = list(recordings)
        self.items = list(items)
        self.length = int(length)
        self.normalization, self.eps_rel, self.reference_compat = normalization, eps_rel, reference_compat

    def __len__(self) -> int:
        return len(self.items)

    def device_of(self, i: int) -> str:
        return self.recordings[self.items[i].recording].device

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        rec = self.recordings[it.recording]
        x = rec.data[:, it.start:it.start + self.length]
        x = normalize_segment(x, rec.sensor_types, mode=self.normalization, eps_rel=self.eps_rel,
                              reference_compat=self.reference_compat)
        # positions and types may be read-only views of the Arrow cache: copied (they are small)
        return {"x": torch.from_numpy(x), "positions": torch.tensor(rec.positions),
                "types": torch.tensor(rec.sensor_types), "recording": it.recording, "start": it.start,
                "label": it.label, "dataset": self.key}


def collate_sensors(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack items, right-padding the channel axis (see the module docstring, step 3).

    Returns:
        `x (B, C, T)`, `positions (B, C, 6)`, `types (B, C)`, `mask (B, C)` bool (True = real
        channel), `recording (B,)`, `start (B,)` (sample), `label (B,)` (-1 when unlabelled), `dataset (B,)`
        (which `SensorSegments` the item came from, 0 for items without the key: `(dataset, recording, start)`
        identifies a piece).
    """
    n_ch = max(it["x"].shape[0] for it in items)
    n_t = items[0]["x"].shape[1]
    if any(it["x"].shape[1] != n_t for it in items):
        raise DataError("items of one batch must have the same number of samples")
    b = len(items)
    x = torch.zeros(b, n_ch, n_t)
    pos = torch.zeros(b, n_ch, 6)
    types = torch.zeros(b, n_ch, dtype=torch.long)
    mask = torch.zeros(b, n_ch, dtype=torch.bool)
    for i, it in enumerate(items):
        c = it["x"].shape[0]
        x[i, :c], pos[i, :c], types[i, :c], mask[i, :c] = it["x"], it["positions"], it["types"], True
    as_long = lambda key, d=0: torch.tensor([int(it.get(key, d)) for it in items], dtype=torch.long)  # noqa: E731
    return {"x": x, "positions": pos, "types": types, "mask": mask, "recording": as_long("recording"),
            "start": as_long("start"), "label": as_long("label", -1), "dataset": as_long("dataset")}


class DeviceBatchSampler(Sampler[list[int]]):
    """Batches of indices, shuffled with a generator of its own; by device (one device per batch) or mixed.

    Stateful (`state_dict` / `load_state_dict`): the torchdata loader saves its position in every
    checkpoint, so a resumed run continues on the same batches.
    """

    def __init__(self, dataset: SensorSegments, batch_size: int, *, by_device: bool = True, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, channel_budget: int | None = None):
        self.dataset, self.batch_size, self.by_device = dataset, int(batch_size), by_device
        self.channel_budget = channel_budget
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.epoch, self.position = int(seed), 0, 0
        self._batches: list[list[int]] | None = None

    def _make(self, epoch: int) -> list[list[int]]:
        g = np.random.default_rng([self.seed, epoch])
        groups: dict[str, list[int]] = {}
        for i in range(len(self.dataset)):
            groups.setdefault(self.dataset.device_of(i) if self.by_device else "", []).append(i)
        batches = []
        for key in sorted(groups):
            idx = np.asarray(groups[key])
            if self.shuffle:
                idx = idx[g.permutation(len(idx))]
            size = self.batch_size
            if self.channel_budget and self.by_device:  # fewer segments of a device with many channels
                n_ch = self.dataset.recordings[self.dataset.items[int(idx[0])].recording].n_channels
                size = max(1, min(size, int(self.channel_budget) // n_ch))
            for s in range(0, len(idx), size):
                chunk = idx[s:s + size].tolist()
                if len(chunk) == size or not self.drop_last:
                    batches.append(chunk)
        if self.shuffle:
            batches = [batches[j] for j in g.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        if self._batches is None:
            self._batches = self._make(self.epoch)
        return len(self._batches)

    def __iter__(self) -> Iterator[list[int]]:
        if self._batches is None:
            self._batches = self._make(self.epoch)
        batches = self._batches
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]
        self.epoch, self.position, self._batches = self.epoch + 1, 0, None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._batches = int(state["epoch"]), int(state["position"]), None


# ------------------------------------------------------------------------------------------------
# datamodules
# ------------------------------------------------------------------------------------------------
def _check_rates(recordings: Sequence[SensorRecording], sampling_rate: float) -> None:
    bad = sorted({f"{r.device or r.subject}: {r.sfreq:g} Hz" for r in recordings if abs(r.sfreq - sampling_rate) > 1e-6})
    if bad:
        raise DataError(f"recordings must be at {sampling_rate:g} Hz (the model's rate) but {', '.join(bad[:5])}; "
                        f"preprocess them (neurofound.data.mne_io.to_recording resamples)")


def _contract(recordings: Sequence[SensorRecording], sampling_rate: float, window: int) -> SensorContract:
    types = sorted({int(t) for r in recordings for t in r.sensor_types})
    devices = sorted({r.device for r in recordings})
    if len(devices) == 1:  # one device: its channels and geometry are the contract's record
        r = recordings[0]
        return SensorContract(channel_names=r.ch_names, sensor_types=tuple(SENSOR_TYPES[t] for t in types),
                              sampling_rate=sampling_rate, window=window,
                              positions=tuple(map(tuple, r.positions[:, :3].round(5).tolist())),
                              orientations=tuple(map(tuple, r.positions[:, 3:].round(5).tolist())))
    # several devices: the device names stand for their channels (the geometry is in the data)
    return SensorContract(channel_names=tuple(f"{d} (device)" for d in devices),
                          sensor_types=tuple(SENSOR_TYPES[t] for t in types), sampling_rate=sampling_rate,
                          window=window)


class SensorDataModule(L.LightningDataModule):
    """Segments of a `SensorCorpus` by split: train, val, test (held-in devices) and unseen (held-out devices).

    Args:
        corpus: the recordings (a `SensorCorpus`, e.g. from `simulate_meeg` or `read_corpus`).
        segment_seconds: length of a segment (the reference: 10 s for the tokenizer, 30 s for stage 2).
        batch_size: segments per batch.
        normalization, eps_rel, reference_compat: per-segment normalisation (`normalize_segment`).
        batching: "device" (one device per batch) or "mixed" (padded channels, masks).
        channel_budget: with `batching="device"`, at most this many channels x segments per training
            batch (a 306-channel MEG batch then holds fewer segments than a 19-channel EEG one; None: off).
        sampling_rate: the rate every recording must have (the tokenizer's, 256 Hz).
        window: the tokenizer's window in samples (the contract's `window`).
        max_segments: at most this many segments per split (evenly spaced; None: all).
        modality: "EEG" or "MEG": pretrain on that modality's recordings only (train, val and test splits;
            the unseen split keeps both). None: both (the paper's joint pretraining).
        seed: the training sampler's seed.
        num_workers: loader workers.
    """

    def __init__(self, corpus: SensorCorpus, *, segment_seconds: float = 10.0, batch_size: int = 8,
                 normalization: str = "sensortype", eps_rel: float = 1e-6, reference_compat: bool = False,
                 batching: str = "device", channel_budget: int | None = None, sampling_rate: float = 256.0,
                 window: int = 512, max_segments: int | None = None, modality: str | None = None, seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        if modality is not None and str(modality).upper() not in ("EEG", "MEG"):
            raise ConfigError(f"data.modality={modality!r} must be EEG, MEG or null (both)")
        self.modality = None if modality is None else str(modality).upper()
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization={normalization!r} is not one of {NORMALIZATIONS}")
        if batching not in BATCHING:
            raise ConfigError(f"batching={batching!r} is not one of {BATCHING}")
        if not isinstance(corpus, SensorCorpus):
            raise ConfigError(f"SensorDataModule takes a SensorCorpus, got {type(corpus).__name__}")
        self.corpus = corpus
        self.sampling_rate, self.window = float(sampling_rate), int(window)
        self.length = int(round(segment_seconds * self.sampling_rate))
        if self.length < self.window:
            raise ConfigError(f"segment_seconds={segment_seconds} is shorter than one tokenizer window "
                              f"({self.window} samples at {self.sampling_rate:g} Hz)")
        self.batch_size, self.batching, self.seed, self.num_workers = int(batch_size), batching, int(seed), num_workers
        self.channel_budget = None if channel_budget is None else int(channel_budget)
        self.norm = dict(normalization=normalization, eps_rel=float(eps_rel), reference_compat=bool(reference_compat))
        self.max_segments = max_segments
        _check_rates(list(corpus), self.sampling_rate)
        self.datasets: dict[str, SensorSegments] = {}
        for split in ("train", "val", "test", "unseen"):
            recs = corpus.select(split=split, modality=self.modality if split != "unseen" else None)
            items = self._segments(recs, cover=split != "train")
            if max_segments is not None and len(items) > max_segments:
                keep = np.linspace(0, len(items) - 1, int(max_segments)).round().astype(int)
                items = [items[i] for i in np.unique(keep)]
            self.datasets[split] = SensorSegments(recs, items, self.length, **self.norm, key=len(self.datasets))
        if not len(self.datasets["train"]) and corpus.select(split="train"):
            raise DataError(f"no training segment of {segment_seconds} s fits in the training recordings "
                            f"(shortest {min(r.duration for r in corpus.select(split='train')):.1f} s); "
                            f"lower data.segment_seconds")

    def _segments(self, recs: Sequence[SensorRecording], *, cover: bool) -> list[_Item]:
        items = []
        for i, r in enumerate(recs):
            if r.n_samples < self.length:
                log.warning("recording %s (%s) is %.1f s, shorter than one segment (%.1f s): skipped", r.subject,
                            r.device, r.duration, self.length / self.sampling_rate)
                continue
            starts = list(range(0, r.n_samples - self.length + 1, self.length))
            if cover and starts[-1] + self.length < r.n_samples:  # scoring: the tail too
                starts.append(r.n_samples - self.length)
            items += [_Item(i, s) for s in starts]
        return items

    # -- loaders ------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:  # everything is built in __init__
        return None

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise ConfigError(f"split must be one of {sorted(self.datasets)}, got {split!r}")
        ds = self.datasets[split]
        if not shuffle:
            return DataLoader(ds, batch_size=self.batch_size, collate_fn=collate_sensors, num_workers=self.num_workers)
        from torchdata.stateful_dataloader import StatefulDataLoader

        sampler = DeviceBatchSampler(ds, self.batch_size, by_device=self.batching == "device", seed=self.seed,
                                     channel_budget=self.channel_budget)
        return StatefulDataLoader(ds, batch_sampler=sampler, collate_fn=collate_sensors, num_workers=self.num_workers,
                                  generator=torch.Generator().manual_seed(self.seed + 1))

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    # -- description -------------------------------------------------------------------------------------------
    def input_contract(self) -> SensorContract:
        recs = [r for s in ("train", "val", "test") for r in self.corpus.select(split=s)] or list(self.corpus)
        return _contract(recs, self.sampling_rate, self.window)

    def describe(self) -> str:
        parts = []
        for split, ds in self.datasets.items():
            if ds.recordings:
                devs = sorted({r.device for r in ds.recordings})
                parts.append(f"{split} {len(ds.recordings)} recordings / {len(ds)} segments ({', '.join(devs)})")
        return f"{self.length / self.sampling_rate:g}-s segments at {self.sampling_rate:g} Hz: " + "; ".join(parts)


class TrialDataModule(L.LightningDataModule):
    """Labelled trials of the `downstream` recordings, split by subject into folds.

    Fold `k` of `n_folds` (subjects dealt round-robin into folds in a seeded order): test = fold k,
    validation = fold k+1, training = the other folds (3:1:1 for five folds, the reference's
    protocol, spec §5.1). `set_fold(k)` switches folds.

    Args:
        corpus: recordings with events; those of split "downstream" (and `device`, if given) are used.
        device: the downstream device (None: all downstream recordings).
        classes: event names to classify (None: every event name, in event-code order).
        trial_seconds: samples after each event onset.
        n_folds, fold: the subject-wise folds.
        batch_size, normalization, eps_rel, reference_compat, sampling_rate, window, seed, num_workers:
            as `SensorDataModule`.
    """

    def __init__(self, corpus: SensorCorpus, *, device: str | None = None, classes: Sequence[str] | None = None,
                 trial_seconds: float = 4.0, n_folds: int = 5, fold: int = 0, batch_size: int = 16,
                 normalization: str = "sensortype", eps_rel: float = 1e-6, reference_compat: bool = False,
                 sampling_rate: float = 256.0, window: int = 512, seed: int = 0, num_workers: int = 0):
        super().__init__()
        recs = corpus.select(split="downstream", device=device)
        if not recs:
            have = sorted({r.device for r in corpus.select(split="downstream")})
            raise DataError(f"no downstream (labelled trial) recordings{f' on device {device!r}' if device else ''}; "
                            f"devices with downstream data: {have or 'none'}. The embedded data has them "
                            f"(data=meeg_sim data.downstream_device=biosemi64|ctf275); recordings read from your own "
                            f"files (data=mne) carry no trial labels for decoding yet")
        _check_rates(recs, float(sampling_rate))
        self.corpus, self.device, self.recordings = corpus, device, recs
        self.sampling_rate, self.window = float(sampling_rate), int(window)
        self.length = int(round(trial_seconds * self.sampling_rate))
        if self.length < self.window:
            raise ConfigError(f"trial_seconds={trial_seconds} is shorter than one tokenizer window")
        names = classes or sorted({n for r in recs for n in r.event_id}, key=lambda n: recs[0].event_id.get(n, 0))
        self.classes = [str(c) for c in names]
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), num_workers
        self.norm = dict(normalization=normalization, eps_rel=float(eps_rel), reference_compat=bool(reference_compat))
        self.items = self._trials()
        subjects = sorted({r.subject for r in recs})
        if len(subjects) < max(3, n_folds):
            raise DataError(f"subject-wise {n_folds}-fold decoding needs at least {max(3, n_folds)} subjects, the "
                            f"downstream data has {len(subjects)}; lower finetune.protocol.folds")
        order = np.random.default_rng(self.seed).permutation(len(subjects))
        self.subject_fold = {subjects[j]: k % n_folds for k, j in enumerate(order)}
        self.n_folds = int(n_folds)
        self.set_fold(fold)

    def _trials(self) -> list[_Item]:
        items = []
        for i, r in enumerate(self.recordings):
            if r.events is None:
                continue
            codes = {r.event_id[c]: k for k, c in enumerate(self.classes) if c in r.event_id}
            for sample, _, code in r.events:
                if code in codes and sample + self.length <= r.n_samples:
                    items.append(_Item(i, int(sample), codes[int(code)]))
        if not items:
            raise DataError(f"no trials of classes {self.classes} fit in the downstream recordings")
        return items

    def set_fold(self, fold: int) -> None:
        if not 0 <= fold < self.n_folds:
            raise ConfigError(f"fold {fold} is not in 0..{self.n_folds - 1}")
        self.fold = int(fold)
        role = {}
        for subject, k in self.subject_fold.items():
            role[subject] = "test" if k == fold else "val" if k == (fold + 1) % self.n_folds else "train"
        self.datasets = {split: SensorSegments(self.recordings, [it for it in self.items
                                                                 if role[self.recordings[it.recording].subject] == split],
                                               self.length, **self.norm) for split in ("train", "val", "test")}

    def setup(self, stage: str | None = None) -> None:
        return None

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        ds = self.datasets[split]
        if not shuffle:
            return DataLoader(ds, batch_size=self.batch_size, collate_fn=collate_sensors, num_workers=self.num_workers)
        sampler = DeviceBatchSampler(ds, self.batch_size, by_device=False, seed=self.seed + self.fold)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_sensors, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """`(trials, C, T)` normalised signals and `(trials,)` labels of a split (for CSP and other baselines)."""
        ds = self.datasets[split]
        if not len(ds):
            return np.zeros((0, 0, self.length), np.float32), np.zeros(0, np.int64)
        xs = [ds[i] for i in range(len(ds))]
        n_ch = {x["x"].shape[0] for x in xs}
        if len(n_ch) != 1:
            raise DataError("arrays() needs one device (channel count) per split; set data.device")
        return np.stack([x["x"].numpy() for x in xs]), np.array([x["label"] for x in xs], dtype=np.int64)

    def input_contract(self) -> SensorContract:
        return _contract(self.recordings, self.sampling_rate, self.window)

    def describe(self) -> str:
        counts = {s: len(d) for s, d in self.datasets.items()}
        return (f"{len(self.items)} trials of {self.length / self.sampling_rate:g} s ({', '.join(self.classes)}) from "
                f"{len(self.subject_fold)} subjects on {self.device or 'all downstream devices'}; subject-wise fold "
                f"{self.fold + 1}/{self.n_folds}: trials train/val/test = {counts['train']}/{counts['val']}/{counts['test']}")


# ------------------------------------------------------------------------------------------------
# a user's recordings
# ------------------------------------------------------------------------------------------------
SPLIT_MODES = ("auto", "test", "by_file", "by_time")


def slice_recording(rec: SensorRecording, start: int, stop: int, split: str) -> SensorRecording:
    """Samples `[start, stop)` of a recording as a recording of its own (events re-based, those outside dropped)."""
    events = None
    if rec.events is not None:
        inside = (rec.events[:, 0] >= start) & (rec.events[:, 0] < stop)
        events = rec.events[inside].copy()
        events[:, 0] -= start
    meta = {**rec.meta, "slice": [int(start), int(stop)]}
    return SensorRecording(rec.data[:, start:stop], rec.sfreq, rec.ch_names, rec.sensor_types, rec.positions,
                           device=rec.device, subject=rec.subject, split=split, events=events, event_id=rec.event_id,
                           meta=meta)


def assign_splits(recordings: Sequence[SensorRecording], mode: str, *, val_frac: float = 0.1,
                  test_frac: float = 0.2, seed: int = 0) -> list[SensorRecording]:
    """Tag a user's recordings with splits.

    * "test": everything is test data (what `neurofound eval` scores);
    * "by_file": whole recordings go to train / val / test (at least one each; needs 3 files);
    * "by_time": each recording is cut into contiguous blocks: train, then val, then test at its end;
    * "auto": "by_file" with 3 or more recordings, else "by_time".
    """
    if mode not in SPLIT_MODES:
        raise ConfigError(f"data.split={mode!r} is not one of {SPLIT_MODES}")
    recs = list(recordings)
    if mode == "auto":
        mode = "by_file" if len(recs) >= 3 else "by_time"
    if mode == "test":
        return [slice_recording(r, 0, r.n_samples, "test") for r in recs]
    if mode == "by_file":
        if len(recs) < 3:
            raise ConfigError(f"data.split=by_file needs at least 3 recordings (train, val, test), got {len(recs)}; "
                              f"use data.split=by_time")
        order = np.random.default_rng(seed).permutation(len(recs))
        n_test = max(1, int(round(test_frac * len(recs))))
        n_val = max(1, int(round(val_frac * len(recs))))
        role = {int(i): "test" for i in order[:n_test]}
        role.update({int(i): "val" for i in order[n_test:n_test + n_val]})
        return [slice_recording(r, 0, r.n_samples, role.get(i, "train")) for i, r in enumerate(recs)]
    out = []
    for r in recs:
        a = int(round((1.0 - val_frac - test_frac) * r.n_samples))
        b = int(round((1.0 - test_frac) * r.n_samples))
        out += [slice_recording(r, 0, a, "train"), slice_recording(r, a, b, "val"), slice_recording(r, b, r.n_samples,
                                                                                                    "test")]
    return out


def read_corpus(path: str | Sequence[str], *, montage: str | None = None, preprocessing: dict | None = None,
                split: str = "auto", val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
                purpose: str = "train") -> SensorCorpus:
    """A user's EEG/MEG files (a file, a folder, a BIDS root, or a list of them) as a preprocessed `SensorCorpus`.

    Every file goes through `neurofound.data.mne_io` (reader, sensor geometry, the reference
    preprocessing). Splits follow `split` (`assign_splits`); "auto" scores everything when the verb
    is `eval` (`purpose`), and splits by file or by time for training.
    """
    from neurofound.data.mne_io import PreprocessConfig, find_recordings, read_recordings

    paths = [path] if isinstance(path, (str, bytes)) or not isinstance(path, Sequence) else list(path)
    if not paths:
        raise ConfigError("data.path is empty: give a file, a folder or a BIDS root (or a list of them)")
    found = [f for p in paths for f in find_recordings(p)]
    recs = read_recordings(found, PreprocessConfig.from_dict(dict(preprocessing or {})), montage=montage, split="test")
    mode = "test" if split == "auto" and purpose not in ("train", "finetune") else split
    recs = assign_splits(recs, mode, val_frac=val_frac, test_frac=test_frac, seed=seed)
    names = sorted({str(r.meta.get("source", r.subject)) for r in recs})
    return SensorCorpus(recs, meta={"description": f"{len(found)} recording(s): {', '.join(names[:3])}"
                                                   f"{', ...' if len(names) > 3 else ''}", "source": "user files"})


__all__ = ["BATCHING", "NORMALIZATIONS", "DeviceBatchSampler", "SensorDataModule", "SensorSegments", "TrialDataModule",
           "assign_splits", "collate_sensors", "normalization_step", "normalize_segment", "read_corpus",
           "slice_recording"]
