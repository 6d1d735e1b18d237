"""Tokenizers: registered by name, configured, saved and loaded with the model.

    from neurofound import tokenizers
    tok = tokenizers.get("spike")(n_neurons=100)
    tokenizers.available()      # ['spike', ...]
    tok = tokenizers.load_tokenizer("runs/stage1")   # a tokenizer, model or run folder, .ckpt, Hub id

Register a new tokenizer with the decorator::

    @tokenizers.register("my_tokenizer")
    class MyTokenizer(tokenizers.Tokenizer): ...

Importing this package imports no tokenizer module: `get(name)` imports
`neurofound.tokenizers.<name>` when that name is asked for, and only then scans the other
tokenizer modules and the `neurofound.plugins` entry points.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, TypeVar

from neurofound.errors import ConfigError, MissingFileError, UnknownNameError
from neurofound.tokenizers.base import CONFIG_NAME, WEIGHTS_NAME, Tokenizer

_REGISTRY: dict[str, type[Tokenizer]] = {}

T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: register a ``Tokenizer`` subclass under ``name``.

    Args:
        name: registry key; also written to ``tokenizer_config.json`` so that saved folders find the
            class again.

    Raises:
        ConfigError: ``name`` is empty or already taken by another class.
        TypeError: the decorated object is not a ``Tokenizer`` subclass.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"tokenizer name must be a non-empty str, got {name!r}.")

    def decorator(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
            raise TypeError(
                f"@register({name!r}) decorates {cls!r}, which is not a subclass of "
                "neurofound.tokenizers.Tokenizer; derive it from Tokenizer first."
            )
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(
                f"tokenizer name {name!r} is already registered to {old.__qualname__}; choose another name."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if info.name != "base")


def _scan() -> None:
    for module in _module_names():
        importlib.import_module(f"{__name__}.{module}")
    from neurofound.models.registry import import_plugins

    import_plugins()


def get(name: str) -> type[Tokenizer]:
    """Return the tokenizer class registered as ``name`` (importing its module on first use).

    Raises:
        UnknownNameError: unknown name (the message lists ``available()``).
    """
    if name not in _REGISTRY and name in _module_names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in _REGISTRY:
        _scan()
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown tokenizer {name!r}; available tokenizers: {available()}")
    return _REGISTRY[name]


def available() -> list[str]:
    """Sorted names of all tokenizers (importing the tokenizer modules to find them)."""
    _scan()
    return sorted(_REGISTRY)


def _tokenizer_dir(path: Path) -> Path | None:
    for candidate in (path, path / "tokenizer", path / "model", path / "model" / "tokenizer"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """A trained tokenizer from a tokenizer folder, a model or run folder, a `.ckpt` or a Hub id.

    A model folder's tokenizer is its `tokenizer/` subfolder; a run folder's is `model/` (a stage-1
    tokenizer run) or `model/tokenizer/`. A `.ckpt` or a Hub id loads the model and returns its
    tokenizer, with the weights it was saved with.
    """
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        found = _tokenizer_dir(path)
        if found is not None:
            return Tokenizer.from_pretrained(found)
        raise MissingFileError(f"no tokenizer in {path}: none of ., tokenizer/, model/ or model/tokenizer/ holds "
                               f"{CONFIG_NAME}; pass a stage-1 run folder, a model folder or a tokenizer folder")
    from neurofound.models.registry import load_pretrained

    model = load_pretrained(spec)
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise MissingFileError(f"the model at {spec!r} has no tokenizer")
    return tok


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "Tokenizer",
    "available",
    "get",
    "load_tokenizer",
    "register",
]
