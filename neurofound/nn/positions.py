"""Fixed (not learnt) sinusoidal codes of times and grid positions.

``sinusoid`` encodes real values such as time offsets; ``grid_sinusoid`` encodes points of an
N-D grid (frame patches, channel layouts) given as coordinates, which ``grid_positions`` lists
for a whole grid.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

__all__ = ["sinusoid", "grid_sinusoid", "grid_positions"]


def sinusoid(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed code of real values: even channels sin(v f_i), odd cos(v f_i), f_i = 10000^(-2i/dim).

    Args:
        values: ``(...)`` float.
        dim: channels of the code.

    Returns:
        ``(..., dim)``.
    """
    channels = torch.arange(0, dim, 2, device=values.device, dtype=values.dtype)
    freqs = torch.exp(channels * (-math.log(10000.0) / dim))
    angles = values.unsqueeze(-1) * freqs
    out = torch.zeros(*values.shape, dim, device=values.device, dtype=values.dtype)
    out[..., 0::2] = torch.sin(angles)
    out[..., 1::2] = torch.cos(angles)
    return out


def grid_sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """N-D sinusoidal position code of ``n`` axes.

    Each axis gets ``c = ceil(dim / 2n) * 2`` interleaved sin/cos channels
    (``inv_freq_j = 10000^(-2j/c)``); the axes are concatenated and the result truncated to
    ``dim``.

    Args:
        positions: ``(tokens, n_axes)`` float.
        dim: channels of the code.

    Returns:
        ``(tokens, dim)``.
    """
    n_axes = positions.shape[-1]
    c = int(math.ceil(dim / (2 * n_axes))) * 2
    channels = torch.arange(0, c, 2, device=positions.device, dtype=positions.dtype)
    inv_freq = 1.0 / (10000 ** (channels / c))
    parts = []
    for a in range(n_axes):
        ang = positions[:, a : a + 1] * inv_freq
        parts.append(torch.stack((ang.sin(), ang.cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)[:, :dim]


def grid_positions(
    shape: Sequence[int],
    *,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Integer coordinates of every point of a grid, in row-major (C) order.

    Row-major order matches ``tensor.flatten()`` of a grid of that shape, so
    ``grid_sinusoid(grid_positions(x.shape[1:4]), E)`` lines up with ``x.flatten(1, 3)``.

    Args:
        shape: grid size per axis, e.g. ``(t, h, w)``.
        device: device of the result.
        dtype: dtype of the result; None = ``torch.get_default_dtype()``.

    Returns:
        ``(prod(shape), len(shape))``; row ``r`` holds the coordinates of the ``r``-th point.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, len(shape))
