"""`SpikeDataModule`: a `SpikeRecording` + a spike tokenizer -> Lightning train/val/test loaders.

Setup happens once, vectorised:

1. Windows are split leakage-safe (`splits.py`): contiguous time blocks per segment, or whole
   trials; `train_fraction` keeps a contiguous run at the end of the training split.
2. Every window of every split is tokenized ONCE by the tokenizer's vectorised `encode`, one call
   per segment / trial with only that span's spikes (so no past window reaches across a
   boundary into an independent stretch of time).
3. Frame clip starts (`tokenizer.frame_slice`) and behaviour samples are computed for all
   windows at once; behaviour is z-scored with training-split statistics (`behavior_stats`).

A `Dataset` then only slices arrays; `__getitems__` slices a whole batch at once, so a
`DataLoader` batch costs a handful of numpy fancy-indexing calls. Batches follow the "Batches"
table of docs/architecture.md.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler as StatefulRandomSampler

from neurofound.data.binning import bin_grid, bin_spikes
from neurofound.data.contracts import SpikeContract
from neurofound.data.records import SpikeRecording
from neurofound.data.splits import SPLITS, Splits, check_no_leakage, resolve_split_mode, split_intervals
from neurofound.errors import ConfigError, ContractError, DataError

_TOKEN_KEYS = ("id", "dt", "id_prev", "dt_prev")


def collate(samples: Any) -> dict[str, Any]:
    """Collate function: passes through a batch built by `__getitems__`, else default_collate."""
    if isinstance(samples, dict):
        return samples
    return default_collate(samples)


class SpikeWindows(Dataset):
    """Tokenized windows of one split; item i is row i of the precomputed arrays.

    Args:
        table: dict of per-window numpy arrays (`id`, `dt`, `id_prev`, `dt_prev` full sequences,
            `interval`, `segment`, `frame_start`, `behavior/<var>`, `behavior_dt/<var>`).
        frames: `(T, H, W)` float32 stimulus movie or None.
        n_frames: frames per clip F.
        behavior_inputs, behavior_targets: variable names.
    """

    def __init__(
        self,
        table: dict[str, np.ndarray],
        frames: np.ndarray | None,
        n_frames: int,
        behavior_inputs: Sequence[str],
        behavior_targets: Sequence[str],
    ) -> None:
        self.table = table
        self.frames = frames
        self.n_frames = n_frames
        self.behavior_inputs = list(behavior_inputs)
        self.behavior_targets = list(behavior_targets)

    def __len__(self) -> int:
        return int(self.table["interval"].shape[0])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A collated batch for `indices` (see the module docstring)."""
        idx = np.asarray(indices, dtype=np.int64)
        t = self.table
        batch: dict[str, Any] = {}
        for key in _TOKEN_KEYS:
            full = torch.from_numpy(t[key][idx].astype(np.int64))
            batch[key] = full[:, :-1]
            if key in ("id", "dt"):
                batch[f"target_{key}"] = full[:, 1:]
        if self.frames is not None:
            starts = t["frame_start"][idx]
            clip = self.frames[starts[:, None] + np.arange(self.n_frames)[None, :]]
            batch["frames"] = torch.from_numpy(clip[:, None])  # (B, 1, F, H, W)
        if self.behavior_inputs:
            batch["behavior"] = {
                v: torch.from_numpy(t[f"behavior/{v}"][idx].reshape(-1, 1, 1))
                for v in self.behavior_inputs
            }
            batch["behavior_dt"] = {
                v: torch.from_numpy(t[f"behavior_dt/{v}"][idx].reshape(-1, 1))
                for v in self.behavior_inputs
            }
        if self.behavior_targets:
            batch["behavior_target"] = {
                v: torch.from_numpy(t[f"behavior/{v}"][idx].reshape(-1, 1))
                for v in self.behavior_targets
            }
        batch["interval"] = torch.from_numpy(t["interval"][idx].astype(np.float64))
        batch["segment"] = torch.from_numpy(t["segment"][idx].astype(np.int64))
        batch["index"] = torch.from_numpy(idx)
        return batch

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One sample (the batch of `[i]` without its batch dimension)."""
        batch = self.__getitems__([int(i)])
        return {
            k: ({kk: vv[0] for kk, vv in v.items()} if isinstance(v, dict) else v[0])
            for k, v in batch.items()
        }


_CLASS_KEYS = {"n_classes", "bin_edges"}


def _target_specs(
    targets: Sequence[str], inputs: Sequence[str], classes: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Validated `{target: spec}` for every target (see `SpikeDataModule.behavior_target_specs`)."""
    unknown = sorted(set(classes) - set(targets))
    if unknown:
        raise ConfigError(
            f"behavior_classes names {unknown}, which are not behaviour targets ({list(targets)}); "
            "add them to the targets (data.behavior) or drop them from behavior_classes"
        )
    out: dict[str, dict[str, Any]] = {}
    for name in targets:
        if name not in classes:
            out[name] = {"objective": "regression"}
            continue
        spec = dict(classes[name] or {})
        extra = sorted(set(spec) - _CLASS_KEYS)
        if extra:
            raise ConfigError(f"behavior_classes[{name!r}]: unknown keys {extra}; known: {sorted(_CLASS_KEYS)}")
        if name in inputs:
            raise ConfigError(f"behaviour variable {name!r} cannot be both an input and a classification target")
        edges = spec.get("bin_edges")
        if edges is not None:
            edges = [float(e) for e in edges]
            if not edges or not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ConfigError(f"behavior_classes[{name!r}]: bin_edges must be finite and strictly increasing, got {edges}")
        n_classes = spec.get("n_classes", None if edges is None else len(edges) + 1)
        if n_classes is None or int(n_classes) != n_classes or n_classes < 2:
            raise ConfigError(f"behavior_classes[{name!r}]: give n_classes >= 2 or bin_edges, got {spec}")
        if edges is not None and int(n_classes) != len(edges) + 1:
            raise ConfigError(
                f"behavior_classes[{name!r}]: {len(edges)} bin_edges make {len(edges) + 1} classes, not n_classes={n_classes}"
            )
        out[name] = {"objective": "classification", "n_classes": int(n_classes)}
        if edges is not None:
            out[name]["bin_edges"] = edges
    return out


