"""One scaled dot-product attention for every model, with interchangeable backends.

Every model in neurofound calls :func:`attention` (directly or through
:class:`MultiHeadAttention`). The function has one exact semantics and several backends that
implement it; the backends are parity-tested against the plain ``reference`` path:

* ``flash``: flash-attn's varlen kernel (CUDA, fp16/bf16, only when ``flash_attn`` imports).
  Keys are unpadded with the key padding mask into ``cu_seqlens`` so padding costs no compute.
* ``sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention` (any device and dtype,
  float64 included, forward and backward).
* ``flex``: FlexAttention with a block mask built from the causal rule and the key padding mask.
  Compiled once per shape and cached. torch 2.13 runs it forward-only on CPU.
* ``reference``: softmax(q k^T / sqrt(D)) v written out, the ground truth of the tests and the
  only path that can return the attention weights.
* ``auto``: ``flash`` when usable, otherwise ``sdpa`` (see :func:`resolve_backend`).

Semantics shared by all backends (docs/architecture.md):

* ``q`` is ``(batch, heads, q_len, head_dim)``; ``k`` and ``v`` are
  ``(batch, heads, k_len, head_dim)``.
* ``causal`` is aligned bottom-right: query ``i`` may see key ``j`` iff ``j <= i + k_len - q_len``,
  so a KV-cached decode step (``q_len = 1``) sees every cached key.
* ``key_padding_mask`` is ``(batch, k_len)`` bool, True = real key, False = padding.
* A query row that sees no key returns zeros, never NaN (forward and backward).

:class:`MultiHeadAttention` is the projection layer around it (weight-compatible with the
Neuroformer reference: submodules ``query``, ``key``, ``value``, ``proj``) and :class:`KVCache`
holds the keys/values for incremental decoding.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import OrderedDict
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BACKENDS",
    "attention",
    "resolve_backend",
    "available_backends",
    "set_backend",
    "MultiHeadAttention",
    "KVCache",
]

BACKENDS = ("auto", "flash", "sdpa", "flex", "reference")

_FLASH_DTYPES = (torch.float16, torch.bfloat16)

DeviceLike = Union[str, torch.device]


# --------------------------------------------------------------------------------------------
# Backend discovery
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _flash_varlen_func() -> Optional[Callable]:
    """Return ``flash_attn.flash_attn_varlen_func`` or None when flash-attn is not usable.

    Imported lazily: flash-attn is an optional CUDA-only dependency (``pip install
    neurofound[cuda]``) and importing it initialises CUDA.
    """
    try:
        from flash_attn import flash_attn_varlen_func
    except (ImportError, OSError, RuntimeError):
        # A wheel built against another torch/CUDA raises OSError/RuntimeError at import;
        # that is "not available", not a crash of the whole model.
        return None
    return flash_attn_varlen_func


@functools.lru_cache(maxsize=None)
def _flex_module():
    """Return ``torch.nn.attention.flex_attention`` or None on a torch without it (< 2.5)."""
    try:
        from torch.nn.attention import flex_attention as flex
    except ImportError:
        return None
    return flex


def _as_device(device: DeviceLike) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        return torch.device(device)
    raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}.")


def _check_backend_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(
            f"Unknown attention backend {name!r}. Choose one of {list(BACKENDS)} "
            "(config key attention.backend)."
        )


def available_backends(device: DeviceLike) -> list[str]:
    """List the concrete backends that can run on ``device``.

    Args:
        device: where the tensors live, e.g. ``"cpu"`` or ``torch.device("cuda:0")``.

    Returns:
        Backend names in order of preference, e.g. ``["sdpa", "flex", "reference"]`` on CPU.
        ``flash`` is listed only on CUDA with flash-attn installed (it also needs fp16/bf16).
    """
    device = _as_device(device)
    names = []
    if device.type == "cuda" and _flash_varlen_func() is not None:
        names.append("flash")
    names.append("sdpa")
    if _flex_module() is not None:
        names.append("flex")
    names.append("reference")
    return names


def resolve_backend(
    name: str,
    *,
    device: DeviceLike,
    needs_weights: bool = False,
    dtype: Optional[torch.dtype] = None,
) -> str:
    """Answer which concrete backend :func:`attention` runs for ``name``.

    ``auto`` picks ``flash`` when flash-attn imports, the device is CUDA, the dtype is fp16/bf16
    and no weights are requested; otherwise ``sdpa``. Requesting weights always gives
    ``reference`` (the fused kernels never materialise them). An explicit backend that cannot run
    here is an error rather than a silent substitution.

    Args:
        name: one of :data:`BACKENDS`.
        device: device of the q/k/v tensors.
        needs_weights: True when the caller wants the softmax weights back.
        dtype: dtype of q/k/v; None means ``torch.get_default_dtype()``.

    Returns:
        One of ``"flash"``, ``"sdpa"``, ``"flex"``, ``"reference"``.
    """
    _check_backend_name(name)
    device = _as_device(device)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if needs_weights:
        return "reference"
    flash_ok = (
        device.type == "cuda" and dtype in _FLASH_DTYPES and _flash_varlen_func() is not None
    )
    if name == "auto":
        return "flash" if flash_ok else "sdpa"
    if name == "flash" and not flash_ok:
        if _flash_varlen_func() is None:
            why = "flash_attn is not installed (pip install 'neurofound[cuda]')"
        elif device.type != "cuda":
            why = f"it needs CUDA tensors, got device {device}"
        else:
            why = f"it needs float16/bfloat16 tensors, got {dtype}"
        raise ValueError(
            f"attention backend 'flash' cannot run: {why}. Use backend='auto' or 'sdpa'."
        )
    if name == "flex" and _flex_module() is None:
        raise ValueError(
            f"attention backend 'flex' needs torch >= 2.5 (FlexAttention); this is torch "
            f"{torch.__version__}. Use backend='sdpa'."
        )
    return name


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def _visibility(
    batch: int,
    q_len: int,
    k_len: int,
    causal: bool,
    key_padding_mask: Optional[torch.Tensor],
    device: torch.device,
) -> Optional[torch.Tensor]:
    """Boolean mask of the keys each query may see, or None when every query sees every key.

    Returns:
        ``(batch or 1, 1, q_len, k_len)`` bool, True = visible.
    """
    mask = None
    if causal:
        i = torch.arange(q_len, device=device).unsqueeze(1)
        j = torch.arange(k_len, device=device).unsqueeze(0)
        mask = (j <= i + (k_len - q_len)).view(1, 1, q_len, k_len)
    if key_padding_mask is not None:
        pad = key_padding_mask.view(batch, 1, 1, k_len)
        mask = pad if mask is None else mask & pad
    return mask


def _safe_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every row of ``mask`` see at least one key and say which rows were empty.

    A softmax over a row with no visible key is 0/0 = NaN, in the forward and the backward pass.
    Opening such rows to all keys keeps everything finite; the caller then zeroes their output,
    which also zeroes their gradient.

    Returns:
        ``(mask, row_has_key)`` with ``row_has_key`` of shape ``(batch or 1, 1, q_len, 1)``.
    """
    row_has_key = mask.any(dim=-1, keepdim=True)
    return mask | ~row_has_key, row_has_key


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


