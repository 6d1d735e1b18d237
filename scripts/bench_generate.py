"""Neuroformer generation throughput: KV-cached vs full-recompute decoding, batch 1 vs batched.

Three measurements on one untrained model (random weights, fp32, CPU), all in OWN-PAST mode (the past
window of every window after the first is re-tokenized from the spikes generated before it):

* ``recompute_b1``: one segment, ``use_cache=False`` -- a full forward over the whole prefix per token (the
  reference's method; no losses or metrics), timed over one full window by default, the same tokens per window
  as the cached paths (its per-token cost grows with the prefix, so ``--recompute-tokens`` below the window
  length flatters this baseline).
* ``cached_b1``: one segment, ``use_cache=True``, ``--windows`` consecutive full windows.
* ``cached_batched``: ``--batch`` segments decoded together (one window of each per step of the outer loop),
  ``use_cache=True``, ``--windows`` consecutive full windows per segment.

Every window generates exactly the same number of tokens on every path (``min_new_tokens`` forbids EOS and
``max_new_tokens`` caps the length), so tokens/s are comparable: an untrained model would otherwise stop
after a random handful of tokens. Figures:

* ``kv_cache_speedup`` = cached_b1 / recompute_b1 tokens/s (target >= 10),
* ``batched_speedup`` = cached_batched / recompute_b1 tokens/s (target >= 50).

Inputs are synthetic: a Poisson recording of ``--n-neurons`` neurons at ``--rate`` Hz tokenized with the
SpikeTokenizer (at the defaults, 2,023 neurons at 8 Hz fill the 700-token past block, as in the lateral
dataset) and random frames of the model's frame shape. Timing uses ``time.perf_counter`` after one warm-up
call per path; the paths run in interleaved rounds and each reports its best round (the machine may be shared, so the
one-minute load average is reported too: with more runnable processes than cores, every OpenMP barrier can
wait for a descheduled thread and small-op decoding slows down by orders of magnitude; compare
``--threads 1`` then).

Examples:
    python scripts/bench_generate.py                # neuroformer_base, lateral shapes (about 2-4 minutes on 2 idle cores)
    python scripts/bench_generate.py --json
    python scripts/bench_generate.py --small --json # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

from neurofound.models.neuroformer import Neuroformer, neuroformer_base, neuroformer_small
from neurofound.tokenizers.spike import SpikeTokenizer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true",
                   help="neuroformer_small sizes with 100 neurons and short runs (for the smoke test)")
    p.add_argument("--n-neurons", type=int, default=None, help="neurons N (default 2023; 100 with --small)")
    p.add_argument("--rate", type=float, default=8.0, help="Poisson firing rate per neuron (Hz)")
    p.add_argument("--batch", type=int, default=None, help="segments decoded together (default 32; 4 with --small)")
    p.add_argument("--windows", type=int, default=2, help="consecutive windows per segment on the cached paths")
    p.add_argument("--recompute-tokens", type=int, default=None,
                   help="tokens timed on the batch-1 recompute path (the first tokens of one window; default: a full "
                        "window, block_size - 1, as on the cached paths; fewer tokens favour the recompute path, "
                        "whose cost grows with the prefix)")
    p.add_argument("--tokens", type=int, default=None,
                   help="tokens generated per window on the cached paths (default block_size - 1, full blocks)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs of each batch-1 path, interleaved with the others (best is kept)")
    p.add_argument("--batched-repeats", type=int, default=1, help="timed runs of the batched path (best is kept)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = p.parse_args(argv)
    if args.n_neurons is None:
        args.n_neurons = 100 if args.small else 2023
    if args.batch is None:
        args.batch = 4 if args.small else 32
    for name in ("n_neurons", "batch", "windows", "repeats", "batched_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.rate <= 0:
        p.error("--rate must be > 0")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    return args


def build(args):
    """Model (eval mode), tokenizer and the synthetic recording (spike times, unit ids)."""
    if args.small:
        cfg = neuroformer_small(n_neurons=args.n_neurons)
    else:
        cfg = neuroformer_base(n_neurons=args.n_neurons)
    torch.manual_seed(args.seed)
    model = Neuroformer(cfg).eval()
    # the public code's windows: 50 ms at 10 ms dt (the builders' 6 dt offsets), 3 frames at 20 Hz
    tok = SpikeTokenizer(n_neurons=cfg.n_neurons, dt=0.01, window=0.05, window_prev=0.05,
                         block_size=cfg.block_size, block_size_prev=cfg.block_size_prev,
                         frame_window=0.15, frame_rate=20.0)
    model.attach_tokenizer(tok)
    return model, tok


def make_batch(cfg, tok, n_segments: int, n_windows: int, rate: float, rng: np.random.Generator) -> dict:
    """`n_segments` segments of `n_windows` consecutive windows each, with real (Poisson) past tokens.

    Segment s covers its own stretch of a Poisson recording; its first window's past is real data and
    every later past is rebuilt from generated spikes (own-past mode).
    """
    warmup = tok.window + tok.window_prev  # the first window needs a full real past window before it
    seg_len = warmup + n_windows * tok.window + tok.window
    duration = n_segments * seg_len
    n_spikes = rng.poisson(cfg.n_neurons * rate * duration)
    times = np.sort(rng.uniform(0.0, duration, n_spikes))
    units = rng.integers(0, cfg.n_neurons, n_spikes)
    first = np.arange(n_segments) * seg_len + warmup + tok.window
    intervals = (first[:, None] + tok.window * np.arange(n_windows)[None, :]).reshape(-1)
    intervals = np.round(intervals / tok.dt) * tok.dt  # exactly on the dt grid
    enc = tok.encode(times, units, intervals)
    B = len(intervals)
    return {
        "id_prev": torch.as_tensor(enc["id_prev"][:, :-1].astype(np.int64)),
        "dt_prev": torch.as_tensor(enc["dt_prev"][:, :-1].astype(np.int64)),
        "frames": torch.as_tensor(rng.standard_normal((B, 1, *cfg.frame_shape)).astype(np.float32)),
        "interval": torch.as_tensor(intervals, dtype=torch.float64),
        "segment": torch.as_tensor(np.repeat(np.arange(n_segments), n_windows), dtype=torch.int64),
    }


def timed_generate(model, tok, batch, *, use_cache: bool, n_tokens: int, seed: int) -> tuple[int, float]:
    """Run own-past generation with exactly `n_tokens` tokens per window; returns (tokens generated, seconds)."""
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    res = model.generate(batch, mode="own_past", tokenizer=tok, use_cache=use_cache, generator=g,
                         min_new_tokens=n_tokens, max_new_tokens=n_tokens)
    seconds = time.perf_counter() - t0
    n = int(res.n_tokens.sum())
    expected = n_tokens * batch["id_prev"].shape[0]
    if n != expected:
        raise RuntimeError(f"generated {n} tokens, expected {expected}: min_new_tokens / max_new_tokens not honoured")
    return n, seconds


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    model, tok = build(args)
    cfg = model.config
    full = cfg.block_size - 1
    n_cached = min(args.tokens or full, full)
    n_recompute = min(args.recompute_tokens or full, full)
    rng = np.random.default_rng(args.seed)
    b1 = make_batch(cfg, tok, 1, args.windows, args.rate, rng)
    b1_recompute = make_batch(cfg, tok, 1, 1, args.rate, rng)
    bB = make_batch(cfg, tok, args.batch, args.windows, args.rate, rng)
    past_fill = float((bB["id_prev"] != cfg.id_pad).sum(1).float().mean())

    # warm-up: one short call per path (allocator, oneDNN primitives, first-call overheads)
    timed_generate(model, tok, b1_recompute, use_cache=False, n_tokens=2, seed=args.seed)
    timed_generate(model, tok, b1, use_cache=True, n_tokens=2, seed=args.seed)
    timed_generate(model, tok, bB, use_cache=True, n_tokens=2, seed=args.seed)

    # Interleaved rounds (recompute, cached b1, batched), best time per path: a burst of load from other
    # processes then hits one round of every path rather than all of one path.
    times = {"recompute_b1": [], "cached_b1": [], "cached_batched": []}
    n = {}
    for r in range(max(args.repeats, args.batched_repeats)):
        plan = [("recompute_b1", b1_recompute, False, n_recompute), ("cached_b1", b1, True, n_cached)]
        if r < args.batched_repeats:
            plan.append(("cached_batched", bB, True, n_cached))
        for name, batch, use_cache, n_tok in plan:
            if name != "cached_batched" and r >= args.repeats:
                continue
            n[name], sec = timed_generate(model, tok, batch, use_cache=use_cache, n_tokens=n_tok, seed=args.seed + r)
            times[name].append(sec)
    n_rc, s_rc = n["recompute_b1"], min(times["recompute_b1"])
    n_c1, s_c1, all_c1 = n["cached_b1"], min(times["cached_b1"]), times["cached_b1"]
    n_cb, s_cb, all_cb = n["cached_batched"], min(times["cached_batched"]), times["cached_batched"]
    tps = {"recompute_b1": n_rc / s_rc, "cached_b1": n_c1 / s_c1, "cached_batched": n_cb / s_cb}
    return {
        "bench": "generate",
        "model": "neuroformer_small" if args.small else "neuroformer_base",
        "mode": "own_past",
        "kv_cache_speedup": tps["cached_b1"] / tps["recompute_b1"],
        "batched_speedup": tps["cached_batched"] / tps["recompute_b1"],
        "tokens_per_s": tps,
        "tokens": {"recompute_b1": n_rc, "cached_b1": n_c1, "cached_batched": n_cb},
        "seconds": {"recompute_b1": s_rc, "cached_b1": s_c1, "cached_batched": s_cb,
                    "recompute_b1_all": times["recompute_b1"], "cached_b1_all": all_c1,
                    "cached_batched_all": all_cb},
        "batch_sizes": {"recompute_b1": 1, "cached_b1": 1, "cached_batched": args.batch},
        "windows_per_segment": {"recompute_b1": 1, "cached_b1": args.windows, "cached_batched": args.windows},
        "tokens_per_window": {"recompute_b1": n_recompute, "cached": n_cached},
        "n_neurons": cfg.n_neurons,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "layers_state_history_stimulus": [cfg.n_state_layers, cfg.n_history_layers, cfg.n_stimulus_layers],
        "block_size": cfg.block_size,
        "block_size_prev": cfg.block_size_prev,
        "frame_shape": cfg.frame_shape,
        "rate_hz": args.rate,
        "mean_real_past_tokens_first_window": past_fill,
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "dtype": "float32",
    }


def format_table(r: dict) -> str:
    lines = [f"{r['model']} own-past generation, {r['threads']} threads (load avg {r['load_avg_1min']:.2f})"]
    for k, v in r["tokens_per_s"].items():
        lines.append(f"  {k:15s} batch {r['batch_sizes'][k]:3d}  {r['tokens'][k]:6d} tokens in "
                     f"{r['seconds'][k]:8.2f} s  = {v:9.2f} tokens/s")
    lines.append(f"  kv_cache_speedup {r['kv_cache_speedup']:.1f}x (target >= 10)")
    lines.append(f"  batched_speedup  {r['batched_speedup']:.1f}x (target >= 50)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    bad = [k for k, v in report["tokens_per_s"].items() if not math.isfinite(v) or v <= 0]
    if bad:
        raise RuntimeError(f"non-finite or non-positive throughput for {bad}")
    print(json.dumps(report) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
