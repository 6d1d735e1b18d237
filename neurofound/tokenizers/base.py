"""Tokenizer base class: a named, configured object that saves and loads itself.

A tokenizer turns recordings into the integer (or learned) tokens a model consumes. Every tokenizer
is described completely by a JSON-serialisable ``config`` (the keyword arguments of its
constructor), so that ``from_pretrained(save_pretrained(tok))`` rebuilds an identical object.

On disk a tokenizer is a folder::

    tokenizer_config.json    {"tokenizer": <registered name>, "neurofound_version": ..., "config": {...}}
    tokenizer.safetensors    only for learned tokenizers (weights, codebooks)

Rule-based tokenizers (the spike tokenizer) are plain Python objects. A learned tokenizer (for
example BrainOmni's residual-VQ BrainTokenizer, with an encoder and codebooks) subclasses BOTH
``Tokenizer`` and ``torch.nn.Module``::

    @register("brain_rvq")
    class BrainTokenizer(Tokenizer, nn.Module):
        def __init__(self, n_codes=512, dim=64):
            nn.Module.__init__(self)          # first: nn.Module guards attribute assignment
            self._set_config(n_codes=n_codes, dim=dim)
            self.codebook = nn.Parameter(torch.randn(n_codes, dim))

``save_pretrained`` then also writes its ``state_dict()`` to ``tokenizer.safetensors`` and
``from_pretrained`` loads it back with strict key checking.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from neurofound.errors import CheckpointError, ConfigError, MissingFileError

CONFIG_NAME = "tokenizer_config.json"
WEIGHTS_NAME = "tokenizer.safetensors"


def _check_json_value(key: str, value: Any) -> None:
    """Raise if ``value`` would not survive a JSON round trip unchanged."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"config value {key}={value!r} is not finite; JSON cannot store it exactly.")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_value(f"{key}[{i}]", item)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"config key {key}.{k!r} must be a str to be saved as JSON.")
            _check_json_value(f"{key}.{k}", item)
        return
    raise TypeError(
        f"config value {key}={value!r} has type {type(value).__name__}, which does not round-trip through "
        "JSON; convert it to a plain int/float/str/bool/list/dict (e.g. float(x), list(arr)) first."
    )


