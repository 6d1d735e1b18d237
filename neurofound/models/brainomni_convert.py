"""Convert OpenTSLab/BrainOmni checkpoints into neurofound models.

`neurofound convert family=brainomni_tokenizer reference=DIR out=DIR` calls `convert_tokenizer` (stage 1),
`neurofound convert family=brainomni reference=DIR out=DIR` calls `convert` (stage 2, the tokenizer embedded).
Two layouts are read:

* the parity-fixture layout: `config.json` (its `constructor_kwargs` are the reference constructor's
  arguments) + `reference_state_dict.safetensors`;
* the release layout (Hugging Face `OpenTSLab/BrainOmni`): `model_cfg.json` (the constructor's keyword
  arguments, flat) + `BrainTokenizer.pt` (stage 1) or `BrainOmni.pt` (stage 2), read with
  `torch.load(weights_only=True)`.

Sizes always come from the config file; the converted model has `reference_compat=True`, its weights are
loaded strictly (the reference's keys are ours, 1:1) and it is written with `save_pretrained`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from neurofound.data.contracts import SensorContract
from neurofound.data.sensors import SENSOR_TYPES
from neurofound.errors import CheckpointError, ConfigError, MissingFileError

FIXTURE_CONFIG = "config.json"
FIXTURE_WEIGHTS = "reference_state_dict.safetensors"
RELEASE_CONFIG = "model_cfg.json"
RELEASE_TOKENIZER = "BrainTokenizer.pt"
RELEASE_MODEL = "BrainOmni.pt"

# The reference constructor's arguments that our config takes (others, such as its **kwargs, are ignored).
_TOKENIZER_KWARGS = ("window_length", "n_filters", "ratios", "kernel_size", "last_kernel_size", "n_dim", "n_neuro",
                     "n_head", "dropout", "codebook_dim", "codebook_size", "num_quantizers", "rotation_trick",
                     "quantize_optimize_method")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); re-download the reference checkpoint") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object of constructor arguments")
    return data


def _legacy_weight_norm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """New-style parametrised weight norm (`parametrizations.weight.original0/1`) -> `weight_g` / `weight_v`."""
    out = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                "weight_v")
        out[k] = v
    return out


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a reference `.pt` (`weights_only=True`); `module.` prefixes removed.

    A DeepSpeed/Lightning-style wrapper `{"module" | "state_dict" | "model": {...}}` is unwrapped.
    Anything else is a `CheckpointError` naming the file.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled objects (refused), truncation, not a torch file
        raise CheckpointError(f"could not read {path} with torch.load(weights_only=True) ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}); it must hold a plain state dict "
                              f"of tensors") from None
    if isinstance(obj, dict):
        for wrapper in ("module", "state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], dict) and not isinstance(obj[wrapper], torch.Tensor):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a plain state dict (a dict of tensors); re-export the reference "
                              f"weights with torch.save(model.state_dict(), ...)")
    return _legacy_weight_norm_keys({k.removeprefix("module."): v for k, v in obj.items()})


def read_tokenizer_reference(reference: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(constructor kwargs, state dict, layout name) of a fixture or release folder."""
    fixture_cfg, fixture_weights = reference / FIXTURE_CONFIG, reference / FIXTURE_WEIGHTS
    release_cfg, release_weights = reference / RELEASE_CONFIG, reference / RELEASE_TOKENIZER
    if fixture_weights.is_file():
        from neurofound.weights import read_safetensors

        if not fixture_cfg.is_file():
            raise MissingFileError(f"{reference} has {FIXTURE_WEIGHTS} but no {FIXTURE_CONFIG} with constructor_kwargs")
        meta = _read_json(fixture_cfg)
        if not isinstance(meta.get("constructor_kwargs"), dict):
            raise CheckpointError(f"{fixture_cfg} has no 'constructor_kwargs' object (keys: {sorted(meta)})")
        return dict(meta["constructor_kwargs"]), read_safetensors(fixture_weights), "fixture"
    if release_weights.is_file():
        if not release_cfg.is_file():
            raise MissingFileError(f"{reference} has {RELEASE_TOKENIZER} but no {RELEASE_CONFIG} next to it")
        return _read_json(release_cfg), read_torch_state_dict(release_weights), "release"
    raise MissingFileError(f"{reference} holds neither {FIXTURE_CONFIG} + {FIXTURE_WEIGHTS} (parity fixture) nor "
                           f"{RELEASE_CONFIG} + {RELEASE_TOKENIZER} (the OpenTSLab/BrainOmni release)")


