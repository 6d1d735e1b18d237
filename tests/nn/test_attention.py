"""Parity tests of neurofound.nn.attention: every backend against the reference path, which is
itself checked against a per-query brute force of the documented semantics. The flash backend's
unpadding is checked on CPU with a pure-torch stand-in for flash-attn's varlen kernel."""

import math

import pytest
import torch
import torch.nn.functional as F

from neurofound.errors import ConfigError, UnsupportedError
from neurofound.nn import MultiHeadAttention, attention as attn_mod
from neurofound.nn.attention import (
    BACKENDS,
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


def brute_force(q, k, v, causal, kpm, qpm=None):
    """Per-query loop over the rule in docs/architecture.md (independent of the module)."""
    b_n, h_n, lq, d = q.shape
    lk = k.shape[2]
    out = torch.zeros_like(q)
    for b in range(b_n):
        for i in range(lq):
            if qpm is not None and not qpm[b, i]:
                continue
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


def right_padded(lengths, length):
    """``(batch, length)`` bool, True for the first ``lengths[b]`` positions of row ``b``."""
    return torch.arange(length) < torch.tensor(lengths)[:, None]


def padded_case(name, dtype=torch.float32, device="cpu", seed=0):
    """Return q, k, v, causal, key_padding_mask, query_padding_mask for a query-padding case."""
    g = torch.Generator().manual_seed(seed)
    # name: (heads, q_len, k_len, causal, real queries per row, real keys per row); None = no
    # mask. Ragged right padding, including a full row and an empty one, unless said otherwise.
    cases = {
        "self_right_causal": (2, 7, 7, True, [7, 4, 1, 0], "same"),
        "self_right": (2, 7, 7, False, [7, 4, 1, 0], "same"),
        "self_holes_causal": (2, 6, 6, True, "holes", "same"),
        "cross": (2, 5, 8, False, [5, 3, 0, 2], [8, 2, 5, 0]),
        "causal_queries_only": (2, 6, 6, True, [6, 3, 0, 5], None),
        "causal_cross_left_keys": (2, 3, 7, True, [3, 1, 2, 0], "left"),
        "decode_step": (2, 1, 6, True, [1, 0, 1, 1], "left"),
    }
    h, lq, lk, causal, q_real, k_real = cases[name]
    b = 4
    if q_real == "holes":
        qpm = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0],
                            [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    else:
        qpm = right_padded(q_real, lq)
    if k_real == "same":
        kpm = qpm.clone()  # equal content, another tensor: the check is by value
    elif k_real == "left":
        kpm = right_padded([7, 4, 1, 5], lk).flip(1)
    else:
        kpm = None if k_real is None else right_padded(k_real, lk)
    q = torch.randn(b, h, lq, 8, generator=g, dtype=dtype)
    k = torch.randn(b, h, lk, 8, generator=g, dtype=dtype)
    v = torch.randn(b, h, lk, 8, generator=g, dtype=dtype)
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(q), to(k), to(v), causal, to(kpm), to(qpm)


PADDED_CASES = [
    "self_right_causal",
    "self_right",
    "self_holes_causal",
    "cross",
    "causal_queries_only",
    "causal_cross_left_keys",
    "decode_step",
]


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
    out = attn_mod._flex_attention(q, k, v, causal, kpm, None, 0.0, compiled=False)
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, **tol(torch.float32))


@flex_eager_warning
def test_flex_block_mask_cache_sees_in_place_edits():
    q, k, v, causal, kpm = make_case("self_causal_padding")
    first = attn_mod._flex_attention(q, k, v, causal, kpm, None, 0.0, compiled=False)
    kpm[0, 0] = False  # same tensor object, new content: the cached block mask must not be reused
    second = attn_mod._flex_attention(q, k, v, causal, kpm, None, 0.0, compiled=False)
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
    # Query padding as well: padded queries are exactly zero in the compiled kernel too.
    qpm = right_padded([5, 3], 5)
    ref = attention(q, k, v, causal=True, key_padding_mask=masks[0], query_padding_mask=qpm,
                    backend="reference")
    out = attention(q, k, v, causal=True, key_padding_mask=masks[0], query_padding_mask=qpm,
                    backend="flex")
    assert torch.equal(out[1, :, 3:], torch.zeros_like(out[1, :, 3:]))
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


