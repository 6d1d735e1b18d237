"""Autoregressive spike generation for Neuroformer (`Neuroformer.generate`).

Each window starts from [SOS] (dt 0) and grows one (ID, dt) token pair per step until a row samples an ID >= EOS
or reaches the block end (or `max_new_tokens`); finished rows are dropped from the batch (their sequences are
frozen). `min_new_tokens` forbids EOS (and every other stop token) until a row has that many tokens, so that
benchmarks and cache-on/off comparisons generate the same, fixed number of tokens with an untrained model.

* `use_cache=True`: KV-cached decoding. Self-attention layers (state encoder, decoder) append one key/value per
  step; the cross-attention keys/values of the past window, frames and behaviour are computed once per window.
* `use_cache=False`: a full forward per token over the prefix (the reference's method; no losses or metrics).
  Both paths draw the same random numbers (one uniform per active row per stream per step, inverse-CDF
  sampling), so with the same generator they give identical samples up to floating-point ties.
* `mode="true_past"`: windows are independent and batched freely; the past window comes from real data.
* `mode="own_past"`: the past window is rebuilt with the SpikeTokenizer from the spikes generated for the
  windows before it; spikes earlier than a segment's first generated window come from real data (decoded from
  that row's real past tokens). Windows of a segment run in sequence; segments form the batch.
  With `reference_compat=True` the public code's behaviour is reproduced: its "own past" used the TRUE past
  (`NFDataloader.get_interval` ignores its data argument, spec 4.1), so own_past then equals true_past.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neurofound.data.binning import bin_grid, bin_spikes
from neurofound.errors import ConfigError, DataError
from neurofound.nn.kv_cache import KVCache

log = logging.getLogger(__name__)

_CONTEXT_KEYS = ("id_prev", "dt_prev", "frames", "behavior", "behavior_dt")


@dataclass
class GenerationResult:
    """Generated tokens and spikes.

    Attributes:
        id_tokens, dt_tokens: (B, S) generated sequences [SOS, ..., EOS?, PAD...] per window (batch row).
        n_tokens: (B,) number of generated tokens after SOS (EOS included).
        id_prev_used, dt_prev_used: (B, Sp) the past tokens each window was conditioned on.
        spike_times: (M,) seconds (window start + dt offset); unit_ids (M,); window (M,) batch row;
        segment (M,) segment of that row.
        intervals: (B,) end time t of each window; segments: (B,).
    """

    id_tokens: torch.Tensor
    dt_tokens: torch.Tensor
    n_tokens: torch.Tensor
    id_prev_used: torch.Tensor
    dt_prev_used: torch.Tensor
    spike_times: np.ndarray
    unit_ids: np.ndarray
    window: np.ndarray
    segment: np.ndarray
    intervals: np.ndarray
    segments: np.ndarray

    def window_sets(self) -> list[set[int]]:
        """Set of neuron ids generated in each window (batch-row order), for set-based F1."""
        sets = [set() for _ in range(len(self.intervals))]
        for w, u in zip(self.window, self.unit_ids):
            sets[int(w)].add(int(u))
        return sets

    def counts(self, n_neurons: int, start: float, stop: float, bin_size: float) -> np.ndarray:
        """(N, T) spike-count raster of the generated spikes over [start, stop) in bins of `bin_size` seconds
        (`neurofound.data.binning`: the same bins as `SpikeRecording.raster`)."""
        return bin_spikes(self.spike_times, self.unit_ids, n_neurons, bin_grid(start, stop, bin_size), bin_size)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; removed entries become -inf. logits: (B, V)."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding")
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, generator: torch.Generator | None, **filt) -> torch.Tensor:
    """Inverse-CDF sampling with one uniform draw per row: (B, V) -> (B,) long."""
    probs = filter_logits(logits, **filt).softmax(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=probs.dtype, device=probs.device)
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1)
    # guard against u*total landing past the last non-zero entry through rounding
    idx = idx.clamp_max(probs.shape[-1] - 1)
    bad = probs.gather(1, idx[:, None]).squeeze(1) == 0
    if bad.any():
        idx[bad] = probs[bad].argmax(-1)
    return idx


def _rows(batch: dict, index: torch.Tensor) -> dict:
    """Context entries of `batch` restricted to rows `index`."""
    out = {}
    for k in _CONTEXT_KEYS:
        v = batch.get(k)
        if v is None:
            continue
        out[k] = {n: t[index] for n, t in v.items()} if isinstance(v, dict) else v[index]
    return out


class _BlockStep:
    """Eval-mode arithmetic of one `Block` for a single new token, on the block's own parameter tensors (looked
    up once: module attribute access per op is a measurable part of a decode step)."""

    def __init__(self, blk):
        a = blk.attn
        self.H, self.D = a.n_head, a.head_dim
        self.ln1 = (blk.ln1.normalized_shape, blk.ln1.weight, blk.ln1.bias, blk.ln1.eps)
        self.ln2 = (blk.ln2.normalized_shape, blk.ln2.weight, blk.ln2.bias, blk.ln2.eps)
        self.ln_f = (blk.ln_f.normalized_shape, blk.ln_f.weight, blk.ln_f.bias, blk.ln_f.eps)
        self.wq, self.bq = a.query.weight, a.query.bias
        self.wp, self.bp = a.proj.weight, a.proj.bias
        fc1, act, fc2 = blk.mlp
        self.w1, self.b1, self.w2, self.b2 = fc1.weight, fc1.bias, fc2.weight, fc2.bias
        self.act = act

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, E) -> q (B, H, 1, D) from LN1(x)."""
        return F.linear(F.layer_norm(x, *self.ln1), self.wq, self.bq).view(x.shape[0], self.H, 1, self.D)

    def tail(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Rest of `Block.forward` after the attention heads: output projection + residual, MLP + residual, final
        LayerNorm. x: (B, E), attn: (B, H, 1, D) -> (B, E)."""
        x = x + F.linear(attn.view(x.shape), self.wp, self.bp)
        h = self.act(F.linear(F.layer_norm(x, *self.ln2), self.w1, self.b1))
        return F.layer_norm(x + F.linear(h, self.w2, self.b2), *self.ln_f)


class _SelfAttnStep(_BlockStep):
    """One cached decode step of a self-attention `Block` (state encoder / decoder) with one new token.

    The single query sits at the end of the cache, so the bottom-right causal mask lets it see every cached key:
    no mask is built. Keys/values are written in place into storage preallocated for the whole block, and the
    key and value projections (both of the raw block input, fixture Q5) run as one matmul on weights
    concatenated once per window; the module's `key` / `value` parameters (state-dict names) are untouched.
    """

    def __init__(self, blk, batch: int, capacity: int):
        super().__init__(blk)
        a = blk.attn
        self.w_kv = torch.cat([a.key.weight, a.value.weight], 0)
        self.b_kv = None if a.key.bias is None else torch.cat([a.key.bias, a.value.bias], 0)
        # (batch, k|v, heads, tokens, head_dim): k and v of one step are written by a single copy
        self.kv = self.w_kv.new_empty(batch, 2, self.H, capacity, self.D)
        self.length = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, E) -> (B, E)."""
        L = self.length
        q = self.query(x)
        self.kv[:, :, :, L] = F.linear(x, self.w_kv, self.b_kv).view(x.shape[0], 2, self.H, self.D)
        self.length = L + 1
        return self.tail(x, F.scaled_dot_product_attention(q, self.kv[:, 0, :, : L + 1], self.kv[:, 1, :, : L + 1]))

    def select(self, index: torch.Tensor) -> None:
        self.kv = self.kv.index_select(0, index)


class _CrossAttnStep(_BlockStep):
    """One cached decode step of a cross-attention `Block`: keys/values of the static source and the additive
    key-padding mask are computed once per window; each step is the query projection and one SDPA call."""

    def __init__(self, blk, source: torch.Tensor, key_padding_mask: torch.Tensor | None):
        super().__init__(blk)
        a = blk.attn
        B, Lk, _ = source.shape
        # contiguous once here, so that SDPA does not copy them at every step
        self.k = a.key(source).view(B, Lk, self.H, self.D).transpose(1, 2).contiguous()
        self.v = a.value(source).view(B, Lk, self.H, self.D).transpose(1, 2).contiguous()
        self.mask = self.row_has_key = None
        if key_padding_mask is not None and not bool(key_padding_mask.all()):
            # as `attention` does: rows without a real key see every key, then their output is zeroed
            row_has_key = key_padding_mask.any(-1)
            visible = (key_padding_mask | ~row_has_key[:, None]).view(B, 1, 1, Lk)
            zero = torch.zeros((), dtype=source.dtype, device=source.device)
            self.mask = torch.where(visible, zero, float("-inf"))
            if not bool(row_has_key.all()):
                self.row_has_key = row_has_key.view(B, 1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, E) -> (B, E)."""
        out = F.scaled_dot_product_attention(self.query(x), self.k, self.v, attn_mask=self.mask)
        if self.row_has_key is not None:
            out = out * self.row_has_key
        return self.tail(x, out)

    def select(self, index: torch.Tensor) -> None:
        self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
        if self.row_has_key is not None:
            self.row_has_key = self.row_has_key.index_select(0, index)


class _CachedDecoder:
    """KV-cached incremental forward of one batch of windows.

    In eval mode with the SDPA backend (`auto` / `sdpa`) each step runs a lean per-block path (`_SelfAttnStep`,
    `_CrossAttnStep`): the same arithmetic as `Block.forward` with a `KVCache`, without per-step mask
    construction, input validation or cache bookkeeping (decoding one token is dominated by per-op overhead,
    not arithmetic). Otherwise (training mode, other attention backends) it runs the modules with `KVCache`s.
    """

    def __init__(self, model, ctx_batch: dict, fast: bool = True):
        self.model, self.batch, self.ctx = model, ctx_batch, None
        # fast=False forces the module path (tests compare the two)
        self.fast = fast and not model.training and all(
            blk.attn.backend in ("auto", "sdpa") for blk in self._blocks())
        self.steps: list | None = None
        if not self.fast:
            S = model.config.block_size
            self.state = [KVCache(S) for _ in model.state_blocks]
            self.trunk = ([KVCache(static=True) for _ in model.history_blocks]
                          + [KVCache(static=True) for _ in model.stimulus_blocks]
                          + [KVCache(static=True) for _ in model.behavior_blocks]
                          + [KVCache(S) for _ in model.decoder_blocks])

    def _blocks(self):
        m = self.model
        return [*m.state_blocks, *m.history_blocks, *m.stimulus_blocks, *m.behavior_blocks, *m.decoder_blocks]

    def _build_steps(self, batch: int) -> list:
        m, S = self.model, self.model.config.block_size
        steps = [_SelfAttnStep(blk, batch, S) for blk in m.state_blocks]
        steps += [_CrossAttnStep(blk, self.ctx["past"], self.ctx["past_mask"]) for blk in m.history_blocks]
        steps += [_CrossAttnStep(blk, self.ctx["frames"], None) for blk in m.stimulus_blocks]
        steps += [_CrossAttnStep(blk, self.ctx["behavior"], None) for blk in m.behavior_blocks]
        steps += [_SelfAttnStep(blk, batch, S) for blk in m.decoder_blocks]
        return steps

    def step(self, ids: torch.Tensor, dts: torch.Tensor, pos: int):
        m = self.model
        if self.ctx is None:
            x = m.embed_tokens(ids, dts, offset=pos)
            # cross-attention sources once per window (frame SOS = the SOS embedding)
            self.ctx = m.encode_context(self.batch, x[:, :1])
            if self.fast:
                self.steps = self._build_steps(x.shape[0])
        elif self.fast:
            # embed_tokens without its range checks: the tokens are our own samples, drawn inside the vocabulary
            x = m.tok_emb(ids) + m.temp_emb(dts.to(m.pos_emb.dtype)) + m.pos_emb[:, pos : pos + 1]
        else:
            x = m.embed_tokens(ids, dts, offset=pos)
        if self.fast:
            h = x[:, 0]
            for s in self.steps:
                h = s(h)
            return m.head_id(h), m.head_dt(h)
        for blk, c in zip(m.state_blocks, self.state):
            x, _ = blk(x, causal=True, cache=c)
        x = m._trunk(x, self.ctx, None, {}, False, caches=self.trunk)
        return m.head_id(x[:, -1]), m.head_dt(x[:, -1])

    def select(self, keep: torch.Tensor) -> None:
        if self.fast:
            index = keep.nonzero().flatten()
            for s in self.steps:
                s.select(index)
        else:
            for c in self.state + self.trunk:
                c.select(keep)
        for k in ("past", "past_mask", "frames", "behavior"):
            if self.ctx.get(k) is not None:
                self.ctx[k] = self.ctx[k][keep]


def _trim_past(ctx_batch: dict, id_pad: int) -> dict:
    """Drop the trailing past columns that are PAD in every row (they are masked keys, so results are unchanged).

    Own-past windows hold about one window of generated spikes (<= block_size tokens) in a block_size_prev
    block; cross-attending to the PAD tail would make every decode step read ~7x more cached keys/values
    (memory-bound on CPU) and every context encoding project them. Not used with reference_compat, where PAD
    keys are attended (fixture Q6).
    """
    real = (ctx_batch["id_prev"] != id_pad).any(0)
    length = int(real.nonzero().max()) + 1 if bool(real.any()) else 1
    if length == ctx_batch["id_prev"].shape[1]:
        return ctx_batch
    return {**ctx_batch, "id_prev": ctx_batch["id_prev"][:, :length], "dt_prev": ctx_batch["dt_prev"][:, :length]}


@torch.no_grad()
def generate_block(model, ctx_batch: dict, *, use_cache: bool, generator, id_sampling: dict, dt_sampling: dict,
                   min_new_tokens: int = 0, max_new_tokens: int | None = None):
    """Generate one window per row of `ctx_batch`. Returns id/dt tokens (B, S) and n_tokens (B,).

    min_new_tokens: stop tokens (ID >= EOS) are masked out while fewer tokens than this were generated.
    max_new_tokens: at most this many tokens after SOS (None = up to the block end, S - 1).
    """
    cfg = model.config
    if not cfg.reference_compat:
        ctx_batch = _trim_past(ctx_batch, cfg.id_pad)
    B = ctx_batch["id_prev"].shape[0]
    S = cfg.block_size
    dev = ctx_batch["id_prev"].device
    ids = torch.full((B, S), cfg.id_pad, dtype=torch.long, device=dev)
    dts = torch.full((B, S), cfg.dt_pad, dtype=torch.long, device=dev)
    ids[:, 0], dts[:, 0] = cfg.id_sos, 0
    n_tokens = torch.zeros(B, dtype=torch.long, device=dev)
    active = torch.arange(B, device=dev)
    dec = _CachedDecoder(model, ctx_batch) if use_cache else None
    n_steps = S - 1 if max_new_tokens is None else min(S - 1, max_new_tokens)
    for pos in range(n_steps):
        if use_cache:
            logit_id, logit_dt = dec.step(ids[active, pos : pos + 1], dts[active, pos : pos + 1], pos)
        else:
            sub = _rows(ctx_batch, active)
            if cfg.reference_compat:  # the reference feeds the whole PAD-filled block (Q3); causality hides the rest
                sub["id"], sub["dt"] = ids[active], dts[active]
            else:
                sub["id"], sub["dt"] = ids[active, : pos + 1], dts[active, : pos + 1]
            out = model(sub)
            logit_id, logit_dt = out.id_logits[:, pos], out.dt_logits[:, pos]
        if not cfg.reference_compat:
            # SOS / PAD are never valid next tokens; the reference samples them anyway (kept in compat mode)
            logit_id = logit_id.clone()
            logit_id[:, [cfg.id_sos, cfg.id_pad]] = float("-inf")
            logit_dt = logit_dt.clone()
            logit_dt[:, [cfg.n_dt, cfg.dt_pad]] = float("-inf")
        if pos < min_new_tokens:
            # every row has generated exactly `pos` tokens so far: no stop token yet (EOS; SOS/PAD in compat mode)
            logit_id = logit_id.clone()
            logit_id[:, cfg.id_eos :] = float("-inf")
        new_id = sample(logit_id, generator, **id_sampling)
        new_dt = sample(logit_dt, generator, **dt_sampling)
        ids[active, pos + 1], dts[active, pos + 1] = new_id, new_dt
        n_tokens[active] += 1
        keep = new_id < cfg.id_eos
        if not keep.any():
            break
        if not keep.all():
            active = active[keep]
            if use_cache:
                dec.select(keep)
    return ids, dts, n_tokens


def _window_starts(tokenizer, intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(current start, past start) of each interval, by the tokenizer's own window rules."""
    enc = tokenizer.encode(np.zeros(0), np.zeros(0, dtype=np.int64), intervals)
    return enc["curr_window"][:, 0], enc["prev_window"][:, 0]


@torch.no_grad()
def generate(model, batch: dict, *, mode: str = "true_past", tokenizer=None, use_cache: bool = True,
             generator: torch.Generator | None = None, top_k: int = 0, top_p: float = 1.0, temperature: float = 1.0,
             top_k_dt: int = 0, top_p_dt: float = 1.0, temperature_dt: float = 1.0, min_new_tokens: int = 0,
             max_new_tokens: int | None = None) -> GenerationResult:
    """Generate the current window of every row of `batch` (keys of docs/architecture.md "Batches").

    Args:
        batch: id_prev, dt_prev (B, Sp) real past tokens; frames / behavior / behavior_dt when the model uses
            them; interval (B,) window end times (needed for spike times and own_past); segment (B,) (default 0).
        mode: "true_past" or "own_past" (see the module docstring).
        tokenizer: the SpikeTokenizer that gives tokens their time (dt, windows); default `model.tokenizer`.
        use_cache: KV-cached decoding (True) or a full forward per token (False).
        generator: torch.Generator for reproducible sampling.
        top_k, top_p, temperature: ID sampling; top_k_dt, top_p_dt, temperature_dt: dt sampling.
        min_new_tokens: no window stops (samples EOS) before it has this many tokens after SOS; >= block_size - 1
            generates full blocks. For benchmarks and fair cache-on/off comparisons (same token counts).
        max_new_tokens: stop every window after this many tokens (None = at the block end, block_size - 1).
    """
    if mode not in ("true_past", "own_past"):
        raise ConfigError(f"mode must be 'true_past' or 'own_past', got {mode!r}")
    cfg = model.config
    if not isinstance(min_new_tokens, int) or min_new_tokens < 0:
        raise ConfigError(f"min_new_tokens must be an int >= 0, got {min_new_tokens!r}")
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise ConfigError(f"max_new_tokens must be None or an int >= 1, got {max_new_tokens!r}")
    was_training = model.training
    model.eval()
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError("generation places spikes in time with the tokenizer's dt and windows: pass tokenizer= or "
                          "attach one as model.tokenizer")
    model.check_tokenizer(tokenizer)
    B = batch["id_prev"].shape[0]
    dev = batch["id_prev"].device
    intervals = np.asarray(batch["interval"].cpu() if "interval" in batch else np.full(B, tokenizer.window),
                           dtype=np.float64)
    segments = np.asarray(batch["segment"].cpu() if "segment" in batch else np.zeros(B), dtype=np.int64)
    id_s = dict(top_k=top_k, top_p=top_p, temperature=temperature)
    dt_s = dict(top_k=top_k_dt, top_p=top_p_dt, temperature=temperature_dt)
    lengths = dict(min_new_tokens=min_new_tokens, max_new_tokens=max_new_tokens)
    ids = torch.full((B, cfg.block_size), cfg.id_pad, dtype=torch.long, device=dev)
    dts = torch.full_like(ids, cfg.dt_pad)
    n_tok = torch.zeros(B, dtype=torch.long, device=dev)
    id_prev_used, dt_prev_used = batch["id_prev"].clone(), batch["dt_prev"].clone()
    curr_start, prev_start = _window_starts(tokenizer, intervals)

    if mode == "true_past" or cfg.reference_compat:
        ids, dts, n_tok = generate_block(model, batch, use_cache=use_cache, generator=generator,
                                         id_sampling=id_s, dt_sampling=dt_s, **lengths)
    else:
        if "interval" not in batch:
            raise DataError("own_past generation needs batch['interval'] (window end times) to place spikes")
        order = {s: np.flatnonzero(segments == s)[np.argsort(intervals[segments == s], kind="stable")]
                 for s in np.unique(segments)}
        seg_start = {s: curr_start[rows].min() for s, rows in order.items()}
        gen_t = {s: [] for s in order}  # generated spike times / units per segment so far
        gen_u = {s: [] for s in order}
        # one summary instead of the tokenizer's per-call truncation warning for every rebuilt past window
        tok_log = logging.getLogger(type(tokenizer).__module__)
        n_truncated = 0
        for k in range(max(len(r) for r in order.values())):
            rows = [(s, r[k]) for s, r in order.items() if len(r) > k]
            prev_ids, prev_dts = [], []
            for s, r in rows:
                real_t, real_u = tokenizer.decode(batch["id_prev"][r].cpu().numpy(), batch["dt_prev"][r].cpu().numpy(),
                                                  float(prev_start[r]))
                before = real_t < seg_start[s] - 1e-9
                t_all = np.concatenate([real_t[before]] + gen_t[s])
                u_all = np.concatenate([real_u[before]] + gen_u[s]).astype(np.int64)
                tok_log.disabled, was_disabled = True, tok_log.disabled
                try:
                    enc = tokenizer.encode(t_all, u_all, intervals[r : r + 1])
                finally:
                    tok_log.disabled = was_disabled
                n_truncated += int(enc["n_truncated_prev"][0] > 0)
                prev_ids.append(torch.as_tensor(enc["id_prev"][0, :-1].astype(np.int64)))
                prev_dts.append(torch.as_tensor(enc["dt_prev"][0, :-1].astype(np.int64)))
            index = torch.as_tensor([r for _, r in rows], device=dev)
            sub = _rows(batch, index)
            sub["id_prev"], sub["dt_prev"] = torch.stack(prev_ids).to(dev), torch.stack(prev_dts).to(dev)
            id_prev_used[index], dt_prev_used[index] = sub["id_prev"], sub["dt_prev"]
            i_, d_, n_ = generate_block(model, sub, use_cache=use_cache, generator=generator,
                                        id_sampling=id_s, dt_sampling=dt_s, **lengths)
            ids[index], dts[index], n_tok[index] = i_, d_, n_
            for j, (s, r) in enumerate(rows):
                t, u = _spikes(i_[j], d_[j], cfg, float(curr_start[r]), tokenizer.dt)
                gen_t[s].append(t)
                gen_u[s].append(u)
        if n_truncated:
            log.warning("own-past generation: %d of %d rebuilt past windows held more than block_size_prev - 2 "
                        "generated spikes and were truncated (the earliest dropped)", n_truncated, B)

    times, units, window = [], [], []
    for r in range(B):
        t, u = _spikes(ids[r], dts[r], cfg, float(curr_start[r]), tokenizer.dt)
        times.append(t)
        units.append(u)
        window.append(np.full(len(t), r, dtype=np.int64))
    window = np.concatenate(window)
    model.train(was_training)
    return GenerationResult(
        id_tokens=ids, dt_tokens=dts, n_tokens=n_tok, id_prev_used=id_prev_used, dt_prev_used=dt_prev_used,
        spike_times=np.concatenate(times), unit_ids=np.concatenate(units).astype(np.int64), window=window,
        segment=segments[window], intervals=intervals, segments=segments,
    )


def _spikes(ids: torch.Tensor, dts: torch.Tensor, cfg, start: float, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Neuron events of one generated sequence -> (times = window start + dt offset, unit ids)."""
    ids, dts = ids.cpu().numpy(), dts.cpu().numpy()
    ok = (ids < cfg.n_neurons) & (dts < cfg.n_dt)
    return start + dts[ok].astype(np.float64) * dt, ids[ok].astype(np.int64)
