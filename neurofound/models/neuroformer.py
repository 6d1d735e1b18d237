"""Neuroformer: multimodal, multitask generative pretraining for spiking data.

Antoniades, Yu, Canzano, Wang, Smith. "Neuroformer: Multimodal and Multitask Generative Pretraining for Brain
Data." ICLR 2024, arXiv:2311.00136. Reference code: a-antoniades/Neuroformer (MIT), "NF 1.5" @ 36ed940.

The model predicts the next spike of the current window as two parallel tokens (neuron ID and time offset
"dt") while attending to the past window, to a stimulus clip and to behaviour. Walk-through (data-flow order;
the names match the `mid.*` intermediates of the parity fixture):

1. Current embeddings `mid.token_emb` = tok_emb(id) + temp_emb(dt index) + pos_emb. Past embeddings
   `mid.prev_token_emb` use the same tok_emb with their own temp_emb_prev / pos_emb_prev. The temporal
   embedding is the learnt MLP Linear(1, E/2) -> GELU -> Linear(E/2, E) on the float dt INDEX that the reference
   really runs (fixture Q1/Q2); `temporal_embedding="sinusoid"` selects fixed sin/cos instead.
2. Frames: Conv3d(1 -> E, kernel, stride) -> LayerNorm -> ReLU (`mid.frame_conv`), flattened to tokens; the
   default path adds a 3-D sinusoidal position code (the reference discards it, Q4); the current SOS
   embedding is prepended as a frame "SOS" (`mid.frame_tokens`).
3. State encoder: causal self-attention Blocks on the current tokens (`mid.state_encoded`).
4. Frame encoder: self-attention Blocks on the frame tokens (`mid.frames_encoded`).
5. Behaviour input tokens: per variable ProjectNorm(value) + sinusoid of the sample's time offset, all
   variables concatenated plus a 2-D sinusoidal code of the variable index (`mid.modality.behavior.all`).
6. Fusion trunk: cross-attention Blocks to the RAW past embeddings (Q7), to the encoded frames, to the
   behaviour tokens, then a second causal self-attention stack (decoder) -> `last_layer` (no final LN).
7. Heads: head_id (E -> N+3) and head_dt (E -> K+3), both without bias; behaviour targets are predicted from
   the mean-pooled trunk (regression Linear(E, 1), classification Linear(E, n_classes)).
8. Contrastive: pooled id / frames / behaviour features, one shared projection, InfoNCE (rows only, averaged
   over modality pairs; the reference default) or the symmetric CLIP loss.

A `Block` is query-side pre-LN: x + Attn(LN1(x), kv) then x + MLP(LN2(x)) and a final LN_f; keys/values are the
raw block input (self-attention) or the raw other-modality tokens (fixture Q5).

`reference_compat=True` (one flag, same modules) restores every reference behaviour needed for weight-for-weight
parity: no padding masks and pooling over PAD positions (Q6/Q12), no frame position code (Q4), the size-1
LayerNorm that erases behaviour input values (Q8), the loss weights with the contrastive gating bug (Q14), the
E-wide CLIP projection (Q13) and the exact-length position tables (Q3). The default path masks PAD keys,
pools over real tokens only, lets behaviour values matter and accepts any length <= block (needed by the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurofound.errors import ConfigError, ContractError, DataError
from neurofound.models.hub import ModelConfig, NeurofoundHubMixin
from neurofound.models.registry import register_family
from neurofound.nn.multihead import MultiHeadAttention
from neurofound.nn.positions import grid_positions, grid_sinusoid, sinusoid
from neurofound.tokenizers.spike import SpikeVocabulary

CITATION = """@inproceedings{antoniades2024neuroformer,
  title     = {Neuroformer: Multimodal and Multitask Generative Pretraining for Brain Data},
  author    = {Antoniades, Antonis and Yu, Yiyi and Canzano, Joseph and Wang, William and Smith, Spencer LaVere},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  note      = {arXiv:2311.00136}
}"""

LOSS_PRESETS = ("nf15", "paper")


# ==============================================================================================================
# Configuration
# ==============================================================================================================
@dataclass
class NeuroformerConfig(ModelConfig, SpikeVocabulary):
    """Everything needed to rebuild a Neuroformer (serialised to config.json).

    Only sizes that shape weights live here. Vocabularies follow the SpikeTokenizer: ID 0..N-1 neurons then
    SOS, EOS, PAD; dt 0..K-1 numeric offsets (K = n_dt) then SOS, EOS, PAD. What a token means in time (dt,
    windows, frame rate) is the tokenizer's: `Neuroformer.check_tokenizer` refuses a tokenizer whose sizes
    differ. `reference_compat` is set from the same top-level setting as the tokenizer's and checked with it.

    behavior_targets maps a variable to {"objective": "regression"} or {"objective": "classification",
    "n_classes": C, "bin_edges": [C-1 increasing edges] (optional; without edges the target value is the class index)}.
    contrastive_vars entries are "id", "frames" or "behavior.<input variable>".
    loss_weights overrides single weights by name ("id", "dt", "clip", "<variable>").
    """

    n_neurons: int = 100
    n_dt: int = 6  # numeric dt offsets K = round(max(window, window_prev) / dt) + 1 of the tokenizer
    block_size: int = 100
    block_size_prev: int = 700
    n_embd: int = 256
    n_head: int = 8
    n_state_layers: int = 6
    n_history_layers: int = 6
    n_stimulus_layers: int = 6
    n_behavior_layers: int = 4
    frame_shape: list[int] | None = None  # (n_frames, height, width); None = no stimulus
    frame_kernel: list[int] = field(default_factory=lambda: [3, 5, 5])
    frame_stride: list[int] | None = None  # None = kernel (non-overlapping patches)
    behavior_inputs: list[str] = field(default_factory=list)
    behavior_targets: dict[str, dict] = field(default_factory=dict)
    contrastive: bool = False
    contrastive_vars: list[str] = field(default_factory=lambda: ["id", "frames"])
    clip_embd: int = 512
    clip_temp: float = 0.5
    clip_loss: str = "infonce"  # or "symmetric"
    temporal_embedding: str = "learnt"  # or "sinusoid"
    dropout: float = 0.2
    attn_dropout: float = 0.2
    loss_preset: str = "nf15"
    loss_weights: dict[str, float] = field(default_factory=dict)
    reference_compat: bool = False

    def __post_init__(self):
        if self.n_neurons < 1:
            raise ConfigError(f"n_neurons must be >= 1, got {self.n_neurons}")
        if self.n_dt < 1:
            raise ConfigError(f"n_dt must be >= 1, got {self.n_dt}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_embd % 2:
            raise ConfigError(f"n_embd must be even (sinusoid and temporal MLP halves), got {self.n_embd}")
        if self.temporal_embedding not in ("learnt", "sinusoid"):
            raise ConfigError(f"temporal_embedding must be 'learnt' or 'sinusoid', got {self.temporal_embedding!r}")
        if self.clip_loss not in ("infonce", "symmetric"):
            raise ConfigError(f"clip_loss must be 'infonce' or 'symmetric', got {self.clip_loss!r}")
        if self.loss_preset not in LOSS_PRESETS:
            raise ConfigError(f"loss_preset must be one of {LOSS_PRESETS}, got {self.loss_preset!r}")
        if self.frame_shape is not None:
            self.frame_shape = [int(v) for v in self.frame_shape]
            if len(self.frame_shape) != 3:
                raise ConfigError(f"frame_shape must be (n_frames, height, width), got {self.frame_shape}")
            stride = self.frame_stride or self.frame_kernel
            for axis, (size, k, s) in enumerate(zip(self.frame_shape, self.frame_kernel, stride)):
                if size < k:
                    raise ConfigError(f"frame axis {axis} has size {size} < conv kernel {k}; shrink frame_kernel")
        self.frame_kernel = [int(v) for v in self.frame_kernel]
        overlap = set(self.behavior_inputs) & set(self.behavior_targets)
        if overlap:
            raise ConfigError(f"behaviour variables {sorted(overlap)} are both inputs and targets; pick one role each")
        for var, spec in self.behavior_targets.items():
            obj = spec.get("objective", "regression")
            if obj not in ("regression", "classification"):
                raise ConfigError(f"behaviour target {var!r}: objective must be regression|classification, got {obj!r}")
            if obj == "classification" and int(spec.get("n_classes", 0)) < 2:
                raise ConfigError(f"behaviour target {var!r}: classification needs n_classes >= 2")
            edges = spec.get("bin_edges")
            if edges is not None and len(edges) != int(spec["n_classes"]) - 1:
                raise ConfigError(f"behaviour target {var!r}: bin_edges needs n_classes-1 = {int(spec['n_classes']) - 1} edges")
        for v in self.contrastive_vars:
            if v in ("id", "frames"):
                continue
            if not (v.startswith("behavior.") and v.split(".", 1)[1] in self.behavior_inputs):
                raise ConfigError(f"contrastive var {v!r}: use 'id', 'frames' or 'behavior.<input variable>' "
                                 f"(inputs: {self.behavior_inputs})")
        if self.contrastive and len(self.contrastive_vars) < 2:
            raise ConfigError("contrastive=True needs at least two contrastive_vars")
        if self.contrastive and "frames" in self.contrastive_vars and self.frame_shape is None:
            raise ConfigError("contrastive_vars lists 'frames' but frame_shape is None (no stimulus)")

    @property
    def frame_grid(self) -> tuple[int, int, int] | None:
        """Conv output grid (t', h', w') of the frame encoder."""
        if self.frame_shape is None:
            return None
        stride = self.frame_stride or self.frame_kernel
        return tuple((n - k) // s + 1 for n, k, s in zip(self.frame_shape, self.frame_kernel, stride))

    # serialisation ---------------------------------------------------------------------------------------------


# ==============================================================================================================
# Temporal embeddings (the fixed position codes are in neurofound.nn.positions)
# ==============================================================================================================
class LearntTemporalEmbedding(nn.Module):
    """Linear(1, E/2) -> GELU -> Linear(E/2, E) on the float dt index (what the reference runs, fixture Q1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim))

    def forward(self, dt: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, E)
        return self.mlp(dt.unsqueeze(-1))


class SinusoidalTemporalEmbedding(nn.Module):
    """Fixed sin/cos of the float dt index (the paper's description; `temporal_embedding="sinusoid"`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, dt: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, E)
        return sinusoid(dt, self.dim)


# ==============================================================================================================
# Building blocks
# ==============================================================================================================
class Block(nn.Module):
    """Query-side pre-LN attention block with a final LayerNorm (fixture "Block(q_in, kv)").

    x = x + Attn(LN1(x), kv); x = x + MLP(LN2(x)); return LN_f(x). For self-attention kv is the raw block
    input x (not LN1(x), fixture Q5); for cross-attention it is the raw other-modality tokens.
    """

    def __init__(self, cfg: NeuroformerConfig):
        super().__init__()
        E = cfg.n_embd
        self.ln1 = nn.LayerNorm(E)
        self.attn = MultiHeadAttention(E, cfg.n_head, attn_dropout=cfg.attn_dropout)
        self.ln2 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E))
        self.ln_f = nn.LayerNorm(E)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, kv=None, *, causal=False, key_padding_mask=None, cache=None, need_weights=False):
        """x: (B, Lq, E); kv: (B, Lk, E) or None for self-attention; key_padding_mask (B, Lk) True = real.

        Returns (B, Lq, E) and the attention weights (B, H, Lq, Lk) or None.
        """
        source = x if kv is None else kv
        a, w = self.attn(self.ln1(x), source, causal=causal, key_padding_mask=key_padding_mask,
                         cache=cache, need_weights=need_weights)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln2(x)))
        return self.ln_f(x), w


