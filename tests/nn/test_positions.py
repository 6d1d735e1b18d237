"""Tests of neurofound.nn.positions: the fixed sinusoidal codes, the grid coordinates and RoPE."""

import math

import pytest
import torch

from neurofound.errors import ConfigError, DataError
from neurofound.nn.positions import apply_rope, grid_positions, grid_sinusoid, rope_frequencies, sinusoid


def test_grid_positions_are_row_major_like_flatten():
    pos = grid_positions((2, 3))
    assert pos.shape == (6, 2) and pos.dtype == torch.get_default_dtype()
    assert pos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    # Row r of a 3-D grid holds the coordinates of element r of the flattened grid.
    shape = (2, 3, 4)
    values = torch.arange(24).reshape(shape)
    pos = grid_positions(shape, dtype=torch.long)
    assert pos.shape == (24, 3)
    assert torch.equal(values[pos[:, 0], pos[:, 1], pos[:, 2]], values.flatten())
    assert grid_positions((3,), dtype=torch.float64).dtype == torch.float64


def test_grid_sinusoid_gives_each_axis_its_own_channels():
    dim = 10  # 2 axes: c = ceil(10 / 4) * 2 = 6 channels each, truncated to 10 in all
    pos = grid_positions((3, 4))
    code = grid_sinusoid(pos, dim)
    assert code.shape == (12, dim)
    first_axis, second_axis = code[:, :6], code[:, 6:]
    same_row = pos[:, 0] == 0
    assert torch.equal(first_axis[same_row], first_axis[same_row][:1].expand(4, 6))
    same_col = pos[:, 1] == 0
    assert torch.equal(second_axis[same_col], second_axis[same_col][:1].expand(3, 4))
    # interleaved sin/cos with inverse frequencies 10000^(-2j/c)
    torch.testing.assert_close(code[5, 6:8], torch.tensor([math.sin(1.0), math.cos(1.0)]))
    torch.testing.assert_close(code[5, 8], torch.tensor(math.sin(10000 ** (-2 / 6))))


def test_sinusoid_channels():
    values = torch.tensor([[0.0, 2.5]])
    code = sinusoid(values, 6)
    assert code.shape == (1, 2, 6)
    assert torch.equal(code[0, 0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    freqs = torch.tensor([10000 ** (-i / 6) for i in (0, 2, 4)])
    torch.testing.assert_close(code[0, 1, 0::2], torch.sin(2.5 * freqs))
    torch.testing.assert_close(code[0, 1, 1::2], torch.cos(2.5 * freqs))


# ---------------------------------------------------------------------------------------------------------------
# Rotary position embedding
# ---------------------------------------------------------------------------------------------------------------
def test_rope_frequencies_follow_roformer():
    freqs = rope_frequencies(8)
    assert freqs.shape == (4,) and freqs.dtype == torch.float32
    torch.testing.assert_close(freqs, torch.tensor([10000.0 ** (-2 * j / 8) for j in range(4)]))
    torch.testing.assert_close(rope_frequencies(4, base=100.0), torch.tensor([1.0, 0.1]))
    with pytest.raises(ConfigError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ConfigError, match="base"):
        rope_frequencies(8, base=1.0)


def test_apply_rope_equals_the_complex_formulation():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8)  # (batch, heads, tokens, dim)
    freqs = rope_frequencies(8)
    positions = torch.arange(5)
    ours = apply_rope(x, positions, freqs)
    # pairs (2i, 2i+1) as complex numbers times exp(i t f), with torch's complex arithmetic
    rotate = torch.polar(torch.ones(5, 4), torch.outer(positions.float(), freqs))
    expected = torch.view_as_real(torch.view_as_complex(x.reshape(2, 3, 5, 4, 2)) * rotate).flatten(-2)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(ours[..., 0, :], x[..., 0, :])  # position 0 is not rotated
    # a rotation keeps the norm of every pair, so of every vector
    torch.testing.assert_close(ours.norm(dim=-1), x.norm(dim=-1))


def test_apply_rope_dot_product_depends_on_the_position_difference_only():
    torch.manual_seed(1)
    q, k = torch.randn(16), torch.randn(16)
    freqs = rope_frequencies(16)

    def score(s, t):
        return apply_rope(q[None], torch.tensor([s]), freqs)[0] @ apply_rope(k[None], torch.tensor([t]), freqs)[0]

    for s, t in [(0, 3), (5, 8), (40, 43), (100, 103)]:  # all differ by -3
        torch.testing.assert_close(score(s, t), score(0, 3), atol=1e-4, rtol=1e-5)
    assert not torch.allclose(score(0, 3), score(0, 4), atol=1e-3)  # another difference, another score
    assert not torch.allclose(score(0, 3), q @ k, atol=1e-3)  # and it differs from no rotation


def test_apply_rope_computes_in_fp32_and_returns_the_input_dtype():
    torch.manual_seed(2)
    x = torch.randn(1, 7, 6)
    freqs = rope_frequencies(6)
    positions = torch.arange(300, 307)  # large angles: a bf16 rotation would be far off
    out = apply_rope(x.to(torch.bfloat16), positions, freqs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), apply_rope(x.to(torch.bfloat16).float(), positions, freqs).to(
        torch.bfloat16).float())
    # a (tokens,) position vector broadcasts like a (batch, tokens) one
    per_batch = apply_rope(x.expand(3, 7, 6), positions.expand(3, 7), freqs)
    assert torch.equal(per_batch[1], apply_rope(x, positions, freqs)[0])
    with pytest.raises(DataError, match="freqs"):
        apply_rope(x, positions, rope_frequencies(4))


def test_apply_rope_on_the_full_width_gives_each_head_its_own_frequencies():
    """Rotating (tokens, heads * head_dim) with heads * head_dim / 2 frequencies equals rotating each head
    with its contiguous slice of them (BrainOmni's temporal attention, fixture README section 5)."""
    torch.manual_seed(3)
    heads, head_dim = 3, 4
    x = torch.randn(2, 6, heads * head_dim)
    freqs = rope_frequencies(heads * head_dim)
    positions = torch.arange(6)
    full = apply_rope(x, positions, freqs)
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        own = freqs[h * head_dim // 2:(h + 1) * head_dim // 2]
        assert torch.equal(full[..., part], apply_rope(x[..., part], positions, own))
