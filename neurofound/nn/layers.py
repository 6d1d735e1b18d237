"""Small layers shared by the model families: RMSNorm and the two-layer feed-forward block.

Submodule and parameter names (`weight`; `layer.0`, `layer.2`) follow the BrainOmni reference code
(`model_utils/attn.py`), so its weights load with a 1:1 key map.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RMSNorm", "FeedForward"]


class RMSNorm(nn.Module):
    """Root-mean-square norm: `x * rsqrt(mean(x^2) + eps) * weight`, computed in fp32.

    Zhang & Sennrich (2019), "Root Mean Square Layer Normalization". The normalisation runs in
    fp32 whatever the input dtype (the reference does the same), then the result is cast back and
    scaled by the learnt `weight` (no bias).

    Args:
        dim: features `D` (the last axis).
        eps: added inside the square root.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., D) -> (..., D)`."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class FeedForward(nn.Module):
    """`Linear(D, mult*D) -> SELU -> Linear(mult*D, D) -> Dropout` (no residual, no norm).

    Args:
        dim: input and output features `D`.
        dropout: dropout after the second linear layer (training only).
        mult: hidden width as a multiple of `D` (4 in BrainOmni).
        activation: the hidden non-linearity (SELU in BrainOmni).
    """

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4, activation: type[nn.Module] = nn.SELU):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(dim, mult * dim), activation(), nn.Linear(mult * dim, dim),
                                   nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., D) -> (..., D)`."""
        return self.layer(x)