class FrameEncoder(nn.Module):
    """Conv3d(1 -> E, kernel, stride) -> LayerNorm -> ReLU; (B, 1, F, H, W) -> (B, t', h', w', E)."""

    def __init__(self, cfg: NeuroformerConfig):
        super().__init__()
        stride = cfg.frame_stride or cfg.frame_kernel
        self.conv = nn.Conv3d(1, cfg.n_embd, kernel_size=tuple(cfg.frame_kernel), stride=tuple(stride))
        self.norm = nn.LayerNorm(cfg.n_embd)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.conv(frames).permute(0, 2, 3, 4, 1)  # channels last
        return F.relu(self.norm(x))


class ProjectNorm(nn.Module):
    """Behaviour value projection LN(1) -> Linear(1, 2) -> GELU -> Linear(2, E), no biases (reference layout).

    The LayerNorm over a single feature always outputs its bias, i.e. it erases the value (fixture Q8); it is
    only built (and applied) with reference_compat=True, so that behaviour values matter by default.
    """

    def __init__(self, dim: int, reference_compat: bool):
        super().__init__()
        self.ln = nn.LayerNorm(1) if reference_compat else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(1, 2, bias=False), nn.GELU(), nn.Linear(2, dim, bias=False))

    def forward(self, value: torch.Tensor) -> torch.Tensor:  # (B, n, 1) -> (B, n, E)
        return self.mlp(self.ln(value))


