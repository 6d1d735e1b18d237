"""Shared Hugging Face Hub helpers for every neurofound model family.

`NeurofoundHubMixin` sits on top of `huggingface_hub.PyTorchModelHubMixin` so that `push_to_hub` stays the
real mixin method, while saving and loading follow neurofound's rules:

* `save_pretrained(dir)` writes `config.json`, `model.safetensors`, a model card `README.md` that states the
  model's input contract, its training data and metrics, and the attached tokenizer under `tokenizer/`;
  every file is written to a temporary place first and moved in with `os.replace` (atomic on one file
  system), so an interrupted save never leaves a half-written checkpoint behind.
* `from_pretrained(local_dir)` works offline; loading is strict: a missing or unexpected weight is a
  `ValueError` that names the keys, a truncated/corrupt weight file a `ValueError` naming the file, and a
  missing directory or file a `FileNotFoundError`.

A model class using the mixin provides `config_class` (a dataclass with `to_dict()` / `from_dict(d, strict)`),
`self.config`, `model_card_fields()` (name -> value rows of the input contract) and optionally
`self.tokenizer` plus `_load_tokenizer(directory)`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin

from neurofound.io import atomic_install_dir, atomic_save_file, atomic_write_text, make_temp_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TOKENIZER_DIR = "tokenizer"


# --------------------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------------------
def atomic_save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """Save tensors as safetensors through a temporary file and `os.replace` (see `neurofound.io`)."""
    from safetensors.torch import save_file

    # contiguous copies: safetensors refuses views and shared storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return atomic_save_file(path, lambda tmp: save_file(tensors, tmp, metadata=metadata or {"format": "pt"}))


# --------------------------------------------------------------------------------------------------------------
# Config and weights
# --------------------------------------------------------------------------------------------------------------
def save_config(directory: str | Path, config: dict) -> Path:
    """Write `config.json` (sorted keys, indented) atomically."""
    return atomic_write_text(Path(directory) / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_config(directory: str | Path) -> dict:
    """Read `config.json` of a saved model folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {Path(directory).resolve()}: is this a folder written by save_pretrained?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-save the model or fix the file") from e


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt/truncated file into a ValueError that names it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path.resolve()} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError depending on the damage
        raise ValueError(
            f"could not read weight file {path} ({type(e).__name__}: {e}); the file is truncated or corrupt, "
            "re-save or re-download it"
        ) from e


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """`model.load_state_dict(strict=True)` with an error that names every missing / unexpected / mis-shaped key."""
    own = model.state_dict()
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
        raise ValueError(
            f"the weights in {source} do not match the model built from its config: " + "; ".join(parts)
            + ". The directory's config.json and model.safetensors do not belong together (or the config was edited)."
        )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


