"""Shared Hugging Face Hub helpers for every neurofound model family.

`NeurofoundHubMixin` sits on top of `huggingface_hub.PyTorchModelHubMixin` so that `push_to_hub` stays the
real mixin method, while saving and loading follow neurofound's rules:

* `save_pretrained(dir)` writes `config.json` (with `model_type` and the input contract),
  `model.safetensors`, `training.json` (recipe, resolved data config, training data, metrics,
  preprocessing), a model card `README.md` that states all of it, and the attached tokenizer under
  `tokenizer/`. A learned tokenizer's weights are stored once, there, and left out of
  `model.safetensors`. Every file is staged and moved in with `os.replace`, so an interrupted save
  never leaves a half-written model behind.
* `from_pretrained(local_dir)` works offline; loading is strict: a missing or unexpected weight is a
  `CheckpointError` that names the keys, a truncated/corrupt weight file one naming the file, and a
  missing directory or file a `MissingFileError`.
* `load_checkpoint(path)` rebuilds the same model from a Lightning `.ckpt`.

A model class using the mixin provides `config_class` (a dataclass with `to_dict()` / `from_dict(d, strict)`),
`self.config`, and optionally `check_tokenizer(tokenizer)` and `model_card_fields()`. The attention
backend and other runtime settings are never saved (see `neurofound.runtime.apply_runtime`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin

from neurofound.errors import CheckpointError, ConfigError, MissingFileError
from neurofound.io import atomic_install_dir, atomic_write_text, json_safe, make_temp_dir
from neurofound.weights import atomic_save_state_dict, load_state_dict_strict, read_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_PREFIX = "tokenizer."
TRAINING_NAME = "training.json"


# --------------------------------------------------------------------------------------------------------------
# Config and weights
# --------------------------------------------------------------------------------------------------------------
class ModelConfig:
    """Mixin of the model config dataclasses: `to_dict()` and a strict `from_dict()` (config.json round trip).

    An unknown key is a `ConfigError` naming it and listing the known ones, never silently dropped
    (`strict=False` drops it).
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and strict:
            raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def save_config(directory: str | Path, config: dict) -> Path:
    """Write `config.json` (sorted keys, indented) atomically."""
    return atomic_write_text(Path(directory) / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_config(directory: str | Path) -> dict:
    """Read `config.json` of a saved model folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise MissingFileError(f"no {CONFIG_NAME} in {Path(directory).resolve()}: is this a folder written by "
                               f"save_pretrained?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-save the model or fix the file") from None


def _embedded_tokenizer_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of a learned tokenizer attached as `model.tokenizer` (saved on its own)."""
    tok = getattr(model, "tokenizer", None)
    return (TOKENIZER_PREFIX,) if isinstance(tok, torch.nn.Module) else ()


def own_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without an embedded learned tokenizer's (those live in tokenizer/)."""
    skip = _embedded_tokenizer_prefixes(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)} if skip else model.state_dict()


# --------------------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]" if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) if value else "none"
    if value is None:
        return "none"
    return str(value)


