"""Training-step model FLOP utilisation (MFU) of Neuroformer on this machine.

MFU = achieved FLOP/s / peak FLOP/s, where

* achieved FLOP/s = analytic training FLOPs of one step / measured seconds per step. FLOPs are counted over
  REAL (non-PAD) tokens only: every Linear applied to real tokens costs 2 * in * out per token; attention
  scores and weighted sums cost 2 * 2 * Lq_real * Lk_real * E per layer (the full score matrix over real
  tokens, which is what the masked SDPA kernel computes; causal layers are not halved); the frame Conv3d
  is a matmul over its patches (2 * kernel_volume * E per patch); heads are Linears. Backward = 2 x forward,
  so a training step is 3 x forward. LayerNorm, GELU, softmax, dropout, losses and the optimizer are not
  counted (they cost time, not matmul FLOPs).
* peak FLOP/s = the best 4096 x 4096 torch.mm on the same device and threads, in the same run (best of
  ``--peak-repeats``), in the compute dtype: fp32 for ``--precision 32``, bf16 for ``bf16-mixed``.

Timing: ``seconds_per_step`` is forward + backward (``loss.backward()``, the MFU denominator); the AdamW step
and zero_grad are timed separately (``optimizer_seconds``) and ``mfu_with_optimizer`` divides by their sum.
Each figure is the median of ``--steps`` timed steps after ``--warmup`` untimed ones (train mode, dropout on).

The batch has realistic padding: windows of a Poisson recording with per-window gain (so window fill varies
like real data) are tokenized with the SpikeTokenizer and ``--batch`` of them are drawn at random.

Precision ``bf16-mixed`` keeps fp32 weights and runs the model under ``torch.autocast`` in bfloat16 (as
Lightning's ``precision="bf16-mixed"``). ``--backend`` sets every attention layer's backend
(``set_backend``); FlexAttention has no attention dropout, so use ``--attn-dropout 0`` with ``flex``.

Examples:
    python scripts/bench_mfu.py --json                # neuroformer_base, batch 8 (about 1-2 minutes)
    python scripts/bench_mfu.py --compile --json      # torch.compile (the compile time is reported)
    python scripts/bench_mfu.py --small --json        # tiny sizes (smoke test)
    python scripts/bench_mfu.py --device cuda --precision bf16-mixed --backend flex --attn-dropout 0 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from neurofound.models.neuroformer import Neuroformer, NeuroformerConfig, neuroformer_base, neuroformer_small
from neurofound.nn.attention import BACKENDS, resolve_backend, set_backend
from neurofound.tokenizers.spike import SpikeTokenizer


PRECISIONS = ("32", "bf16-mixed")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="neuroformer_small sizes, short runs (smoke test)")
    p.add_argument("--n-neurons", type=int, default=None, help="neurons N (default 2023; 100 with --small)")
    p.add_argument("--rate", type=float, default=3.0, help="mean Poisson firing rate per neuron (Hz)")
    p.add_argument("--batch", type=int, default=8, help="windows per training batch")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5; 2 with --small)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens here)")
    p.add_argument("--peak-size", type=int, default=None, help="GEMM size for the peak (default 4096; 512 --small)")
    p.add_argument("--peak-repeats", type=int, default=5, help="timed GEMMs for the peak (best is kept)")
    p.add_argument("--dropout", type=float, default=None, help="residual/embedding dropout (default: the config's, 0.2)")
    p.add_argument("--attn-dropout", type=float, default=None,
                   help="attention-weight dropout (default: the config's, 0.2; on CPU a non-zero value forces SDPA's "
                        "unfused path and a dropout mask the size of every attention matrix)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CPU: slow first step)")
    p.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, cuda:1, ...")
    p.add_argument("--precision", choices=PRECISIONS, default="32",
                   help="32 (fp32, default) or bf16-mixed (fp32 weights, bfloat16 autocast)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="attention backend of every layer (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = p.parse_args(argv)
    args.n_neurons = args.n_neurons or (100 if args.small else 2023)
    args.steps = args.steps or (2 if args.small else 5)
    args.peak_size = args.peak_size or (512 if args.small else 4096)
    for name in ("n_neurons", "batch", "steps", "peak_size", "peak_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.threads < 0 or args.rate <= 0:
        p.error("--warmup and --threads must be >= 0 and --rate > 0")
    try:
        args.device = torch.device(args.device)
    except RuntimeError as e:
        p.error(f"--device: {e}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    return args


# ----------------------------------------------------------------------------------------------------------
# analytic FLOPs
# ----------------------------------------------------------------------------------------------------------
def forward_flops(cfg: NeuroformerConfig, n_cur: np.ndarray, n_past: np.ndarray) -> dict[str, float]:
    """Forward matmul FLOPs of a batch, per model part, over real tokens.

    Args:
        cfg: the model config (frames and behaviour as configured).
        n_cur: (B,) real current tokens per window (SOS and EOS included, PAD excluded).
        n_past: (B,) real past tokens per window.
    Returns:
        dict part -> FLOPs (floats) plus "total".
    """
    E = cfg.n_embd
    Lc, Lp = n_cur.astype(np.float64), n_past.astype(np.float64)
    lin = lambda fan_in, fan_out, tokens: 2.0 * fan_in * fan_out * tokens  # noqa: E731
    attn = lambda lq, lk: 2.0 * 2.0 * lq * lk * E  # noqa: E731  scores + weighted sum
    mlp = lambda tokens: lin(E, 4 * E, tokens) + lin(4 * E, E, tokens)  # noqa: E731
    f: dict[str, float] = {}
    # temporal MLP Linear(1, E/2) -> Linear(E/2, E) for current and past tokens (learnt embedding)
    if cfg.temporal_embedding == "learnt":
        f["embeddings"] = float(np.sum(lin(1, E // 2, Lc + Lp) + lin(E // 2, E, Lc + Lp)))
    # causal self-attention stacks (state encoder and decoder): q, k, v, proj + attention + MLP
    self_layer = 4 * lin(E, E, Lc) + attn(Lc, Lc) + mlp(Lc)
    f["state"] = float(np.sum(self_layer)) * cfg.n_state_layers
    f["decoder"] = float(np.sum(self_layer)) * cfg.n_state_layers
    # history cross-attention: q / proj on current, k / v on past
    hist = 2 * lin(E, E, Lc) + 2 * lin(E, E, Lp) + attn(Lc, Lp) + mlp(Lc)
    f["history"] = float(np.sum(hist)) * cfg.n_history_layers
    if cfg.frame_shape is not None:
        B = len(Lc)
        grid = cfg.frame_grid
        patches = float(np.prod(grid))
        n_frame_tok = patches + 1  # + the frame SOS token
        f["frame_conv"] = B * lin(float(np.prod(cfg.frame_kernel)), E, patches)
        frame_layer = 4 * lin(E, E, n_frame_tok) + attn(n_frame_tok, n_frame_tok) + mlp(n_frame_tok)
        f["frame_encoder"] = B * frame_layer * cfg.n_stimulus_layers
        stim = 2 * lin(E, E, Lc) + 2 * lin(E, E, n_frame_tok) + attn(Lc, n_frame_tok) + mlp(Lc)
        f["stimulus"] = float(np.sum(stim)) * cfg.n_stimulus_layers
    f["heads"] = float(np.sum(lin(E, cfg.id_vocab_size, Lc) + lin(E, cfg.dt_vocab_size, Lc)))
    f["total"] = float(sum(f.values()))
    return f


# ----------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------
def make_batch(cfg: NeuroformerConfig, batch: int, rate: float, rng: np.random.Generator) -> dict:
    """A training batch of `batch` windows drawn from a tokenized Poisson recording with per-window gain."""
    # the public code's windows (50 ms at 10 ms dt: the builders' 6 dt offsets)
    tok = SpikeTokenizer(n_neurons=cfg.n_neurons, dt=0.01, window=0.05, window_prev=0.05,
                         block_size=cfg.block_size, block_size_prev=cfg.block_size_prev)
    n_windows = max(4 * batch, 32)
    duration = (n_windows + 2) * tok.window
    # one gain per window-length stretch (Gamma, mean 1): some windows nearly silent, some saturated
    gain = rng.gamma(1.5, 1.0 / 1.5, n_windows + 2)
    counts = rng.poisson(rate * tok.window * gain[:, None], (n_windows + 2, cfg.n_neurons))
    stretch, unit = np.nonzero(counts)
    reps = counts[stretch, unit]
    stretch, unit = np.repeat(stretch, reps), np.repeat(unit, reps)
    times = (stretch + rng.uniform(0.0, 1.0, len(stretch))) * tok.window
    order = np.argsort(times, kind="stable")
    times, unit = times[order], unit[order]
    intervals = np.round(tok.intervals(duration, start=tok.window + tok.window_prev) / tok.dt) * tok.dt
    enc = tok.encode(times, unit, intervals)
    pick = rng.choice(len(intervals), size=batch, replace=len(intervals) < batch)
    as_long = lambda a: torch.as_tensor(a[pick].astype(np.int64))  # noqa: E731
    b = {
        "id": as_long(enc["id"][:, :-1]), "dt": as_long(enc["dt"][:, :-1]),
        "target_id": as_long(enc["id"][:, 1:]), "target_dt": as_long(enc["dt"][:, 1:]),
        "id_prev": as_long(enc["id_prev"][:, :-1]), "dt_prev": as_long(enc["dt_prev"][:, :-1]),
    }
    if cfg.frame_shape is not None:
        b["frames"] = torch.as_tensor(rng.standard_normal((batch, 1, *cfg.frame_shape)).astype(np.float32))
    return b


# ----------------------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so that wall-clock times cover them (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(n: int, repeats: int, device: torch.device = torch.device("cpu"),
               dtype: torch.dtype = torch.float32) -> float:
    """Best n x n x n torch.mm FLOP/s over `repeats` calls (after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = args.device
    bf16 = args.precision == "bf16-mixed"
    rng = np.random.default_rng(args.seed)
    drop = {k: v for k, v in (("dropout", args.dropout), ("attn_dropout", args.attn_dropout)) if v is not None}
    cfg = (neuroformer_small if args.small else neuroformer_base)(n_neurons=args.n_neurons, **drop)
    torch.manual_seed(args.seed)
    model = Neuroformer(cfg).train().to(device)
    if args.backend is not None:
        set_backend(model, args.backend)
    backend = args.backend or "auto"
    batch = make_batch(cfg, args.batch, args.rate, rng)
    n_cur = (batch["id"] != cfg.id_pad).sum(1).numpy()
    n_past = (batch["id_prev"] != cfg.id_pad).sum(1).numpy()
    batch = {k: v.to(device) for k, v in batch.items()}
    flops = forward_flops(cfg, n_cur, n_past)
    step_flops = 3.0 * flops["total"]  # forward + backward (= 2 x forward)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if args.compile else model

    def fwd_bwd() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(batch).loss["total"]
        loss.backward()
        return float(loss.detach())  # waits for the device

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        fwd_bwd()
        opt.step()
        opt.zero_grad(set_to_none=True)
    synchronize(device)
    warmup_seconds = time.perf_counter() - t0

    step_s, opt_s, losses = [], [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(fwd_bwd())
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        t2 = time.perf_counter()
        step_s.append(t1 - t0)
        opt_s.append(t2 - t1)
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite training loss {losses}")
    peak = peak_flops(args.peak_size, args.peak_repeats, device, torch.bfloat16 if bf16 else torch.float32)
    sec = statistics.median(step_s)
    osec = statistics.median(opt_s)
    achieved = step_flops / sec
    return {
        "bench": "mfu",
        "model": "neuroformer_small" if args.small else "neuroformer_base",
        "compile": bool(args.compile),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": args.precision,
        "attention_backend": backend,
        "attention_backend_resolved": resolve_backend(
            backend, device=device, dtype=torch.bfloat16 if bf16 else torch.float32),
        "dropout": cfg.dropout,
        "attn_dropout": cfg.attn_dropout,
        "mfu": achieved / peak,
        "mfu_with_optimizer": step_flops / (sec + osec) / peak,
        "achieved_flops": achieved,
        "peak_flops": peak,
        "peak_gemm_size": args.peak_size,
        "step_flops": step_flops,
        "forward_flops": flops,
        "seconds_per_step": sec,
        "optimizer_seconds": osec,
        "seconds_per_step_all": step_s,
        "steps_per_s": 1.0 / sec,
        "warmup_seconds": warmup_seconds,
        "batch": args.batch,
        "real_tokens_current": int(n_cur.sum()),
        "real_tokens_past": int(n_past.sum()),
        "padded_tokens_current": int(n_cur.size * cfg.block_size),
        "padded_tokens_past": int(n_past.size * cfg.block_size_prev),
        "n_neurons": cfg.n_neurons,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "block_size": cfg.block_size,
        "block_size_prev": cfg.block_size_prev,
        "frame_shape": cfg.frame_shape,
        "loss": losses[-1],
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "dtype": "bfloat16-mixed" if bf16 else "float32",
    }


def format_table(r: dict) -> str:
    return "\n".join([
        f"{r['model']} training step, batch {r['batch']}, {r['threads']} threads, compile={r['compile']} "
        f"(load avg {r['load_avg_1min']:.2f})",
        f"  device {r['device']}{' ' + r['device_name'] if r['device_name'] else ''}, precision {r['precision']}, "
        f"attention {r['attention_backend']} -> {r['attention_backend_resolved']}",
        f"  real tokens current {r['real_tokens_current']}/{r['padded_tokens_current']}, "
        f"past {r['real_tokens_past']}/{r['padded_tokens_past']}",
        f"  fwd+bwd {r['seconds_per_step']:.3f} s/step ({r['step_flops'] / 1e9:.1f} GFLOP), optimizer "
        f"{r['optimizer_seconds']:.3f} s",
        f"  achieved {r['achieved_flops'] / 1e9:.2f} GFLOP/s, peak (mm {r['peak_gemm_size']}) "
        f"{r['peak_flops'] / 1e9:.2f} GFLOP/s",
        f"  MFU {100 * r['mfu']:.1f}% (with optimizer {100 * r['mfu_with_optimizer']:.1f}%; target >= 30%)",
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