@pytest.mark.parametrize("case", PADDED_CASES)
def test_reference_with_query_padding_matches_brute_force(case):
    q, k, v, causal, kpm, qpm = padded_case(case, torch.float64)
    out = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend="reference"
    )
    torch.testing.assert_close(out, brute_force(q, k, v, causal, kpm, qpm), **tol(torch.float64))


@flex_eager_warning
@pytest.mark.parametrize("case", PADDED_CASES)
def test_padded_queries_are_zero_and_real_ones_match_in_every_cpu_backend(case):
    q, k, v, causal, kpm, qpm = padded_case(case)
    ref = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend="reference"
    )
    outs = {
        backend: attention(q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm,
                           backend=backend)
        for backend in ["sdpa", "auto"]
    }
    outs["flex (eager)"] = attn_mod._flex_attention(q, k, v, causal, kpm, qpm, 0.0, compiled=False)
    outs["flash (ref kernel)"] = attn_mod._flash_attention(
        q, k, v, causal, kpm, qpm, 0.0, varlen_func=ref_varlen_func
    )
    padded = ~qpm[:, None, :, None].expand_as(ref)
    for name, out in {"reference": ref, **outs}.items():
        assert torch.equal(out[padded], torch.zeros_like(out[padded])), name
        assert not out.isnan().any(), name
        torch.testing.assert_close(out, ref, **tol(torch.float32), msg=lambda m, n=name: f"{n}: {m}")


def test_without_query_mask_padded_causal_queries_see_the_keys_before_them():
    # The documented choice: no query mask is inferred from the key mask.
    q, k, v, causal, kpm, _ = padded_case("self_right_causal")
    out = attention(q, k, v, causal=True, key_padding_mask=kpm, backend="sdpa")
    assert out[1, :, 4:].abs().amin() > 0  # padded positions of a 4-token row: defined, nonzero
    torch.testing.assert_close(out, brute_force(q, k, v, True, kpm), **tol(torch.float32))


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


def padded_grads(backend, q, k, v, causal, kpm, qpm, upstream):
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend=backend
    )
    (out * upstream).sum().backward()
    return q.grad, k.grad, v.grad


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("case", PADDED_CASES)
def test_padded_queries_contribute_no_gradient(case, backend):
    q, k, v, causal, kpm, qpm = padded_case(case, torch.float64)
    g = torch.Generator().manual_seed(1)
    upstream = torch.randn(q.shape, generator=g, dtype=q.dtype)
    # A different upstream gradient at the padded queries must change nothing.
    other = torch.where(qpm[:, None, :, None], upstream, 1e3 * torch.randn_like(upstream))
    got = padded_grads(backend, q, k, v, causal, kpm, qpm, upstream)
    again = padded_grads(backend, q, k, v, causal, kpm, qpm, other)
    ref = padded_grads("reference", q, k, v, causal, kpm, qpm, upstream)
    padded = ~qpm[:, None, :, None].expand_as(q)
    assert torch.equal(got[0][padded], torch.zeros_like(got[0][padded]))
    for name, a, b, r in zip("qkv", got, again, ref):
        assert not a.isnan().any(), name
        assert torch.equal(a, b), name
        torch.testing.assert_close(a, r, **tol(torch.float64), msg=lambda m, n=name: f"d{n}: {m}")


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
    visible = attn_mod._visibility(2, 6, 4, causal, kpm, None, q.device).expand_as(w)
    assert torch.equal(w[~visible], torch.zeros_like(w[~visible]))
    row_has_key = visible.any(-1)
    sums = w.sum(-1)
    torch.testing.assert_close(sums[row_has_key], torch.ones_like(sums[row_has_key]))
    assert torch.equal(sums[~row_has_key], torch.zeros_like(sums[~row_has_key]))
    torch.testing.assert_close(out, w @ v)


# ----------------------------------------------------------------------------------------------
# flash-attn varlen bookkeeping
# ----------------------------------------------------------------------------------------------


