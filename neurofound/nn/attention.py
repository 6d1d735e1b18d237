"""One scaled dot-product attention for every model, with interchangeable backends.

Every model in neurofound calls :func:`attention` (directly or through
:class:`~neurofound.nn.multihead.MultiHeadAttention`). The function has one exact semantics and
several backends that implement it; the backends are parity-tested against the plain
``reference`` path:

* ``flash``: flash-attn's varlen kernel (CUDA, fp16/bf16, only when ``flash_attn`` imports).
  Padding is unpadded into ``cu_seqlens`` so it costs no compute (see "flash and padding" below).
* ``sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention` (any device and dtype,
  float64 included, forward and backward).
* ``flex``: FlexAttention with a block mask built from the causal rule and the padding masks.
  Compiled once per shape and cached. torch 2.13 runs it forward-only on CPU.
* ``reference``: softmax(q k^T / sqrt(D)) v written out, the ground truth of the tests and the
  only path that can return the attention weights.
* ``auto``: ``flash`` when usable, otherwise ``sdpa`` (see :func:`resolve_backend`).

Semantics shared by all backends (docs/architecture.md):

* ``q`` is ``(batch, heads, q_len, head_dim)``; ``k`` and ``v`` are
  ``(batch, heads, k_len, head_dim)``.
* Query ``i`` of sequence ``b`` sees key ``j`` iff all of these hold:

  - ``causal`` is False or ``j <= i + k_len - q_len`` (aligned bottom-right, so a KV-cached
    decode step with ``q_len = 1`` sees every cached key);
  - ``key_padding_mask`` is None or ``key_padding_mask[b, j]`` (``(batch, k_len)`` bool,
    True = real key);
  - ``query_padding_mask`` is None or ``query_padding_mask[b, i]`` (``(batch, q_len)`` bool,
    True = real query).

* A query row that sees no key returns zeros, never NaN, and passes no gradient to q, k or v.
  So a padded query's output is exactly zero and it contributes no gradient.
* A query mask is never inferred from the key mask: without ``query_padding_mask`` every query
  is real, and a query at a padded position of a causal self-attention still sees the real keys
  before it (its output is defined, and nonzero). Callers that want padded queries zeroed, such
  as self-attention over a padded batch, pass the same mask as both masks.

flash and padding. flash-attn aligns its causal mask bottom-right *within each unpadded
sequence*. The flash backend therefore unpads in one of two ways, chosen per call:

* queries and keys: when ``query_padding_mask`` is given and either ``causal`` is False or the
  call is self-attention with one mask (``q_len == k_len`` and equal query and key masks). Both
  are packed with ``cu_seqlens_q`` / ``cu_seqlens_k`` and the output is padded back with zeros.
  With one mask for both, packing keeps the order of the real tokens, so per-sequence causal
  alignment equals the padded-coordinate rule above for any padding layout (right padding
  included).
* keys only: otherwise. Queries keep their padded length; this is exact when the call is not
  causal, has no key mask, or its keys are left padded (padding before the real keys in every
  row), as in cross-attention and KV-cached decoding. Padded queries are zeroed afterwards.

Any other causal call (right-padded keys without the matching query mask) runs ``sdpa`` under
``auto`` and is an error under an explicit ``flash``.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import OrderedDict
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from neurofound.errors import ConfigError, DataError, UnsupportedError

__all__ = [
    "BACKENDS",
    "attention",
    "resolve_backend",
    "available_backends",
    "set_backend",
]

BACKENDS = ("auto", "flash", "sdpa", "flex", "reference")

_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLEX_MIN_HEAD_DIM = 16  # the smallest head dim the compiled (Triton) FlexAttention kernel takes on CUDA

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


def check_backend_name(name: str) -> None:
    """Raise :class:`~neurofound.errors.ConfigError` unless ``name`` is one of :data:`BACKENDS`."""
    if name not in BACKENDS:
        raise ConfigError(
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

    This answers from the device and dtype alone; :func:`attention` may still run ``sdpa``
    instead of an ``auto``-chosen ``flash`` for a causal call whose padding flash cannot unpad
    exactly (see the module docstring).

    Args:
        name: one of :data:`BACKENDS`.
        device: device of the q/k/v tensors.
        needs_weights: True when the caller wants the softmax weights back.
        dtype: dtype of q/k/v; None means ``torch.get_default_dtype()``.

    Returns:
        One of ``"flash"``, ``"sdpa"``, ``"flex"``, ``"reference"``.
    """
    check_backend_name(name)
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
        raise ConfigError(
            f"attention backend 'flash' cannot run: {why}. Use backend='auto' or 'sdpa'."
        )
    if name == "flex" and _flex_module() is None:
        raise ConfigError(
            f"attention backend 'flex' needs torch >= 2.5 (FlexAttention); this is torch "
            f"{torch.__version__}. Use backend='sdpa'."
        )
    return name


