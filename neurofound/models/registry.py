"""Model families: one registration each, and loading a model from whatever a user points at.

A family registers its model class, size builders, recipe, tokenizers and converter in one place,
a decorator on its model class::

    @register_family("neuroformer", builders=("neuroformer_small", "neuroformer_base"),
                     recipe="neurofound.recipes.neuroformer:NeuroformerRecipe",
                     tokenizers=("spike",), converter="neurofound.models.neuroformer_convert:convert")
    class Neuroformer(NeurofoundHubMixin, nn.Module): ...

The recipe and converter are named by `"module:attribute"` strings and resolved only when asked
for, so a model never imports a recipe. Families are found by importing the modules of
`neurofound.models` on the first lookup, the modules a config lists under `plugins`
(`import_plugins`) $NEUROFOUND_PLUGINS and the `neurofound.plugins` entry points.

`load_pretrained(spec)` accepts a run folder (uses its `model/`), a model folder written by
`save_pretrained`, a Lightning checkpoint (`.ckpt`, read with `torch.load(weights_only=True)`),
or a Hugging Face Hub id `owner/name`.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from neurofound.errors import CheckpointError, ConfigError, MissingFileError, UnknownNameError

PLUGIN_GROUP = "neurofound.plugins"


@dataclass
class Family:
    """Everything neurofound knows about one model family."""

    name: str
    model_class: type
    builders: tuple[str, ...] = ()
    recipe: str | type | None = None
    tokenizers: tuple[str, ...] = ()
    converter: str | Callable | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def builder(self, name: str) -> Callable:
        """The size builder `name` (a function of the model's module)."""
        if name not in self.builders:
            raise UnknownNameError(f"family {self.name!r} has no size builder {name!r}; sizes: {list(self.builders)}")
        return getattr(sys.modules[self.model_class.__module__], name)

    def recipe_class(self) -> type:
        if self.recipe is None:
            raise UnknownNameError(f"family {self.name!r} registers no recipe, so it cannot be trained from the "
                                   f"command line; use it from Python")
        return resolve(self.recipe)

    def converter_fn(self) -> Callable:
        if self.converter is None:
            raise UnknownNameError(f"family {self.name!r} has no converter for the original authors' weights; "
                                   f"families with one: {sorted(n for n, f in families().items() if f.converter)}")
        return resolve(self.converter)


_FAMILIES: dict[str, Family] = {}
_DISCOVERED = False


def register_family(name: str, *, builders: Iterable[str] = (), recipe: str | type | None = None,
                    tokenizers: Iterable[str] = (), converter: str | Callable | None = None, **extra):
    """Class decorator: register a model class as family `name` (also sets `cls.model_type = name`).

    Re-registering the same class (a module imported twice) is allowed; another class under a
    taken name is an error.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"family name must be a non-empty str, got {name!r}")

    def decorator(cls: type) -> type:
        old = _FAMILIES.get(name)
        if old is not None and old.model_class.__qualname__ != cls.__qualname__:
            raise ConfigError(f"family {name!r} is already registered to {old.model_class.__qualname__}")
        cls.model_type = name
        _FAMILIES[name] = Family(name, cls, tuple(builders), recipe, tuple(tokenizers), converter, dict(extra))
        return cls

    return decorator


def resolve(spec: str | Any) -> Any:
    """`"package.module:attribute"` -> the attribute (other objects are returned as they are)."""
    if not isinstance(spec, str):
        return spec
    module, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigError(f"{spec!r} is not of the form 'package.module:attribute'")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise UnknownNameError(f"cannot import {module!r} (named by {spec!r}): {err}") from None
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


PLUGINS_ENV = "NEUROFOUND_PLUGINS"


def import_plugins(modules: Iterable[str] = ()) -> None:
    """Import `modules`, those listed (comma-separated) in $NEUROFOUND_PLUGINS and the `neurofound.plugins`
    entry points, so that the families and tokenizers they define register themselves.

    A config names its plugins under `plugins`; commands without a config (`export`, `convert`) find
    them through the environment variable or an installed package's entry point.
    """
    env = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for module in [*(modules or ()), *env]:
        try:
            importlib.import_module(str(module))
        except ModuleNotFoundError as err:
            raise ConfigError(f"plugin module {module!r} cannot be imported ({err}); check the `plugins` key "
                              f"and that the module is on PYTHONPATH") from None
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import neurofound.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    import_plugins()


def families() -> dict[str, Family]:
    """Every registered family by name (discovering the built-in ones first)."""
    _discover()
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        _discover()
    if name not in _FAMILIES:
        raise UnknownNameError(f"unknown model family {name!r}; known families: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def family_class(name: str) -> type:
    return get_family(name).model_class


def builders() -> dict[str, str]:
    """Size builder name -> family."""
    return {b: fam.name for fam in families().values() for b in fam.builders}


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _model_type(raw: dict, source: str) -> str:
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if not model_type:
        raise CheckpointError(f"{source} has no 'model_type', so its family is unknown; it was not written by "
                              f"neurofound (use `neurofound convert` for the original authors' weights)")
    return str(model_type)


def load_pretrained(spec: str | Path):
    """Load a model from a run folder, a model folder, a `.ckpt` file or a Hub id `owner/name`."""
    path = Path(str(spec)).expanduser()
    if path.is_file():
        from neurofound.models.hub import load_checkpoint

        return load_checkpoint(path)
    if path.is_dir():
        if (path / "model" / "config.json").is_file():
            path = path / "model"
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise MissingFileError(f"{path} is neither a run folder (with model/) nor a model folder (with "
                                   f"config.json); pass a run folder, a model folder, a .ckpt file or a Hub id")
        try:
            raw = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{cfg_file} is not valid JSON ({err}); re-save or re-download the model") from None
        return family_class(_model_type(raw, str(cfg_file))).from_pretrained(path)
    if str(spec).count("/") == 1 and not str(spec).startswith((".", "/", "~")):
        from huggingface_hub import hf_hub_download

        try:
            cfg_file = hf_hub_download(str(spec), "config.json")
        except Exception as err:  # offline, unknown repo, no permission: all the user's to fix
            raise MissingFileError(f"cannot fetch {spec!r} from the Hugging Face Hub ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0][:200]}); check the id, the network, or pass a "
                                   f"local folder") from None
        raw = json.loads(Path(cfg_file).read_text())
        return family_class(_model_type(raw, f"hub:{spec}")).from_pretrained(str(spec))
    raise MissingFileError(f"no model at {spec!r}: not a file, not a folder and not a Hub id (owner/name)")
