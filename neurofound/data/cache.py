"""On-disk cache of generated recordings, keyed by a hash of the full generating config.

Generated data (simulations) is written once as HF `datasets`/Arrow tables under
`$NEUROFOUND_CACHE` (default `~/.cache/neurofound`) and loaded on every later run. The key is the
SHA-256 of the canonical JSON of the config together with the generator's code version, so a
change of any parameter, of the seed, or of the simulator code gives a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from neurofound.data.records import SpikeRecording

ENV_VAR = "NEUROFOUND_CACHE"


def cache_root() -> Path:
    """Root cache folder: `$NEUROFOUND_CACHE`, else `~/.cache/neurofound`."""
    root = os.environ.get(ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "neurofound"


def config_hash(config: dict[str, Any], code_version: str) -> str:
    """Hex SHA-256 of the canonical JSON of `config` plus `code_version` (first 16 characters)."""
    try:
        payload = json.dumps(
            {"config": config, "code_version": code_version}, sort_keys=True, separators=(",", ":")
        )
    except TypeError as err:
        raise TypeError(f"config must be JSON-serialisable to be hashed for the cache: {err}") from err
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(kind: str, config: dict[str, Any], code_version: str) -> Path:
    """Folder of the cache entry for generator `kind` and `config`."""
    return cache_root() / kind / f"{kind}-{config_hash(config, code_version)}"


def cached_recording(
    kind: str,
    config: dict[str, Any],
    code_version: str,
    build: Callable[[], SpikeRecording],
    *,
    use_cache: bool = True,
) -> SpikeRecording:
    """Return the cached recording for `config`, building and saving it on a miss.

    Args:
        kind: generator name, used as the sub-folder (e.g. "lif").
        config: the full generating config (every parameter, the seed).
        code_version: bump it whenever the generator's output for a given config changes.
        build: zero-argument function that generates the recording.
        use_cache: False skips both reading and writing the cache.
    """
    if not use_cache:
        return build()
    path = cache_path(kind, config, code_version)
    if (path / "recording.json").exists():
        return SpikeRecording.load(path)
    recording = build()
    recording.save(path)
    return recording
