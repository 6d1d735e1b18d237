"""Keys and values of one attention layer kept across decoding steps (incremental decoding).

:class:`~neurofound.nn.multihead.MultiHeadAttention` appends to a :class:`KVCache` (self-attention)
or fills it once (cross-attention) and then attends to everything it holds with
:func:`~neurofound.nn.attention.attention`.
"""

from __future__ import annotations

from typing import Optional

import torch

from neurofound.errors import ConfigError, DataError

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of one attention layer kept across decoding steps.

    Self-attention (``static=False``): every call of the layer appends the keys/values of the
    new tokens (and their key padding entries); the layer then attends to everything cached.
    Cross-attention (``static=True``): the keys/values of the source are computed on the first
    call and reused afterwards.

    Storage is preallocated to ``max_len`` (or grown by doubling when ``max_len`` is None), so
    decoding ``L`` tokens costs ``O(L)`` copies rather than ``O(L^2)`` for repeated concatenation.

    Args:
        max_len: capacity in tokens; appending beyond it is an error. None = grow as needed.
        static: True for cross-attention (filled once, then read-only).

    Attributes:
        k, v: views of the filled part, ``(batch, heads, length, head_dim)``, or None when empty.
        key_padding_mask: ``(batch, length)`` bool, or None when no padding was ever appended.
    """

    def __init__(self, max_len: Optional[int] = None, *, static: bool = False):
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ConfigError(f"max_len must be a positive int or None, got {max_len!r}.")
        self.max_len = max_len
        self.static = static
        self.reset()

    def reset(self) -> None:
        """Forget everything (start a new sequence); storage is released."""
        self._k: Optional[torch.Tensor] = None
        self._v: Optional[torch.Tensor] = None
        self._pad: Optional[torch.Tensor] = None
        self._has_padding = False
        self.length = 0

    def __len__(self) -> int:
        return self.length

    @property
    def is_empty(self) -> bool:
        return self.length == 0

    @property
    def k(self) -> Optional[torch.Tensor]:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> Optional[torch.Tensor]:
        return None if self._v is None else self._v[:, :, : self.length]

    @property
    def key_padding_mask(self) -> Optional[torch.Tensor]:
        if not self._has_padding:
            return None
        return self._pad[:, : self.length]

    def _allocate(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
        batch, heads, _, dim = k.shape
        new_k = k.new_empty(batch, heads, capacity, dim)
        new_v = v.new_empty(batch, heads, capacity, v.shape[-1])
        new_pad = torch.ones(batch, capacity, dtype=torch.bool, device=k.device)
        if self._k is not None and self.length:
            new_k[:, :, : self.length] = self._k[:, :, : self.length]
            new_v[:, :, : self.length] = self._v[:, :, : self.length]
            new_pad[:, : self.length] = self._pad[:, : self.length]
        self._k, self._v, self._pad = new_k, new_v, new_pad

    def append(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Add new keys/values and return everything cached.

        Args:
            k: ``(batch, heads, new, head_dim)``.
            v: ``(batch, heads, new, head_dim)``.
            key_padding_mask: ``(batch, new)`` bool for the new keys; None = all real.

        Returns:
            ``(k, v, key_padding_mask)`` over all cached keys: ``(batch, heads, length, head_dim)``
            twice and ``(batch, length)`` bool or None.
        """
        if self.static and not self.is_empty:
            raise RuntimeError(
                "This KVCache is static (cross-attention) and already filled; call reset() "
                "before storing a new source."
            )
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise DataError(
                f"k and v must be (batch, heads, new, head_dim) with equal leading dims, got "
                f"{tuple(k.shape)} and {tuple(v.shape)}."
            )
        new = k.shape[2]
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (
                k.shape[0],
                new,
            ):
                raise DataError(
                    f"key_padding_mask for the new keys must be bool (batch, new) = "
                    f"{(k.shape[0], new)}, got {key_padding_mask.dtype} "
                    f"{tuple(key_padding_mask.shape)}."
                )
        if self._k is not None and (
            self._k.shape[0] != k.shape[0]
            or self._k.shape[1] != k.shape[1]
            or self._k.shape[3] != k.shape[3]
        ):
            raise DataError(
                f"New keys {tuple(k.shape)} do not match the cached (batch, heads, _, head_dim) "
                f"{tuple(self._k.shape)}; call reset() or select() first."
            )

        end = self.length + new
        if self.max_len is not None and end > self.max_len:
            raise DataError(
                f"KVCache overflow: {end} tokens exceed max_len={self.max_len}. Create the cache "
                "with a larger max_len (or None to grow automatically)."
            )
        capacity = 0 if self._k is None else self._k.shape[2]
        if end > capacity:
            if self.static:
                target = end
            elif self.max_len is not None:
                target = self.max_len
            else:
                target = max(end, 2 * capacity, 16)
            self._allocate(k, v, target)

        self._k[:, :, self.length : end] = k
        self._v[:, :, self.length : end] = v
        if key_padding_mask is not None:
            self._pad[:, self.length : end] = key_padding_mask
            self._has_padding = True
        else:
            self._pad[:, self.length : end] = True
        self.length = end
        return self.k, self.v, self.key_padding_mask

    def select(self, index: torch.Tensor) -> None:
        """Keep only the batch rows in ``index`` (e.g. drop sequences that finished decoding).

        Args:
            index: ``(n,)`` long indices into the batch, or ``(batch,)`` bool keep-mask.
        """
        if self._k is None:
            return
        index = torch.as_tensor(index, device=self._k.device)
        if index.dtype == torch.bool:
            if index.shape != (self._k.shape[0],):
                raise DataError(
                    f"A bool index must have shape (batch,) = ({self._k.shape[0]},), got "
                    f"{tuple(index.shape)}."
                )
            index = index.nonzero().flatten()
        self._k = self._k.index_select(0, index)
        self._v = self._v.index_select(0, index)
        self._pad = self._pad.index_select(0, index)
