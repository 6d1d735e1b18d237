"""neurofound model families (pure nn.Modules with the Hub mixin).

Import-light: names are resolved on first access, so `import neurofound.models` does not build torch modules.

    from neurofound.models import Neuroformer, NeuroformerConfig, neuroformer_small, neuroformer_base
    from neurofound.models.convert import convert
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Neuroformer": "neurofound.models.neuroformer",
    "NeuroformerConfig": "neurofound.models.neuroformer",
    "NeuroformerOutput": "neurofound.models.neuroformer",
    "neuroformer_small": "neurofound.models.neuroformer",
    "neuroformer_base": "neurofound.models.neuroformer",
    "NeurofoundHubMixin": "neurofound.models.hub",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'neurofound.models' has no attribute {name!r}; available: {__all__}")


def __dir__():
    return __all__