class BehaviorEmbedding(nn.Module):
    """One behaviour input variable: ProjectNorm(value) + sinusoid(time offset in seconds, fixture Q9)."""

    def __init__(self, cfg: NeuroformerConfig):
        super().__init__()
        self.dim = cfg.n_embd
        self.project = ProjectNorm(cfg.n_embd, cfg.reference_compat)

    def forward(self, value: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """value: (B, n, 1); offset: (B, n) seconds from the window start. Returns (B, n, E)."""
        return self.project(value) + sinusoid(offset.to(value.dtype), self.dim)


def _clip_infonce(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """One-directional InfoNCE per row (reference `contrastive_loss`): (B, E), (B, E) -> (B,)."""
    s = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temp
    return torch.logsumexp(s, dim=1) - s.diagonal()


def _clip_symmetric(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """Symmetric CLIP loss per row: mean of the row and column InfoNCE terms, (B,)."""
    s = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temp
    diag = s.diagonal()
    return 0.5 * ((torch.logsumexp(s, dim=1) - diag) + (torch.logsumexp(s, dim=0) - diag))


@dataclass
class NeuroformerOutput:
    """Model outputs (see docs/architecture.md). Shapes: id_logits (B, S, N+3), dt_logits (B, S, K+3),
    last_layer (B, S, E), behavior var -> (B, 1) or (B, n_classes), clip_proj modality -> (B, D)."""

    id_logits: torch.Tensor
    dt_logits: torch.Tensor
    last_layer: torch.Tensor
    behavior: dict[str, torch.Tensor] = field(default_factory=dict)
    clip_proj: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: dict[str, torch.Tensor] = field(default_factory=dict)
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)
    attentions: dict[str, list[torch.Tensor]] = field(default_factory=dict)


# ==============================================================================================================
# The model
# ==============================================================================================================
@register_family(
    "neuroformer",
    builders=("neuroformer_small", "neuroformer_base"),
    recipe="neurofound.recipes.neuroformer:NeuroformerRecipe",
    tokenizers=("spike",),
    converter="neurofound.models.neuroformer_convert:convert",
)
class Neuroformer(
    nn.Module,
    NeurofoundHubMixin,
    library_name="neurofound",
    tags=["neurofound", "neuroformer", "spikes"],
    license="mit",
    repo_url="https://github.com/a-antoniades/Neuroformer",
):
    """Neuroformer (Antoniades et al., ICLR 2024); see the module docstring for the walk-through.

    Args:
        config: a NeuroformerConfig (or its dict form, loaded strictly).
    """

    config_class = NeuroformerConfig
    model_card_title = "Neuroformer"
    model_card_summary = (
        "Neuroformer (Antoniades et al., ICLR 2024): autoregressive next-spike (neuron ID + time offset) "
        "prediction with past-state, stimulus and behaviour cross-attention; trained with neurofound."
    )
    model_card_citation = CITATION
    model_card_tags = ["neurofound", "neuroformer", "spikes", "neuroscience"]

    def __init__(self, config):
        super().__init__()
        cfg = config if isinstance(config, NeuroformerConfig) else NeuroformerConfig.from_dict(dict(config))
        self.config = cfg
        self.tokenizer = None  # optional SpikeTokenizer, saved under tokenizer/
        E = cfg.n_embd

        # 1. token embeddings (shared ID table, separate temporal / position tables for current and past)
        self.tok_emb = nn.Embedding(cfg.id_vocab_size, E)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.block_size, E))
        self.pos_emb_prev = nn.Parameter(torch.zeros(1, cfg.block_size_prev, E))
        temporal = LearntTemporalEmbedding if cfg.temporal_embedding == "learnt" else SinusoidalTemporalEmbedding
        self.temp_emb = temporal(E)
        self.temp_emb_prev = temporal(E)
        self.drop = nn.Dropout(cfg.dropout)

        # 2. stimulus frames
        self.frame_encoder = FrameEncoder(cfg) if cfg.frame_shape is not None else None

        # 3.-4. feature encoders
        self.state_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_state_layers))
        n_frame = cfg.n_stimulus_layers if cfg.frame_shape is not None else 0
        self.frame_blocks = nn.ModuleList(Block(cfg) for _ in range(n_frame))

        # 5. behaviour input tokens
        self.behavior_embeddings = nn.ModuleDict({v: BehaviorEmbedding(cfg) for v in cfg.behavior_inputs})

        # 6. fusion trunk
        self.history_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_history_layers))
        self.stimulus_blocks = nn.ModuleList(Block(cfg) for _ in range(n_frame))
        n_beh = cfg.n_behavior_layers if cfg.behavior_inputs else 0
        self.behavior_blocks = nn.ModuleList(Block(cfg) for _ in range(n_beh))
        self.decoder_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_state_layers))

        # 7. heads
        self.head_id = nn.Linear(E, cfg.id_vocab_size, bias=False)
        self.head_dt = nn.Linear(E, cfg.dt_vocab_size, bias=False)
        self.behavior_heads = nn.ModuleDict({
            v: nn.Linear(E, 1 if s.get("objective", "regression") == "regression" else int(s["n_classes"]))
            for v, s in cfg.behavior_targets.items()
        })

        # 8. contrastive projection; the reference ignores clip_embd and projects to E (fixture Q13)
        clip_width = E if cfg.reference_compat else cfg.clip_embd
        self.clip_proj = nn.Linear(E, clip_width, bias=False) if cfg.contrastive else None

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------------------------------------------------
    # parameter groups for fine-tuning
    # ---------------------------------------------------------------------------------------------------------
    def behavior_parameters(self) -> list[nn.Parameter]:
        """Behaviour heads, behaviour input embeddings and behaviour cross-attention blocks."""
        mods = [self.behavior_heads, self.behavior_embeddings, self.behavior_blocks]
        return [p for m in mods for p in m.parameters()]

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in `behavior_parameters()` (frozen in `finetune.mode=frozen`)."""
        ids = {id(p) for p in self.behavior_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    # ---------------------------------------------------------------------------------------------------------
    # input checks
    # ---------------------------------------------------------------------------------------------------------
    def _check_tokens(self, name: str, tokens: torch.Tensor, vocab: int, block: int, offset: int | None = None) -> None:
        if tokens.dim() != 2:
            raise DataError(f"batch[{name!r}] must be (batch, tokens), got shape {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise DataError(
                f"batch[{name!r}] has values in [{int(tokens.min())}, {int(tokens.max())}] but the vocabulary has "
                f"{vocab} entries (0..{vocab - 1}); the data has more neurons / dt bins than the model config "
                f"(n_neurons={self.config.n_neurons}, n_dt={self.config.n_dt}); rebuild the tokenizer or the model"
            )
        if self.config.reference_compat and offset is None and tokens.shape[1] != block:
            raise DataError(
                f"batch[{name!r}] has {tokens.shape[1]} tokens but reference_compat adds the position table by "
                f"broadcasting, so it must be exactly block size {block} (fixture Q3)"
            )
        end = tokens.shape[1] + (offset or 0)
        if end > block:
            raise DataError(f"batch[{name!r}] reaches position {end} > block size {block}; raise block_size or truncate")

    def _check_frames(self, frames: torch.Tensor) -> None:
        expected = (1, *self.config.frame_shape)
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise DataError(
                f"batch['frames'] must be (batch, 1, n_frames, height, width) = (B, {', '.join(map(str, expected))}), "
                f"got {tuple(frames.shape)}; resize the stimulus or set frame_shape in the config"
            )

    # ---------------------------------------------------------------------------------------------------------
    # embedding stages
    # ---------------------------------------------------------------------------------------------------------
    def embed_tokens(self, ids: torch.Tensor, dts: torch.Tensor, *, past: bool = False,
                     offset: int | None = None) -> torch.Tensor:
        """Step 1: tok_emb(id) + temp_emb(dt index as float) + pos_emb. ids, dts: (B, L) -> (B, L, E).

        `offset` is the position of the first token when decoding incrementally (KV cache); None means a full
        sequence starting at position 0 (which reference_compat requires to be exactly block long, Q3).
        """
        cfg = self.config
        block = cfg.block_size_prev if past else cfg.block_size
        self._check_tokens("id_prev" if past else "id", ids, cfg.id_vocab_size, block, offset)
        self._check_tokens("dt_prev" if past else "dt", dts.long(), cfg.dt_vocab_size, block, offset)
        table = self.pos_emb_prev if past else self.pos_emb
        temporal = self.temp_emb_prev if past else self.temp_emb
        L = ids.shape[1]
        start = offset or 0
        pos = table if (cfg.reference_compat and offset is None) else table[:, start : start + L]
        x = self.tok_emb(ids) + temporal(dts.to(self.pos_emb.dtype)) + pos
        return self.drop(x)

    def embed_frames(self, frames: torch.Tensor, sos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: frames (B, 1, F, H, W), sos (B, 1, E) -> conv grid (B, t', h', w', E), tokens (B, 1+t'h'w', E)."""
        self._check_frames(frames)
        conv = self.frame_encoder(frames.to(self.pos_emb.dtype))
        tokens = conv.flatten(1, 3)
        if not self.config.reference_compat:
            # the reference computes a 3-D position code and discards it (fixture Q4); we add it
            grid = grid_positions(conv.shape[1:4], device=conv.device, dtype=conv.dtype)
            tokens = tokens + grid_sinusoid(grid, self.config.n_embd)
        return conv, self.drop(torch.cat([sos, tokens], dim=1))

    def embed_behavior(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Step 5: behaviour inputs -> group tokens (B, n_tokens, E) and per-variable pooled features (B, E)."""
        values, offsets = batch.get("behavior") or {}, batch.get("behavior_dt") or {}
        missing = [v for v in self.config.behavior_inputs if v not in values]
        if missing:
            raise DataError(f"batch['behavior'] lacks input variables {missing} (model inputs: {self.config.behavior_inputs})")
        tokens, pooled, var_index = [], {}, []
        for i, var in enumerate(self.config.behavior_inputs):
            value = values[var].to(self.pos_emb.dtype)
            if value.dim() == 2:
                value = value.unsqueeze(-1)
            if value.dim() != 3 or value.shape[-1] != 1:
                raise DataError(f"batch['behavior'][{var!r}] must be (batch, samples, 1), got {tuple(values[var].shape)}")
            offset = offsets.get(var)
            offset = torch.zeros(value.shape[:2], dtype=value.dtype, device=value.device) if offset is None else offset
            tok = self.behavior_embeddings[var](value, offset.reshape(value.shape[:2]).to(value.dtype))
            tokens.append(tok)
            pooled[var] = tok.mean(dim=1)
            var_index += [i] * tok.shape[1]
        x = torch.cat(tokens, dim=1)
        # 2-D code: axis 0 = variable index, axis 1 = constant 0 (reference PositionalEncoding2D layout)
        pos = torch.tensor([[i, 0] for i in var_index], dtype=x.dtype, device=x.device)
        return x + grid_sinusoid(pos, self.config.n_embd), pooled

    # ---------------------------------------------------------------------------------------------------------
    # forward
    # ---------------------------------------------------------------------------------------------------------
    def _pool(self, x: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """Mean over positions: all of them in compat mode (Q12), only real (non-PAD) ones by default."""
        if real is None:
            return x.mean(dim=1)
        w = real.to(x.dtype).unsqueeze(-1)
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)

    def encode_context(self, batch: dict, sos_emb: torch.Tensor, inter: dict | None = None):
        """Everything the current tokens cross-attend to: past embeddings (+ mask), encoded frames, behaviour tokens.

        Returns a dict with "past", "past_mask", "frames", "behavior" (tensors or None) and pooled features.
        """
        cfg = self.config
        ctx: dict[str, Any] = {"pooled": {}}
        prev = self.embed_tokens(batch["id_prev"], batch["dt_prev"], past=True)
        ctx["past"] = prev
        ctx["past_mask"] = None if cfg.reference_compat else batch["id_prev"] != cfg.id_pad
        ctx["frames"] = None
        if inter is not None:
            inter["mid.prev_token_emb"] = prev
        if self.frame_encoder is not None:
            if batch.get("frames") is None:
                raise DataError(f"this model expects batch['frames'] of shape (B, 1, {', '.join(map(str, cfg.frame_shape))})")
            conv, f = self.embed_frames(batch["frames"], sos_emb)
            if inter is not None:
                inter["mid.frame_conv"], inter["mid.frame_tokens"] = conv, f
            for blk in self.frame_blocks:
                f, _ = blk(f)
            ctx["frames"] = f
            ctx["pooled"]["frames"] = f.mean(dim=1)
            if inter is not None:
                inter["mid.frames_encoded"] = f
        ctx["behavior"] = None
        if cfg.behavior_inputs:
            b, pooled = self.embed_behavior(batch)
            ctx["behavior"] = b
            for var, p in pooled.items():
                ctx["pooled"][f"behavior.{var}"] = p
            if inter is not None:
                inter["mid.modality.behavior.all"] = b
        return ctx

    def forward(self, batch: dict, return_intermediates: bool = False, need_weights: bool = False) -> NeuroformerOutput:
        """Teacher-forced forward pass over a batch (keys of docs/architecture.md "Batches").

        Args:
            batch: id, dt (B, S) int64; id_prev, dt_prev (B, Sp); optional frames (B, 1, F, H, W), behavior /
                behavior_dt (inputs), target_id / target_dt / behavior_target (losses are computed when present).
            return_intermediates: fill `out.intermediates` with the fixture's `mid.*` tensors.
            need_weights: fill `out.attentions` with per-layer softmax weights (B, H, S, L) of the state
                encoder ("state"), history cross-attention ("history") and decoder ("decoder").
        """
        cfg = self.config
        inter: dict[str, torch.Tensor] | None = {} if return_intermediates else None
        atts: dict[str, list] = {"state": [], "history": [], "decoder": []} if need_weights else {}
        ids = batch["id"]
        x = self.embed_tokens(ids, batch["dt"])
        if inter is not None:
            inter["mid.token_emb"] = x
        real = None if cfg.reference_compat else ids != cfg.id_pad
        ctx = self.encode_context(batch, x[:, :1], inter)

        for blk in self.state_blocks:
            x, w = blk(x, causal=True, key_padding_mask=real, need_weights=need_weights)
            if need_weights:
                atts["state"].append(w)
        if inter is not None:
            inter["mid.state_encoded"] = x
        x = self._trunk(x, ctx, real, atts, need_weights)
        return self._heads(x, batch, ctx, real, inter, atts)

    def _trunk(self, x, ctx, real, atts, need_weights, caches=None):
        """Step 6: history / stimulus / behaviour cross-attention, then the causal decoder stack."""
        c = iter(caches) if caches is not None else None
        for blk in self.history_blocks:
            x, w = blk(x, ctx["past"], key_padding_mask=ctx["past_mask"], cache=next(c) if c else None,
                       need_weights=need_weights)
            if need_weights:
                atts["history"].append(w)
        for blk in self.stimulus_blocks:
            x, _ = blk(x, ctx["frames"], cache=next(c) if c else None)
        for blk in self.behavior_blocks:
            x, _ = blk(x, ctx["behavior"], cache=next(c) if c else None)
        for blk in self.decoder_blocks:
            x, w = blk(x, causal=True, key_padding_mask=None if caches is not None else real,
                       cache=next(c) if c else None, need_weights=need_weights)
            if need_weights:
                atts["decoder"].append(w)
        return x

    def _heads(self, x, batch, ctx, real, inter, atts) -> NeuroformerOutput:
        cfg = self.config
        out = NeuroformerOutput(id_logits=self.head_id(x), dt_logits=self.head_dt(x), last_layer=x,
                                attentions=atts)
        pooled = self._pool(x, real)
        for var, head in self.behavior_heads.items():
            out.behavior[var] = head(pooled)
        if self.clip_proj is not None:
            feats = {"id": pooled, **ctx["pooled"]}
            for name in cfg.contrastive_vars:
                if name in feats:
                    out.clip_proj[name] = self.clip_proj(feats[name])
                    if inter is not None:
                        inter[f"mid.pooled.{name}"] = feats[name]
        if inter is not None:
            out.intermediates = inter
        if "target_id" in batch:
            out.loss = self.losses(out, batch)
        return out

    def features(self, batch: dict) -> torch.Tensor:
        """Pooled (B, E) trunk feature (the input of the behaviour heads) for probes and frozen fine-tuning."""
        out = self.forward(batch)
        real = None if self.config.reference_compat else batch["id"] != self.config.id_pad
        return self._pool(out.last_layer, real)

    def generate(self, batch: dict, **kwargs):
        """Autoregressive spike generation (KV cache, top-k/top-p/temperature, own-past / true-past).

        See `neurofound.models.neuroformer_generate.generate` for the arguments; returns a GenerationResult.
        """
        from neurofound.models.neuroformer_generate import generate

        return generate(self, batch, **kwargs)

    # ---------------------------------------------------------------------------------------------------------
    # losses
    # ---------------------------------------------------------------------------------------------------------
    def loss_weights(self) -> dict[str, float]:
        """Weights of every loss term.

        nf15 (default): id 3/5, dt 2/5, behaviour 1, scaled by 3/4 and clip 1/4 when contrastive is on.
        paper: id 4/5, dt 1/5, behaviour 1/4, all x3/4 when contrastive, clip 1/4.
        reference_compat: the nf15 weights with the x3/4 and clip 1/4 applied even when contrastive is off,
        because the reference tests the (always present) config section, not its flag (fixture Q14).
        `config.loss_weights` overrides single entries.
        """
        cfg = self.config
        gated = cfg.contrastive or cfg.reference_compat
        scale = 0.75 if gated else 1.0
        if cfg.loss_preset == "paper":
            w = {"id": 0.8 * scale, "dt": 0.2 * scale, **{v: 0.25 * scale for v in cfg.behavior_targets}}
        else:
            w = {"id": 0.6 * scale, "dt": 0.4 * scale, **{v: 1.0 for v in cfg.behavior_targets}}
        w["clip"] = 0.25 if cfg.contrastive else 0.0
        w.update(cfg.loss_weights)
        return w

    def losses(self, out: NeuroformerOutput, batch: dict) -> dict[str, torch.Tensor]:
        """Weighted loss terms and their sum "total" (PAD targets ignored, EOS included)."""
        cfg = self.config
        w = self.loss_weights()
        L: dict[str, torch.Tensor] = {}
        L["id"] = w["id"] * F.cross_entropy(out.id_logits.flatten(0, 1), batch["target_id"].flatten(),
                                            ignore_index=cfg.id_pad)
        L["dt"] = w["dt"] * F.cross_entropy(out.dt_logits.flatten(0, 1), batch["target_dt"].flatten().long(),
                                            ignore_index=cfg.dt_pad)
        targets = batch.get("behavior_target") or {}
        for var, spec in cfg.behavior_targets.items():
            if var not in targets:
                continue
            y = targets[var].to(out.id_logits.dtype).reshape(-1, 1)
            if spec.get("objective", "regression") == "regression":
                L[var] = w[var] * F.mse_loss(out.behavior[var], y)
            else:
                L[var] = w[var] * F.cross_entropy(out.behavior[var], self.behavior_classes(var, y))
        if cfg.contrastive and all(v in out.clip_proj for v in cfg.contrastive_vars):
            fn = _clip_infonce if cfg.clip_loss == "infonce" else _clip_symmetric
            names = cfg.contrastive_vars
            pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
            rows = sum(fn(out.clip_proj[a], out.clip_proj[b], cfg.clip_temp) for a, b in pairs) / len(pairs)
            L["clip"] = w["clip"] * rows.mean()
        L["total"] = sum(L.values())
        return L

    def behavior_classes(self, var: str, y: torch.Tensor) -> torch.Tensor:
        """Class index of classification target values (B, 1) -> (B,): bucketised by bin_edges, or the value itself."""
        spec = self.config.behavior_targets[var]
        edges = spec.get("bin_edges")
        if edges is not None:
            return torch.bucketize(y.reshape(-1), torch.tensor(edges, dtype=y.dtype, device=y.device))
        cls = y.reshape(-1).round().long()
        n = int(spec["n_classes"])
        if cls.numel() and (int(cls.min()) < 0 or int(cls.max()) >= n):
            raise DataError(f"behaviour target {var!r} has class values outside 0..{n - 1}; set bin_edges in the config")
        return cls

    # ---------------------------------------------------------------------------------------------------------
    # Hub
    # ---------------------------------------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer) -> None:
        """The tokenizer must produce this model's vocabularies, blocks, frame count and compat mode."""
        cfg = self.config
        want = {"n_neurons": cfg.n_neurons, "n_dt": cfg.n_dt, "block_size": cfg.block_size,
                "block_size_prev": cfg.block_size_prev, "reference_compat": cfg.reference_compat}
        if cfg.frame_shape is not None:
            want["n_frames"] = cfg.frame_shape[0]
        have = {k: getattr(tokenizer, k, None) for k in want}
        bad = [f"{k}: model {v!r} vs tokenizer {have[k]!r}" for k, v in want.items() if have[k] != v]
        if bad:
            raise ContractError("the tokenizer does not fit this Neuroformer (" + "; ".join(bad) + "). Build the "
                                "tokenizer with the model's sizes (block_size, windows / dt, frame window) and the "
                                "same reference_compat")

    def model_card_fields(self) -> dict[str, Any]:
        cfg = self.config
        rows = {
            "n_neurons": cfg.n_neurons,
            "ID vocabulary": f"{cfg.id_vocab_size} (neurons 0..{cfg.n_neurons - 1}, SOS {cfg.id_sos}, EOS {cfg.id_eos}, PAD {cfg.id_pad})",
            "dt vocabulary": f"{cfg.dt_vocab_size} ({cfg.n_dt} offsets + SOS/EOS/PAD)",
            "block size current / past": f"{cfg.block_size} / {cfg.block_size_prev}",
            "frames (n_frames, height, width)": cfg.frame_shape if cfg.frame_shape is not None else "none",
            "behaviour inputs": cfg.behavior_inputs,
            "behaviour targets": {k: v.get("objective", "regression") for k, v in cfg.behavior_targets.items()},
            "width / heads": f"{cfg.n_embd} / {cfg.n_head}",
            "layers state / history / stimulus / behaviour": f"{cfg.n_state_layers} / {cfg.n_history_layers} / "
                                                             f"{cfg.n_stimulus_layers} / {cfg.n_behavior_layers}",
            "reference_compat": cfg.reference_compat,
        }
        tok = getattr(self, "tokenizer", None)
        if tok is not None:
            rows["tokenizer"] = (f"{tok.name}: dt {tok.dt:g} s, windows {tok.window:g} / {tok.window_prev:g} s, "
                                 f"frames {tok.frame_window:g} s at {tok.frame_rate:g} Hz")
        return rows


# ==============================================================================================================
# Size builders
# ==============================================================================================================
def neuroformer_small(**overrides) -> NeuroformerConfig:
    """CPU size for the quickstart: 100 neurons, E=64, 4 heads, 2 layers per stack, blocks 40 / 80,
    3 x 32 x 56 frames (kernel [3, 8, 8] -> 28 frame tokens), 6 dt offsets (50 ms windows at 10 ms)."""
    cfg = dict(n_neurons=100, n_dt=6, block_size=40, block_size_prev=80, n_embd=64, n_head=4, n_state_layers=2, n_history_layers=2,
               n_stimulus_layers=2, n_behavior_layers=2, frame_shape=[3, 32, 56], frame_kernel=[3, 8, 8],
               dropout=0.1, attn_dropout=0.1)
    cfg.update(overrides)
    return NeuroformerConfig(**cfg)


def neuroformer_base(**overrides) -> NeuroformerConfig:
    """The public code's Visnav-lateral config: E=256, 8 heads, 6/6/6 layers, blocks 100 / 700, windows
    0.05 / 0.05 / 0.15 s, dt 0.01 s, frames 3 x 64 x 112 with kernel [3, 5, 5] (264 frame tokens), dropout 0.2."""
    cfg = dict(n_neurons=2023, n_dt=6, block_size=100, block_size_prev=700, n_embd=256, n_head=8, n_state_layers=6,
               n_history_layers=6, n_stimulus_layers=6, n_behavior_layers=4, frame_shape=[3, 64, 112], frame_kernel=[3, 5, 5],
               dropout=0.2, attn_dropout=0.2)
    cfg.update(overrides)
    return NeuroformerConfig(**cfg)