# --------------------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]" if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def render_model_card(
    *,
    title: str,
    summary: str,
    input_contract: dict[str, Any],
    training_data: str | None = None,
    metrics: dict[str, float] | None = None,
    citation: str | None = None,
    tags: list[str] | None = None,
    extra: str | None = None,
) -> str:
    """Model card text: YAML front matter + input contract table + training data + metrics + citation."""
    tags = tags or []
    lines = ["---", "library_name: neurofound", "license: mit", "tags:"] + [f"- {t}" for t in tags] + ["---", ""]
    lines += [f"# {title}", "", summary, "", "## Input contract", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in input_contract.items()]
    lines += ["", "## Training data", "", training_data or "Not recorded (pass `training_data=` to save_pretrained).", ""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
    else:
        lines += ["Not recorded (pass `metrics=` to save_pretrained)."]
    lines += [""]
    if extra:
        lines += [extra, ""]
    lines += [
        "## Usage",
        "",
        "```python",
        f"from neurofound.models import {title.split()[0]}",
        f"model = {title.split()[0]}.from_pretrained(\"<this folder or hub id>\")",
        "```",
        "",
    ]
    if citation:
        lines += ["## Citation", "", "```bibtex", citation.strip(), "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# The mixin
# --------------------------------------------------------------------------------------------------------------
def _looks_local(name: str) -> bool:
    """A hub id is `owner/name`; anything else (absolute, ./, ~, several slashes, existing path) is a local path."""
    p = Path(name).expanduser()
    return p.exists() or p.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1


class NeurofoundHubMixin(PyTorchModelHubMixin):
    """Hub mixin with strict, atomic, offline-friendly save/load (see the module docstring)."""

    config_class: type = None  # set by the model class
    model_type: str = ""  # family name written to config.json (see neurofound.models.registry)
    model_card_title: str = "neurofound model"
    model_card_summary: str = ""
    model_card_citation: str | None = None
    model_card_tags: list[str] = []

    # ---- saving ------------------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        training_data: str | None = None,
        metrics: dict[str, float] | None = None,
        card_data: dict[str, Any] | None = None,
        **push_to_hub_kwargs,
    ) -> str | None:
        """Write config.json, model.safetensors, README.md (model card) and tokenizer/ atomically.

        Args:
            save_directory: target folder (created; files not written by the save are left alone).
            config: ignored if given (the model's own config is always written); kept for the mixin's signature.
            repo_id, push_to_hub, push_to_hub_kwargs: as `PyTorchModelHubMixin.save_pretrained`.
            model_card_kwargs / card_data: dict with optional "training_data" and "metrics" entries.
            training_data: one-line description of the training data for the model card.
            metrics: flat `{"split/metric": value}` dict for the model card.
        """
        card = dict(card_data or {})
        card.update(model_card_kwargs or {})
        training_data = training_data if training_data is not None else card.get("training_data")
        metrics = metrics if metrics is not None else card.get("metrics")
        save_directory = Path(save_directory)
        save_directory.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(save_directory.parent, prefix=f".{save_directory.name}.staging-")
        try:
            save_config(staging, {"model_type": self.model_type, **self.config.to_dict()})
            atomic_save_state_dict(self.state_dict(), staging / WEIGHTS_NAME)
            text = render_model_card(
                title=self.model_card_title,
                summary=self.model_card_summary,
                input_contract=self.model_card_fields(),
                training_data=training_data,
                metrics=metrics,
                citation=self.model_card_citation,
                tags=list(self.model_card_tags),
            )
            atomic_write_text(staging / CARD_NAME, text)
            tokenizer = getattr(self, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging / TOKENIZER_DIR)
            atomic_install_dir(staging, save_directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if push_to_hub:
            if repo_id is None:
                repo_id = save_directory.name
            return self.push_to_hub(
                repo_id=repo_id, model_card_kwargs={"training_data": training_data, "metrics": metrics}, **push_to_hub_kwargs
            )
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        # Only reached if someone calls the mixin's machinery directly; keep it equivalent.
        self.save_pretrained(save_directory)

    def model_card_fields(self) -> dict[str, Any]:
        return dict(self.config.to_dict())

    # ---- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs):
        """Load from a local folder written by `save_pretrained` (offline) or from a Hub id `owner/name`."""
        name = str(pretrained_model_name_or_path)
        if _looks_local(name):
            path = Path(name).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(
                    f"model folder {path.resolve()} does not exist; pass a folder written by save_pretrained or a hub id owner/name"
                )
            for required in (CONFIG_NAME, WEIGHTS_NAME):
                if not (path / required).is_file():
                    raise FileNotFoundError(f"{path.resolve()} has no {required}; it is not a complete save_pretrained folder")
            return cls._from_pretrained(
                model_id=str(path), revision=None, cache_dir=None, force_download=False,
                local_files_only=True, token=None, **{k: v for k, v in kwargs.items() if k not in _HUB_KW},
            )
        return super().from_pretrained(name, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location: str = "cpu", strict: bool = True,
                         config: Any = None, **model_kwargs):
        if os.path.isdir(model_id):
            directory = Path(model_id)
        else:
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                               force_download=force_download, local_files_only=local_files_only,
                                               token=token))
        raw = dict(load_config(directory))
        found = raw.pop("model_type", cls.model_type)
        if found != cls.model_type:
            raise ValueError(f"{directory} holds a {found!r} model, not {cls.model_type!r}; load it with "
                             f"neurofound.models.registry.load_pretrained({str(directory)!r})")
        cfg = cls.config_class.from_dict(raw, strict=True)
        model = cls(cfg)
        state = read_safetensors(directory / WEIGHTS_NAME)
        if strict:
            load_state_dict_strict(model, state, source=str(directory / WEIGHTS_NAME))
        else:
            model.load_state_dict(state, strict=False)
        model.to(map_location)
        if (directory / TOKENIZER_DIR).is_dir():
            model.tokenizer = cls._load_tokenizer(directory / TOKENIZER_DIR)
        model.eval()
        return model

    @classmethod
    def _load_tokenizer(cls, directory: Path):
        raise NotImplementedError(f"{cls.__name__} does not define how to load its tokenizer from {directory}")


_HUB_KW = {"force_download", "token", "cache_dir", "local_files_only", "revision"}