def tokenizer_config_from_reference(kwargs: dict[str, Any]):
    """A `BrainTokenizerModelConfig(reference_compat=True)` from the reference constructor's arguments."""
    from neurofound.models.brainomni_tokenizer import BrainTokenizerModelConfig

    missing = [k for k in ("n_filters", "ratios", "n_dim", "n_neuro", "n_head", "codebook_size", "num_quantizers")
               if k not in kwargs]
    if missing:
        raise CheckpointError(f"the reference config lacks {missing}; it is not a BrainTokenizer config")
    cfg = {k: kwargs[k] for k in _TOKENIZER_KWARGS if k in kwargs}
    cfg["ratios"] = [int(r) for r in cfg["ratios"]]
    if cfg.get("codebook_dim") is None:
        cfg["codebook_dim"] = cfg["n_dim"]  # the reference's VectorQuantization default
    if "channel_mask_ratio" in kwargs:  # read through the reference's **kwargs (default 0.25)
        cfg["channel_mask_ratio"] = float(kwargs["channel_mask_ratio"])
    # The reference initialises its (unused here) fresh weights with its own init.
    return BrainTokenizerModelConfig(**cfg, init="reference", reference_compat=True)


def convert_tokenizer(reference: Path, out: Path, **kwargs) -> Path:
    """Convert a reference BrainTokenizer (fixture or release folder) into the model folder `out`.

    Args:
        reference: folder with `config.json` + `reference_state_dict.safetensors`, or `model_cfg.json` +
            `BrainTokenizer.pt`.
        out: the model folder to write (`BrainTokenizerModel.from_pretrained(out)`; its `tokenizer/` is
            `BrainTokenizer.from_pretrained`'s).
        **kwargs: overrides of the converted config (e.g. `loss_preset`).

    Returns:
        `out`.
    """
    from neurofound.models.brainomni_tokenizer import BrainTokenizerModel, BrainTokenizerModelConfig
    from neurofound.weights import load_state_dict_strict

    reference, out = Path(reference), Path(out)
    ref_kwargs, state, layout = read_tokenizer_reference(reference)
    cfg = tokenizer_config_from_reference(ref_kwargs)
    if kwargs:
        cfg = BrainTokenizerModelConfig.from_dict({**cfg.to_dict(), **kwargs}, strict=True)
    model = BrainTokenizerModel(cfg)
    load_state_dict_strict(model.tokenizer, state, source=str(reference))
    if not model.tokenizer.quantizer.rvq.is_initialised:
        raise CheckpointError(f"the codebooks in {reference} are not initialised (inited = 0); convert a trained "
                              f"BrainTokenizer")
    model.input_contract = SensorContract(channel_names=(), sensor_types=SENSOR_TYPES,
                                          sampling_rate=float(cfg.sampling_rate), window=int(cfg.window_length))
    model.eval()
    model.save_pretrained(out, training_data=f"converted from the OpenTSLab/BrainOmni BrainTokenizer ({layout} layout) "
                                             f"in {reference} with reference_compat=True")
    return out


# ================================================================================================================
# Stage 2: BrainOmni (`brainomni/model.py`), its tokenizer embedded under the key prefix `tokenizer.`
# ================================================================================================================
_STAGE2_KWARGS = ("lm_dim", "lm_head", "lm_depth", "lm_dropout", "mask_ratio", "overlap_ratio", "n_dim", "n_neuro",
                  "codebook_size", "num_quantizers")