def ref_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                    dropout_p=0.0, softmax_scale=None, causal=False, **unused):
    """flash_attn_varlen_func's documented contract in plain torch, one SDPA per sequence.

    q ``(total_q, H, D)``, k/v ``(total_k, H, D)`` hold the packed sequences delimited by the
    int32 ``cu_seqlens``; causal is aligned bottom-right within each sequence (query ``i`` of an
    ``lq``-long sequence sees key ``j`` of an ``lk``-long one iff ``j <= i + lk - lq``); a query
    that sees no key returns zeros. Written without neurofound's own masks, so the CPU suite can
    check the unpad / cu_seqlens / pad-back logic of the flash backend; the real kernel is checked
    on CUDA by test_flash_matches_reference_on_cuda.
    """
    assert cu_seqlens_q.dtype == torch.int32 and cu_seqlens_k.dtype == torch.int32
    assert len(cu_seqlens_q) == len(cu_seqlens_k)
    assert int(cu_seqlens_q[-1]) == q.shape[0] and int(cu_seqlens_k[-1]) == k.shape[0]
    assert max_seqlen_q == int(cu_seqlens_q.diff().max())
    assert max_seqlen_k == int(cu_seqlens_k.diff().max())
    assert dropout_p == 0.0 and softmax_scale == pytest.approx(1 / math.sqrt(q.shape[-1]))
    out = q.new_zeros(q.shape[0], q.shape[1], v.shape[-1])
    for s in range(len(cu_seqlens_q) - 1):
        q0, q1 = int(cu_seqlens_q[s]), int(cu_seqlens_q[s + 1])
        k0, k1 = int(cu_seqlens_k[s]), int(cu_seqlens_k[s + 1])
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        i, j = torch.arange(lq)[:, None], torch.arange(lk)[None, :]
        visible = j <= i + lk - lq if causal else torch.ones(lq, lk, dtype=torch.bool)
        sees_a_key = visible.any(1)
        seg = F.scaled_dot_product_attention(
            q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1),
            attn_mask=visible | ~sees_a_key[:, None], scale=softmax_scale,
        )
        out[q0:q1] = seg.transpose(0, 1) * sees_a_key[:, None, None]
    return out


class RecordingVarlen:
    """ref_varlen_func that remembers the packed lengths it was called with."""

    def __call__(self, q, k, v, cu_seqlens_q, cu_seqlens_k, *args, **kwargs):
        self.seqlens_q = cu_seqlens_q.diff().tolist()
        self.seqlens_k = cu_seqlens_k.diff().tolist()
        return ref_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, *args, **kwargs)


@pytest.mark.parametrize(
    "case,left_pad",
    [("self_causal", False), ("cross_padding", False), ("causal_lq_lt_lk", False),
     ("self_causal_padding", True), ("fully_masked_rows", True), ("decode_step_padding", True)],
)
def test_flash_key_unpadding_matches_reference(case, left_pad):
    q, k, v, causal, kpm = make_case(case, torch.float64)
    if left_pad:  # causal flash without a query mask needs padding before the real keys
        n_real = kpm.sum(1)
        kpm = torch.arange(kpm.shape[1]) >= (kpm.shape[1] - n_real)[:, None]
        assert attn_mod._is_left_padded(kpm)
    ref = attention(q, k, v, causal=causal, key_padding_mask=kpm, backend="reference")
    out = attn_mod._flash_attention(q, k, v, causal, kpm, None, 0.0, varlen_func=ref_varlen_func)
    torch.testing.assert_close(out, ref, **tol(torch.float64))


@pytest.mark.parametrize("case", PADDED_CASES)
def test_flash_varlen_with_query_padding_matches_reference(case):
    q, k, v, causal, kpm, qpm = padded_case(case, torch.float64)
    ref = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend="reference"
    )
    kernel = RecordingVarlen()
    out = attn_mod._flash_attention(q, k, v, causal, kpm, qpm, 0.0, varlen_func=kernel)
    torch.testing.assert_close(out, ref, **tol(torch.float64))
    # Self-attention with one mask and any non-causal call unpad the queries too; causal calls
    # with other masks keep every query (keys-only unpadding, padded queries zeroed after).
    unpads_queries = case in ("self_right_causal", "self_right", "self_holes_causal", "cross")
    expect_q = qpm.sum(1).tolist() if unpads_queries else [q.shape[2]] * q.shape[0]
    expect_k = [k.shape[2]] * k.shape[0] if kpm is None else kpm.sum(1).tolist()
    assert (kernel.seqlens_q, kernel.seqlens_k) == (expect_q, expect_k)