def _reference_attention(q, k, v, mask, dropout_p):
    """softmax(q k^T / sqrt(D)) v written out. Returns ``(out, weights)``."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    row_has_key = None
    if mask is not None:
        mask, row_has_key = _safe_mask(mask)
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if row_has_key is not None:
        weights = weights * row_has_key
    attn = F.dropout(weights, p=dropout_p, training=True) if dropout_p > 0 else weights
    return torch.matmul(attn, v), weights


def _sdpa_attention(q, k, v, causal, key_padding_mask, dropout_p):
    q_len, k_len = q.shape[2], k.shape[2]
    if key_padding_mask is None and (not causal or q_len == k_len):
        # No explicit mask lets SDPA choose its fused kernels; for q_len == k_len torch's
        # top-left causal alignment equals our bottom-right one.
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=causal and q_len > 0
        )
    mask = _visibility(q.shape[0], q_len, k_len, causal, key_padding_mask, q.device)
    mask, row_has_key = _safe_mask(mask)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out * row_has_key


# Compiled FlexAttention and recent block masks, kept for the life of the process: compiling
# takes seconds (about 20 s cold on a laptop CPU), building a block mask a few milliseconds.
_FLEX_COMPILED: Optional[Callable] = None
_BLOCK_MASKS: "OrderedDict[tuple, tuple]" = OrderedDict()
_BLOCK_MASK_CACHE_SIZE = 32


def _compiled_flex() -> Callable:
    global _FLEX_COMPILED
    if _FLEX_COMPILED is None:
        # Default dynamic=None: the first shape compiles static, a second shape triggers one
        # dynamic-shape recompile instead of one compile per sequence length.
        _FLEX_COMPILED = torch.compile(_flex_module().flex_attention)
    return _FLEX_COMPILED


def _block_mask(batch, q_len, k_len, causal, key_padding_mask, device):
    """FlexAttention block mask for the causal rule and key padding, cached.

    A model passes the same key padding tensor to every layer of one forward pass, so the cache
    is keyed on the tensor's identity and version counter (an in-place edit invalidates it); a
    weak reference guards against a recycled ``id``.
    """
    flex = _flex_module()
    if key_padding_mask is None:
        key = (q_len, k_len, causal, str(device), None, None)
    else:
        key = (q_len, k_len, causal, str(device), id(key_padding_mask), key_padding_mask._version)
    hit = _BLOCK_MASKS.get(key)
    if hit is not None and (hit[0] is None or hit[0]() is key_padding_mask):
        _BLOCK_MASKS.move_to_end(key)
        return hit[1]

    offset = k_len - q_len
    pad = key_padding_mask
    last = k_len - 1
    # Kernels evaluate mask_mod on whole blocks, so kv_idx can run past k_len in the last block
    # (those positions are dropped by the kernel's own length check); clamping keeps the
    # lookup into the padding tensor in bounds.
    if pad is None:

        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx + offset

        block_mask = flex.create_block_mask(mask_mod, None, None, q_len, k_len, device=device)
    else:
        if causal:

            def mask_mod(b, h, q_idx, kv_idx):
                return (kv_idx <= q_idx + offset) & pad[b, torch.clamp(kv_idx, max=last)]
        else:

            def mask_mod(b, h, q_idx, kv_idx):
                return pad[b, torch.clamp(kv_idx, max=last)]

        block_mask = flex.create_block_mask(mask_mod, batch, None, q_len, k_len, device=device)

    ref = None if pad is None else weakref.ref(pad)
    _BLOCK_MASKS[key] = (ref, block_mask)
    if len(_BLOCK_MASKS) > _BLOCK_MASK_CACHE_SIZE:
        _BLOCK_MASKS.popitem(last=False)
    return block_mask


def _flex_attention(q, k, v, causal, key_padding_mask, dropout_p, *, compiled=True):
    """FlexAttention path. ``compiled=False`` runs torch's unfused eager implementation (slow,
    materialises the scores; used to check the masks quickly without a compile)."""
    if dropout_p > 0:
        raise ValueError(
            "attention backend 'flex' does not support dropout (FlexAttention has no dropout on "
            "the probabilities). Use backend='sdpa' or set the attention dropout to 0."
        )
    if (
        q.device.type == "cpu"
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        # Checked here, before a compile of several seconds, rather than left to torch.
        raise NotImplementedError(
            f"attention backend 'flex' has no backward pass on CPU (torch {torch.__version__}). "
            "Run under torch.no_grad() / torch.inference_mode(), or use backend='sdpa' for "
            "training on CPU."
        )
    if key_padding_mask is None and not causal:
        block_mask = None
    else:
        block_mask = _block_mask(
            q.shape[0], q.shape[2], k.shape[2], causal, key_padding_mask, q.device
        )
    fn = _compiled_flex() if compiled else _flex_module().flex_attention
    # FlexAttention already returns zeros for rows whose keys are all masked (their
    # log-sum-exp is -inf), so no row fix-up is needed here.
    return fn(q, k, v, block_mask=block_mask)


def _is_left_padded(key_padding_mask: torch.Tensor) -> bool:
    """True when every row is ``[False]*p + [True]*n`` (padding only before the real keys)."""
    if key_padding_mask.shape[1] < 2:
        return True
    return bool((key_padding_mask[:, 1:] | ~key_padding_mask[:, :-1]).all())


def _flash_attention(q, k, v, causal, key_padding_mask, dropout_p, *, varlen_func=None):
    """flash-attn varlen path: unpad keys into ``cu_seqlens``, run, reshape back.

    Queries are never unpadded: the key padding mask says which keys are real, and a query at a
    padded position still has a defined output. flash-attn's causal mask is aligned bottom-right
    per sequence *after* unpadding, which equals our padded-coordinate rule exactly when the
    padding sits before the real keys (left padding); :func:`attention` checks that before
    calling this.

    Args:
        varlen_func: the kernel with ``flash_attn_varlen_func``'s signature; None = flash-attn's.
    """
    fn = varlen_func if varlen_func is not None else _flash_varlen_func()
    batch, heads, q_len, dim = q.shape
    k_len = k.shape[2]
    device = q.device

    # (B, H, L, D) -> (B*L, H, D): flash-attn packs tokens of all sequences along one axis.
    q_packed = q.transpose(1, 2).reshape(batch * q_len, heads, dim)
    k_tok = k.transpose(1, 2)
    v_tok = v.transpose(1, 2)
    if key_padding_mask is None:
        k_packed = k_tok.reshape(batch * k_len, heads, dim)
        v_packed = v_tok.reshape(batch * k_len, heads, dim)
        seqlens_k = torch.full((batch,), k_len, dtype=torch.int32, device=device)
        max_seqlen_k = k_len
    else:
        k_packed = k_tok[key_padding_mask]  # (total_keys, H, D)
        v_packed = v_tok[key_padding_mask]
        seqlens_k = key_padding_mask.sum(dim=1, dtype=torch.int32)
        max_seqlen_k = int(seqlens_k.max()) if batch > 0 else 0

    if max_seqlen_k == 0 or q_len == 0:
        return q.new_zeros(batch, heads, q_len, v.shape[-1])

    cu_seqlens_q = torch.arange(
        0, (batch + 1) * q_len, q_len, dtype=torch.int32, device=device
    )
    cu_seqlens_k = F.pad(seqlens_k.cumsum(0, dtype=torch.int32), (1, 0))
    out = fn(
        q_packed,
        k_packed,
        v_packed,
        cu_seqlens_q,
        cu_seqlens_k,
        q_len,
        max_seqlen_k,
        dropout_p=dropout_p,
        softmax_scale=1.0 / math.sqrt(dim),
        causal=causal,
    )
    out = out.view(batch, q_len, heads, v.shape[-1]).transpose(1, 2)

    # Rows that see no key: sequences with no real key, and (causal) the first
    # q_len - n queries. flash-attn documents zeros for them; we enforce it rather than rely
    # on how each kernel version treats an empty key segment.
    n_keys = seqlens_k.view(batch, 1, 1, 1)
    row_has_key = n_keys > 0
    if causal:
        i = torch.arange(q_len, device=device).view(1, 1, q_len, 1)
        row_has_key = row_has_key & (i >= q_len - n_keys)
    return out * row_has_key


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, key_padding_mask, dropout_p):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be (batch, heads, length, head_dim), got shape {tuple(t.shape)}."
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, heads and head_dim."
        )
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree on batch, heads and length."
        )
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError(
                "key_padding_mask must be a bool tensor (True = real key, False = padding); "
                "convert with `mask.bool()`."
            )
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"key_padding_mask must be (batch, k_len) = {(k.shape[0], k.shape[2])}, "
                f"got {tuple(key_padding_mask.shape)}."
            )
        if key_padding_mask.device != k.device:
            raise ValueError(
                f"key_padding_mask is on {key_padding_mask.device} but k is on {k.device}."
            )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}.")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
    return_weights: bool = False,
):
    """Scaled dot-product attention, ``softmax(q k^T / sqrt(head_dim)) v``, on a chosen backend.

    Args:
        q: queries ``(batch, heads, q_len, head_dim)``.
        k: keys ``(batch, heads, k_len, head_dim)``.
        v: values ``(batch, heads, k_len, head_dim)``.
        causal: query ``i`` sees key ``j`` iff ``j <= i + k_len - q_len`` (bottom-right aligned).
        key_padding_mask: ``(batch, k_len)`` bool, True = real key, False = padding.
        dropout_p: dropout on the attention probabilities. Applied whenever > 0: pass 0 at
            evaluation (:class:`MultiHeadAttention` does this from ``self.training``).
        backend: one of :data:`BACKENDS`; ``auto`` = fastest exact one available.
        return_weights: also return the softmax weights; always runs the reference path.

    Returns:
        ``out`` ``(batch, heads, q_len, head_dim)``, or ``(out, weights)`` with weights
        ``(batch, heads, q_len, k_len)`` (before dropout) when ``return_weights``. Rows that see
        no key are zeros in both.
    """
    _check_inputs(q, k, v, key_padding_mask, dropout_p)
    name = resolve_backend(backend, device=q.device, needs_weights=return_weights, dtype=q.dtype)

    if name == "flash" and causal and key_padding_mask is not None:
        if not _is_left_padded(key_padding_mask):
            if backend == "auto":
                name = "sdpa"
            else:
                raise ValueError(
                    "attention backend 'flash' with causal=True needs left padding (padding "
                    "before the real keys in every row of key_padding_mask); flash-attn aligns "
                    "its causal mask after unpadding. Use backend='auto' or 'sdpa'."
                )

    if name == "reference":
        mask = _visibility(q.shape[0], q.shape[2], k.shape[2], causal, key_padding_mask, q.device)
        out, weights = _reference_attention(q, k, v, mask, dropout_p)
        return (out, weights) if return_weights else out
    if name == "sdpa":
        return _sdpa_attention(q, k, v, causal, key_padding_mask, dropout_p)
    if name == "flex":
        return _flex_attention(q, k, v, causal, key_padding_mask, dropout_p)
    return _flash_attention(q, k, v, causal, key_padding_mask, dropout_p)


# --------------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------------


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
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}.")
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
            raise ValueError(
                f"k and v must be (batch, heads, new, head_dim) with equal leading dims, got "
                f"{tuple(k.shape)} and {tuple(v.shape)}."
            )
        new = k.shape[2]
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (
                k.shape[0],
                new,
            ):
                raise ValueError(
                    f"key_padding_mask for the new keys must be bool (batch, new) = "
                    f"{(k.shape[0], new)}, got {key_padding_mask.dtype} "
                    f"{tuple(key_padding_mask.shape)}."
                )
        if self._k is not None and (
            self._k.shape[0] != k.shape[0]
            or self._k.shape[1] != k.shape[1]
            or self._k.shape[3] != k.shape[3]
        ):
            raise ValueError(
                f"New keys {tuple(k.shape)} do not match the cached (batch, heads, _, head_dim) "
                f"{tuple(self._k.shape)}; call reset() or select() first."
            )

        end = self.length + new
        if self.max_len is not None and end > self.max_len:
            raise ValueError(
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
                raise ValueError(
                    f"A bool index must have shape (batch,) = ({self._k.shape[0]},), got "
                    f"{tuple(index.shape)}."
                )
            index = index.nonzero().flatten()
        self._k = self._k.index_select(0, index)
        self._v = self._v.index_select(0, index)
        self._pad = self._pad.index_select(0, index)


# --------------------------------------------------------------------------------------------
# Multi-head attention layer
# --------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query/key/value projections and an output projection.

    Submodule names (``query``, ``key``, ``value``, ``proj``), the head split (the last axis
    viewed as ``(n_head, n_embd // n_head)``) and the ``1/sqrt(head_dim)`` scale match the
    Neuroformer reference code so its weights load unchanged (fixture README, "Block").

    Args:
        n_embd: model width ``E``.
        n_head: number of heads ``H``; must divide ``E``.
        bias: bias in the four linear layers.
        attn_dropout: dropout on the attention probabilities (training only).
        resid_dropout: dropout on the output projection (training only).
        backend: one of :data:`BACKENDS`; can be changed later (``module.backend = "sdpa"`` or
            :func:`set_backend`).
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
            raise ValueError(f"n_head={n_head} must be >= 1 and divide n_embd={n_embd}.")
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

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        _check_backend_name(name)
        self._backend = name

    def extra_repr(self) -> str:
        return f"n_embd={self.n_embd}, n_head={self.n_head}, backend={self.backend!r}"

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, E)`` -> ``(batch, heads, tokens, head_dim)``."""
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.n_head, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x_q: torch.Tensor,
        x_kv: Optional[torch.Tensor],
        *,
        causal: bool = False,
        key_padding_mask: Optional[torch.Tensor] = None,
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
            cache: a :class:`KVCache`; ``static=False`` appends the new keys/values,
                ``static=True`` computes them once and reuses them.
            need_weights: also return the attention weights (runs the reference path).

        Returns:
            ``(out, weights)``: out ``(batch, q_len, E)``; weights ``(batch, heads, q_len, k_len)``
            or None.
        """
        if x_q.dim() != 3 or x_q.shape[-1] != self.n_embd:
            raise ValueError(f"x_q must be (batch, q_len, {self.n_embd}), got {tuple(x_q.shape)}.")
        batch, q_len, _ = x_q.shape
        q = self._heads(self.query(x_q))

        if cache is not None and cache.static and not cache.is_empty:
            k, v = cache.k, cache.v
            if key_padding_mask is None:
                key_padding_mask = cache.key_padding_mask
        else:
            if x_kv is None:
                raise ValueError(
                    "x_kv is None: pass the key/value tokens (x_kv=x_q for self-attention); "
                    "x_kv may be omitted only with an already filled static KVCache."
                )
            if x_kv.dim() != 3 or x_kv.shape[-1] != self.n_embd or x_kv.shape[0] != batch:
                raise ValueError(
                    f"x_kv must be (batch={batch}, kv_len, {self.n_embd}), got "
                    f"{tuple(x_kv.shape)}."
                )
            k = self._heads(self.key(x_kv))
            v = self._heads(self.value(x_kv))
            if cache is not None:
                k, v, key_padding_mask = cache.append(k, v, key_padding_mask)

        dropout_p = self.attn_dropout if self.training else 0.0
        result = attention(
            q,
            k,
            v,
            causal=causal,
            key_padding_mask=key_padding_mask,
            dropout_p=dropout_p,
            backend=self.backend,
            return_weights=need_weights,
        )
        out, weights = result if need_weights else (result, None)
        out = out.transpose(1, 2).reshape(batch, q_len, self.n_embd)
        return self.resid_drop(self.proj(out)), weights


def set_backend(module: nn.Module, name: str) -> int:
    """Set the attention backend of every :class:`MultiHeadAttention` inside ``module``.

    Args:
        module: a model (or a single layer).
        name: one of :data:`BACKENDS`.

    Returns:
        The number of attention layers changed.
    """
    _check_backend_name(name)
    count = 0
    for sub in module.modules():
        if isinstance(sub, MultiHeadAttention):
            sub.backend = name
            count += 1
    return count