def _tok_param(tokenizer: Any, name: str) -> Any:
    if hasattr(tokenizer, name):
        return getattr(tokenizer, name)
    config = getattr(tokenizer, "config", {}) or {}
    if name in config:
        return config[name]
    raise TypeError(f"tokenizer {type(tokenizer).__name__} has no {name!r} (attribute or config key)")


class SpikeDataModule(L.LightningDataModule):
    """Leakage-safe, pre-tokenized spike windows with stimulus clips and behaviour.

    Args:
        recording: the `SpikeRecording`.
        tokenizer: a `SpikeTokenizer` (or anything with its contract: `encode`, `frame_slice`,
            `intervals`, `n_neurons`, `window`, `window_prev`, `dt`, `block_size`,
            `block_size_prev`, `frame_window`, `frame_rate`).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        split_mode: "blocks" (time blocks per segment), "trials" (whole trials) or "auto"
            (trials when the recording has trials, else blocks); `self.split_mode` holds the
            resolved mode.
        train_fraction: in (0, 1]; contiguous run of training windows to keep (see splits.py).
        val_frac, test_frac: validation / test fractions (of time, or of trials).
        behavior_inputs: behaviour variables fed to the model.
        behavior_targets: behaviour variables the model predicts (regression unless named in
            `behavior_classes`).
        behavior_classes: the targets to classify, `{name: {"bin_edges": [...]} | {"n_classes": C}}`:
            `{"speed": {"bin_edges": [5.0, 10.0]}}` makes 3 classes (<= 5, (5, 10], > 10, in the
            variable's raw units); `{"state": {"n_classes": 3}}` says the values already are class
            indices 0..2. Classification targets are passed raw (never z-scored); the model turns
            them into classes with the same `bin_edges` (see `behavior_target_specs()`).
        frames: include stimulus clips (the recording must have frames).
        normalize_behavior: z-score behaviour with training-split statistics.
        seed: shuffling of training batches and of trials in "trials" mode.
        frame_shape: expected `(H, W)` of the model's frame input; a recording with other frame
            sizes is refused (None: accept the recording's).
    """

    def __init__(
        self,
        recording: SpikeRecording,
        tokenizer: Any,
        batch_size: int = 64,
        num_workers: int = 0,
        split_mode: str = "blocks",
        train_fraction: float = 1.0,
        val_frac: float = 0.1,
        test_frac: float = 0.2,
        behavior_inputs: Sequence[str] = (),
        behavior_targets: Sequence[str] = (),
        behavior_classes: Mapping[str, Mapping[str, Any]] | None = None,
        frames: bool = True,
        normalize_behavior: bool = True,
        seed: int = 0,
        frame_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(recording, SpikeRecording):
            raise TypeError(f"recording must be a SpikeRecording, got {type(recording).__name__}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.recording = recording
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.split_mode = split_mode
        self.train_fraction = float(train_fraction)
        self.val_frac = float(val_frac)
        self.test_frac = float(test_frac)
        self.behavior_inputs = list(behavior_inputs or [])
        self.behavior_targets = list(behavior_targets or [])
        self.target_specs = _target_specs(self.behavior_targets, self.behavior_inputs, behavior_classes or {})
        self.use_frames = bool(frames)
        self.normalize_behavior = bool(normalize_behavior)
        self.seed = int(seed)
        self.expected_frame_shape = None if frame_shape is None else tuple(int(s) for s in frame_shape)

        self.window = float(_tok_param(tokenizer, "window"))
        self.window_prev = float(_tok_param(tokenizer, "window_prev"))
        self._check_contract()

        self.splits: Splits | None = None
        self.intervals: dict[str, np.ndarray] = {}
        self.tables: dict[str, dict[str, np.ndarray]] = {}
        self.datasets: dict[str, SpikeWindows] = {}
        self.behavior_stats: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ checks
    def behavior_target_specs(self) -> dict[str, dict[str, Any]]:
        """`{target: spec}` for every behaviour target, in target order: the model config's
        `behavior_targets` (`NeuroformerConfig.behavior_targets`).

        A spec is `{"objective": "regression"}` or `{"objective": "classification", "n_classes":
        C}` plus `"bin_edges"` (C - 1 increasing edges, raw units) when the classes are bins of
        a continuous variable.
        """
        return {name: dict(spec) for name, spec in self.target_specs.items()}

    def _is_classification(self, name: str) -> bool:
        return self.target_specs.get(name, {}).get("objective") == "classification"

    def _check_contract(self) -> None:
        rec, tok = self.recording, self.tokenizer
        n_tok = int(_tok_param(tok, "n_neurons"))
        if n_tok != rec.n_neurons:
            raise ContractError(
                f"tokenizer expects n_neurons={n_tok} but the recording has {rec.n_neurons} units; "
                "build the tokenizer with the recording's n_neurons (or select matching units)"
            )
        self.split_mode = resolve_split_mode(self.split_mode, rec.trials)
        if self.use_frames:
            if rec.frames is None:
                raise DataError(
                    "frames=True but the recording has no stimulus frames; pass frames=False "
                    "(or read a stimulus, e.g. read_nwb(..., stimulus=NAME))"
                )
            tok_rate = float(_tok_param(tok, "frame_rate"))
            if not math.isclose(rec.frame_rate, tok_rate, rel_tol=1e-6):
                raise ContractError(
                    f"frame rate mismatch: recording frames are at {rec.frame_rate:g} Hz but the "
                    f"tokenizer expects frame_rate={tok_rate:g} Hz; resample the movie or build "
                    "the tokenizer with the recording's rate"
                )
            got = rec.frame_shape
            if self.expected_frame_shape is not None and got != self.expected_frame_shape:
                raise ContractError(
                    f"frame shape mismatch: the model expects frames of (H, W) = "
                    f"{self.expected_frame_shape} but the recording has {got}; resize the movie "
                    "or configure the model's frame size"
                )
        for name in self.behavior_inputs + self.behavior_targets:
            if name not in rec.behavior:
                raise DataError(
                    f"behaviour variable {name!r} is not in the recording; it has "
                    f"{sorted(rec.behavior)}"
                )
            rate = rec.behavior[name][1]
            if rate * self.window < 1.0 - 1e-6:
                raise DataError(
                    f"behaviour {name!r} is sampled at {rate:g} Hz, below one sample per current "
                    f"window ({self.window:g} s needs >= {1 / self.window:g} Hz); resample it"
                )

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Split and tokenize every window once (idempotent)."""
        if self.splits is not None:
            return
        rec, tok = self.recording, self.tokenizer
        spans = rec.trials if self.split_mode == "trials" else rec.segments
        splits = split_intervals(
            spans,
            self.window,
            self.window_prev,
            mode=self.split_mode,
            val_frac=self.val_frac,
            test_frac=self.test_frac,
            train_fraction=self.train_fraction,
            seed=self.seed,
            grid_fn=tok.intervals,
        )
        check_no_leakage(splits, self.window, self.window_prev)
        self.splits = splits
        self.intervals = splits.intervals
        for name in SPLITS:
            self.tables[name] = self._tokenize(splits.intervals[name], splits.segments[name], spans)
        self._behavior_statistics()
        n_frames = self.n_frames
        for name in SPLITS:
            self.datasets[name] = SpikeWindows(
                self.tables[name],
                rec.frames if self.use_frames else None,
                n_frames,
                self.behavior_inputs,
                self.behavior_targets,
            )

    def _tokenize(self, t: np.ndarray, seg: np.ndarray, spans) -> dict[str, np.ndarray]:
        rec, tok = self.recording, self.tokenizer
        parts = []
        for k in np.unique(seg):
            start, stop = spans[int(k)]
            # Only this span's spikes: past windows that reach before its start see silence.
            lo = np.searchsorted(rec.spike_times, start, side="left")
            hi = np.searchsorted(rec.spike_times, stop, side="right")
            parts.append(tok.encode(rec.spike_times[lo:hi], rec.unit_ids[lo:hi], t[seg == k]))
        if parts:
            table = {key: np.concatenate([p[key] for p in parts]) for key in _TOKEN_KEYS}
        else:  # an empty split (e.g. test_frac=0): zero rows with the right widths
            table = {
                "id": np.zeros((0, int(_tok_param(tok, "block_size")) + 1), np.int64),
                "dt": np.zeros((0, int(_tok_param(tok, "block_size")) + 1), np.int64),
                "id_prev": np.zeros((0, int(_tok_param(tok, "block_size_prev")) + 1), np.int64),
                "dt_prev": np.zeros((0, int(_tok_param(tok, "block_size_prev")) + 1), np.int64),
            }
        table["interval"] = t.astype(np.float64)
        table["segment"] = seg.astype(np.int64)
        if self.use_frames:
            n_avail = rec.frames.shape[0]
            start, _ = tok.frame_slice(t, n_avail) if t.size else (np.zeros(0, np.int64), None)
            table["frame_start"] = np.asarray(start, dtype=np.int64).reshape(-1)
        for name in dict.fromkeys(self.behavior_inputs + self.behavior_targets):
            values, rate = rec.behavior[name]
            # The sample at the current window's start (reference rule T9: one per window).
            window_start = t - self.window
            idx = np.clip(np.rint(window_start * rate).astype(np.int64), 0, values.size - 1)
            table[f"behavior_raw/{name}"] = values[idx]
            table[f"behavior_dt/{name}"] = (idx / rate - window_start).astype(np.float32)
        return table

    def _behavior_statistics(self) -> None:
        for name in dict.fromkeys(self.behavior_inputs + self.behavior_targets):
            if self._is_classification(name):
                self._check_classes(name)
                for split in SPLITS:  # raw: the model bins them into classes with the spec's edges
                    self.tables[split][f"behavior/{name}"] = self.tables[split][f"behavior_raw/{name}"].astype(np.float32)
                continue
            train = self.tables["train"][f"behavior_raw/{name}"]
            mean = float(train.mean()) if train.size else 0.0
            std = float(train.std()) if train.size else 1.0
            if not self.normalize_behavior:
                mean, std = 0.0, 1.0
            std = std if std > 1e-12 else 1.0  # a constant variable stays finite
            self.behavior_stats[name] = {"mean": mean, "std": std}
            for split in SPLITS:
                raw = self.tables[split][f"behavior_raw/{name}"]
                self.tables[split][f"behavior/{name}"] = ((raw - mean) / std).astype(np.float32)

    def _check_classes(self, name: str) -> None:
        """Without bin edges the values are the class indices: they must be integers in 0..C-1."""
        spec = self.target_specs[name]
        if spec.get("bin_edges") is not None:
            return
        values = np.concatenate([self.tables[s][f"behavior_raw/{name}"] for s in SPLITS])
        n = spec["n_classes"]
        bad = (values != np.round(values)) | (values < 0) | (values > n - 1)
        if bad.any():
            raise DataError(
                f"behaviour target {name!r} is a classification target without bin_edges, so its "
                f"values must be class indices 0..{n - 1}; got e.g. {values[bad][:3].tolist()}. Give "
                "bin_edges (in the variable's units) to bin a continuous variable"
            )

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        common = dict(batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate,
                      persistent_workers=self.num_workers > 0)
        if not shuffle:
            return DataLoader(self.datasets[split], **common)
        # Shuffled training data for exact resume: a stateful loader (torchdata) whose position and
        # sampler state Lightning saves in every checkpoint, and a sampler with a generator of its
        # own. The loader draws a base seed from its generator at every new iterator, one more when a
        # run resumes mid-epoch; sharing it with the sampler would shift every later epoch's order.
        sampler = StatefulRandomSampler(self.datasets[split], generator=torch.Generator().manual_seed(self.seed))
        return StatefulDataLoader(self.datasets[split], sampler=sampler,
                                  generator=torch.Generator().manual_seed(self.seed + 1), **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Loader of any split ("train", "val", "test")."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        return self._loader(split, shuffle)

    # ------------------------------------------------------------------ contract & truth
    @property
    def n_frames(self) -> int:
        """Frames per clip F = ceil(frame_rate * frame_window)."""
        rate = float(_tok_param(self.tokenizer, "frame_rate"))
        fw = float(_tok_param(self.tokenizer, "frame_window"))
        return max(1, math.ceil(rate * fw - 1e-6))

    def input_contract(self) -> SpikeContract:
        """The input contract of this data (stored with a model trained on it, checked on new data)."""
        tok, rec = self.tokenizer, self.recording
        frame_shape = (self.n_frames, *rec.frame_shape) if self.use_frames and rec.frame_shape else None
        return SpikeContract(
            n_neurons=rec.n_neurons, dt=float(_tok_param(tok, "dt")), window=self.window, window_prev=self.window_prev,
            frame_shape=frame_shape, frame_rate=float(_tok_param(tok, "frame_rate")) if frame_shape else None,
            behavior_inputs=tuple(self.behavior_inputs), behavior_targets=tuple(self.behavior_targets),
        )

    def denormalize_behavior(self, name: str, values: Any) -> Any:
        """Undo the z-scoring of behaviour variable `name` (numpy array or tensor)."""
        self.setup()
        if name not in self.behavior_stats:
            raise ConfigError(f"no statistics for behaviour {name!r}; have {sorted(self.behavior_stats)}")
        s = self.behavior_stats[name]
        return values * s["std"] + s["mean"]

    def held_out_spikes(self, split: str) -> dict[str, Any]:
        """True spikes in the current windows of `split`, for generation metrics.

        Returns:
            dict with `times` (n,) float64 s, `unit_ids` (n,) int64, `window` (n,) int64 row of
            the split's table each spike's current window belongs to, `sets` list (one int64
            array of unit ids per window, repeats kept) and `intervals` (windows,) float64.
        """
        self.setup()
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        rec = self.recording
        t_end = self.intervals[split]
        # Same bin-edge tolerance as the tokenizer (a spike a hair before t counts as at t).
        eps = 1e-6 * float(_tok_param(self.tokenizer, "dt"))
        lo = np.searchsorted(rec.spike_times, t_end - self.window - eps, side="left")
        hi = np.searchsorted(rec.spike_times, t_end - eps, side="left")
        counts = hi - lo
        window = np.repeat(np.arange(t_end.size), counts)
        take = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if t_end.size else np.zeros(0, np.int64)
        take = take.astype(np.int64)
        units = rec.unit_ids[take]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return {
            "times": rec.spike_times[take],
            "unit_ids": units,
            "window": window,
            "sets": [units[bounds[i] : bounds[i + 1]] for i in range(t_end.size)],
            "intervals": t_end.copy(),
        }

    def held_out_counts(
        self,
        split: str,
        bin_size: float,
        spike_times: np.ndarray | None = None,
        unit_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Spike-count raster (N, T) over the current windows of `split`.

        Bins tile each contiguous run of current windows from its start; a partial last bin of
        a run is dropped. Pass `spike_times`/`unit_ids` (e.g. generated spikes) to bin those on
        the same grid instead of the true spikes.

        Returns:
            `(counts (N, T) int64, bin_starts (T,) float64)`.
        """
        self.setup()
        rec = self.recording
        times = rec.spike_times if spike_times is None else spike_times
        units = rec.unit_ids if unit_ids is None else unit_ids
        t_end = np.sort(self.intervals[split])
        runs = []
        if t_end.size:
            breaks = np.flatnonzero(np.diff(t_end) > self.window + 1e-9)
            run_first = np.concatenate([[0], breaks + 1])
            run_last = np.concatenate([breaks, [t_end.size - 1]])
            runs = [bin_grid(t_end[a] - self.window, t_end[b], bin_size) for a, b in zip(run_first, run_last)]
        bin_starts = np.concatenate(runs) if runs else bin_grid(0.0, 0.0, bin_size)
        return bin_spikes(times, units, rec.n_neurons, bin_starts, bin_size), bin_starts