def test_flash_all_padding_batch_is_zeros_without_a_kernel_call():
    q, k, v, causal, kpm, qpm = padded_case("self_right_causal")
    none = torch.zeros_like(qpm)

    def no_call(*args, **kwargs):
        raise AssertionError("the kernel must not run on an empty batch")

    out = attn_mod._flash_attention(q, k, v, True, none, none, 0.0, varlen_func=no_call)
    assert torch.equal(out, torch.zeros_like(out))


def test_flash_causal_right_padding_without_query_mask_is_refused():
    # auto runs sdpa for this call (flash would align the causal mask after unpadding);
    # an explicit flash is a clear error that names the fix.
    q, k, v, causal, kpm, qpm = padded_case("self_right_causal")
    assert not attn_mod._flash_is_exact(7, 7, True, kpm, None)
    assert not attn_mod._flash_is_exact(7, 7, True, kpm, qpm & (torch.arange(7) < 3))
    assert attn_mod._flash_is_exact(7, 7, True, kpm, qpm)
    assert attn_mod._flash_is_exact(7, 7, False, kpm, None)
    with pytest.raises(ConfigError, match="query_padding_mask equal to key_padding_mask"):
        attn_mod._flash_attention(q, k, v, True, kpm, None, 0.0, varlen_func=ref_varlen_func)


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
    with pytest.raises(ConfigError, match="backend 'flash' cannot run"):
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
    with pytest.raises(TypeError, match="query_padding_mask must be a bool"):
        attention(q, k, v, query_padding_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"query_padding_mask must be \(batch, q_len\) = \(2, 4\)"):
        attention(q, k, v, query_padding_mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(UnsupportedError, match="no backward pass on CPU"):
        attention(q.requires_grad_(True), k, v, backend="flex")


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


@gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("case", ["self_right_causal", "cross"])
def test_cuda_query_padding_forward_and_backward_match_reference(backend, case):
    q, k, v, causal, kpm, qpm = padded_case(case, device="cuda")
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).cuda()
    ref_out = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend="reference"
    )
    out = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend=backend
    )
    padded = ~qpm[:, None, :, None].expand_as(out)
    assert torch.equal(out[padded], torch.zeros_like(out[padded]))
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-4)
    ref = padded_grads("reference", q, k, v, causal, kpm, qpm, upstream)
    got = padded_grads(backend, q, k, v, causal, kpm, qpm, upstream)
    assert torch.equal(got[0][padded], torch.zeros_like(got[0][padded]))
    for a, b in zip(got, ref):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@gpu
@needs_cuda
@pytest.mark.skipif(attn_mod._flash_varlen_func() is None, reason="flash-attn not installed")
@pytest.mark.parametrize("case", ["self_right_causal", "self_right", "self_holes_causal", "cross"])
def test_flash_varlen_query_padding_matches_reference_on_cuda(case):
    # Self-attention with right padding unpads queries and keys (cu_seqlens_q and cu_seqlens_k).
    q, k, v, causal, kpm, qpm = padded_case(case, device="cuda")
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).cuda()
    ref_out = attention(
        q, k, v, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend="reference"
    )
    ref = padded_grads("reference", q, k, v, causal, kpm, qpm, upstream)
    half = [t.half() for t in (q, k, v)]
    out = attention(
        *half, causal=causal, key_padding_mask=kpm, query_padding_mask=qpm, backend="flash"
    )
    padded = ~qpm[:, None, :, None].expand_as(out)
    assert torch.equal(out[padded], torch.zeros_like(out[padded]))
    torch.testing.assert_close(out.float(), ref_out, atol=3e-3, rtol=3e-3)
    got = padded_grads("flash", *half, causal, kpm, qpm, upstream.half())
    for a, b in zip(got, ref):
        assert not a.isnan().any()
        torch.testing.assert_close(a.float(), b, atol=1e-2, rtol=1e-2)


def test_flex_head_dim_padding_is_exact():
    """CUDA's FlexAttention kernel needs head dims >= 16; the zero-padding it gets instead is exact
    (checked here with the eager FlexAttention on CPU, forward only)."""
    from neurofound.nn import attention as A

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64) for _ in range(3))
    ref = attention(q, k, v, causal=True, backend="reference")
    mask = A._block_mask(2, 7, 7, True, None, None, "cpu")
    with torch.no_grad():
        out = A._flex_padded_head_dim(A._flex_module().flex_attention, q, k, v, mask, 16)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