class AttentionLayer(nn.Module):
    """Base of every layer that calls :func:`attention`: it carries the (validated) backend name.

    Subclass it for an attention layer whose projections differ from
    :class:`~neurofound.nn.multihead.MultiHeadAttention` (a fused ``qkv``, queries without a
    projection, rotary codes applied before the call) and pass ``backend=self.backend`` to
    :func:`attention`; :func:`set_backend` (the runtime setting ``attention.backend``) then reaches it.
    """

    def __init__(self, backend: str = "auto"):
        super().__init__()
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        check_backend_name(name)
        self._backend = name


def set_backend(module: nn.Module, name: str) -> int:
    """Set the attention backend of every :class:`AttentionLayer` (``MultiHeadAttention`` included)
    inside ``module``.

    Args:
        module: a model (or a single layer).
        name: one of :data:`BACKENDS`.

    Returns:
        The number of attention layers changed.
    """
    check_backend_name(name)
    count = 0
    for sub in module.modules():
        if isinstance(sub, AttentionLayer):
            sub.backend = name
            count += 1
    return count


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def _visibility(
    batch: int,
    q_len: int,
    k_len: int,
    causal: bool,
    key_padding_mask: Optional[torch.Tensor],
    query_padding_mask: Optional[torch.Tensor],
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
    if query_padding_mask is not None:
        pad = query_padding_mask.view(batch, 1, q_len, 1)
        mask = pad.expand(batch, 1, q_len, k_len) if mask is None else mask & pad
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


def _is_left_padded(key_padding_mask: torch.Tensor) -> bool:
    """True when every row is ``[False]*p + [True]*n`` (padding only before the real keys)."""
    if key_padding_mask.shape[1] < 2:
        return True
    return bool((key_padding_mask[:, 1:] | ~key_padding_mask[:, :-1]).all())


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


def _sdpa_attention(q, k, v, causal, key_padding_mask, query_padding_mask, dropout_p):
    batch, _, q_len, _ = q.shape
    k_len = k.shape[2]
    if (
        key_padding_mask is None
        and query_padding_mask is None
        and (not causal or q_len == k_len)
    ):
        # No explicit mask lets SDPA choose its fused kernels; for q_len == k_len torch's
        # top-left causal alignment equals our bottom-right one.
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=causal and q_len > 0
        )
    mask = _visibility(batch, q_len, k_len, causal, key_padding_mask, query_padding_mask, q.device)
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


def _tensor_identity(t: Optional[torch.Tensor]) -> Optional[tuple[int, int]]:
    return None if t is None else (id(t), t._version)


