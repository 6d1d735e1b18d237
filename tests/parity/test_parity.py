"""Weight-for-weight parity with the original authors' code, over every fixture folder.

Fixture folders live under $NEUROFOUND_FIXTURES (default tests/fixtures/reference/); the family is the folder
name. Each fixture is converted with `neurofound.models.convert.convert`, loaded with `from_pretrained`, fed the
fixture inputs, and every `out.*` / `mid.*` tensor (training metrics `out.metric.*` excepted) is compared at
atol 1e-5, rtol 1e-4. Token tensors are re-derived with our tokenizer (reference_compat=True) and must be equal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("NEUROFOUND_FIXTURES", ROOT / "tests" / "fixtures" / "reference"))
ATOL, RTOL = 1e-5, 1e-4
FOLDERS = sorted(p for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else []


def test_fixture_root_exists():
    assert FOLDERS, f"no fixture folders under {FIXTURES} (set NEUROFOUND_FIXTURES)"


# ---------------------------------------------------------------------------------------------------------------
# Neuroformer
# ---------------------------------------------------------------------------------------------------------------
def _neuroformer_batch(io: dict, meta: dict) -> dict:
    variables = meta["model_config"]["modalities"]["behavior"]["variables"]
    inputs = [v for v, s in variables.items() if not s.get("predict")]
    targets = [v for v, s in variables.items() if s.get("predict")]
    return {
        "id": io["in.id"], "dt": io["in.dt"].long(), "id_prev": io["in.id_prev"], "dt_prev": io["in.dt_prev"].long(),
        "target_id": io["in.target.id"], "target_dt": io["in.target.dt"], "frames": io["in.frames"],
        "behavior": {v: io[f"in.modalities.behavior.{v}.value"] for v in inputs},
        "behavior_dt": {v: io[f"in.modalities.behavior.{v}.dt"] for v in inputs},
        "behavior_target": {v: io[f"in.target.modalities.behavior.{v}.value"] for v in targets},
    }


def _neuroformer_outputs(out, meta: dict) -> dict[str, torch.Tensor]:
    """Our outputs under the fixture's names (fixture 'time' loss = our 'dt'; {group: var} modality = behavior.var)."""
    group_alias = {}
    for v in meta["model_config"]["contrastive"]["vars"]:
        if isinstance(v, dict):
            ((group, var),) = v.items()
            group_alias[f"behavior.{var}"] = group
    named = {"out.id_logits": out.id_logits, "out.dt_logits": out.dt_logits, "out.last_layer": out.last_layer}
    for var, pred in out.behavior.items():
        named[f"out.pred.{var}"] = pred
    for name, loss in out.loss.items():
        named[f"out.loss.{'time' if name == 'dt' else name}"] = loss
    for name, proj in out.clip_proj.items():
        named[f"out.clip_proj.{group_alias.get(name, name)}"] = proj
    for name, t in out.intermediates.items():
        if name.startswith("mid.pooled."):
            name = "mid.pooled." + group_alias.get(name[len("mid.pooled."):], name[len("mid.pooled."):])
        named[name] = t
    return named


def _check_neuroformer(folder: Path, tmp_path: Path) -> None:
    from neurofound.models.convert import convert
    from neurofound.models.neuroformer import Neuroformer

    meta = json.loads((folder / "config.json").read_text())
    io = load_file(str(folder / "io.safetensors"))
    out_dir = convert("neuroformer", folder, tmp_path / "converted")
    model = Neuroformer.from_pretrained(out_dir)
    assert model.config.reference_compat
    model.eval()
    with torch.no_grad():
        out = model(_neuroformer_batch(io, meta), return_intermediates=True)
    ours = _neuroformer_outputs(out, meta)
    expected = [k for k in io if k.startswith(("out.", "mid.")) and not k.startswith("out.metric.")]
    missing = sorted(set(expected) - set(ours))
    assert not missing, f"tensors missing from our output: {missing}"
    bad = {}
    for k in expected:
        got, ref = ours[k].float(), io[k].float()
        assert got.shape == ref.shape, f"{k}: shape {tuple(got.shape)} vs reference {tuple(ref.shape)}"
        if not torch.allclose(got, ref, atol=ATOL, rtol=RTOL):
            bad[k] = (got - ref).abs().max().item()
    assert not bad, f"max |diff| above tolerance: {bad}"

    # tokens: re-tokenize the raw data with the saved tokenizer (reference quirks on) and compare exactly
    tok = model.tokenizer
    assert tok is not None and tok.reference_compat
    enc = tok.encode_raster(io["tok.raster"].numpy(), io["tok.intervals"].numpy())
    for ours_key, ref_key in [("id", "tok.id_full"), ("dt", "tok.dt_full"), ("id_prev", "tok.id_prev_full"),
                              ("dt_prev", "tok.dt_prev_full"), ("pad", "tok.pad"), ("pad_prev", "tok.pad_prev")]:
        np.testing.assert_array_equal(enc[ours_key].astype(np.int64), io[ref_key].numpy(), err_msg=ref_key)
    np.testing.assert_array_equal(enc["id"][:, :-1], io["in.id"].numpy())
    np.testing.assert_array_equal(enc["dt"][:, :-1], io["in.dt"].numpy().astype(np.int64))
    np.testing.assert_array_equal(enc["id"][:, 1:], io["in.target.id"].numpy())
    np.testing.assert_array_equal(enc["id_prev"][:, :-1], io["in.id_prev"].numpy())
    np.testing.assert_array_equal(enc["dt_prev"][:, :-1], io["in.dt_prev"].numpy().astype(np.int64))
    np.testing.assert_array_equal(enc["curr_window"], io["tok.curr_window"].numpy())
    np.testing.assert_array_equal(enc["prev_window"], io["tok.prev_window"].numpy())
    assert [tok.id_sos, tok.id_eos, tok.id_pad] == io["tok.id_special"].tolist()
    assert [tok.dt_sos, tok.dt_eos, tok.dt_pad] == io["tok.dt_special"].tolist()
    np.testing.assert_allclose(tok.dt_values, io["tok.dt_vocab_values"].numpy(), rtol=0, atol=1e-12)
    stim = io["tok.stimulus"]
    start, stop = tok.frame_slice(io["tok.intervals"].numpy(), stim.shape[0])
    np.testing.assert_array_equal(start, io["tok.frame_start"].numpy())
    clips = torch.stack([stim[a:b] for a, b in zip(start, stop)]).unsqueeze(1)
    assert torch.equal(clips, io["in.frames"])
    # behaviour: the sample of the current window's start (fixture T9), values copied exactly
    for var, spec in meta["model_config"]["modalities"]["behavior"]["variables"].items():
        series = io[f"tok.behavior.{var}"].numpy()
        idx = np.maximum(np.rint(enc["curr_window"][:, 0] / spec["dt"]).astype(np.int64), 0)
        key = f"in.target.modalities.behavior.{var}.value" if spec["predict"] else f"in.modalities.behavior.{var}.value"
        np.testing.assert_array_equal(series[idx].astype(np.float32), io[key].numpy().reshape(-1))


CHECKS = {"neuroformer": _check_neuroformer}


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_parity(folder: Path, tmp_path: Path):
    family = folder.name
    if family not in CHECKS:
        pytest.fail(f"fixture folder {folder} names an unknown family {family!r}; known: {sorted(CHECKS)}")
    CHECKS[family](folder, tmp_path)
