"""Model families by name, and loading a model from whatever a user points at.

`load_pretrained(spec)` accepts a run folder (uses its `model/`), a model folder written by
`save_pretrained`, a Lightning checkpoint (`.ckpt`, read with `torch.load(weights_only=True)`),
or a Hugging Face Hub id `owner/name`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

# family -> (module, class, size builders)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "neuroformer": ("neurofound.models.neuroformer", "Neuroformer", ("neuroformer_small", "neuroformer_base")),
}


def family_class(name: str):
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; available: {', '.join(sorted(FAMILIES))}")
    module, cls, _ = FAMILIES[name]
    return getattr(importlib.import_module(module), cls)


def builders() -> dict[str, str]:
    """Size builder name -> family."""
    return {b: fam for fam, (_, _, bs) in FAMILIES.items() for b in bs}


def checkpoint_metadata(model) -> dict[str, Any]:
    """Plain-data description of a model stored in Lightning checkpoints (see `load_pretrained`)."""
    tok = getattr(model, "tokenizer", None)
    return {
        "model_type": model.model_type,
        "config": model.config.to_dict(),
        "tokenizer": None if tok is None else {"name": tok.name, "config": tok.config},
    }


def _from_checkpoint(path: Path):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, or pickled objects we refuse to load
        raise ValueError(f"checkpoint {path} is corrupt or not a neurofound checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); point at another checkpoint (e.g. last.ckpt) or the "
                         f"run's model/ folder") from None
    meta = ckpt.get("neurofound") if isinstance(ckpt, dict) else None
    if meta is None or "state_dict" not in ckpt:
        raise ValueError(f"{path} has no neurofound metadata; it was not written by `neurofound train` "
                         f"(use `neurofound convert` for the original authors' weights)")
    cls = family_class(meta["model_type"])
    model = cls(cls.config_class.from_dict(meta["config"], strict=True))
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    from neurofound.models.hub import load_state_dict_strict

    load_state_dict_strict(model, state, source=str(path))
    if meta.get("tokenizer"):
        from neurofound import tokenizers

        tok = meta["tokenizer"]
        model.tokenizer = tokenizers.get(tok["name"])(**tok["config"])
    model.eval()
    return model


def load_pretrained(spec: str | Path):
    """Load a model from a run folder, a model folder, a `.ckpt` file or a Hub id."""
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return _from_checkpoint(path)
    if path.is_dir():
        if (path / "model" / "config.json").is_file():
            path = path / "model"
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path} is neither a run folder (with model/) nor a model folder (with "
                                    f"config.json); pass a run folder, a model folder, a .ckpt file or a Hub id")
        model_type = json.loads(cfg_file.read_text()).get("model_type", "neuroformer")
        return family_class(model_type).from_pretrained(path)
    if str(spec).count("/") == 1 and not str(spec).startswith((".", "/", "~")):
        from huggingface_hub import hf_hub_download

        cfg_file = hf_hub_download(str(spec), "config.json")
        model_type = json.loads(Path(cfg_file).read_text()).get("model_type", "neuroformer")
        return family_class(model_type).from_pretrained(str(spec))
    raise FileNotFoundError(f"no model at {spec!r}: not a file, not a folder and not a Hub id (owner/name)")
