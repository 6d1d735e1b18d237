"""The multi-head attention layer every model uses: projections around :func:`attention`.

Submodule names (``query``, ``key``, ``value``, ``proj``), the head split (the last axis read as
``(heads, head_dim)``) and the ``1/sqrt(head_dim)`` scale match the Neuroformer reference code so
its weights load unchanged (fixture README, "Block").
"""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import nn

from neurofound.errors import ConfigError, DataError
from neurofound.nn.attention import AttentionLayer, attention
from neurofound.nn.kv_cache import KVCache

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(AttentionLayer):
    """Multi-head attention with separate query/key/value projections and an output projection.

    Args:
        n_embd: model width ``E``.
        n_head: number of heads ``H``; must divide ``E``.
        bias: bias in the four linear layers.
        attn_dropout: dropout on the attention probabilities (training only).
        resid_dropout: dropout on the output projection (training only).
        backend: one of :data:`~neurofound.nn.attention.BACKENDS`; can be changed later
            (``module.backend = "sdpa"`` or :func:`~neurofound.nn.attention.set_backend`).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool = True,
        attn_dropout: float = 0.0,
        resid_dropout: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        if n_head < 1 or n_embd % n_head != 0:
            raise ConfigError(f"n_head={n_head} must be >= 1 and divide n_embd={n_embd}.")
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.query = nn.Linear(n_embd, n_embd, bias=bias)
        self.key = nn.Linear(n_embd, n_embd, bias=bias)
        self.value = nn.Linear(n_embd, n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = attn_dropout
        self.resid_drop = nn.Dropout(resid_dropout)
        self.backend = backend

    def extra_repr(self) -> str:
        return f"n_embd={self.n_embd}, n_head={self.n_head}, backend={self.backend!r}"

    def forward(
        self,
        x_q: torch.Tensor,
        x_kv: Optional[torch.Tensor],
        *,
        causal: bool = False,
        key_padding_mask: Optional[torch.Tensor] = None,
        query_padding_mask: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Attend from ``x_q`` to ``x_kv``.

        Args:
            x_q: query tokens ``(batch, q_len, E)``.
            x_kv: key/value tokens ``(batch, kv_len, E)``. May be None only with a filled static
                cache (cross-attention after the first decoding step).
            causal: bottom-right aligned causal mask (see :func:`attention`).
            key_padding_mask: ``(batch, kv_len)`` bool, True = real token. With a self-attention
                cache it covers the new tokens only; the cache keeps the earlier entries.
            query_padding_mask: ``(batch, q_len)`` bool, True = real query. A padded query's
                attention output is zero and it contributes no gradient, so this layer returns
                ``proj``'s bias there. None = every query is real; it is never inferred from
                ``key_padding_mask``. For self-attention pass the same mask as both (that also
                lets the ``flash`` backend unpad queries and keys alike).
            cache: a :class:`KVCache`; ``static=False`` appends the new keys/values,
                ``static=True`` computes them once and reuses them.
            need_weights: also return the attention weights (runs the reference path).

        Returns:
            ``(out, weights)``: out ``(batch, q_len, E)``; weights ``(batch, heads, q_len, k_len)``
            or None.
        """
        if x_q.dim() != 3 or x_q.shape[-1] != self.n_embd:
            raise DataError(f"x_q must be (batch, q_len, {self.n_embd}), got {tuple(x_q.shape)}.")
        batch = x_q.shape[0]
        q = self._split_heads(self.query(x_q))

        if cache is not None and cache.static and not cache.is_empty:
            k, v = cache.k, cache.v
            if key_padding_mask is None:
                key_padding_mask = cache.key_padding_mask
        else:
            if x_kv is None:
                raise DataError(
                    "x_kv is None: pass the key/value tokens (x_kv=x_q for self-attention); "
                    "x_kv may be omitted only with an already filled static KVCache."
                )
            if x_kv.dim() != 3 or x_kv.shape[-1] != self.n_embd or x_kv.shape[0] != batch:
                raise DataError(
                    f"x_kv must be (batch={batch}, kv_len, {self.n_embd}), got "
                    f"{tuple(x_kv.shape)}."
                )
            k = self._split_heads(self.key(x_kv))
            v = self._split_heads(self.value(x_kv))
            if cache is not None:
                k, v, key_padding_mask = cache.append(k, v, key_padding_mask)

        dropout_p = self.attn_dropout if self.training else 0.0
        result = attention(
            q,
            k,
            v,
            causal=causal,
            key_padding_mask=key_padding_mask,
            query_padding_mask=query_padding_mask,
            dropout_p=dropout_p,
            backend=self.backend,
            return_weights=need_weights,
        )
        out, weights = result if need_weights else (result, None)
        out = rearrange(out, "b h l d -> b l (h d)")
        return self.resid_drop(self.proj(out)), weights

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, E)`` -> ``(batch, heads, tokens, head_dim)``."""
        return rearrange(x, "b l (h d) -> b h l d", h=self.n_head)
