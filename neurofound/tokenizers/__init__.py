"""Tokenizers: registered by name, configured, saved and loaded with the model.

    from neurofound import tokenizers
    tok = tokenizers.get("spike")(n_neurons=100)
    tokenizers.available()      # ['spike', ...]

Register a new tokenizer with the decorator::

    @tokenizers.register("my_tokenizer")
    class MyTokenizer(tokenizers.Tokenizer): ...
"""

from __future__ import annotations

from typing import Callable, TypeVar

from neurofound.tokenizers.base import CONFIG_NAME, WEIGHTS_NAME, Tokenizer

_REGISTRY: dict[str, type[Tokenizer]] = {}

T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: register a ``Tokenizer`` subclass under ``name``.

    Args:
        name: registry key; also written to ``tokenizer_config.json`` so that saved folders find the
            class again.

    Raises:
        ValueError: ``name`` is empty or already taken.
        TypeError: the decorated object is not a ``Tokenizer`` subclass.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"tokenizer name must be a non-empty str, got {name!r}.")

    def decorator(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
            raise TypeError(
                f"@register({name!r}) decorates {cls!r}, which is not a subclass of "
                "neurofound.tokenizers.Tokenizer; derive it from Tokenizer first."
            )
        if name in _REGISTRY:
            raise ValueError(
                f"tokenizer name {name!r} is already registered to {_REGISTRY[name].__qualname__}; "
                "choose another name."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def get(name: str) -> type[Tokenizer]:
    """Return the tokenizer class registered as ``name``.

    Raises:
        KeyError: unknown name (the message lists ``available()``).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown tokenizer {name!r}; available tokenizers: {available()}") from None


def available() -> list[str]:
    """Sorted names of all registered tokenizers."""
    return sorted(_REGISTRY)


# Imported last: the modules below register themselves with the functions defined above.
from neurofound.tokenizers.spike import SpikeTokenizer  # noqa: E402

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "SpikeTokenizer",
    "Tokenizer",
    "available",
    "get",
    "register",
]
