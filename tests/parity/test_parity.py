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


# ---------------------------------------------------------------------------------------------------------------
# BrainOmni stage 1 (BrainTokenizer)
# ---------------------------------------------------------------------------------------------------------------
# README "Verification and tolerances": indices exact; floats atol/rtol 1e-4 (latents reach ~8); loss terms 1e-5,
# except the phase terms and the totals (one or two branch-cut flips of `angle` move them by ~5e-4 each).
BRAINTOKENIZER_FLOAT_TOL = 1e-4
BRAINTOKENIZER_LOSS_TOL = 1e-5
BRAINTOKENIZER_PHASE_TOL = 2e-3
_PHASE_AND_TOTALS = ("out.phase_loss", "out.loss", "out.fwd_phase_loss", "out.fwd_loss")


def _compare_brainomni_tokenizer(ours: dict, io: dict) -> dict[str, float]:
    """Every fixture tensor of `ours` against the reference with the README's tolerance; returns the max |diff|."""
    diffs, bad = {}, {}
    for k, got in ours.items():
        ref = io[k]
        assert tuple(got.shape) == tuple(ref.shape), f"{k}: shape {tuple(got.shape)} vs reference {tuple(ref.shape)}"
        if not ref.dtype.is_floating_point:
            assert got.dtype == ref.dtype, f"{k}: dtype {got.dtype} vs reference {ref.dtype}"
            n_diff = int((got != ref).sum())
            diffs[k] = float(n_diff)
            if n_diff:
                bad[k] = f"{n_diff} indices differ"
            continue
        got, ref = got.detach().float(), ref.float()
        diffs[k] = (got - ref).abs().max().item()
        if ref.dim() == 0:
            tol = BRAINTOKENIZER_PHASE_TOL if k in _PHASE_AND_TOTALS else BRAINTOKENIZER_LOSS_TOL
            ok = abs(got.item() - ref.item()) <= tol
        else:
            ok = torch.allclose(got, ref, atol=BRAINTOKENIZER_FLOAT_TOL, rtol=BRAINTOKENIZER_FLOAT_TOL)
        if not ok:
            bad[k] = diffs[k]
    assert not bad, f"above tolerance: {bad} (all max |diff|: {diffs})"
    return diffs


