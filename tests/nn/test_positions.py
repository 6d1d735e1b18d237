"""Tests of neurofound.nn.positions: the fixed sinusoidal codes and the grid coordinates."""

import math

import torch

from neurofound.nn.positions import grid_positions, grid_sinusoid, sinusoid


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
