"""`SensorRecording`: one EEG/MEG recording after preprocessing, with the sensor metadata a model needs.

A recording holds the signal of C channels at one sampling rate, and per channel its sensor type
(`EEG` 0, `MAG` 1, `GRAD` 2: the BrainOmni code's ids, so that its released weights load) and a
6-vector: position xyz (normalised per modality over the whole device) and orientation xyz (zeros
for EEG). Channel names are recorded but never used as model input: a model that reads sensors
by geometry takes any device. Optional MNE-style events (`(n, 3)`: sample, 0, code) with their
names carry the trials of a paradigm (motor imagery, oddball).

A `SensorCorpus` is a list of recordings, each tagged with the split it belongs to; it is what a
simulator or a reader hands to the datamodule and what the on-disk cache stores (Arrow tables
written with Hugging Face `datasets`, one per recording, plus a JSON index).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from neurofound.errors import ConfigError, DataError, MissingFileError

# Sensor-type ids of the BrainOmni code (factory/brain_constant.py); the paper's text orders them
# EEG, GRAD, MAG, but the released weights use these ids.
SENSOR_TYPES: tuple[str, ...] = ("EEG", "MAG", "GRAD")
EEG, MAG, GRAD = 0, 1, 2

# Where a recording belongs. "unseen" = a device held out of every pretraining stage (zero-shot
# reconstruction); "downstream" = labelled trials for fine-tuning.
SPLITS: tuple[str, ...] = ("train", "val", "test", "unseen", "downstream")

FORMAT_VERSION = 1
_META_FILE = "recording.json"
_INDEX_FILE = "corpus.json"


def sensor_type_names(types: Iterable[int]) -> tuple[str, ...]:
    """Type ids -> names (`0 -> "EEG"`); an unknown id is a DataError."""
    out = []
    for t in types:
        t = int(t)
        if not 0 <= t < len(SENSOR_TYPES):
            raise DataError(f"unknown sensor type id {t}; known: {dict(enumerate(SENSOR_TYPES))}")
        out.append(SENSOR_TYPES[t])
    return tuple(out)


@dataclass
class SensorRecording:
    """C channels at `sfreq` Hz with their sensor metadata.

    Args:
        data: `(C, T)` float32 signal (SI units: V for EEG, T for MAG, T/m for GRAD, unless
            `meta["units"]` says otherwise).
        sfreq: sampling rate in Hz.
        ch_names: C channel names (recorded, never model input).
        sensor_types: `(C,)` int64 type ids (0 EEG, 1 MAG, 2 GRAD).
        positions: `(C, 6)` float32: position xyz normalised per modality over the whole device,
            then orientation xyz (unit vector for MEG, zeros for EEG).
        device: the device or montage name (`"biosemi64"`, `"neuromag306"`, ...).
        subject: subject identifier.
        split: one of `SPLITS`.
        events: optional `(n, 3)` int64 MNE events (sample at `sfreq`, 0, code).
        event_id: names of the event codes (`{"left": 1, ...}`).
        meta: JSON-serialisable extras (paradigm, bad channels, preprocessing steps, source file).
    """

    format_version: ClassVar[int] = FORMAT_VERSION

    data: np.ndarray
    sfreq: float
    ch_names: tuple[str, ...]
    sensor_types: np.ndarray
    positions: np.ndarray
    device: str = ""
    subject: str = ""
    split: str = "train"
    events: np.ndarray | None = None
    event_id: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 2:
            raise DataError(f"recording data must be (channels, samples), got shape {self.data.shape}")
        n_ch = self.data.shape[0]
        self.ch_names = tuple(str(c) for c in self.ch_names)
        self.sensor_types = np.asarray(self.sensor_types, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float32)
        if len(self.ch_names) != n_ch or self.sensor_types.shape != (n_ch,):
            raise DataError(f"recording {self.subject or '?'} ({self.device or '?'}): {n_ch} channels of data but "
                            f"{len(self.ch_names)} names and {self.sensor_types.shape[0]} sensor types")
        if self.positions.shape != (n_ch, 6):
            raise DataError(f"positions must be (channels, 6) = ({n_ch}, 6) (xyz + orientation), got "
                            f"{self.positions.shape}")
        sensor_type_names(np.unique(self.sensor_types))
        if not np.isfinite(self.positions).all():
            raise DataError(f"recording {self.subject or '?'} ({self.device or '?'}) has non-finite sensor positions; "
                            f"set a montage (data.montage=<name>) or drop the channels without positions")
        if not (np.isfinite(self.sfreq) and self.sfreq > 0):
            raise DataError(f"sampling rate must be a positive number, got {self.sfreq}")
        if self.split not in SPLITS:
            raise ConfigError(f"split {self.split!r} is not one of {SPLITS}")
        if self.events is not None:
            self.events = np.asarray(self.events, dtype=np.int64).reshape(-1, 3)
        self.event_id = {str(k): int(v) for k, v in (self.event_id or {}).items()}

    # -- views ----------------------------------------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration(self) -> float:
        return self.n_samples / float(self.sfreq)

    @property
    def type_names(self) -> tuple[str, ...]:
        return sensor_type_names(self.sensor_types)

    @property
    def modalities(self) -> tuple[str, ...]:
        """"EEG" and/or "MEG" (MAG and GRAD are MEG)."""
        types = set(self.sensor_types.tolist())
        return tuple(m for m, ids in (("EEG", {EEG}), ("MEG", {MAG, GRAD})) if types & ids)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{n} {int((self.sensor_types == i).sum())}" for i, n in enumerate(SENSOR_TYPES)
                          if (self.sensor_types == i).any())
        return (f"SensorRecording({self.device or 'device?'}, subject {self.subject or '?'}, {self.split}: "
                f"{self.n_channels} channels ({kinds}), {self.duration:.1f} s at {self.sfreq:g} Hz"
                f"{f', {len(self.events)} events' if self.events is not None else ''})")

    # -- persistence -------------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the signal as an Arrow table (one row per channel, HF `datasets`) and the metadata as JSON."""
        import datasets
        import pyarrow as pa
        from datasets.table import InMemoryTable

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        n_ch, n_t = self.data.shape
        signal = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(self.data).reshape(-1)), n_t)
        position = pa.FixedSizeListArray.from_arrays(pa.array(self.positions.reshape(-1)), 6)
        table = pa.table({"signal": signal, "sensor_type": pa.array(self.sensor_types), "position": position})
        bars_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a cache write is no progress worth showing
        try:
            datasets.Dataset(InMemoryTable(table)).save_to_disk(str(directory / "channels"))
        finally:
            if bars_on:
                datasets.enable_progress_bars()
        meta = {"format_version": FORMAT_VERSION, "sfreq": float(self.sfreq), "ch_names": list(self.ch_names),
                "n_samples": int(n_t), "device": self.device, "subject": self.subject, "split": self.split,
                "events": None if self.events is None else self.events.tolist(), "event_id": self.event_id,
                "meta": self.meta}
        (directory / _META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SensorRecording":
        import datasets

        directory = Path(directory)
        if not (directory / _META_FILE).is_file():
            raise MissingFileError(f"{directory} holds no saved SensorRecording ({_META_FILE} is missing)")
        meta = json.loads((directory / _META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{directory}: recording format {meta.get('format_version')} is not {FORMAT_VERSION}; "
                            f"delete the cache entry to rebuild it")
        table = datasets.load_from_disk(str(directory / "channels")).data.table  # memory-mapped Arrow
        n_ch = table.num_rows

        def flat(name: str, width: int) -> np.ndarray:
            values = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            return values.reshape(n_ch, width)

        return cls(data=flat("signal", int(meta["n_samples"])), sfreq=meta["sfreq"], ch_names=tuple(meta["ch_names"]),
                   sensor_types=table.column("sensor_type").to_numpy(), positions=flat("position", 6),
                   device=meta["device"], subject=meta["subject"], split=meta["split"],
                   events=None if meta["events"] is None else np.asarray(meta["events"], dtype=np.int64),
                   event_id=meta["event_id"], meta=meta["meta"])


@dataclass
class SensorCorpus:
    """Recordings, each tagged with its split; what a simulator or reader hands to the datamodule."""

    format_version: ClassVar[int] = FORMAT_VERSION

    recordings: list[SensorRecording]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.recordings = list(self.recordings)

    def __len__(self) -> int:
        return len(self.recordings)

    def __iter__(self):
        return iter(self.recordings)

    def select(self, *, split: str | Sequence[str] | None = None, device: str | Sequence[str] | None = None,
               modality: str | None = None) -> list[SensorRecording]:
        """The recordings of the given split(s), device(s) and modality ("EEG" or "MEG")."""
        splits = {split} if isinstance(split, str) else set(split) if split is not None else None
        devices = {device} if isinstance(device, str) else set(device) if device is not None else None
        return [r for r in self.recordings
                if (splits is None or r.split in splits) and (devices is None or r.device in devices)
                and (modality is None or modality in r.modalities)]

    @property
    def devices(self) -> list[str]:
        return sorted({r.device for r in self.recordings})

    def __repr__(self) -> str:
        counts = {s: len(self.select(split=s)) for s in SPLITS if self.select(split=s)}
        return f"SensorCorpus({len(self)} recordings {counts}, devices {self.devices})"

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        names = []
        for i, rec in enumerate(self.recordings):
            name = f"rec_{i:04d}"
            rec.save(directory / name)
            names.append(name)
        (directory / _INDEX_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, "recordings": names,
                                                         "meta": self.meta}, indent=1, default=_json_default))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SensorCorpus":
        directory = Path(directory)
        if not (directory / _INDEX_FILE).is_file():
            raise MissingFileError(f"{directory} holds no saved SensorCorpus ({_INDEX_FILE} is missing)")
        index = json.loads((directory / _INDEX_FILE).read_text())
        return cls([SensorRecording.load(directory / n) for n in index["recordings"]], meta=index.get("meta", {}))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


__all__ = ["EEG", "GRAD", "MAG", "SENSOR_TYPES", "SPLITS", "SensorCorpus", "SensorRecording", "sensor_type_names"]
