"""Typed input contracts: what a model was trained on, checked when it meets new data.

One dataclass per kind of input. The data builds its contract; the model stores it
(`model.input_contract`, written to `config.json` and the model card) and the recipe checks it
when a trained model is applied to new data. Each contract marks the fields that must match
(`checked`); the other fields are recorded, not checked: BrainOmni decodes to unseen devices,
BaRISTA takes any electrode count and BraInCoRL any number of voxels.

    model_contract.check(data_contract)   # ContractError naming every field that differs
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from neurofound.errors import ConfigError, ContractError

_KINDS: dict[str, type["InputContract"]] = {}


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers (JSON-ready)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _frozen(value: Any) -> Any:
    """Lists -> tuples recursively, so that contracts are hashable and compare by value."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if hasattr(value, "tolist"):
        return _frozen(value.tolist())
    return value


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


@dataclass(frozen=True)
class InputContract:
    """Base of the input contracts. Subclasses set `kind` and `checked` and are frozen dataclasses."""

    kind: ClassVar[str] = ""
    checked: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _frozen(getattr(self, f.name)))

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "InputContract":
        if not isinstance(d, dict) or "kind" not in d:
            raise ConfigError(f"an input contract must be a dict with a 'kind' field, got {d!r}")
        kind = d["kind"]
        if kind not in _KINDS:
            raise ConfigError(f"unknown input contract kind {kind!r}; known kinds: {sorted(_KINDS)}")
        cls = _KINDS[kind]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise ConfigError(f"{kind} contract: unknown fields {unknown}; known fields: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k != "kind"})

    # -- checking -----------------------------------------------------------------------------------
    def matches(self, name: str, mine: Any, theirs: Any) -> bool:
        """Whether field `name` of the data (`theirs`) is acceptable for the model (`mine`)."""
        return _close(mine, theirs)

    def mismatches(self, data: "InputContract") -> list[str]:
        """One line per checked field where `data` does not fit this (the model's) contract."""
        if type(data) is not type(self):
            return [f"kind: the model takes {self.kind} input, the data is {data.kind}"]
        return [f"{name}: model {getattr(self, name)!r} vs data {getattr(data, name)!r}"
                for name in self.checked if not self.matches(name, getattr(self, name), getattr(data, name))]

    def check(self, data: "InputContract", *, model: str = "the model") -> None:
        """Raise `ContractError` naming every checked field in which `data` differs from this contract."""
        bad = self.mismatches(data)
        if bad:
            raise ContractError(
                f"the data does not match the input contract of {model} ({'; '.join(bad)}). Use data recorded "
                f"with the same settings, or set the data/tokenizer keys to the model's values"
            )

    def card_rows(self) -> dict[str, Any]:
        """Rows of the model card's input-contract table (checked fields marked)."""
        rows = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = _plain(getattr(self, f.name))
            if isinstance(value, list) and len(value) > 12:
                value = f"{len(value)} entries: {', '.join(map(str, value[:6]))}, ..."
            rows[f.name + (" (must match)" if f.name in self.checked else "")] = value
        return rows


@dataclass(frozen=True)
class SpikeContract(InputContract):
    """Spike trains (+ stimulus frames and behaviour). dt and windows in seconds."""

    kind: ClassVar[str] = "spikes"
    checked: ClassVar[tuple[str, ...]] = ("n_neurons", "dt", "window", "window_prev")

    n_neurons: int
    dt: float
    window: float
    window_prev: float
    frame_shape: tuple[int, ...] | None = None  # (n_frames, height, width)
    frame_rate: float | None = None
    behavior_inputs: tuple[str, ...] = ()
    behavior_targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class SensorContract(InputContract):
    """EEG / MEG / iEEG sensors. `window` in samples at `sampling_rate` (Hz).

    `sensor_types` are per channel; the data's set of types must be a subset of the model's (a
    model trained on EEG and MEG takes EEG alone, not a new modality). Positions and orientations
    ((n_channels, 3) each) are recorded: a model may decode to sensors it never saw.
    """

    kind: ClassVar[str] = "sensors"
    checked: ClassVar[tuple[str, ...]] = ("sampling_rate", "window", "sensor_types")

    channel_names: tuple[str, ...]
    sensor_types: tuple[str, ...]
    sampling_rate: float
    window: int
    positions: tuple[tuple[float, ...], ...] | None = None
    orientations: tuple[tuple[float, ...], ...] | None = None

    def matches(self, name: str, mine: Any, theirs: Any) -> bool:
        if name == "sensor_types":
            return set(theirs) <= set(mine)
        return super().matches(name, mine, theirs)


@dataclass(frozen=True)
class VoxelContract(InputContract):
    """fMRI voxels described by image features: any number of voxels, a fixed feature dimension."""

    kind: ClassVar[str] = "voxels"
    checked: ClassVar[tuple[str, ...]] = ("feature_dim",)

    feature_dim: int
    n_voxels: int | None = None


@dataclass(frozen=True)
class VolumeContract(InputContract):
    """3-D volumes (structural MRI): shape in voxels, voxel size in mm, template space."""

    kind: ClassVar[str] = "volumes"
    checked: ClassVar[tuple[str, ...]] = ("shape", "voxel_size", "space")

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    space: str
    affine: tuple[tuple[float, ...], ...] | None = None


__all__ = ["InputContract", "SpikeContract", "SensorContract", "VoxelContract", "VolumeContract"]
