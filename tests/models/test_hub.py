"""Hub mixin: save/load round trips, strict loading, offline use, push_to_hub folder, convert paths."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from neurofound.models.hub import read_safetensors
from neurofound.models.neuroformer import Neuroformer

from .test_neuroformer import make_batch, model_for, tiny, tokenizer_for

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "neuroformer"


def test_round_trip_identical_outputs_and_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny(temporal_embedding="sinusoid", clip_loss="symmetric", loss_preset="paper", loss_weights={"dt": 0.5},
               frame_stride=[2, 4, 4], behavior_inputs=["phi", "th"], block_size_prev=20)
    m = model_for(cfg)
    m.attach_tokenizer(tokenizer_for(cfg, dt=0.005))
    m.save_pretrained(tmp_path / "m", training_data="synthetic LIF network, 60 s", metrics={"val/id_loss": 1.25})
    files = {p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "README.md", "tokenizer/tokenizer_config.json"} <= files
    assert not [f for f in files if "tmp" in f or "staging" in f]
    card = (tmp_path / "m" / "README.md").read_text()
    for needle in ["n_neurons | 6", "synthetic LIF network, 60 s", "val/id_loss | 1.25", "behaviour inputs | [phi, th]",
                   "frames (n_frames, height, width) | [2, 8, 8]", "antoniades2024neuroformer"]:
        assert needle in card

    loaded = Neuroformer.from_pretrained(str(tmp_path / "m"))
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(cfg)  # every field survives
    assert loaded.tokenizer.config == m.tokenizer.config
    b = make_batch(cfg)
    b["behavior"]["th"] = torch.randn(3, 1, 1)
    b["behavior_dt"]["th"] = torch.zeros(3, 1)
    with torch.no_grad():
        o1, o2 = m(b), loaded(b)
    assert torch.equal(o1.id_logits, o2.id_logits) and torch.equal(o1.loss["total"], o2.loss["total"])


def test_save_is_atomic_and_keeps_foreign_files(tmp_path):
    m = model_for(tiny())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("keep me")
    m.save_pretrained(tmp_path / "m")
    m.save_pretrained(tmp_path / "m")  # overwrite in place
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging leftovers


def test_strict_loading_names_keys(tmp_path):
    m = model_for(tiny())
    m.save_pretrained(tmp_path / "m")
    sd = load_file(str(tmp_path / "m" / "model.safetensors"))
    sd.pop("head_id.weight")
    sd["surplus.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        Neuroformer.from_pretrained(tmp_path / "m")
    msg = str(e.value)
    assert "head_id.weight" in msg and "surplus.weight" in msg and "do not belong together" in msg


def test_config_weights_mismatch(tmp_path):
    model_for(tiny()).save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["n_neurons"] = 9
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    # the tokenizer saved with the model no longer fits the edited config: named before any weight is read
    with pytest.raises(ValueError, match=r"tokenizer does not fit.*n_neurons: model 9 vs tokenizer 6"):
        Neuroformer.from_pretrained(tmp_path / "m")
    import shutil

    shutil.rmtree(tmp_path / "m" / "tokenizer")
    with pytest.raises(ValueError, match=r"shape mismatches.*tok_emb.weight"):
        Neuroformer.from_pretrained(tmp_path / "m")


def test_corrupt_and_missing_files(tmp_path):
    model_for(tiny()).save_pretrained(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ValueError, match="model.safetensors.*truncated or corrupt"):
        Neuroformer.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Neuroformer.from_pretrained(tmp_path / "nowhere")
    w.unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        Neuroformer.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        read_safetensors(tmp_path / "absent.safetensors")


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_create_repo(self, repo_id, **kw):
        return type("R", (), {"repo_id": repo_id})()

    def fake_upload_folder(self, *, repo_id, folder_path, **kw):
        seen["repo_id"] = repo_id
        seen["files"] = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        seen["config"] = json.loads((Path(folder_path) / "config.json").read_text())
        return "https://example.invalid/commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    m = model_for(tiny())
    assert Neuroformer.push_to_hub.__qualname__.startswith("ModelHubMixin")  # the real mixin method
    m.push_to_hub("org/tiny-neuroformer", token="hf_dummy")
    assert seen["repo_id"] == "org/tiny-neuroformer"
    assert {"config.json", "model.safetensors", "README.md"} <= set(seen["files"])
    assert seen["config"]["n_neurons"] == 6


def _write_reference_checkpoint(tmp_path: Path) -> Path:
    """A reference-repo style folder: model.pt (state dict) + mconf.yaml (+ a tokenizer.pkl that must not be read)."""
    import yaml

    meta = json.loads((FIXTURE / "config.json").read_text())
    ref = tmp_path / "ref"
    ref.mkdir()
    torch.save(load_file(str(FIXTURE / "reference_state_dict.safetensors")), ref / "model.pt")
    (ref / "mconf.yaml").write_text(yaml.safe_dump(meta["model_config"]))
    (ref / "tokenizer.pkl").write_bytes(b"not a pickle: unpickling this would fail loudly")
    return ref


def test_convert_model_pt_path_matches_fixture_conversion(tmp_path):
    from neurofound.models.convert import convert

    a = convert("neuroformer", FIXTURE, tmp_path / "a")
    b = convert("neuroformer", _write_reference_checkpoint(tmp_path), tmp_path / "b", frame_size=(8, 12))
    ma, mb = Neuroformer.from_pretrained(a), Neuroformer.from_pretrained(b)
    assert ma.config == mb.config and ma.config.reference_compat
    sa, sb = ma.state_dict(), mb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert mb.tokenizer.n_neurons == 10 and mb.tokenizer.dt_vocab_size == 14 and mb.tokenizer.reference_compat


def test_convert_errors(tmp_path):
    from neurofound.models.convert import convert

    with pytest.raises(KeyError, match=r"unknown model family 'gpt5'.*neuroformer"):
        convert("gpt5", FIXTURE, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert("neuroformer", tmp_path / "missing", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        convert("neuroformer", tmp_path / "empty", tmp_path / "x")
