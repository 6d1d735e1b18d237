"""Tests of neurofound.nn.multihead: the projection layer around attention(), its weight layout
(the Neuroformer reference) and the query padding mask."""

import math

import pytest
import torch

from neurofound.nn import MultiHeadAttention, set_backend


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
# Query padding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_mha_query_padding_zeroes_attention_at_padded_queries_only(causal):
    # Self-attention over a right-padded batch with one mask for queries and keys: real rows are
    # those of the key-masked layer, padded rows are the output projection of a zero attention
    # output (proj's bias), in every CPU backend.
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 6, 16)
    real = torch.arange(6) < torch.tensor([6, 4, 0])[:, None]
    for backend in ["reference", "sdpa", "auto"]:
        mha.backend = backend
        keys_only, _ = mha(x, x, causal=causal, key_padding_mask=real)
        out, _ = mha(x, x, causal=causal, key_padding_mask=real, query_padding_mask=real)
        torch.testing.assert_close(out[real], keys_only[real], msg=backend)
        assert torch.equal(out[~real], mha.proj.bias.expand_as(out[~real])), backend


def test_mha_query_padding_passes_no_gradient_from_padded_queries():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, bias=False, backend="sdpa")
    x = torch.randn(2, 5, 8, requires_grad=True)
    real = torch.arange(5) < torch.tensor([5, 2])[:, None]
    out, _ = mha(x, x, causal=True, key_padding_mask=real, query_padding_mask=real)
    assert torch.equal(out[~real], torch.zeros_like(out[~real]))  # no bias: exactly zero
    out.sum().backward()
    assert torch.equal(x.grad[~real], torch.zeros_like(x.grad[~real]))
    assert x.grad[real].abs().sum() > 0


def test_mha_query_padding_mask_is_checked():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"query_padding_mask must be \(batch, q_len\)"):
        mha(x, x, query_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        mha(x, x, query_padding_mask=torch.ones(2, 5))
