"""Convert original authors' checkpoints into neurofound models: `convert(family, reference, out) -> Path`.

The CLI verb `neurofound convert family=NAME reference=DIR out=DIR` calls `convert`. Each family names
its converter in its registration (`@register_family(..., converter="module:function")`), next to its
model file; the converter reads the reference folder, builds the config with `reference_compat=True`,
renames the weights 1:1, loads them strictly and writes the result with `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from neurofound.errors import MissingFileError


def convert(family: str, reference: str | Path, out: str | Path, **kwargs) -> Path:
    """Convert the reference checkpoint folder `reference` of `family` into a neurofound model folder `out`.

    Raises:
        UnknownNameError: unknown family, or a family without a converter (the message lists the known ones).
        MissingFileError: the reference folder or its files are missing.
    """
    from neurofound.models.registry import get_family

    fn = get_family(family).converter_fn()
    reference = Path(reference)
    if not reference.is_dir():
        raise MissingFileError(f"reference folder {reference.resolve()} does not exist")
    return fn(reference, Path(out), **kwargs)