def _check_brainomni_tokenizer(folder: Path, tmp_path: Path) -> None:
    """Convert, load with from_pretrained, compare the three reference paths (fixture README "Outputs").

    A: the deterministic full path (`visualize` + the loss formulas), B: the training forward with the
    fixture's draws injected, C: `tokenize` with the fixture's overlap. Every size comes from config.json.
    """
    from neurofound.models.brainomni_tokenizer import BrainTokenizerModel
    from neurofound.models.convert import convert
    from neurofound.tokenizers.braintokenizer import BrainTokenizer, SensorLayout

    meta = json.loads((folder / "config.json").read_text())
    kwargs = meta["constructor_kwargs"]
    io = load_file(str(folder / "io.safetensors"))
    out_dir = convert("brainomni_tokenizer", folder, tmp_path / "converted")
    model = BrainTokenizerModel.from_pretrained(out_dir)
    tok = BrainTokenizer.from_pretrained(out_dir)  # the model folder's tokenizer/, found by the tokenizer too
    assert model.config.reference_compat and tok.reference_compat and not model.training
    for key in ("n_filters", "n_dim", "n_neuro", "n_head", "codebook_size", "num_quantizers", "window_length",
                "kernel_size", "last_kernel_size"):
        if key in kwargs:
            assert model.config.to_dict()[key] == kwargs[key], key
    assert model.config.ratios == [int(r) for r in kwargs["ratios"]]
    sensors = SensorLayout(io["in.pos"], io["in.sensor_type"])
    x = io["in.x"]

    with torch.no_grad():
        a = model.tokenizer(x, sensors)  # A
        b = model(x, sensors, perm=io["in.fwd_perm"], noise=io["in.fwd_noise"])  # B
        overlap = float(meta.get("tokenize_overlap_ratio", 0.25))
        features, indices, token_mask = tok.tokenize(x, sensors, overlap=overlap)  # C
    ours = {
        "mid.sensor_embedding": a.sensor_embedding, "mid.temporal_features": a.temporal_features,
        "out.latent": a.latent, "out.indices": a.codes, "out.quantized": a.quantized,
        "mid.decoder_sensor_features": a.decoder_sensor_features, "out.reconstruction": a.reconstruction,
        "out.target": a.target, "out.commitment_loss": a.losses["commitment"], "out.time_loss": a.losses["time"],
        "out.pcc": a.losses["pcc"], "out.amp_loss": a.losses["amp"], "out.phase_loss": a.losses["phase"],
        "out.loss": a.losses["total"],
        "out.fwd_loss": b.losses["total"], "out.fwd_time_loss": b.losses["time"], "out.fwd_pcc": b.losses["pcc"],
        "out.fwd_amp_loss": b.losses["amp"], "out.fwd_phase_loss": b.losses["phase"],
        "out.fwd_commitment_loss": b.losses["commitment"], "out.fwd_indices": b.codes, "mid.fwd_latent": b.latent,
        "mid.fwd_reconstruction": b.reconstruction,
        "out.tok_features": features, "out.tok_indices": indices,
    }
    expected = [k for k in io if k.startswith(("out.", "mid."))]
    missing = sorted(set(expected) - set(ours))
    assert not missing, f"tensors missing from our output: {missing}"
    _compare_brainomni_tokenizer({k: ours[k] for k in expected}, io)
    assert torch.equal(b.losses["judge"], b.losses["total"])
    assert bool(token_mask.all())  # reference_compat: the tokenize tail is padded unmasked, as the reference
    # the reference draws in order: seeding as the fixture did reproduces its permutation and noise
    seed = (meta.get("training_forward") or {}).get("torch_seed")
    if seed is not None:
        torch.manual_seed(int(seed))
        with torch.no_grad():
            drawn = model(x, sensors)
        assert torch.equal(drawn.perm, io["in.fwd_perm"])
        assert torch.equal(drawn.codes, io["out.fwd_indices"])


# ---------------------------------------------------------------------------------------------------------------
# BrainOmni stage 2 (masked token prediction)
# ---------------------------------------------------------------------------------------------------------------
# README "Verification and tolerances": logits / hidden atol 1e-4 (rtol 1e-4), encode atol 1e-5, loss atol 1e-5,
# token indices exact. The rest: the corrupted input and the masks are exact operations (atol 1e-5 / equal).
BRAINOMNI_TOL = {"out.logits": 1e-4, "mid.final_hidden": 1e-4, "out.encode": 1e-5, "out.loss": 1e-5,
                 "out.acc_all": 1e-6, "out.acc_per_level": 1e-6, "mid.lm_input": 1e-5, "in.tokens": 1e-5}


def _compare_brainomni(ours: dict, io: dict, what: str) -> dict[str, float]:
    """Each tensor of `ours` against the fixture's with BRAINOMNI_TOL (bool / int exact); returns the max |diff|."""
    diffs, bad = {}, {}
    for k, got in ours.items():
        ref = io[k]
        assert tuple(got.shape) == tuple(ref.shape), f"{what} {k}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
        if not ref.dtype.is_floating_point:
            assert got.dtype == ref.dtype, f"{what} {k}: dtype {got.dtype} vs reference {ref.dtype}"
            diffs[k] = float((got != ref).sum())
            if diffs[k]:
                bad[k] = f"{int(diffs[k])} entries differ"
            continue
        got, ref = got.detach().float(), ref.float()
        diffs[k] = (got - ref).abs().max().item()
        tol = BRAINOMNI_TOL[k]
        if not torch.allclose(got, ref, atol=tol, rtol=1e-4 if tol >= 1e-4 else 0.0):
            bad[k] = diffs[k]
    assert not bad, f"{what}: above tolerance: {bad} (all max |diff|: {diffs})"
    return diffs


