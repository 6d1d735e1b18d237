"""Tests of neurofound.nn.kv_cache: cached decoding equals the full pass, for self- and
cross-attention, through MultiHeadAttention."""

import pytest
import torch

from neurofound.nn import KVCache, MultiHeadAttention


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


def test_cached_decode_with_query_padding_equals_full_pass():
    # A batch whose second sequence ends early: once it is finished its new tokens are padding,
    # as queries and as keys. The cached steps give the full pass, zeros at the padded queries.
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, bias=False, backend="sdpa").eval()
    x = torch.randn(2, 8, 16)
    real = torch.arange(8) < torch.tensor([8, 5])[:, None]
    full, _ = mha(x, x, causal=True, key_padding_mask=real, query_padding_mask=real)

    cache = KVCache(8)
    outs = [mha(x[:, :3], x[:, :3], causal=True, key_padding_mask=real[:, :3],
                query_padding_mask=real[:, :3], cache=cache)[0]]
    for t in range(3, 8):
        step = real[:, t : t + 1]
        outs.append(mha(x[:, t : t + 1], x[:, t : t + 1], causal=True, key_padding_mask=step,
                        query_padding_mask=step, cache=cache)[0])
    cached = torch.cat(outs, dim=1)
    torch.testing.assert_close(cached, full, atol=1e-6, rtol=1e-5)
    assert torch.equal(cached[1, 5:], torch.zeros_like(cached[1, 5:]))
