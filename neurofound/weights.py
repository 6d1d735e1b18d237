"""Weights on disk: safetensors written atomically, read with clear errors, loaded strictly.

The lowest layer that knows torch: models, tokenizers and the runtime all save and load weights
through these three functions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neurofound.errors import CheckpointError, MissingFileError
from neurofound.io import atomic_save_file


def atomic_save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """Save tensors as safetensors through a temporary file and `os.replace` (see `neurofound.io`)."""
    from safetensors.torch import save_file

    # contiguous copies: safetensors refuses views and shared storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return atomic_save_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {"format": "pt"}))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt/truncated file into a CheckpointError that names it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weight file {path.resolve()} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError depending on the damage
        raise CheckpointError(
            f"could not read weight file {path} ({type(e).__name__}: {e}); the file is truncated or corrupt, "
            "re-save or re-download it"
        ) from None


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint",
                           *, exclude: tuple[str, ...] = ()) -> None:
    """`model.load_state_dict(strict=True)` with an error that names every missing / unexpected / mis-shaped key.

    Keys starting with one of `exclude` are neither expected nor loaded (e.g. an embedded tokenizer
    whose weights were restored from its own file).
    """
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(exclude)} if exclude else model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes}")
        raise CheckpointError(
            f"the weights in {source} do not match the model built from its config: " + "; ".join(parts)
            + ". The config and the weights do not belong together (or the config was edited)."
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=not exclude)