def _block_mask(batch, q_len, k_len, causal, key_padding_mask, query_padding_mask, device):
    """FlexAttention block mask for the causal rule and the padding masks, cached.

    A model passes the same padding tensors to every layer of one forward pass, so the cache is
    keyed on the tensors' identity and version counter (an in-place edit invalidates it); weak
    references guard against a recycled ``id``.
    """
    flex = _flex_module()
    masks = (key_padding_mask, query_padding_mask)
    key = (q_len, k_len, causal, str(device), *map(_tensor_identity, masks))
    hit = _BLOCK_MASKS.get(key)
    if hit is not None and all(r is None or r() is t for r, t in zip(hit[0], masks)):
        _BLOCK_MASKS.move_to_end(key)
        return hit[1]

    offset = k_len - q_len
    rules = []
    if causal:
        rules.append(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + offset)
    # Kernels evaluate mask_mod on whole blocks, so an index can run past the length in the last
    # block (those positions are dropped by the kernel's own length check); clamping keeps the
    # lookup into the padding tensors in bounds.
    if key_padding_mask is not None:
        kpm, k_last = key_padding_mask, k_len - 1
        rules.append(lambda b, h, q_idx, kv_idx: kpm[b, torch.clamp(kv_idx, max=k_last)])
    if query_padding_mask is not None:
        qpm, q_last = query_padding_mask, q_len - 1
        rules.append(lambda b, h, q_idx, kv_idx: qpm[b, torch.clamp(q_idx, max=q_last)])
    per_sequence = key_padding_mask is not None or query_padding_mask is not None
    block_mask = flex.create_block_mask(
        flex.and_masks(*rules), batch if per_sequence else None, None, q_len, k_len, device=device
    )

    refs = tuple(None if t is None else weakref.ref(t) for t in masks)
    _BLOCK_MASKS[key] = (refs, block_mask)
    if len(_BLOCK_MASKS) > _BLOCK_MASK_CACHE_SIZE:
        _BLOCK_MASKS.popitem(last=False)
    return block_mask


def _flex_padded_head_dim(fn, q, k, v, block_mask, min_dim: int):
    """FlexAttention with q, k, v zero-padded to `min_dim` head dims. Exact: q.k is unchanged, the
    extra value columns are zeros and are sliced off, and the scale stays 1/sqrt(original dim)."""
    dim, dim_v = q.shape[-1], v.shape[-1]
    q, k = F.pad(q, (0, max(0, min_dim - dim))), F.pad(k, (0, max(0, min_dim - dim)))
    v = F.pad(v, (0, max(0, min_dim - dim_v)))
    return fn(q, k, v, block_mask=block_mask, scale=1.0 / math.sqrt(dim))[..., :dim_v]


def _flex_attention(
    q, k, v, causal, key_padding_mask, query_padding_mask, dropout_p, *, compiled=True
):
    """FlexAttention path. ``compiled=False`` runs torch's unfused eager implementation (slow,
    materialises the scores; used to check the masks quickly without a compile)."""
    if dropout_p > 0:
        raise ConfigError(
            "attention backend 'flex' does not support dropout (FlexAttention has no dropout on "
            "the probabilities). Use backend='sdpa' or set the attention dropout to 0."
        )
    if (
        q.device.type == "cpu"
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        # Checked here, before a compile of several seconds, rather than left to torch.
        raise UnsupportedError(
            f"attention backend 'flex' has no backward pass on CPU (torch {torch.__version__}). "
            "Run under torch.no_grad() / torch.inference_mode(), or use backend='sdpa' for "
            "training on CPU."
        )
    if key_padding_mask is None and query_padding_mask is None and not causal:
        block_mask = None
    else:
        block_mask = _block_mask(
            q.shape[0], q.shape[2], k.shape[2], causal, key_padding_mask, query_padding_mask,
            q.device,
        )
    fn = _compiled_flex() if compiled else _flex_module().flex_attention
    if q.is_cuda and min(q.shape[-1], v.shape[-1]) < _FLEX_MIN_HEAD_DIM:
        # The Triton kernel needs head dims >= 16 (torch 2.11 on an H200: "NYI: embedding dimension
        # ... must be at least 16").
        return _flex_padded_head_dim(fn, q, k, v, block_mask, _FLEX_MIN_HEAD_DIM)
    # FlexAttention already returns zeros for rows whose keys are all masked (their
    # log-sum-exp is -inf), padded queries included, so no row fix-up is needed here.
    return fn(q, k, v, block_mask=block_mask)


def _flash_unpads_queries(q_len, k_len, causal, key_padding_mask, query_padding_mask) -> bool:
    """Whether the flash path packs queries too (module docstring, "flash and padding")."""
    if query_padding_mask is None:
        return False
    if not causal:
        return True
    return (
        q_len == k_len
        and key_padding_mask is not None
        and (
            query_padding_mask is key_padding_mask
            or torch.equal(query_padding_mask, key_padding_mask)
        )
    )


def _flash_is_exact(q_len, k_len, causal, key_padding_mask, query_padding_mask) -> bool:
    """Whether flash-attn's per-sequence causal alignment gives our semantics for this call."""
    return (
        not causal
        or key_padding_mask is None
        or _flash_unpads_queries(q_len, k_len, causal, key_padding_mask, query_padding_mask)
        or _is_left_padded(key_padding_mask)
    )


def _unpad(x: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack ``(batch, length, heads, dim)`` tokens along one axis, keeping the real ones.

    Returns:
        ``(packed, seqlens)``: ``(total, heads, dim)`` and ``(batch,)`` int32 real lengths.
    """
    batch, length = x.shape[:2]
    if mask is None:
        seqlens = torch.full((batch,), length, dtype=torch.int32, device=x.device)
        return x.reshape(batch * length, *x.shape[2:]), seqlens
    return x[mask], mask.sum(dim=1, dtype=torch.int32)


def _cu_seqlens(seqlens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(batch,)`` lengths -> ``(batch + 1,)`` int32 offsets and the longest length."""
    longest = int(seqlens.max()) if seqlens.numel() else 0
    return F.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0)), longest