_TOKENIZER_PREFIX = "tokenizer."
_ROPE_CACHE = ".rope_embedding_layer.rotate"


def read_brainomni_reference(reference: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(constructor kwargs, state dict, layout name) of a BrainOmni fixture or release folder.

    Fixture: `config.json` (`constructor_kwargs`) + `reference_state_dict.safetensors`; release: `model_cfg.json`
    + `BrainOmni.pt` (`torch.load(weights_only=True)`, wrappers and `module.` prefixes removed).
    """
    fixture_weights = reference / FIXTURE_WEIGHTS
    release_cfg, release_weights = reference / RELEASE_CONFIG, reference / RELEASE_MODEL
    if fixture_weights.is_file():
        return read_tokenizer_reference(reference)
    if release_weights.is_file():
        if not release_cfg.is_file():
            raise MissingFileError(f"{reference} has {RELEASE_MODEL} but no {RELEASE_CONFIG} next to it")
        return _read_json(release_cfg), read_torch_state_dict(release_weights), "release"
    raise MissingFileError(f"{reference} holds neither {FIXTURE_CONFIG} + {FIXTURE_WEIGHTS} (parity fixture) nor "
                           f"{RELEASE_CONFIG} + {RELEASE_MODEL} (the OpenTSLab/BrainOmni release)")


def brainomni_config_from_reference(kwargs: dict[str, Any], state: dict[str, torch.Tensor]):
    """A `BrainOmniConfig(reference_compat=True)` from the reference constructor's arguments, checked against the
    number of blocks in the weights."""
    from neurofound.models.brainomni import BrainOmniConfig

    missing = [k for k in _STAGE2_KWARGS if k not in kwargs]
    if missing:
        raise CheckpointError(f"the reference config lacks {missing}; it is not a BrainOmni (stage 2) config")
    cfg = BrainOmniConfig(
        lm_dim=int(kwargs["lm_dim"]), lm_head=int(kwargs["lm_head"]), lm_depth=int(kwargs["lm_depth"]),
        # the reference uses one dropout for the FFN and the attention (ours: attention dropout in training only)
        lm_dropout=float(kwargs["lm_dropout"]), attn_dropout=float(kwargs["lm_dropout"]),
        mask_ratio=float(kwargs["mask_ratio"]), overlap_ratio=float(kwargs["overlap_ratio"]),
        num_quantizers_used=None if kwargs.get("num_quantizers_used") is None else int(kwargs["num_quantizers_used"]),
        n_dim=int(kwargs["n_dim"]), n_neuro=int(kwargs["n_neuro"]), codebook_size=int(kwargs["codebook_size"]),
        num_quantizers=int(kwargs["num_quantizers"]), reference_compat=True,
    )
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if len(blocks) != cfg.lm_depth:
        raise CheckpointError(f"the weights hold {len(blocks)} blocks but the config says lm_depth={cfg.lm_depth}; "
                              f"the config does not belong to these weights")
    return cfg


def drop_rope_cache(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without the reference's RoPE caches `...rope_embedding_layer.rotate`, each checked first.

    The cache is `exp(i t f)` for t < 240 (complex64), derived from the `freqs` buffer next to it; neurofound
    rebuilds the rotation from `freqs` on every call (fixture README §5). The released DeepSpeed export keeps
    only its real part (the cosines; a real tensor or a zero imaginary part): that is accepted too, since the
    cache is never used. A cache that is neither means the weights did not come from the reference code.
    """
    out = {}
    for key, cache in state.items():
        if not key.endswith(_ROPE_CACHE):
            out[key] = cache
            continue
        freqs_key = key[: -len("rotate")] + "freqs"
        if freqs_key not in state:
            raise CheckpointError(f"the weights hold {key} but not {freqs_key}")
        angles = torch.outer(torch.arange(cache.shape[0], dtype=torch.float32), state[freqs_key].float())
        if tuple(cache.shape) != tuple(angles.shape):
            raise CheckpointError(f"{key} has shape {tuple(cache.shape)}, not (positions, {angles.shape[1]})")
        if cache.is_complex() and bool(cache.imag.any()):
            got, want = cache, torch.polar(torch.ones_like(angles), angles)
        else:  # the real-only export: compare the cosines
            got, want = cache.real.float() if cache.is_complex() else cache.float(), angles.cos()
        diff = (got - want).abs().max().item() if got.numel() else 0.0
        if diff > 1e-4:
            raise CheckpointError(f"{key} is not exp(i t f) of {freqs_key} (max |diff| {diff:.3g}); these weights "
                                  f"were not written by the reference BrainOmni")
    return out


def convert(reference: Path, out: Path, **kwargs) -> Path:
    """Convert a reference BrainOmni (fixture or release folder) into the model folder `out`.

    The embedded tokenizer (the `tokenizer.*` keys) becomes the model's frozen BrainTokenizer
    (`reference_compat=True`, saved under `out/tokenizer/`); the RoPE caches are checked and dropped
    (`drop_rope_cache`); every other key maps 1:1 and loads strictly.

    Args:
        reference: folder with `config.json` + `reference_state_dict.safetensors`, or `model_cfg.json` +
            `BrainOmni.pt`.
        out: the model folder to write (`BrainOmni.from_pretrained(out)`).
        **kwargs: overrides of the converted BrainOmniConfig (e.g. `attn_dropout`).

    Returns:
        `out`.
    """
    from neurofound.models.brainomni import BrainOmni, BrainOmniConfig
    from neurofound.tokenizers.braintokenizer import BrainTokenizer
    from neurofound.weights import load_state_dict_strict

    reference, out = Path(reference), Path(out)
    ref_kwargs, state, layout = read_brainomni_reference(reference)
    cfg = brainomni_config_from_reference(ref_kwargs, state)
    if kwargs:
        unknown = sorted(set(kwargs) - set(cfg.to_dict()))
        if unknown:
            raise ConfigError(f"convert(family=brainomni): unknown BrainOmniConfig overrides {unknown}")
        cfg = BrainOmniConfig.from_dict({**cfg.to_dict(), **kwargs}, strict=True)
    tokenizer_state = {k[len(_TOKENIZER_PREFIX):]: v for k, v in state.items() if k.startswith(_TOKENIZER_PREFIX)}
    if not tokenizer_state:
        raise CheckpointError(f"the weights in {reference} hold no tokenizer.* keys; a BrainOmni checkpoint embeds "
                              f"its BrainTokenizer")
    tokenizer = BrainTokenizer(**tokenizer_config_from_reference(ref_kwargs).tokenizer_kwargs())
    load_state_dict_strict(tokenizer, tokenizer_state, source=f"{reference} (tokenizer.*)")
    if not tokenizer.quantizer.rvq.is_initialised:
        raise CheckpointError(f"the codebooks in {reference} are not initialised (inited = 0); convert a trained "
                              f"BrainOmni")
    model = BrainOmni(cfg)
    model.attach_tokenizer(tokenizer)
    own = drop_rope_cache({k: v for k, v in state.items() if not k.startswith(_TOKENIZER_PREFIX)})
    load_state_dict_strict(model, own, source=str(reference), exclude=(_TOKENIZER_PREFIX,))
    model.input_contract = SensorContract(channel_names=(), sensor_types=SENSOR_TYPES,
                                          sampling_rate=float(tokenizer.sampling_rate),
                                          window=int(tokenizer.window_length))
    model.eval()
    model.save_pretrained(out, training_data=f"converted from the OpenTSLab/BrainOmni BrainOmni ({layout} layout) in "
                                             f"{reference} with reference_compat=True")
    return out
