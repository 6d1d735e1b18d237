"""Time every available attention backend on one shape and compare it with the reference path.

Causal self-attention with key padding (left padding, so that every backend, flash-attn's
varlen kernel included, computes the same thing). For each backend it reports the forward time,
the forward+backward time where the backend has a backward on this device, the speed-up over
the reference path and the largest deviation from the reference output.

Examples:
    python scripts/bench_attention.py
    python scripts/bench_attention.py --batch 8 --heads 8 --len 1024 --dim 64 --device cuda \
        --dtype bfloat16 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from neurofound.nn import attention as attn_mod
from neurofound.nn.attention import attention, available_backends


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4, help="batch size B")
    p.add_argument("--heads", type=int, default=4, help="number of heads H")
    p.add_argument("--len", type=int, default=256, help="sequence length L (queries = keys)")
    p.add_argument("--dim", type=int, default=32, help="head dimension D")
    p.add_argument(
        "--padding-frac", type=float, default=0.25,
        help="mean fraction of padded keys per sequence (left padding)",
    )
    p.add_argument("--no-causal", action="store_true", help="bidirectional instead of causal")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"]
    )
    p.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first one")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = p.parse_args(argv)
    if min(args.batch, args.heads, args.len, args.dim, args.repeats) < 1:
        p.error("--batch, --heads, --len, --dim and --repeats must be >= 1")
    if not 0.0 <= args.padding_frac < 1.0:
        p.error("--padding-frac must be in [0, 1)")
    return args


def make_inputs(args, device, dtype):
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.heads, args.len, args.dim)
    q, k, v = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(3))
    # Per-sequence padding lengths spread around the requested mean, padding before the tokens.
    n_pad = torch.rand(args.batch, generator=g) * 2 * args.padding_frac * args.len
    n_pad = n_pad.round().clamp(max=args.len - 1).long()
    kpm = torch.arange(args.len)[None, :] >= n_pad[:, None]
    return q, k, v, kpm.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _call_ms(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def has_backward(backend, device):
    # FlexAttention has no CPU backward in torch 2.13.
    return not (backend == "flex" and device.type == "cpu")


def run(args) -> dict:
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    causal = not args.no_causal
    q, k, v, kpm = make_inputs(args, device, dtype)

    backends = [
        b for b in available_backends(device)
        if b != "flash" or (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16))
    ]
    with torch.no_grad():
        ref_out = attention(q.double(), k.double(), v.double(), causal=causal,
                            key_padding_mask=kpm, backend="reference")

    def forward_fn(backend):
        def forward():
            with torch.no_grad():
                return attention(q, k, v, causal=causal, key_padding_mask=kpm, backend=backend)
        return forward

    def forward_backward_fn(backend):
        qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (q, k, v))

        def forward_backward():
            out = attention(qg, kg, vg, causal=causal, key_padding_mask=kpm, backend=backend)
            out.sum().backward()
        return forward_backward

    # Measurements: (backend, kind) -> callable. The first call (FlexAttention compiles there)
    # is timed on its own; then all measurements are interleaved round by round, so that load
    # from other processes on a shared machine hits every backend alike, and the median is kept.
    jobs = {}
    results = {}
    for backend in backends:
        jobs[backend, "fwd"] = forward_fn(backend)
        if has_backward(backend, device):
            jobs[backend, "fwd_bwd"] = forward_backward_fn(backend)
        first_s = _call_ms(jobs[backend, "fwd"], device) / 1e3
        err = (jobs[backend, "fwd"]().double() - ref_out).abs().max().item()
        results[backend] = {"backend": backend, "fwd_ms": None, "fwd_bwd_ms": None,
                            "first_call_s": first_s, "max_abs_err": err}
    for fn in jobs.values():
        for _ in range(args.warmup):
            fn()
    times = {key: [] for key in jobs}
    for _ in range(args.repeats):
        for key, fn in jobs.items():
            times[key].append(_call_ms(fn, device))
    for (backend, kind), ts in times.items():
        results[backend][f"{kind}_ms"] = statistics.median(ts)

    ref = results["reference"]
    for r in results.values():
        r["fwd_speedup"] = ref["fwd_ms"] / r["fwd_ms"]
        r["fwd_bwd_speedup"] = (
            None if r["fwd_bwd_ms"] is None else ref["fwd_bwd_ms"] / r["fwd_bwd_ms"]
        )
    return {
        "config": {
            "batch": args.batch, "heads": args.heads, "len": args.len, "dim": args.dim,
            "padding_frac": args.padding_frac, "real_keys_frac": kpm.float().mean().item(),
            "causal": causal, "device": str(device), "dtype": args.dtype,
            "repeats": args.repeats, "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
            "auto": attn_mod.resolve_backend("auto", device=device, dtype=dtype),
        },
        "results": list(results.values()),
    }


def format_table(report: dict) -> str:
    c = report["config"]
    lines = [
        f"attention B={c['batch']} H={c['heads']} L={c['len']} D={c['dim']} "
        f"causal={c['causal']} real keys={c['real_keys_frac']:.2f} {c['dtype']} on {c['device']} "
        f"(torch {c['torch']}, {c['cpu_threads']} threads, auto -> {c['auto']}, "
        f"median of {c['repeats']} interleaved)",
        f"{'backend':<10} {'fwd ms':>9} {'x ref':>7} {'fwd+bwd ms':>11} {'x ref':>7} "
        f"{'max|err|':>10} {'1st call s':>11}",
    ]
    for r in report["results"]:
        fb = "n/a" if r["fwd_bwd_ms"] is None else f"{r['fwd_bwd_ms']:.3f}"
        fbx = "n/a" if r["fwd_bwd_speedup"] is None else f"{r['fwd_bwd_speedup']:.2f}"
        lines.append(
            f"{r['backend']:<10} {r['fwd_ms']:>9.3f} {r['fwd_speedup']:>7.2f} {fb:>11} "
            f"{fbx:>7} {r['max_abs_err']:>10.2e} {r['first_call_s']:>11.3f}"
        )
    lines.append("x ref = reference time / backend time (higher is faster); n/a = no backward "
                 "on this device; max|err| vs a float64 reference.")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