def _is_module(obj: Any) -> bool:
    """True when ``obj`` is a torch ``nn.Module`` (imported lazily: rule-based tokenizers need no torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of the package
        return False
    return isinstance(obj, torch.nn.Module)


class Tokenizer:
    """Base class of every neurofound tokenizer.

    Subclasses call ``self._set_config(**kwargs)`` in ``__init__`` with exactly the constructor's
    keyword arguments, and are registered with ``@neurofound.tokenizers.register(name)``, which sets
    the class attribute ``name``.

    Attributes:
        name: registry name, written as the ``"tokenizer"`` field of ``tokenizer_config.json``.
        config: JSON-serialisable constructor arguments (a copy; round-trips exactly).
    """

    name: ClassVar[str | None] = None

    # --- configuration --------------------------------------------------------------------------
    def _set_config(self, **config: Any) -> None:
        """Record the constructor arguments (validated to round-trip through JSON)."""
        for key, value in config.items():
            _check_json_value(key, value)
        # object.__setattr__ so that nn.Module subclasses do not route the dict through their hooks.
        object.__setattr__(self, "_config", copy.deepcopy(config))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments as a fresh dict (mutating it does not change the tokenizer)."""
        if "_config" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ did not call self._set_config(...); every tokenizer must "
                "record its constructor arguments so that it can be saved."
            )
        return copy.deepcopy(self.__dict__["_config"])

    @classmethod
    def config_keys(cls) -> list[str]:
        """Names of the keyword arguments the constructor accepts (the allowed config keys)."""
        params = inspect.signature(cls.__init__).parameters
        return [p for p, v in params.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    # --- persistence ----------------------------------------------------------------------------
    def _has_state(self) -> bool:
        return _is_module(self) and len(self.state_dict()) > 0  # type: ignore[attr-defined]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``tokenizer_config.json`` (and ``tokenizer.safetensors`` for learned tokenizers).

        Args:
            directory: target folder; created (with parents) if missing. Existing files of the same
                names are overwritten.

        Returns:
            The folder as a ``Path``.
        """
        if self.name is None:
            raise ConfigError(
                f"{type(self).__name__} is not registered, so it cannot be saved by name; decorate the class "
                "with @neurofound.tokenizers.register('<name>')."
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from neurofound import __version__

        payload = {"tokenizer": self.name, "neurofound_version": __version__, "config": self.config}
        from neurofound.io import atomic_write_text

        atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2, sort_keys=False) + "\n")
        if self._has_state():
            from neurofound.weights import atomic_save_state_dict

            atomic_save_state_dict(self.state_dict(), directory / WEIGHTS_NAME)  # type: ignore[attr-defined]
        return directory

    @classmethod
    def from_config(cls, config: dict[str, Any], *, source: str = "the config") -> "Tokenizer":
        """Build from a saved config dict; unknown keys are an error (a typo never falls back to a default).

        A learned tokenizer built this way has freshly initialised weights: load them afterwards
        (`from_pretrained` does, and a model checkpoint restores them with the model's state dict).
        """
        allowed = set(cls.config_keys())
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ConfigError(
                f"{source}: unknown config key(s) {unknown} for tokenizer {cls.name!r}; allowed keys are "
                f"{sorted(allowed)}. Remove or rename them."
            )
        return cls(**config)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Tokenizer":
        """Rebuild a tokenizer saved by ``save_pretrained``.

        Called on the base class (``Tokenizer.from_pretrained(d)``) it looks the class up in the
        registry by the saved name; called on a subclass it checks that the saved name matches.

        Args:
            directory: folder holding ``tokenizer_config.json``.

        Returns:
            The tokenizer, with weights loaded for learned tokenizers.

        Raises:
            FileNotFoundError: the folder or its ``tokenizer_config.json`` (or the weights of a learned
                tokenizer) is missing.
            ValueError: the config names a different tokenizer, or holds keys the constructor does not
                accept (strict, so that a typo never silently falls back to a default).
        """
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise MissingFileError(
                f"no {CONFIG_NAME} in {directory} (folder exists: {directory.is_dir()}); pass the folder written "
                "by tokenizer.save_pretrained(...), e.g. <model dir>/tokenizer."
            )
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path} is not valid JSON ({err}); re-save the tokenizer with save_pretrained.") from None
        if not isinstance(payload, dict) or "tokenizer" not in payload or "config" not in payload:
            raise CheckpointError(
                f"{path} must be a JSON object with the fields 'tokenizer' (registered name) and 'config'; "
                f"found {sorted(payload) if isinstance(payload, dict) else type(payload).__name__}."
            )
        name, config = payload["tokenizer"], payload["config"]

        from neurofound.tokenizers import get

        target = get(name) if cls is Tokenizer else cls
        if cls is not Tokenizer and cls.name != name:
            raise CheckpointError(
                f"{path} holds a {name!r} tokenizer, not {cls.name!r}; load it with "
                f"neurofound.tokenizers.get({name!r}).from_pretrained(...) or Tokenizer.from_pretrained(...)."
            )
        tokenizer = target.from_config(config, source=str(path))
        if tokenizer._has_state():
            weights = directory / WEIGHTS_NAME
            if not weights.is_file():
                    raise MissingFileError(
                    f"{name!r} is a learned tokenizer but {weights} is missing; copy the whole folder written by "
                    "save_pretrained (config AND weights)."
                )
            from neurofound.weights import load_state_dict_strict, read_safetensors

            load_state_dict_strict(tokenizer, read_safetensors(weights), source=str(weights))
        return tokenizer