def _check_brainomni(folder: Path, tmp_path: Path) -> None:
    """Convert, load with from_pretrained, tokenize `in.x`, then the masked forward with the fixture's draws
    injected (from the fixture's tokens and end to end from `in.x`) and `encode` (fixture README "Outputs").
    Every size comes from config.json."""
    from neurofound.models.brainomni import BrainOmni, MaskingDraws
    from neurofound.models.convert import convert
    from neurofound.tokenizers.braintokenizer import SensorLayout

    meta = json.loads((folder / "config.json").read_text())
    kwargs = meta["constructor_kwargs"]
    io = load_file(str(folder / "io.safetensors"))
    out_dir = convert("brainomni", folder, tmp_path / "converted")
    model = BrainOmni.from_pretrained(out_dir)
    assert model.config.reference_compat and model.tokenizer.reference_compat and not model.training
    for key in ("lm_dim", "lm_head", "lm_depth", "n_dim", "n_neuro", "codebook_size", "num_quantizers", "mask_ratio",
                "overlap_ratio"):
        assert model.config.to_dict()[key] == kwargs[key], key
    assert model.config.num_quantizers_used == (kwargs.get("num_quantizers_used") or kwargs["num_quantizers"])
    assert not any(k.endswith(".rotate") for k in model.state_dict())  # rebuilt from freqs (README §5)
    sensors = SensorLayout(io["in.pos"], io["in.sensor_type"])
    x = io["in.x"]
    draws = MaskingDraws(keep=io["in.keep_mask"], shuffle=io["in.shuffle_perm"], replace=io["in.replace_rand"])

    with torch.no_grad():
        features, indices, token_mask = model.tokenize(x, sensors)
        from_tokens = model(tokens=(io["in.tokens"], io["in.token_indices"], None), draws=draws,
                            return_intermediates=True)
        end_to_end = model(x, sensors, draws=draws, return_intermediates=True)
        encoded, encode_mask = model.encode(x, sensors)
    assert bool(token_mask.all()) and bool(encode_mask.all())  # reference_compat: nothing padded, as the reference
    _compare_brainomni({"in.tokens": features, "in.token_indices": indices}, io, "tokenize")
    expected = [k for k in io if k.startswith(("out.", "mid."))]
    for what, out in (("from in.tokens", from_tokens), ("from in.x", end_to_end)):
        ours = {"out.logits": out.logits, "out.loss": out.loss, "out.acc_all": out.acc_all,
                "out.acc_per_level": out.acc_per_level, "out.encode": encoded, **out.intermediates}
        missing = sorted(set(expected) - set(ours))
        assert not missing, f"tensors missing from our output: {missing}"
        _compare_brainomni({k: ours[k] for k in expected}, io, what)
        assert torch.equal(out.masked, ~io["in.keep_mask"])
    # the draws in the reference's order: seeding as the fixture did reproduces keep / shuffle / replace
    torch.manual_seed(int(meta["masking_forward"]["torch_seed"]))
    with torch.no_grad():
        drawn = model(x, sensors)
    assert torch.equal(drawn.masked, ~io["in.keep_mask"])
    assert abs(drawn.loss.item() - io["out.loss"].item()) <= BRAINOMNI_TOL["out.loss"]


CHECKS = {"neuroformer": _check_neuroformer, "brainomni_tokenizer": _check_brainomni_tokenizer,
          "brainomni": _check_brainomni}


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_parity(folder: Path, tmp_path: Path):
    family = folder.name
    if family not in CHECKS:
        pytest.fail(f"fixture folder {folder} names an unknown family {family!r}; known: {sorted(CHECKS)}")
    CHECKS[family](folder, tmp_path)
