"""Smoke tests of scripts/bench_generate.py and scripts/bench_mfu.py (tiny sizes, no speed assertions),
plus the fixed-length generation options they rely on (min_new_tokens / max_new_tokens)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofound.tokenizers.spike import SpikeTokenizer
from neurofound.models.neuroformer import Neuroformer, neuroformer_small

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_mfu  # noqa: E402


def run_script(name: str, *args: str) -> dict:
    """Run a bench script with --json on one thread; returns its single JSON line."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / name), "--json", "--threads", "1", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_generate_json():
    r = run_script("bench_generate.py", "--small", "--batch", "3", "--windows", "2", "--tokens", "6",
                   "--recompute-tokens", "4", "--repeats", "1")
    for key in ("kv_cache_speedup", "batched_speedup"):
        assert positive(r[key]), key
    assert set(r["tokens_per_s"]) == {"recompute_b1", "cached_b1", "cached_batched"}
    assert all(positive(v) for v in r["tokens_per_s"].values())
    assert all(positive(v) for k, v in r["seconds"].items() if not k.endswith("_all"))
    # exact token counts: fixed-length windows on every path
    assert r["tokens"] == {"recompute_b1": 4, "cached_b1": 2 * 6, "cached_batched": 3 * 2 * 6}
    assert r["batch_sizes"]["cached_batched"] == 3 and r["threads"] == 1 and r["mode"] == "own_past"
    assert math.isclose(r["kv_cache_speedup"], r["tokens_per_s"]["cached_b1"] / r["tokens_per_s"]["recompute_b1"])
    assert math.isclose(r["batched_speedup"],
                        r["tokens_per_s"]["cached_batched"] / r["tokens_per_s"]["recompute_b1"])


def test_bench_mfu_json():
    r = run_script("bench_mfu.py", "--small", "--batch", "2", "--steps", "1", "--peak-size", "128",
                   "--peak-repeats", "1")
    for key in ("mfu", "mfu_with_optimizer", "achieved_flops", "peak_flops", "step_flops", "seconds_per_step",
                "optimizer_seconds", "steps_per_s", "loss"):
        assert positive(r[key]), key
    assert r["mfu_with_optimizer"] < r["mfu"]
    assert math.isclose(r["step_flops"], 3 * r["forward_flops"]["total"])
    assert math.isclose(r["achieved_flops"], r["step_flops"] / r["seconds_per_step"])
    assert 0 < r["real_tokens_current"] <= r["padded_tokens_current"]
    assert r["threads"] == 1 and r["batch"] == 2


def test_bench_mfu_precision_and_backend_flags():
    r = run_script("bench_mfu.py", "--small", "--batch", "2", "--steps", "1", "--warmup", "0", "--peak-size", "64",
                   "--peak-repeats", "1", "--precision", "bf16-mixed", "--backend", "reference")
    assert positive(r["mfu"]) and positive(r["loss"])
    assert (r["device"], r["device_name"], r["precision"], r["dtype"]) == ("cpu", None, "bf16-mixed", "bfloat16-mixed")
    assert r["attention_backend"] == r["attention_backend_resolved"] == "reference"


def test_bench_mfu_arguments():
    args = bench_mfu.parse_args([])
    assert (args.device, args.precision, args.backend) == (torch.device("cpu"), "32", None)
    with pytest.raises(SystemExit):
        bench_mfu.parse_args(["--backend", "xformers"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench_mfu.parse_args(["--device", "cuda"])


def test_forward_flops_hand_count():
    """Analytic FLOPs of a stripped config (no frames) against a hand count."""
    cfg = neuroformer_small(n_neurons=10, n_embd=8, n_head=2, n_state_layers=1, n_history_layers=1,
                            frame_shape=None, temporal_embedding="sinusoid")
    E, Lc, Lp = 8, 5, 3
    f = bench_mfu.forward_flops(cfg, np.array([Lc]), np.array([Lp]))
    mlp = 2 * (2 * E * 4 * E * Lc)
    self_layer = 4 * 2 * E * E * Lc + 4 * Lc * Lc * E + mlp
    hist = 2 * 2 * E * E * Lc + 2 * 2 * E * E * Lp + 4 * Lc * Lp * E + mlp
    heads = 2 * E * (10 + 3) * Lc + 2 * E * (cfg.n_dt + 3) * Lc
    assert f["total"] == pytest.approx(2 * self_layer + hist + heads)
    assert "frame_encoder" not in f and "embeddings" not in f
    # doubling the real tokens of a window more than doubles its attention cost (quadratic term)
    g = bench_mfu.forward_flops(cfg, np.array([2 * Lc]), np.array([2 * Lp]))
    assert g["state"] > 2 * f["state"]


def test_min_and_max_new_tokens():
    cfg = neuroformer_small(n_neurons=20, n_embd=16, n_head=2, n_state_layers=1, n_history_layers=1,
                            n_stimulus_layers=1, block_size=12, block_size_prev=16, frame_shape=None)
    torch.manual_seed(0)
    m = Neuroformer(cfg).eval()
    m.attach_tokenizer(SpikeTokenizer(20, block_size=12, block_size_prev=16))
    with torch.no_grad():  # EOS logit up: without min_new_tokens windows stop early
        m.head_id.weight[cfg.id_eos] = 3.0 * m.head_id.weight[: cfg.n_neurons].mean(0) + 0.5
    B = 3
    b = {"id_prev": torch.full((B, cfg.block_size_prev), cfg.id_pad),
         "dt_prev": torch.full((B, cfg.block_size_prev), cfg.dt_pad),
         "interval": torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)}
    b["id_prev"][:, 0], b["dt_prev"][:, 0] = cfg.id_sos, 0
    b["id_prev"][:, 1], b["dt_prev"][:, 1] = cfg.id_eos, cfg.dt_eos
    plain = m.generate(b, generator=torch.Generator().manual_seed(1))
    assert (plain.n_tokens < cfg.block_size - 1).any()
    for use_cache in (True, False):
        full = m.generate(b, min_new_tokens=cfg.block_size - 1, use_cache=use_cache,
                          generator=torch.Generator().manual_seed(1))
        assert (full.n_tokens == cfg.block_size - 1).all()
        assert (full.id_tokens[:, 1:] < cfg.n_neurons).all()  # no stop token anywhere
        capped = m.generate(b, min_new_tokens=4, max_new_tokens=4, use_cache=use_cache,
                            generator=torch.Generator().manual_seed(1))
        assert (capped.n_tokens == 4).all() and (capped.id_tokens[:, 5:] == cfg.id_pad).all()
    with pytest.raises(ValueError, match="min_new_tokens"):
        m.generate(b, min_new_tokens=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate(b, max_new_tokens=0)
