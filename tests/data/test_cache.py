"""The record cache: any record type, and a key that changes with every parameter and version."""

import json
import os

import numpy as np
import pytest

from neurofound.data import cache as C
from neurofound.data import simulate
from neurofound.data.records import SpikeRecording
from neurofound.data.simulate import DEFAULT_CONFIG, lif_config
from neurofound.errors import ConfigError


class Blob:
    """A minimal non-spike record: one array, saved as JSON."""

    format_version = 3

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "blob.json"), "w") as f:
            json.dump(self.values.tolist(), f)

    @classmethod
    def load(cls, directory):
        with open(os.path.join(directory, "blob.json")) as f:
            return cls(json.load(f))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROFOUND_CACHE", str(tmp_path))
    return tmp_path


def test_any_record_type_is_cached(cache_dir):
    calls = []

    def build():
        calls.append(1)
        return Blob([1.0, 2.5])

    first = C.cached("blob", {"n": 2}, "v1", build, record_type=Blob)
    second = C.cached("blob", {"n": 2}, "v1", build, record_type=Blob)
    assert len(calls) == 1 and isinstance(second, Blob)
    np.testing.assert_array_equal(second.values, first.values)
    entry = C.cache_path("blob", {"n": 2}, "v1", Blob)
    assert entry.parent == cache_dir / "blob"
    key = json.loads((entry / C.KEY_FILE).read_text())
    assert key == {"kind": "blob", "code_version": "v1", "config": {"n": 2},
                   "record": {"type": f"{Blob.__module__}.Blob", "format_version": 3}}
    C.cached("blob", {"n": 2}, "v1", build, record_type=Blob, use_cache=False)
    assert len(calls) == 2
    with pytest.raises(TypeError, match="expected Blob"):
        C.cached("blob", {"n": 3}, "v1", lambda: [1.0], record_type=Blob)


def test_a_crashed_build_leaves_no_entry_and_a_partial_one_is_rebuilt(cache_dir):
    def boom():
        raise RuntimeError("simulation crashed")

    with pytest.raises(RuntimeError):
        C.cached("blob", {"n": 1}, "v1", boom, record_type=Blob)
    entry = C.cache_path("blob", {"n": 1}, "v1", Blob)
    assert not entry.exists()
    entry.mkdir(parents=True)  # e.g. a folder left by an older, non-atomic writer
    (entry / "blob.json").write_text("[9.0]")
    out = C.cached("blob", {"n": 1}, "v1", lambda: Blob([1.0]), record_type=Blob)
    assert out.values.tolist() == [1.0] and Blob.load(entry).values.tolist() == [1.0]


def test_equal_configs_share_a_key():
    base = {"duration": 300.0, "delay_ms": [1.0, 4.0], "seed": 0, "nested": {"a": 1, "b": "x"}}
    same = {"nested": {"b": "x", "a": 1.0}, "seed": np.int64(0), "delay_ms": (1, np.float32(4.0)),
            "duration": 300}
    assert C.config_hash(base, "v1") == C.config_hash(same, "v1")
    assert C.cache_path("lif", base, "v1") == C.cache_path("lif", same, "v1")


@pytest.mark.parametrize("change", [
    dict(config={"duration": 300.5, "delay_ms": [1.0, 4.0], "seed": 0}),
    dict(config={"duration": 300.0, "delay_ms": [1.0, 4.5], "seed": 0}),
    dict(config={"duration": 300.0, "delay_ms": [1.0, 4.0], "seed": 1}),
    dict(config={"duration": 300.0, "delay_ms": [1.0, 4.0], "seed": 0, "extra": None}),
    dict(code_version="v2"),
    dict(kind="other"),
    dict(record_type=Blob),
])
def test_a_changed_parameter_or_version_gives_a_new_key(change):
    args = dict(config={"duration": 300.0, "delay_ms": [1.0, 4.0], "seed": 0}, code_version="v1",
                kind="lif", record_type=SpikeRecording)
    changed = {**args, **change}
    key = C.config_hash(args["config"], args["code_version"], kind=args["kind"], record_type=args["record_type"])
    assert C.config_hash(changed["config"], changed["code_version"], kind=changed["kind"],
                         record_type=changed["record_type"]) != key


def test_record_format_version_is_in_the_key(monkeypatch):
    before = C.config_hash({"a": 1}, "v1")
    monkeypatch.setattr(SpikeRecording, "format_version", SpikeRecording.format_version + 1)
    assert C.config_hash({"a": 1}, "v1") != before


def test_unhashable_config_values_are_a_config_error():
    with pytest.raises(ConfigError, match=r"config.f = <function"):
        C.config_hash({"f": lambda: 0}, "v1")


def lif_cache_path(config=None, **overrides):
    """The entry `simulate_lif_network(config, **overrides)` reads or writes."""
    return C.cache_path("lif", lif_config(config, **overrides), simulate.cache_version(), SpikeRecording)


def test_simulate_uses_that_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROFOUND_CACHE", str(tmp_path))
    monkeypatch.setattr(simulate, "_simulate", lambda cfg: SpikeRecording([0.5], [0], 1, cfg["duration"]))
    simulate.simulate_lif_network(seed=5, duration=2)
    assert (lif_cache_path(seed=5, duration=2.0) / C.KEY_FILE).exists()


def test_lif_key_holds_every_parameter_and_the_simulator_version(monkeypatch):
    base = lif_cache_path()
    assert base == lif_cache_path(duration=int(DEFAULT_CONFIG["duration"]))  # 300 == 300.0
    assert base == lif_cache_path(lif_config())
    for key, value in DEFAULT_CONFIG.items():
        if isinstance(value, list):
            other = value[:-1] if isinstance(value[0], str) else [v + 0.5 for v in value]
        elif isinstance(value, float):
            other = value * 1.5 + 0.1
        else:
            other = value + 1
        assert lif_cache_path(**{key: other}) != base, f"changing {key!r} does not change the cache key"

    assert simulate.cache_version().startswith(simulate.CODE_VERSION + "+brian2-")
    monkeypatch.setattr(simulate, "CODE_VERSION", "lif-999")
    assert lif_cache_path() != base
    monkeypatch.undo()
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1")
    assert lif_cache_path() != base
