"""On-disk cache of generated records, keyed by a hash of everything that determines them.

Generated data (simulations) is written once under `$NEUROFOUND_CACHE` (default
`~/.cache/neurofound`) by the record's own `save` (HF `datasets`/Arrow tables for
`SpikeRecording`) and loaded on every later run. Any record type with `save(directory)` and a
classmethod `load(directory)` can be cached.

The key is the SHA-256 of the canonical JSON of:

* the generator's name (`kind`) and its code version (bump it whenever the output for a given
  config changes; a simulator also folds in the version of the library it runs on);
* the FULL generating config: every parameter, defaults included, and the seed;
* the record type and its on-disk `format_version`.

Canonical means that equal values give equal keys: keys are sorted, tuples and numpy arrays are
lists, numpy scalars are Python numbers and integral floats are integers (`duration=300` and
`duration=300.0` are one simulation).

An entry is complete once its `cache_key.json` exists: the record is saved to a temporary folder,
the key file written into it, and the folder renamed into place, so a crashed run never leaves
a half-written entry that a later run would load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import numpy as np

from neurofound.data.records import SpikeRecording
from neurofound.errors import ConfigError

ENV_VAR = "NEUROFOUND_CACHE"
KEY_FILE = "cache_key.json"


class CachedRecord(Protocol):
    """What the cache needs from a record type."""

    def save(self, directory: str | os.PathLike) -> None: ...

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CachedRecord": ...


R = TypeVar("R", bound=CachedRecord)


def cache_root() -> Path:
    """Root cache folder: `$NEUROFOUND_CACHE`, else `~/.cache/neurofound`."""
    root = os.environ.get(ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "neurofound"


def _canonical(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _canonical(value.tolist(), where)
    if isinstance(value, np.generic):
        return _canonical(value.item(), where)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else value
    raise ConfigError(
        f"config value {where} = {value!r} ({type(value).__name__}) cannot be part of a cache key; "
        "use numbers, strings, booleans, lists and dicts"
    )


def _record_id(record_type: type) -> dict[str, Any]:
    return {
        "type": f"{record_type.__module__}.{record_type.__qualname__}",
        "format_version": getattr(record_type, "format_version", None),
    }


def cache_key(
    kind: str, config: dict[str, Any], code_version: str, record_type: type = SpikeRecording
) -> dict[str, Any]:
    """The canonical content the cache key is the hash of (also written to the entry's `cache_key.json`)."""
    return {
        "kind": str(kind),
        "code_version": str(code_version),
        "config": _canonical(config, "config"),
        "record": _record_id(record_type),
    }


def config_hash(
    config: dict[str, Any], code_version: str, *, kind: str = "", record_type: type = SpikeRecording
) -> str:
    """Hex SHA-256 (first 16 characters) of the canonical JSON of `cache_key(...)`."""
    payload = json.dumps(
        cache_key(kind, config, code_version, record_type), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(
    kind: str, config: dict[str, Any], code_version: str, record_type: type = SpikeRecording
) -> Path:
    """Folder of the cache entry for generator `kind` and `config`."""
    digest = config_hash(config, code_version, kind=kind, record_type=record_type)
    return cache_root() / kind / f"{kind}-{digest}"


def cached(
    kind: str,
    config: dict[str, Any],
    code_version: str,
    build: Callable[[], R],
    *,
    record_type: type[R],
    use_cache: bool = True,
) -> R:
    """Return the cached record for `config`, building and saving it on a miss.

    Args:
        kind: generator name, used as the sub-folder (e.g. "lif").
        config: the full generating config (every parameter, the seed).
        code_version: the generator's version (see the module docstring).
        build: zero-argument function that generates the record.
        record_type: the record class (`save(directory)`, classmethod `load(directory)`).
        use_cache: False skips both reading and writing the cache.
    """
    if not use_cache:
        return build()
    path = cache_path(kind, config, code_version, record_type)
    if (path / KEY_FILE).exists():
        return record_type.load(path)
    record = build()
    if not isinstance(record, record_type):
        raise TypeError(f"build() returned a {type(record).__name__}, expected {record_type.__name__}")
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    record.save(tmp)
    (tmp / KEY_FILE).write_text(json.dumps(cache_key(kind, config, code_version, record_type), indent=1))
    if path.exists() and not (path / KEY_FILE).exists():  # an incomplete entry left by a crash
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.replace(tmp, path)
    except OSError:  # another process completed the same entry meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / KEY_FILE).exists():
            raise
    return record
