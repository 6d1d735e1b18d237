"""Convert a-antoniades/Neuroformer (NF 1.5) checkpoints into neurofound's Neuroformer.

`neurofound convert family=neuroformer reference=DIR out=DIR` calls `convert`. It reads either the
parity-fixture layout (reference_state_dict.safetensors + config.json) or the reference repo's
checkpoint folder (model.pt + mconf.yaml, read with `torch.load(weights_only=True)`), builds the
config with `reference_compat=True`, renames the weights 1:1, loads them strictly and writes the
result with `save_pretrained`. The repo's `tokenizer.pkl` is never unpickled.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from neurofound.data.contracts import SpikeContract
from neurofound.errors import CheckpointError, MissingFileError, UnsupportedError


def read_neuroformer_reference(reference: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read either the parity-fixture layout (reference_state_dict.safetensors + config.json with model_config)
    or the reference repo's checkpoint folder (model.pt + mconf.yaml).

    The repo's `tokenizer.pkl` is never unpickled (arbitrary code execution); the tokenizer is rebuilt from
    the config instead. Returns (state_dict, model_config, extra) where extra holds fixture metadata (or {}).
    """
    fixture_weights = reference / "reference_state_dict.safetensors"
    if fixture_weights.is_file():
        from neurofound.weights import read_safetensors

        cfg_path = reference / "config.json"
        if not cfg_path.is_file():
            raise MissingFileError(f"{reference} has {fixture_weights.name} but no config.json with 'model_config'")
        meta = json.loads(cfg_path.read_text())
        if "model_config" not in meta:
            raise CheckpointError(f"{cfg_path} has no 'model_config' entry (keys: {sorted(meta)})")
        return read_safetensors(fixture_weights), meta["model_config"], meta
    model_pt, mconf = reference / "model.pt", reference / "mconf.yaml"
    if model_pt.is_file():
        import yaml

        if not mconf.is_file():
            raise MissingFileError(f"{reference} has model.pt but no mconf.yaml next to it")
        try:
            obj = torch.load(model_pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"could not read {model_pt} with torch.load(weights_only=True): {e}") from e
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{model_pt} does not hold a state dict of tensors")
        # DDP checkpoints prefix every key with "module."
        state = {k.removeprefix("module."): v for k, v in obj.items()}
        config = yaml.safe_load(mconf.read_text())
        return state, config, {}
    raise MissingFileError(
        f"{reference} holds neither reference_state_dict.safetensors + config.json (parity fixture) nor "
        "model.pt + mconf.yaml (reference checkpoint folder)"
    )


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    idx = {int(m.group(1)) for k in state for m in [pat.match(k)] if m}
    return max(idx) + 1 if idx else 0


_BLOCK_RENAMES = [
    ("feature_encoder.neural_state_blocks.", "state_blocks."),
    ("feature_encoder.frame_state_blocks.", "frame_blocks."),
    ("neural_visual_transformer.neural_state_history_blocks.", "history_blocks."),
    ("neural_visual_transformer.neural_state_stimulus_blocks.", "stimulus_blocks."),
    ("neural_visual_transformer.modalities_blocks.behavior.", "behavior_blocks."),
    ("neural_visual_transformer.neural_state_blocks.", "decoder_blocks."),
    ("temp_emb.temp_emb.", "temp_emb.mlp."),
    ("temp_emb_prev.temp_emb.", "temp_emb_prev.mlp."),
    ("video_encoder.conv_block.0.", "frame_encoder.conv."),
    ("video_encoder.conv_block.2.", "frame_encoder.norm."),
    ("clip.proj.", "clip_proj."),
    ("modality_projection_heads.behavior.", "behavior_heads."),
]


