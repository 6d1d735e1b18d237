"""Neuroformer generation: cache on/off identity, stopping, reproducibility, own-past vs true-past."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofound.models.neuroformer import Neuroformer
from neurofound.models.neuroformer_generate import filter_logits
from neurofound.tokenizers.spike import SpikeTokenizer

from .test_neuroformer import make_batch, model_for, tiny, tokenizer_for


def gen_batch(cfg, B=4, seed=0):
    b = make_batch(cfg, B=B, n_real=tuple([5, 2, 8, 0][:B]), seed=seed)
    for k in ("id", "dt", "target_id", "target_dt", "behavior_target"):
        b.pop(k)
    b["interval"] = torch.tensor([0.2, 0.25, 0.3, 0.35][:B], dtype=torch.float64)
    b["segment"] = torch.tensor([0, 0, 1, 1][:B])
    return b


@pytest.mark.parametrize("compat", [False, True])
def test_cache_on_off_identical_float64(compat):
    cfg = tiny(reference_compat=compat, clip_embd=16 if compat else 12)
    m = model_for(cfg).double()
    b = gen_batch(cfg)
    b["frames"] = b["frames"].double()
    kw = dict(top_p=0.95, temperature=1.0, top_p_dt=0.95, temperature_dt=1.0)
    a = m.generate(b, use_cache=True, generator=torch.Generator().manual_seed(3), **kw)
    c = m.generate(b, use_cache=False, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.id_tokens, c.id_tokens) and torch.equal(a.dt_tokens, c.dt_tokens)
    assert a.n_tokens.sum() > 4  # something was generated
    np.testing.assert_array_equal(a.spike_times, c.spike_times)


def test_stopping_and_layout():
    cfg = tiny()
    m = model_for(cfg)
    r = m.generate(gen_batch(cfg), generator=torch.Generator().manual_seed(0))
    S = cfg.block_size
    for row, n in zip(r.id_tokens, r.n_tokens):
        n = int(n)
        assert row[0] == cfg.id_sos and 1 <= n <= S - 1
        assert (row[1:n] < cfg.n_neurons).all()  # neurons until the last generated token
        assert row[n] < cfg.n_neurons or row[n] == cfg.id_eos
        if row[n] != cfg.id_eos:
            assert n == S - 1  # stopped at the block end
        assert (row[n + 1:] == cfg.id_pad).all()  # frozen after finishing
    # spikes: window start + dt offset, inside the current window
    tok = m.tokenizer
    starts = r.intervals[r.window] - tok.window
    assert ((r.spike_times >= starts - 1e-9) & (r.spike_times < r.intervals[r.window] + tok.dt)).all()
    sets = r.window_sets()
    assert len(sets) == 4 and sum(map(len, sets)) <= len(r.unit_ids)
    counts = r.counts(cfg.n_neurons, 0.0, 0.4, tok.dt)
    assert counts.shape == (cfg.n_neurons, 40) and counts.sum() == len(r.spike_times)


def test_reproducible_and_seed_dependent():
    cfg = tiny()
    m = model_for(cfg)
    b = gen_batch(cfg)
    g = lambda s: torch.Generator().manual_seed(s)
    r1, r2, r3 = m.generate(b, generator=g(1)), m.generate(b, generator=g(1)), m.generate(b, generator=g(2))
    assert torch.equal(r1.id_tokens, r2.id_tokens)
    assert not torch.equal(r1.id_tokens, r3.id_tokens)


def test_top_k_one_is_greedy():
    logits = torch.randn(5, 9)
    f = filter_logits(logits, top_k=1)
    assert (torch.isfinite(f).sum(-1) == 1).all() and torch.equal(f.argmax(-1), logits.argmax(-1))
    f = filter_logits(logits, top_p=1e-6)
    assert torch.equal(f.argmax(-1), logits.argmax(-1)) and (torch.isfinite(f).sum(-1) == 1).all()


def test_own_past_rebuilds_past_from_generated_spikes():
    cfg = tiny()
    m = model_for(cfg)
    tok = m.tokenizer
    b = gen_batch(cfg)
    raster = np.random.default_rng(0).poisson(0.3, (cfg.n_neurons, 40))
    enc = tok.encode_raster(raster, b["interval"].numpy())
    b["id_prev"] = torch.as_tensor(enc["id_prev"][:, :-1].astype(np.int64))
    b["dt_prev"] = torch.as_tensor(enc["dt_prev"][:, :-1].astype(np.int64))
    for seed in range(50):  # first seed whose window 0 puts a spike inside window 1's past (deterministic)
        own = m.generate(b, mode="own_past", tokenizer=tok, generator=torch.Generator().manual_seed(seed))
        if ((own.window == 0) & (own.spike_times < 0.2 - 1e-9)).any():
            break
    own_nc = m.generate(b, mode="own_past", tokenizer=tok, generator=torch.Generator().manual_seed(seed), use_cache=False)
    assert torch.equal(own.id_tokens, own_nc.id_tokens)
    # rows 0 and 1 are consecutive windows of segment 0: row 1's past window is row 0's current window
    # (generated spikes with the largest dt offset land at t itself, i.e. in the next window, so filter by time)
    prev_ids = own.id_prev_used[1]
    in_past = (own.window == 0) & (own.spike_times < 0.2 - 1e-9)
    events = prev_ids[prev_ids < cfg.n_neurons]
    assert in_past.sum() > 0
    assert sorted(events.tolist()) == sorted(own.unit_ids[in_past].tolist())
    # the first window of each segment keeps its real past
    assert torch.equal(own.id_prev_used[0], b["id_prev"][0]) and torch.equal(own.id_prev_used[2], b["id_prev"][2])
    assert torch.equal(own.dt_prev_used[0], b["dt_prev"][0])
    # compat reproduces the public code: "own past" = true past
    mc = Neuroformer(tiny(reference_compat=True, clip_embd=16)).eval()
    sd = m.state_dict()
    sd.pop("clip_proj.weight")
    mc.load_state_dict(sd, strict=False)
    tok_c = tokenizer_for(mc.config)
    rc_own = mc.generate(b, mode="own_past", tokenizer=tok_c, generator=torch.Generator().manual_seed(5))
    rc_true = mc.generate(b, mode="true_past", tokenizer=tok_c, generator=torch.Generator().manual_seed(5))
    assert torch.equal(rc_own.id_tokens, rc_true.id_tokens)
    with pytest.raises(ValueError, match="mode"):
        m.generate(b, mode="dreamt_past")
    m.tokenizer = None  # spikes get their time from the tokenizer: generating without one is a clear error
    with pytest.raises(ValueError, match="tokenizer's dt"):
        m.generate(b)
    with pytest.raises(ValueError, match="n_neurons: model 6 vs tokenizer 7"):
        m.generate(b, tokenizer=SpikeTokenizer(n_neurons=7, block_size=cfg.block_size,
                                               block_size_prev=cfg.block_size_prev))


@pytest.mark.parametrize("compat", [False, True])
def test_fast_decode_step_matches_module_path(compat):
    """The lean per-block decode path gives the logits of Block.forward with KVCaches, also after rows are dropped
    (rows with 0..8 real past tokens: the empty one exercises the no-visible-key rule)."""
    from neurofound.models.neuroformer_generate import _CachedDecoder

    cfg = tiny(reference_compat=compat, clip_embd=16 if compat else 12)
    m = model_for(cfg).double().eval()
    b = gen_batch(cfg)
    b["frames"] = b["frames"].double()
    fast, slow = _CachedDecoder(m, b), _CachedDecoder(m, b, fast=False)
    assert fast.fast and not slow.fast
    gen = torch.Generator().manual_seed(0)
    B = 4
    ids = torch.full((B, 1), cfg.id_sos)
    dts = torch.zeros(B, 1, dtype=torch.long)
    for pos in range(6):
        a_id, a_dt = fast.step(ids, dts, pos)
        c_id, c_dt = slow.step(ids, dts, pos)
        torch.testing.assert_close(a_id, c_id, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a_dt, c_dt, rtol=1e-10, atol=1e-10)
        ids = torch.randint(0, cfg.n_neurons, (ids.shape[0], 1), generator=gen)
        dts = torch.randint(0, cfg.n_dt, (ids.shape[0], 1), generator=gen)
        if pos == 2:  # drop row 1
            keep = torch.tensor([True, False, True, True])
            fast.select(keep)
            slow.select(keep)
            ids, dts = ids[keep], dts[keep]
    assert a_id.shape[0] == 3
