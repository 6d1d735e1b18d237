"""neurofound model families (pure nn.Modules with the Hub mixin).

Import-light: names are resolved on first access from the family registry, so `import
neurofound.models` builds nothing, and a new family needs no edit here:

    from neurofound.models import Neuroformer, NeuroformerConfig, neuroformer_small   # any family's names
    from neurofound.models import load_pretrained, register_family
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "NeurofoundHubMixin": "neurofound.models.hub",
    "load_pretrained": "neurofound.models.registry",
    "register_family": "neurofound.models.registry",
    "families": "neurofound.models.registry",
    "convert": "neurofound.models.convert",
}


def _family_names() -> dict[str, object]:
    """Model classes, their config classes and size builders of every registered family, by name."""
    from neurofound.models.registry import families

    out: dict[str, object] = {}
    for fam in families().values():
        cls = fam.model_class
        out[cls.__name__] = cls
        if getattr(cls, "config_class", None) is not None:
            out[cls.config_class.__name__] = cls.config_class
        for b in fam.builders:
            out[b] = fam.builder(b)
    return out


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if not name.startswith("_"):
        found = _family_names()
        if name in found:
            return found[name]
    raise AttributeError(f"module 'neurofound.models' has no attribute {name!r}")


def __dir__():
    return sorted([*_EXPORTS, *_family_names()])