def neuroformer_key(key: str, inputs: list[str]) -> str | None:
    """Reference state-dict key -> neurofound key, or None for entries the forward never uses
    (fixture Q16 buffers, the unused trunk ln_f of Q5, embeddings of predicted variables of Q11)."""
    if key.endswith((".mask", ".pe", ".div_term", ".inv_freq")) or key.startswith("frame_3d_emb"):
        return None
    if key.startswith("neural_visual_transformer.ln_f."):
        return None
    m = re.match(r"modality_embeddings\.behavior\.([^.]+)\.mlp\.(ln|mlp\.\d+)\.(.+)$", key)
    if m:
        var, sub, leaf = m.groups()
        return f"behavior_embeddings.{var}.project.{sub}.{leaf}" if var in inputs else None
    for old, new in _BLOCK_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def neuroformer_config_from_reference(state: dict[str, torch.Tensor], mc: dict[str, Any],
                                      frame_size: tuple[int, int] | None = None):
    """Build a NeuroformerConfig(reference_compat=True) from the reference config and its state dict."""
    from neurofound.models.neuroformer import NeuroformerConfig

    def g(d, *path, default=None):
        for p in path:
            if not isinstance(d, dict) or p not in d or d[p] is None:
                return default
            d = d[p]
        return d

    E = int(mc["n_embd"])
    n_neurons = state["tok_emb.weight"].shape[0] - 3
    groups = g(mc, "modalities", default={}) or {}
    groups = {k: v for k, v in groups.items() if g(v, "n_layers", default=0)}
    if len(groups) > 1 or (groups and "behavior" not in groups):
        raise UnsupportedError(f"only one modality group named 'behavior' is supported, the reference config has {sorted(groups)}")
    variables = g(groups, "behavior", "variables", default={}) or {}
    inputs = [v for v, s in variables.items() if not s.get("predict")]
    targets = {}
    for v, s in variables.items():
        if s.get("predict"):
            head = state.get(f"modality_projection_heads.behavior.{v}.weight")
            if head is None:
                raise CheckpointError(f"reference config predicts {v!r} but the state dict has no head for it")
            obj = s.get("objective") or "regression"
            targets[v] = {"objective": "regression"} if obj == "regression" else {
                "objective": "classification", "n_classes": int(head.shape[0])}
    has_frames = "video_encoder.conv_block.0.weight" in state
    kernel = list(g(mc, "frame_encoder", "kernel_size", default=[3, 5, 5]))
    stride = g(mc, "frame_encoder", "stride_size")
    frame_shape = None
    if has_frames:
        if tuple(state["video_encoder.conv_block.0.weight"].shape[2:]) != tuple(kernel):
            raise CheckpointError("frame_encoder.kernel_size in the config does not match the conv weight shape")
        n_frames = int(math.ceil(20 * float(mc["window"]["frame"])))  # the reference hard-codes 20 Hz frames
        h, w = frame_size or (64, 112)  # the reference data's frame size (spec 1.2) unless told otherwise
        frame_shape = [n_frames, int(h), int(w)]
    contrastive = g(mc, "contrastive", default={}) or {}
    cvars = []
    for v in contrastive.get("vars") or []:
        if isinstance(v, dict):
            ((group, var),) = v.items()
            cvars.append(f"behavior.{var}")
        else:
            cvars.append(str(v))
    window, window_prev, dt = float(mc["window"]["curr"]), float(mc["window"]["prev"]), float(mc["resolution"]["dt"])
    cfg = NeuroformerConfig(
        n_neurons=n_neurons, n_dt=int(round(max(window, window_prev) / dt)) + 1,
        block_size=int(mc["block_size"]["id"]), block_size_prev=int(mc["block_size"]["prev_id"]),
        n_embd=E, n_head=int(mc["n_head"]),
        n_state_layers=_count_blocks(state, "feature_encoder.neural_state_blocks"),
        n_history_layers=_count_blocks(state, "neural_visual_transformer.neural_state_history_blocks"),
        n_stimulus_layers=_count_blocks(state, "feature_encoder.frame_state_blocks") if has_frames else 0,
        # Q10: every group gets the LAST group's n_layers in the reference, so count the blocks
        n_behavior_layers=_count_blocks(state, "neural_visual_transformer.modalities_blocks.behavior"),
        frame_shape=frame_shape, frame_kernel=kernel, frame_stride=list(stride) if stride else None,
        behavior_inputs=inputs, behavior_targets=targets,
        contrastive=bool(contrastive.get("contrastive")) and "clip.proj.weight" in state,
        contrastive_vars=cvars or ["id", "frames"],
        clip_embd=int(contrastive.get("clip_embd") or E), clip_temp=float(contrastive.get("clip_temp") or 0.5),
        clip_loss="symmetric" if contrastive.get("clip_loss") else "infonce",
        temporal_embedding="sinusoid" if mc.get("wave_emb") else "learnt",
        dropout=float(g(mc, "dropout", "id", default=0.2)), attn_dropout=float(g(mc, "dropout", "attn", default=0.2)),
        reference_compat=True,
    )
    if state["head_dt.weight"].shape[0] != cfg.dt_vocab_size:
        raise CheckpointError(f"head_dt has {state['head_dt.weight'].shape[0]} rows but windows/dt give a dt vocabulary of "
                         f"{cfg.dt_vocab_size}; the mconf does not belong to these weights")
    return cfg


def convert(reference: Path, out: Path, frame_size: tuple[int, int] | None = None) -> Path:
    """Convert a-antoniades/Neuroformer weights (fixture folder or model.pt + mconf.yaml) into `out`."""
    from neurofound.models.neuroformer import Neuroformer
    from neurofound.weights import load_state_dict_strict

    state, mc, meta = read_neuroformer_reference(reference)
    if frame_size is None and "stimulus_shape" in (meta.get("data") or {}):
        frame_size = tuple(meta["data"]["stimulus_shape"][1:])
    cfg = neuroformer_config_from_reference(state, mc, frame_size)
    tokenizer = reference_tokenizer(cfg, mc)
    model = Neuroformer(cfg)
    mapped = {}
    for k, v in state.items():
        new = neuroformer_key(k, cfg.behavior_inputs)
        if new is not None:
            mapped[new] = v
    load_state_dict_strict(model, mapped, source=str(reference))
    model.attach_tokenizer(tokenizer)
    model.input_contract = SpikeContract(
        n_neurons=cfg.n_neurons, dt=tokenizer.dt, window=tokenizer.window, window_prev=tokenizer.window_prev,
        frame_shape=cfg.frame_shape, frame_rate=tokenizer.frame_rate if cfg.frame_shape else None,
        behavior_inputs=cfg.behavior_inputs, behavior_targets=list(cfg.behavior_targets))
    model.save_pretrained(out, training_data=f"converted from the reference checkpoint in {reference} "
                                             "(a-antoniades/Neuroformer) with reference_compat=True")
    return out


def reference_tokenizer(cfg, mc: dict[str, Any]):
    """The SpikeTokenizer of a reference config (reference quirks on); frames at the reference's fixed 20 Hz."""
    from neurofound.tokenizers.spike import SpikeTokenizer

    frame = mc["window"].get("frame") if isinstance(mc["window"], dict) else None
    return SpikeTokenizer(n_neurons=cfg.n_neurons, dt=float(mc["resolution"]["dt"]), window=float(mc["window"]["curr"]),
                          window_prev=float(mc["window"]["prev"]), block_size=cfg.block_size,
                          block_size_prev=cfg.block_size_prev, frame_window=float(frame if frame is not None else 0.15),
                          frame_rate=20.0, reference_compat=True)