def _flash_attention(
    q, k, v, causal, key_padding_mask, query_padding_mask, dropout_p, *, varlen_func=None
):
    """flash-attn varlen path: unpad into ``cu_seqlens``, run, pad the output back.

    Keys are always unpadded with the key padding mask; queries too when
    :func:`_flash_unpads_queries` says so (module docstring, "flash and padding").

    Args:
        varlen_func: the kernel with ``flash_attn_varlen_func``'s signature; None = flash-attn's.
    """
    batch, heads, q_len, dim = q.shape
    k_len = k.shape[2]
    if not _flash_is_exact(q_len, k_len, causal, key_padding_mask, query_padding_mask):
        raise ConfigError(
            "attention backend 'flash' with causal=True and right-padded keys needs "
            "query_padding_mask equal to key_padding_mask (self-attention) or left padding: "
            "flash-attn aligns its causal mask after unpadding. Use backend='auto' or 'sdpa'."
        )
    fn = varlen_func if varlen_func is not None else _flash_varlen_func()
    unpad_queries = _flash_unpads_queries(q_len, k_len, causal, key_padding_mask, query_padding_mask)

    # flash-attn packs the tokens of all sequences along one axis: (total, heads, head_dim).
    q_tok, k_tok, v_tok = (rearrange(t, "b h l d -> b l h d") for t in (q, k, v))
    q_packed, seqlens_q = _unpad(q_tok, query_padding_mask if unpad_queries else None)
    k_packed, seqlens_k = _unpad(k_tok, key_padding_mask)
    v_packed, _ = _unpad(v_tok, key_padding_mask)
    cu_seqlens_q, max_seqlen_q = _cu_seqlens(seqlens_q)
    cu_seqlens_k, max_seqlen_k = _cu_seqlens(seqlens_k)
    if max_seqlen_q == 0 or max_seqlen_k == 0:
        return q.new_zeros(batch, heads, q_len, v.shape[-1])

    out = fn(
        q_packed,
        k_packed,
        v_packed,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        dropout_p=dropout_p,
        softmax_scale=1.0 / math.sqrt(dim),
        causal=causal,
    )
    if unpad_queries:
        padded = out.new_zeros(batch, q_len, heads, v.shape[-1])
        out = padded.index_put((query_padding_mask,), out)
    else:
        out = out.view(batch, q_len, heads, v.shape[-1])
    out = rearrange(out, "b l h d -> b h l d")

    # Rows that see no key: sequences with no real key, padded queries, and (causal, keys
    # unpadded only) the first q_len - n queries. flash-attn documents zeros for them; we
    # enforce it rather than rely on how each kernel version treats an empty key segment.
    # With queries unpadded too, causal self-attention has n real queries and n real keys, so
    # every real query sees at least itself.
    n_keys = seqlens_k.view(batch, 1, 1, 1)
    row_has_key = n_keys > 0
    if not unpad_queries:
        if causal:
            i = torch.arange(q_len, device=q.device).view(1, 1, q_len, 1)
            row_has_key = row_has_key & (i >= q_len - n_keys)
        if query_padding_mask is not None:
            row_has_key = row_has_key & query_padding_mask.view(batch, 1, q_len, 1)
    return out * row_has_key


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def _check_padding_mask(name, mask, batch, length, length_name, device):
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor (True = real token, False = padding); "
            "convert with `mask.bool()`."
        )
    if tuple(mask.shape) != (batch, length):
        raise DataError(
            f"{name} must be (batch, {length_name}) = {(batch, length)}, got {tuple(mask.shape)}."
        )
    if mask.device != device:
        raise DataError(f"{name} is on {mask.device} but the attention inputs are on {device}.")


