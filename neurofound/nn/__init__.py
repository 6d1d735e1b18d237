"""Building blocks shared by the model families: attention, the KV cache, position codes.

    from neurofound.nn import MultiHeadAttention, KVCache, grid_sinusoid, apply_rope
    from neurofound.nn.attention import attention

The function ``attention`` is not re-exported here: it would shadow the submodule
``neurofound.nn.attention`` (``from neurofound.nn import attention`` must stay the module).
"""

from neurofound.nn.attention import BACKENDS, AttentionLayer, available_backends, resolve_backend, set_backend
from neurofound.nn.kv_cache import KVCache
from neurofound.nn.multihead import MultiHeadAttention
from neurofound.nn.positions import apply_rope, grid_positions, grid_sinusoid, rope_frequencies, sinusoid

__all__ = [
    "BACKENDS",
    "AttentionLayer",
    "available_backends",
    "resolve_backend",
    "set_backend",
    "KVCache",
    "MultiHeadAttention",
    "apply_rope",
    "grid_positions",
    "grid_sinusoid",
    "rope_frequencies",
    "sinusoid",
]
