"""Parity tests of neurofound.nn.attention: every backend against the reference path, which is
itself checked against a per-query brute force of the documented semantics."""

import math

import pytest
import torch

from neurofound.nn import attention as attn_mod
from neurofound.nn.attention import (
    BACKENDS,
    KVCache,
    MultiHeadAttention,
    attention,
    available_backends,
    resolve_backend,
    set_backend,
)

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
flex_eager_warning = pytest.mark.filterwarnings("ignore:flex_attention called without")


# ----------------------------------------------------------------------------------------------
# Cases and the brute-force oracle
# ----------------------------------------------------------------------------------------------


def make_case(name, dtype=torch.float32, device="cpu", seed=0):
    """Return q, k, v, causal, key_padding_mask for a named masking situation."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        # name: (batch, heads, q_len, k_len, head_dim, causal)
        "self_causal": (2, 3, 6, 6, 8, True),
        "self_causal_padding": (2, 3, 6, 6, 8, True),
        "cross_padding": (2, 2, 4, 9, 8, False),
        "causal_lq_lt_lk": (2, 2, 3, 8, 8, True),
        "fully_masked_rows": (2, 2, 6, 4, 8, True),
        "decode_step_padding": (3, 2, 1, 7, 8, True),
    }
    b, h, lq, lk, d, causal = shapes[name]
    q = torch.randn(b, h, lq, d, generator=g, dtype=dtype)
    k = torch.randn(b, h, lk, d, generator=g, dtype=dtype)
    v = torch.randn(b, h, lk, d, generator=g, dtype=dtype)
    kpm = None
    if name != "self_causal" and name != "causal_lq_lt_lk":
        kpm = torch.ones(b, lk, dtype=torch.bool)
        kpm[0, -2:] = False  # right padding
        kpm[1, 1] = False  # a hole in the middle
        kpm[1, 3 % lk] = False
        if name == "fully_masked_rows":
            kpm[1] = False  # a whole sequence of padding: every row of it sees nothing
        if name == "decode_step_padding":
            kpm[2, :3] = False  # left padding
        kpm = kpm.to(device)
    return q.to(device), k.to(device), v.to(device), causal, kpm


CASES = [
    "self_causal",
    "self_causal_padding",
    "cross_padding",
    "causal_lq_lt_lk",
    "fully_masked_rows",
    "decode_step_padding",
]


def brute_force(q, k, v, causal, kpm):
    """Per-query loop over the rule in docs/architecture.md (independent of the module)."""
    b_n, h_n, lq, d = q.shape
    lk = k.shape[2]
    out = torch.zeros_like(q)
    for b in range(b_n):
        for i in range(lq):
            keys = [
                j
                for j in range(lk)
                if (not causal or j <= i + lk - lq) and (kpm is None or bool(kpm[b, j]))
            ]
            if not keys:
                continue
            for h in range(h_n):
                s = torch.stack([q[b, h, i] @ k[b, h, j] for j in keys]) / math.sqrt(d)
                w = torch.softmax(s, dim=0)
                out[b, h, i] = (w[:, None] * v[b, h, keys]).sum(0)
    return out


def tol(dtype):
    if dtype == torch.float64:
        return {"atol": 1e-12, "rtol": 1e-10}
    return {"atol": 2e-6, "rtol": 1e-5}


# ----------------------------------------------------------------------------------------------
# Forward parity
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_brute_force(case):
    q, k, v, causal, kpm = make_case(case, torch.float64)
    out = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    torch.testing.assert_close(out, brute_force(q, k, v, causal, kpm), **tol(torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["sdpa", "auto"])
@pytest.mark.parametrize("case", CASES)
def test_backend_forward_matches_reference(case, backend, dtype):
    q, k, v, causal, kpm = make_case(case, dtype)
    ref = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    out = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend=backend)
    assert out.dtype == dtype
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, **tol(dtype))


@flex_eager_warning
@pytest.mark.parametrize("case", CASES)
def test_flex_masks_match_reference_eager(case):
    # The unfused eager FlexAttention checks our block masks on every case without compiling;
    # the compiled kernel is checked once in test_flex_compiled_matches_reference.
    q, k, v, causal, kpm = make_case(case)
    ref = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    out = attn_mod._flex_attention(q, k, v, causal, kpm, 0.0, compiled=False)
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, **tol(torch.float32))


@flex_eager_warning
def test_flex_block_mask_cache_sees_in_place_edits():
    q, k, v, causal, kpm = make_case("self_causal_padding")
    first = attn_mod._flex_attention(q, k, v, causal, kpm, 0.0, compiled=False)
    kpm[0, 0] = False  # same tensor object, new content: the cached block mask must not be reused
    second = attn_mod._flex_attention(q, k, v, causal, kpm, 0.0, compiled=False)
    ref = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    torch.testing.assert_close(second, ref, **tol(torch.float32))
    assert not torch.allclose(first[0], second[0])


@pytest.mark.slow
def test_flex_compiled_matches_reference():
    # One compiled shape (Lq < Lk, bottom-right causal + key padding), two different masks:
    # the second call reuses the compiled kernel with a fresh block mask.
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    masks = [torch.ones(2, 7, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool)]
    masks[0][0, 5:] = False
    masks[1][1, :4] = False  # batch row 1: queries 0 and 1 see no key
    for kpm in masks:
        ref = attention(q, k, v, causal=True, key_padding_mask=kpm, backend="reference")
        out = attention(q, k, v, causal=True, key_padding_mask=kpm, backend="flex")
        torch.testing.assert_close(out, ref, **tol(torch.float32))

    # The same shapes through MultiHeadAttention: identical to the reference backend.
    mha = MultiHeadAttention(16, 2, backend="flex")
    x_q, x_kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    with torch.no_grad():  # no FlexAttention backward on CPU
        out_flex, _ = mha(x_q, x_kv, causal=True, key_padding_mask=masks[1])
        mha.backend = "reference"
        out_ref, _ = mha(x_q, x_kv, causal=True, key_padding_mask=masks[1])
    torch.testing.assert_close(out_flex, out_ref, **tol(torch.float32))


def test_fully_masked_rows_are_zero_in_every_cpu_backend():
    q, k, v, causal, kpm = make_case("fully_masked_rows")
    for backend in ["reference", "sdpa", "auto"]:
        out = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend=backend)
        assert torch.equal(out[1], torch.zeros_like(out[1])), backend  # all-padding sequence
        assert torch.equal(out[0, :, :2], torch.zeros_like(out[0, :, :2])), backend  # Lq > Lk
        assert out[0, :, 2:].abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Backward parity
# ----------------------------------------------------------------------------------------------


def grads(backend, q, k, v, causal, kpm, seed=1):
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * g.to(out.device)).sum().backward()
    return q.grad, k.grad, v.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_sdpa_backward_matches_reference(case, dtype):
    q, k, v, causal, kpm = make_case(case, dtype)
    ref = grads("reference", q, k, v, causal, kpm)
    got = grads("sdpa", q, k, v, causal, kpm)
    for name, a, b in zip("qkv", got, ref):
        assert not a.isnan().any(), name
        assert not b.isnan().any(), name
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m, n=name: f"d{n}: {m}")


def test_reference_gradients_match_finite_differences():
    q, k, v, causal, kpm = make_case("fully_masked_rows", torch.float64)
    q, k, v = (t[:, :1, :, :3].clone().requires_grad_(True) for t in (q, k, v))
    fn = lambda a, b, c: attention(  # noqa: E731
        a, b, c, causal=causal, key_padding_mask=kpm, backend="reference"
    )
    assert torch.autograd.gradcheck(fn, (q, k, v))


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "sdpa", "flex", "reference"])
def test_return_weights_rows_sum_to_one_over_visible_keys(backend):
    q, k, v, causal, kpm = make_case("fully_masked_rows")
    out, w = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, backend=backend, return_weights=True
    )
    assert w.shape == (2, 2, 6, 4)
    visible = attn_mod._visibility(2, 6, 4, causal, kpm, q.device).expand_as(w)
    assert torch.equal(w[~visible], torch.zeros_like(w[~visible]))
    row_has_key = visible.any(-1)
    sums = w.sum(-1)
    torch.testing.assert_close(sums[row_has_key], torch.ones_like(sums[row_has_key]))
    assert torch.equal(sums[~row_has_key], torch.zeros_like(sums[~row_has_key]))
    torch.testing.assert_close(out, w @ v)


# ----------------------------------------------------------------------------------------------
# flash-attn varlen bookkeeping
# ----------------------------------------------------------------------------------------------


def varlen_oracle(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None,
                  causal=False):
    """flash_attn_varlen_func's documented contract in plain torch: packed (total, H, D)
    sequences, causal aligned bottom-right within each sequence, empty rows -> zeros. It lets
    the CPU suite check our unpad / cu_seqlens / reshape logic; the real kernel is checked by
    test_flash_matches_reference_on_cuda."""
    assert cu_q.dtype == torch.int32 and cu_k.dtype == torch.int32
    assert dropout_p == 0.0 and softmax_scale == pytest.approx(1 / math.sqrt(q.shape[-1]))
    assert max_q == int((cu_q[1:] - cu_q[:-1]).max()) and max_k == int((cu_k[1:] - cu_k[:-1]).max())
    out = torch.zeros_like(q)
    for s in range(len(cu_q) - 1):
        qs = q[cu_q[s]:cu_q[s + 1]].transpose(0, 1)[None]
        ks = k[cu_k[s]:cu_k[s + 1]].transpose(0, 1)[None]
        vs = v[cu_k[s]:cu_k[s + 1]].transpose(0, 1)[None]
        if ks.shape[2] == 0:
            continue
        o = brute_force(qs, ks, vs, causal, None)
        out[cu_q[s]:cu_q[s + 1]] = o[0].transpose(0, 1)
    return out


@pytest.mark.parametrize(
    "case,left_pad",
    [("self_causal", False), ("cross_padding", False), ("causal_lq_lt_lk", False),
     ("self_causal_padding", True), ("fully_masked_rows", True)],
)
def test_flash_varlen_bookkeeping_matches_reference(case, left_pad):
    q, k, v, causal, kpm = make_case(case, torch.float64)
    if left_pad:  # causal flash needs padding before the real keys
        n_real = kpm.sum(1)
        kpm = torch.arange(kpm.shape[1]) >= (kpm.shape[1] - n_real)[:, None]
        assert attn_mod._is_left_padded(kpm)
    ref = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    out = attn_mod._flash_attention(q, k, v, causal, kpm, 0.0, varlen_func=varlen_oracle)
    torch.testing.assert_close(out, ref, **tol(torch.float64))


def test_left_padding_detection():
    assert attn_mod._is_left_padded(torch.tensor([[False, True, True], [True, True, True]]))
    assert not attn_mod._is_left_padded(torch.tensor([[True, True, False]]))
    assert not attn_mod._is_left_padded(torch.tensor([[False, True, False, True]]))


# ----------------------------------------------------------------------------------------------
# Backend selection and errors
# ----------------------------------------------------------------------------------------------


def test_auto_picks_sdpa_on_cpu_and_reference_for_weights():
    assert resolve_backend("auto", device="cpu") == "sdpa"
    assert resolve_backend("auto", device=torch.device("cpu"), dtype=torch.bfloat16) == "sdpa"
    assert resolve_backend("sdpa", device="cpu", needs_weights=True) == "reference"
    assert resolve_backend("flex", device="cpu") == "flex"
    names = available_backends("cpu")
    assert "flash" not in names and {"sdpa", "reference"} <= set(names)
    assert set(names) <= set(BACKENDS)


def test_auto_picks_flash_only_for_cuda_half_without_weights():
    has_flash = attn_mod._flash_varlen_func() is not None
    expect = "flash" if has_flash else "sdpa"
    assert resolve_backend("auto", device="cuda", dtype=torch.float16) == expect
    assert resolve_backend("auto", device="cuda", dtype=torch.bfloat16) == expect
    assert resolve_backend("auto", device="cuda", dtype=torch.float32) == "sdpa"
    assert resolve_backend("auto", device="cuda", dtype=torch.float16, needs_weights=True) == (
        "reference"
    )


def test_flash_on_cpu_is_a_clear_error():
    q, k, v, causal, kpm = make_case("self_causal")
    with pytest.raises(ValueError, match="backend 'flash' cannot run"):
        attention(q, k, v, causal=causal, backend="flash")


def test_bad_backend_name_errors_everywhere():
    q, k, v, _, _ = make_case("self_causal")
    with pytest.raises(ValueError, match="Unknown attention backend 'fast'.*'sdpa'"):
        attention(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="Unknown attention backend"):
        resolve_backend("Flash", device="cpu")
    with pytest.raises(ValueError, match="Unknown attention backend"):
        MultiHeadAttention(16, 2, backend="xformers")
    mha = MultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match="Unknown attention backend"):
        mha.backend = "math"
    with pytest.raises(ValueError, match="Unknown attention backend"):
        set_backend(mha, "cudnn")
    assert mha.backend == "auto"


def test_bad_inputs_are_clear_errors():
    q, k, v, _, _ = make_case("cross_padding")
    with pytest.raises(TypeError, match="bool"):
        attention(q, k, v, key_padding_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match=r"\(batch, k_len\)"):
        attention(q, k, v, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="head_dim"):
        attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="dropout_p"):
        attention(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="does not support dropout"):
        attention(q, k, v, dropout_p=0.1, backend="flex")
    if q.device.type == "cpu":
        with pytest.raises(NotImplementedError, match="no backward pass on CPU"):
            attention(q.requires_grad_(True), k, v, backend="flex")


# ----------------------------------------------------------------------------------------------
# MultiHeadAttention
# ----------------------------------------------------------------------------------------------


def test_mha_submodules_and_head_split_match_reference_layout():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3)
    assert sorted(mha.state_dict()) == sorted(
        f"{m}.{p}" for m in ("query", "key", "value", "proj") for p in ("weight", "bias")
    )
    x_q, x_kv = torch.randn(2, 4, 12), torch.randn(2, 5, 12)
    out, w = mha(x_q, x_kv, need_weights=True)
    # The Neuroformer formula written out: heads from viewing E as (H, E/H).
    q = mha.query(x_q).view(2, 4, 3, 4).transpose(1, 2)
    k = mha.key(x_kv).view(2, 5, 3, 4).transpose(1, 2)
    v = mha.value(x_kv).view(2, 5, 3, 4).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4), dim=-1)
    expect = mha.proj((att @ v).transpose(1, 2).reshape(2, 4, 12))
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(w, att)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_identical_across_cpu_backends(causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 6, 16)
    kpm = torch.ones(3, 6, dtype=torch.bool)
    kpm[1, 4:] = False
    kpm[2, :2] = False
    outs = {}
    for backend in ["reference", "sdpa", "auto"]:
        assert set_backend(mha, backend) == 1
        outs[backend], w = mha(x, x, causal=causal, key_padding_mask=kpm)
        assert w is None
    for backend, out in outs.items():
        torch.testing.assert_close(out, outs["reference"], msg=backend)


def test_set_backend_walks_submodules():
    model = torch.nn.ModuleDict(
        {"a": MultiHeadAttention(8, 2), "b": torch.nn.Sequential(MultiHeadAttention(8, 2))}
    )
    assert set_backend(model, "reference") == 2
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert [m.backend for m in layers] == ["reference", "reference"]


def test_mha_dropout_only_in_training():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, attn_dropout=0.5, resid_dropout=0.5, backend="sdpa")
    x = torch.randn(2, 5, 16)
    mha.train()
    a, _ = mha(x, x)
    b, _ = mha(x, x)
    assert not torch.allclose(a, b)
    mha.eval()
    c, _ = mha(x, x)
    d, _ = mha(x, x)
    assert torch.equal(c, d)


def test_mha_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divide n_embd"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="x_q must be"):
        mha(torch.randn(2, 3, 6), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="x_kv is None"):
        mha(torch.randn(2, 3, 8), None)


# ----------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_len,steps", [(None, 20), (20, 20)])
def test_self_attention_cache_decode_equals_full_causal(max_len, steps):
    # max_len=None with 20 tokens exercises the doubling growth (first allocation is 16).
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, backend="sdpa").eval()
    x = torch.randn(2, steps, 16)
    kpm = torch.ones(2, steps, dtype=torch.bool)
    kpm[1, :3] = False  # left-padded prompt of the second sequence
    full, _ = mha(x, x, causal=True, key_padding_mask=kpm)

    cache = KVCache(max_len)
    prompt = 4
    outs = [mha(x[:, :prompt], x[:, :prompt], causal=True, key_padding_mask=kpm[:, :prompt],
                cache=cache)[0]]
    for t in range(prompt, steps):
        step, _ = mha(x[:, t : t + 1], x[:, t : t + 1], causal=True, cache=cache)
        outs.append(step)
    assert len(cache) == steps
    assert torch.equal(cache.key_padding_mask, kpm)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-6, rtol=1e-5)


def test_cross_attention_cache_equals_uncached():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    src = torch.randn(2, 7, 16)
    src_kpm = torch.ones(2, 7, dtype=torch.bool)
    src_kpm[0, 5:] = False
    cache = KVCache(static=True)
    for t in range(3):
        x_q = torch.randn(2, 1, 16)
        cached, _ = mha(x_q, src if t == 0 else None, key_padding_mask=src_kpm if t == 0 else None,
                        cache=cache)
        uncached, _ = mha(x_q, src, key_padding_mask=src_kpm)
        torch.testing.assert_close(cached, uncached)
    assert len(cache) == 7
    with pytest.raises(RuntimeError, match="static"):
        cache.append(cache.k, cache.v)


def test_cache_select_drops_finished_sequences():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, backend="reference").eval()
    x = torch.randn(3, 6, 8)
    cache = KVCache(6)
    mha(x[:, :3], x[:, :3], causal=True, cache=cache)
    mha(x[:, 3:4], x[:, 3:4], causal=True, cache=cache)
    cache.select(torch.tensor([True, False, True]))
    keep = x[[0, 2]]
    last = [mha(keep[:, t : t + 1], keep[:, t : t + 1], causal=True, cache=cache)[0]
            for t in (4, 5)]
    full, _ = mha(keep, keep, causal=True)
    torch.testing.assert_close(torch.cat(last, 1), full[:, 4:])
    assert cache.k.shape == (2, 2, 6, 4)


def test_cache_overflow_reset_and_shape_errors():
    cache = KVCache(4)
    k = torch.randn(1, 2, 3, 4)
    cache.append(k, k)
    assert cache.key_padding_mask is None
    with pytest.raises(ValueError, match="max_len=4"):
        cache.append(k, k)
    with pytest.raises(ValueError, match="do not match"):
        cache.append(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))
    cache.reset()
    assert len(cache) == 0 and cache.k is None
    out_k, _, _ = cache.append(k, k)
    assert torch.equal(out_k, k)
    with pytest.raises(ValueError, match="positive int"):
        KVCache(0)


# ----------------------------------------------------------------------------------------------
# GPU (deselected on CPU CI with -m "not gpu")
# ----------------------------------------------------------------------------------------------


@gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("case", ["self_causal_padding", "cross_padding", "fully_masked_rows"])
def test_cuda_forward_and_backward_match_reference(backend, case):
    q, k, v, causal, kpm = make_case(case, device="cuda")
    ref_out = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    out = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend=backend)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-4)
    ref = grads("reference", q, k, v, causal, kpm)
    got = grads(backend, q, k, v, causal, kpm)
    for a, b in zip(got, ref):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@gpu
@needs_cuda
@pytest.mark.skipif(attn_mod._flash_varlen_func() is None, reason="flash-attn not installed")
@pytest.mark.parametrize("case", ["self_causal", "cross_padding", "causal_lq_lt_lk"])
def test_flash_matches_reference_on_cuda(case):
    q, k, v, causal, kpm = make_case(case, device="cuda")
    ref = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    half = [t.half() for t in (q, k, v)]
    assert resolve_backend("auto", device="cuda", dtype=torch.float16) == "flash"
    out = attention(*half, causal=causal, key_padding_mask=kpm, backend="flash")
    torch.testing.assert_close(out.float(), ref, atol=3e-3, rtol=3e-3)