def _check_inputs(q, k, v, key_padding_mask, query_padding_mask, dropout_p):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() != 4:
            raise DataError(
                f"{name} must be (batch, heads, length, head_dim), got shape {tuple(t.shape)}."
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise DataError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, heads and head_dim."
        )
    if k.shape[:3] != v.shape[:3]:
        raise DataError(
            f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree on batch, heads and length."
        )
    if key_padding_mask is not None:
        _check_padding_mask(
            "key_padding_mask", key_padding_mask, k.shape[0], k.shape[2], "k_len", k.device
        )
    if query_padding_mask is not None:
        _check_padding_mask(
            "query_padding_mask", query_padding_mask, q.shape[0], q.shape[2], "q_len", q.device
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ConfigError(f"dropout_p must be in [0, 1), got {dropout_p}.")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Optional[torch.Tensor] = None,
    query_padding_mask: Optional[torch.Tensor] = None,
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
        query_padding_mask: ``(batch, q_len)`` bool, True = real query, False = padding. A padded
            query sees no key: its output is zero and it contributes no gradient. None = every
            query is real (never inferred from ``key_padding_mask``).
        dropout_p: dropout on the attention probabilities. Applied whenever > 0: pass 0 at
            evaluation (:class:`~neurofound.nn.multihead.MultiHeadAttention` does this from
            ``self.training``).
        backend: one of :data:`BACKENDS`; ``auto`` = fastest exact one available.
        return_weights: also return the softmax weights; always runs the reference path.

    Returns:
        ``out`` ``(batch, heads, q_len, head_dim)``, or ``(out, weights)`` with weights
        ``(batch, heads, q_len, k_len)`` (before dropout) when ``return_weights``. Rows that see
        no key (padded queries included) are zeros in both.
    """
    _check_inputs(q, k, v, key_padding_mask, query_padding_mask, dropout_p)
    name = resolve_backend(backend, device=q.device, needs_weights=return_weights, dtype=q.dtype)
    masks = (key_padding_mask, query_padding_mask)

    if name == "flash" and backend == "auto":
        if not _flash_is_exact(q.shape[2], k.shape[2], causal, *masks):
            name = "sdpa"

    if name == "reference":
        mask = _visibility(q.shape[0], q.shape[2], k.shape[2], causal, *masks, q.device)
        out, weights = _reference_attention(q, k, v, mask, dropout_p)
        return (out, weights) if return_weights else out
    if name == "sdpa":
        return _sdpa_attention(q, k, v, causal, *masks, dropout_p)
    if name == "flex":
        return _flex_attention(q, k, v, causal, *masks, dropout_p)
    return _flash_attention(q, k, v, causal, *masks, dropout_p)