def render_model_card(
    *,
    title: str,
    summary: str,
    input_contract: dict[str, Any],
    architecture: dict[str, Any] | None = None,
    training_data: str | None = None,
    preprocessing: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    citation: str | None = None,
    tags: list[str] | None = None,
    class_name: str | None = None,
) -> str:
    """Model card text: YAML front matter, input contract, architecture, training data, metrics, citation."""
    tags = tags or []
    lines = ["---", "library_name: neurofound", "license: mit", "tags:"] + [f"- {t}" for t in tags] + ["---", ""]
    lines += [f"# {title}", "", summary, "", "## Input contract", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in input_contract.items()]
    if architecture:
        lines += ["", "## Architecture", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in architecture.items()]
    lines += ["", "## Training data", "", training_data or "Not recorded.", ""]
    if preprocessing:
        lines += ["## Preprocessing", ""] + [f"{i}. {step}" for i, step in enumerate(preprocessing, 1)] + [""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
    else:
        lines += ["Not recorded."]
    lines += [""]
    name = class_name or title.split()[0]
    lines += ["## Usage", "", "```python", "from neurofound.models.registry import load_pretrained",
              "model = load_pretrained(\"<this folder or hub id>\")", "# or, for this family only:",
              f"# {name}.from_pretrained(\"<this folder or hub id>\")", "```", ""]
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
    """Hub mixin with strict, atomic, offline-friendly save/load (see the module docstring).

    Attributes a model carries besides its weights:
        config: the model config dataclass (sizes that shape weights; no runtime settings).
        tokenizer: the tokenizer it was trained with, or None. A learned tokenizer (an nn.Module)
            is a submodule, saved once under tokenizer/ and left out of model.safetensors.
        input_contract: the `InputContract` of the data it was trained on, or None.
        training_info: what the model card states: {"recipe", "data_config", "training_data",
            "metrics", "preprocessing"} (saved as training.json).
    """

    config_class: type = None  # set by the model class
    model_type: str = ""  # family name, set by @register_family
    model_card_title: str = "neurofound model"
    model_card_summary: str = ""
    model_card_citation: str | None = None
    model_card_tags: list[str] = []
    input_contract = None
    training_info: dict[str, Any] = {}

    # ---- what a family may override ----------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer) -> None:
        """Raise `ContractError` when `tokenizer` does not fit this model's sizes (default: accept)."""

    def model_card_fields(self) -> dict[str, Any]:
        """Architecture rows of the model card (default: the config)."""
        return dict(self.config.to_dict())

    # ---- tokenizer and contract ----------------------------------------------------------------------------------
    def attach_tokenizer(self, tokenizer) -> None:
        """Attach `tokenizer` after checking it fits (a learned one becomes the submodule `tokenizer`)."""
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)
        self.tokenizer = tokenizer

    def record_training(self, **info: Any) -> None:
        """Update what the model card states (recipe, data_config, training_data, metrics, preprocessing)."""
        unknown = sorted(set(info) - set(TRAINING_FIELDS))
        if unknown:
            raise ConfigError(f"unknown training_info fields {unknown}; known: {list(TRAINING_FIELDS)}")
        merged = dict(self.training_info)
        merged.update({k: v for k, v in info.items() if v is not None})
        self.training_info = merged

    def card_text(self) -> str:
        info = self.training_info
        contract = self.input_contract.card_rows() if self.input_contract is not None else {"kind": "not recorded"}
        return render_model_card(
            title=self.model_card_title, summary=self.model_card_summary, input_contract=contract,
            architecture=self.model_card_fields(), training_data=info.get("training_data"),
            preprocessing=info.get("preprocessing"), metrics=info.get("metrics"),
            citation=self.model_card_citation, tags=list(self.model_card_tags), class_name=type(self).__name__,
        )

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Plain-data description stored in Lightning checkpoints (read back by `load_checkpoint`)."""
        tok = getattr(self, "tokenizer", None)
        return {
            "model_type": self.model_type,
            "config": self.config.to_dict(),
            "tokenizer": None if tok is None else {"name": tok.name, "config": tok.config},
            "input_contract": None if self.input_contract is None else self.input_contract.to_dict(),
            "training": json_safe({k: v for k, v in self.training_info.items() if k != "metrics"}),
        }

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
        **push_to_hub_kwargs,
    ) -> str | None:
        """Write config.json, model.safetensors, training.json, README.md and tokenizer/ atomically.

        Args:
            save_directory: target folder (created; files not written by the save are left alone).
            config: ignored (the model's own config is always written); kept for the mixin's signature.
            repo_id, push_to_hub, push_to_hub_kwargs: as `PyTorchModelHubMixin.save_pretrained`.
            model_card_kwargs: optional "training_data" / "metrics" entries (the mixin's way).
            training_data, metrics: recorded into `training_info` before saving.
        """
        card = dict(model_card_kwargs or {})
        self.record_training(training_data=training_data if training_data is not None else card.get("training_data"),
                             metrics=metrics if metrics is not None else card.get("metrics"))
        save_directory = Path(save_directory)
        save_directory.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(save_directory.parent, prefix=f".{save_directory.name}.staging-")
        try:
            contract = None if self.input_contract is None else self.input_contract.to_dict()
            save_config(staging, {"model_type": self.model_type, "input_contract": contract, **self.config.to_dict()})
            atomic_save_state_dict(own_state_dict(self), staging / WEIGHTS_NAME)
            atomic_write_text(staging / TRAINING_NAME, json.dumps(json_safe(self.training_info), indent=2,
                                                                  sort_keys=True) + "\n")
            atomic_write_text(staging / CARD_NAME, self.card_text())
            tokenizer = getattr(self, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging / TOKENIZER_DIR)
            atomic_install_dir(staging, save_directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if push_to_hub:
            return self.push_to_hub(repo_id=repo_id or save_directory.name, **push_to_hub_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        # Reached through the mixin's push_to_hub: the same files as save_pretrained.
        self.save_pretrained(save_directory)

    # ---- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs):
        """Load from a local folder written by `save_pretrained` (offline) or from a Hub id `owner/name`."""
        name = str(pretrained_model_name_or_path)
        if _looks_local(name):
            path = Path(name).expanduser()
            if not path.is_dir():
                raise MissingFileError(f"model folder {path.resolve()} does not exist; pass a folder written by "
                                       f"save_pretrained or a hub id owner/name")
            for required in (CONFIG_NAME, WEIGHTS_NAME):
                if not (path / required).is_file():
                    raise MissingFileError(f"{path.resolve()} has no {required}; it is not a complete "
                                           f"save_pretrained folder")
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
        found = raw.pop("model_type", None)
        if found != cls.model_type:
            raise CheckpointError(f"{directory} holds a {found!r} model, not {cls.model_type!r}; load it with "
                                  f"neurofound.models.registry.load_pretrained({str(directory)!r})")
        contract = raw.pop("input_contract", None)
        model = cls(cls.config_class.from_dict(raw, strict=True))
        state = read_safetensors(directory / WEIGHTS_NAME)
        tokenizer = None
        if (directory / TOKENIZER_DIR).is_dir():
            from neurofound.tokenizers import Tokenizer

            tokenizer = Tokenizer.from_pretrained(directory / TOKENIZER_DIR)
            model.attach_tokenizer(tokenizer)
        skip = _embedded_tokenizer_prefixes(model)
        if strict:
            load_state_dict_strict(model, state, source=str(directory / WEIGHTS_NAME), exclude=skip)
        else:
            model.load_state_dict(state, strict=False)
        _restore_extras(model, contract, _read_training(directory))
        model.to(map_location)
        model.eval()
        return model


def _read_training(directory: Path) -> dict[str, Any]:
    path = directory / TRAINING_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-save the model") from None


def _restore_extras(model, contract: dict | None, training: dict | None) -> None:
    from neurofound.data.contracts import InputContract

    model.input_contract = None if contract is None else InputContract.from_dict(contract)
    model.training_info = {}
    if training:
        model.record_training(**{k: v for k, v in training.items() if k in TRAINING_FIELDS})


def load_checkpoint(path: str | Path):
    """Rebuild a model from a neurofound Lightning checkpoint (`torch.load(weights_only=True)`).

    The checkpoint's `neurofound` entry (written by the task's `on_save_checkpoint`) names the
    family, the config and the tokenizer; the weights, a learned tokenizer's included, come from
    the checkpoint's state dict.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, or pickled objects we refuse to load
        raise CheckpointError(f"checkpoint {path} is corrupt or not a neurofound checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}); point at another checkpoint "
                              f"(e.g. last.ckpt) or the run's model/ folder") from None
    meta = ckpt.get("neurofound") if isinstance(ckpt, dict) else None
    if meta is None or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} has no neurofound metadata; it was not written by `neurofound train` "
                              f"(use `neurofound convert` for the original authors' weights)")
    from neurofound.models.registry import family_class

    if not meta.get("model_type"):
        raise CheckpointError(f"{path} names no model_type, so its family is unknown")
    cls = family_class(meta["model_type"])
    model = cls(cls.config_class.from_dict(meta["config"], strict=True))
    if meta.get("tokenizer"):
        from neurofound import tokenizers

        tok = meta["tokenizer"]
        model.attach_tokenizer(tokenizers.get(tok["name"]).from_config(tok["config"]))
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    load_state_dict_strict(model, state, source=str(path))
    _restore_extras(model, meta.get("input_contract"), meta.get("training"))
    metrics_file = path.parent.parent / "metrics.json"  # <run>/checkpoints/x.ckpt -> <run>/metrics.json
    if metrics_file.is_file() and "metrics" not in model.training_info:
        try:
            model.record_training(metrics=json.loads(metrics_file.read_text()))
        except json.JSONDecodeError:
            pass
    model.eval()
    return model


TRAINING_FIELDS = ("recipe", "data_config", "training_data", "metrics", "preprocessing")
_HUB_KW = {"force_download", "token", "cache_dir", "local_files_only", "revision"}
