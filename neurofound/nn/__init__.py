"""Building blocks shared by the model families: attention, the KV cache, position codes.

    from neurofound.nn import MultiHeadAttention, KVCache, grid_sinusoid
    from neurofound.nn.attention import attention

The function ``attention`` is not re-exported here: it would shadow the submodule
``neurofound.nn.attention`` (``from neurofound.nn import attention`` must stay the module).
"""

from neurofound.nn.attention import BACKENDS, available_backends, resolve_backend, set_backend
from neurofound.nn.kv_cache import KVCache
from neurofound.nn.multihead import MultiHeadAttention
from neurofound.nn.positions import grid_positions, grid_sinusoid, sinusoid

__all__ = [
    "BACKENDS",
    "available_backends",
    "resolve_backend",
    "set_backend",
    "KVCache",
    "MultiHeadAttention",
    "grid_positions",
    "grid_sinusoid",
    "sinusoid",
]
