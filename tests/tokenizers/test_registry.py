"""Tokenizer registry and the Tokenizer base: lookup, registration rules, save/load round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from neurofound import tokenizers
from neurofound.tokenizers import _REGISTRY, CONFIG_NAME, WEIGHTS_NAME, Tokenizer
from neurofound.tokenizers.spike import SpikeTokenizer


@pytest.fixture
def scratch_registry():
    """Register test-only tokenizers and remove them afterwards (the registry is global)."""
    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


def test_get_and_available():
    assert tokenizers.get("spike") is SpikeTokenizer
    assert "spike" in tokenizers.available()
    assert tokenizers.available() == sorted(tokenizers.available())
    with pytest.raises(KeyError, match=r"unknown tokenizer 'nope'; available tokenizers: \[.*'spike'"):
        tokenizers.get("nope")


def test_importing_the_package_loads_no_tokenizer_module():
    """`import neurofound.tokenizers` imports no tokenizer; `get(name)` imports that name's module."""
    import subprocess
    import sys

    code = ("import sys, neurofound.tokenizers as t; assert 'neurofound.tokenizers.spike' not in sys.modules; "
            "t.get('spike'); assert 'neurofound.tokenizers.spike' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_register_rejects_duplicates_and_non_tokenizers(scratch_registry):
    @tokenizers.register("test_dummy")
    class Dummy(Tokenizer):
        def __init__(self, size: int = 3):
            self._set_config(size=size)

    assert tokenizers.get("test_dummy") is Dummy and Dummy.name == "test_dummy"
    with pytest.raises(ValueError, match="already registered"):

        @tokenizers.register("spike")
        class Other(Tokenizer):
            pass

    with pytest.raises(TypeError, match="not a subclass"):
        tokenizers.register("test_not_a_tokenizer")(dict)
    with pytest.raises(ValueError, match="non-empty str"):
        tokenizers.register("")
    assert tokenizers.get("spike") is SpikeTokenizer  # the failed duplicate changed nothing


def test_spike_round_trip_gives_equal_config_and_identical_encodings(tmp_path):
    tok = SpikeTokenizer(n_neurons=6, dt=0.005, window=0.05, window_prev=0.1, block_size=20,
                         block_size_prev=40, frame_window=0.2, frame_rate=20.0, reference_compat=True)
    out_dir = tok.save_pretrained(tmp_path / "nested" / "tok")  # parents are created
    payload = json.loads((out_dir / CONFIG_NAME).read_text())
    assert payload["tokenizer"] == "spike" and payload["config"] == tok.config
    assert not (out_dir / WEIGHTS_NAME).exists()  # rule-based: no weights file

    for loader in (SpikeTokenizer.from_pretrained, Tokenizer.from_pretrained):
        loaded = loader(out_dir)
        assert type(loaded) is SpikeTokenizer
        assert loaded.config == tok.config
        rng = np.random.default_rng(0)
        times, units = rng.uniform(0, 2, 500), rng.integers(0, 6, 500)
        a = tok.encode(times, units, tok.intervals(2.0))
        b = loaded.encode(times, units, tok.intervals(2.0))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert a[key].dtype == b[key].dtype


def test_config_is_a_copy_and_json_exact():
    tok = SpikeTokenizer(n_neurons=np.int64(4), dt=0.01)
    cfg = tok.config
    assert type(cfg["n_neurons"]) is int  # numpy scalars are normalised for JSON
    cfg["n_neurons"] = 99
    assert tok.config["n_neurons"] == 4
    assert json.loads(json.dumps(tok.config)) == tok.config


def test_from_pretrained_rejects_unknown_keys_and_wrong_names(tmp_path):
    tok = SpikeTokenizer(n_neurons=3)
    tok.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / CONFIG_NAME).read_text())
    payload["config"]["windw"] = 0.1
    payload["config"]["extra"] = 1
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['extra', 'windw'\]"):
        SpikeTokenizer.from_pretrained(tmp_path)

    payload["config"] = tok.config
    payload["tokenizer"] = "nope"
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    with pytest.raises(KeyError, match="unknown tokenizer 'nope'"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a 'nope' tokenizer, not 'spike'"):
        SpikeTokenizer.from_pretrained(tmp_path)

    (tmp_path / CONFIG_NAME).write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="'tokenizer'"):
        Tokenizer.from_pretrained(tmp_path)


def test_from_pretrained_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no tokenizer_config\.json in .*save_pretrained"):
        Tokenizer.from_pretrained(tmp_path / "does_not_exist")


def test_learned_tokenizer_round_trips_weights_via_safetensors(tmp_path, scratch_registry):
    """A tokenizer that is also an nn.Module (the shape of BrainOmni's RVQ tokenizer) saves its state."""

    @tokenizers.register("test_codebook")
    class CodebookTokenizer(Tokenizer, nn.Module):
        def __init__(self, n_codes: int = 8, dim: int = 4):
            nn.Module.__init__(self)
            self._set_config(n_codes=n_codes, dim=dim)
            self.proj = nn.Linear(dim, dim)
            self.register_buffer("codebook", torch.randn(n_codes, dim))

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cdist(self.proj(x), self.codebook).argmin(-1)

    torch.manual_seed(0)
    tok = CodebookTokenizer(n_codes=16, dim=3)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_NAME).is_file()
    torch.manual_seed(1)  # a fresh init would differ; loading must restore the saved values
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, CodebookTokenizer) and loaded.config == {"n_codes": 16, "dim": 3}
    for key, value in tok.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(50, 3)
    assert torch.equal(tok.encode(x), loaded.encode(x))

    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="learned tokenizer"):
        Tokenizer.from_pretrained(tmp_path)


def test_unregistered_or_unconfigured_tokenizer_cannot_be_saved(tmp_path):
    class Loose(Tokenizer):
        def __init__(self):
            self._set_config()

    with pytest.raises(ValueError, match="not registered"):
        Loose().save_pretrained(tmp_path)

    class Forgetful(Tokenizer):
        def __init__(self):
            pass

    with pytest.raises(RuntimeError, match="_set_config"):
        Forgetful().config
    with pytest.raises(TypeError, match="does not round-trip through JSON"):
        Loose()._set_config(bad=np.zeros(2))
