"""Fixed (not learnt) position codes: sinusoids of times and grid positions, and rotary embeddings.

``sinusoid`` encodes real values such as time offsets; ``grid_sinusoid`` encodes points of an
N-D grid (frame patches, channel layouts) given as coordinates, which ``grid_positions`` lists
for a whole grid. ``rope_frequencies`` and ``apply_rope`` are the rotary position embedding
(RoPE) of Su et al. (2021), which rotates queries and keys so that their dot product depends on
the positions only through their difference.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from neurofound.errors import ConfigError, DataError

__all__ = ["sinusoid", "grid_sinusoid", "grid_positions", "rope_frequencies", "apply_rope"]


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


def rope_frequencies(dim: int, base: float = 10000.0, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """Rotary frequencies ``f_j = base^(-2j/dim)``, ``j = 0 .. dim/2 - 1`` (Su et al. 2021, RoFormer, eq. 15).

    Computed as ``1 / base^(arange(0, dim, 2) / dim)`` in fp32, the formula of the BrainOmni and LLaMA
    reference code, so that the values equal their stored ``freqs`` buffers bitwise.

    Args:
        dim: rotated features (even): one frequency per pair of features.
        base: wavelength scale; 10000 in RoFormer.
        device: device of the result.

    Returns:
        ``(dim / 2,)`` float32, decreasing from 1.
    """
    if dim < 2 or dim % 2:
        raise ConfigError(f"RoPE rotates pairs of features, so dim must be even and >= 2, got {dim}")
    if not base > 1.0:
        raise ConfigError(f"RoPE base must be > 1 (10000 in RoFormer), got {base}")
    exponents = torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim
    return 1.0 / (base**exponents)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved feature pairs of ``x`` by ``position * frequency`` (RoPE, Su et al. 2021).

    Pair ``i`` = features ``(2i, 2i+1)`` is read as the complex number ``x_2i + i x_2i+1`` and
    multiplied by ``exp(i t f_i)``, ``t`` being the token's position. Then ``<rope(q, s), rope(k, t)>``
    depends on ``s`` and ``t`` only through ``s - t``. The rotation is computed in fp32 and the result
    cast back to ``x``'s dtype.

    ``freqs`` covers the whole last axis. For the usual per-head RoPE pass ``x`` with heads split,
    ``(batch, heads, tokens, head_dim)`` and ``head_dim / 2`` frequencies; passing
    ``(batch, tokens, heads * head_dim)`` with ``heads * head_dim / 2`` frequencies instead gives
    each head its own contiguous slice of the frequencies (BrainOmni's temporal attention).

    Args:
        x: ``(..., tokens, dim)``.
        positions: ``(tokens,)`` or broadcastable to ``(..., tokens)``; integer or float positions.
        freqs: ``(dim / 2,)``, e.g. from :func:`rope_frequencies`.

    Returns:
        ``(..., tokens, dim)``, the dtype of ``x``.
    """
    dim = x.shape[-1]
    if dim != 2 * freqs.shape[-1] or freqs.dim() != 1:
        raise DataError(f"apply_rope: x has {dim} features but freqs has shape {tuple(freqs.shape)}; "
                        f"pass dim / 2 = {dim // 2} frequencies (one per feature pair)")
    angles = positions.to(device=x.device, dtype=torch.float32).unsqueeze(-1) * freqs.to(x.device, torch.float32)
    cos, sin = angles.cos(), angles.sin()
    pairs = x.float().unflatten(-1, (dim // 2, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)
