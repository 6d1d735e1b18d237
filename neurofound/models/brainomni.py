"""BrainOmni stage 2: masked prediction of BrainTokenizer codes with a criss-cross transformer.

Xiao, Cui, Zhang, Chen, Wu, Thwaites, Woolgar, Zhou, Zhang. "BrainOmni: A Brain Foundation Model for Unified
EEG and MEG Signals." NeurIPS 2025, arXiv:2505.18185. Reference code: OpenTSLab/BrainOmni @ 340d6b5 (MIT),
`brainomni/model.py` and `model_utils/attn.py`. Stage 1, the BrainTokenizer, is
`neurofound.tokenizers.braintokenizer`; here it is a frozen submodule.

Walk-through (data-flow order; the names in brackets are the `mid.*` tensors of the parity fixture):

1. Tokens. The frozen BrainTokenizer (always eval, no grad) turns a signal `(B, C, samples)` of any device into
   `C'` latent sources x `T` time tokens: `features (B, C', T, D)`, the continuous quantised vectors (sum of the Q
   RVQ codewords), `indices (B, C', T, Q)`, the prediction targets, and `token_mask (B, T)`, False where a time
   token holds only padding. 512-sample windows with overlap 0.25, 8 tokens each, positions running on across
   windows (spec §3).
2. Corruption, BERT-style (fixture README §2). `keep = rand > mask_ratio` (i.i.d. over the grid, all Q levels of a
   position together); every masked position first takes a token vector drawn from the whole minibatch (a random
   permutation of all positions, possibly itself), then those with `replace <= 1 - random_token_prob` take the
   learned `mask_token`: about 80% mask token, 20% random token, none left as it was.
3. Source embedding: `+ tokenizer.encoder.neuros` (the tokenizer's `C'` compression queries, detached), broadcast
   over batch and time [`lm_input`]; then `projection` `D -> lm_dim` (Identity when equal, as in the reference).
4. `lm_depth` criss-cross blocks (CBraMod-style), pre-norm: `x = x + Attn(RMSNorm(x))`, `x = x + FFN(RMSNorm(x))`.
   Attn splits the features in halves: the FIRST half attends along time within each (batch, source), with RoPE;
   the SECOND half attends across the sources at each (batch, time step), without a position code. The outputs
   are concatenated as `[spatial, temporal]`, i.e. swapped relative to the input split, as the reference does
   (README §4). FFN = Linear(4x) -> SELU -> Linear -> Dropout [`final_hidden` after the last block].
5. Head: `predict_head` Linear(lm_dim -> Q * K) read level-major as `(B, C', T, Q, K)`; the loss is the
   cross-entropy over masked real positions x Q levels (mean), with the accuracy per level.
6. Downstream features (spec §5.1): `encode` = tokens without corruption -> 3 -> all blocks but the last ->
   L2-normalise; `pooled` averages the real time tokens and flattens to `(B, C' * lm_dim)`; `classify` puts
   the reference's downstream MLP `head` on top (config `n_classes` > 0).

RoPE (README §5): the frequencies are built for the whole temporal width `lm_dim / 2` and distributed contiguously
over the heads, so each head rotates with different frequencies (not the usual per-head set); pairs are
interleaved features `(2i, 2i+1)`. q and k are rotated before the shared `attention` function. The stored
`freqs` buffer keeps the reference key; the reference's complex64 `rotate` cache is not stored, the rotation is
rebuilt from `freqs` on every call.

Where this differs from the reference, on purpose:

* Attention dropout applies in training only. The reference passes `dropout_p` to the attention kernel
  unconditionally, so its `eval()` and `encode()` outputs are random (spec §3); the fixture was generated with
  that patched out, and no `reference_compat` setting restores it: a random feature extractor helps nobody.
* Padding: time tokens that hold only padding (the tail of an input that is not a multiple of the window
  stride) are masked keys of the temporal attention, are never masked, never drawn as random replacement
  tokens and stay out of the loss and of `pooled`. With nothing padded (always so with a `reference_compat`
  tokenizer, which pads with zeros as the reference does and marks nothing) every draw and every number equals
  the reference's.

`reference_compat` is recorded in the config and must equal the tokenizer's (`check_tokenizer`); stage 2 itself
has no reference quirk to restore beyond what the tokenizer does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from neurofound.errors import ConfigError, ContractError, DataError
from neurofound.models.brainomni_tokenizer import CITATION
from neurofound.models.hub import ModelConfig, NeurofoundHubMixin
from neurofound.models.registry import register_family
from neurofound.nn.attention import AttentionLayer, attention
from neurofound.nn.layers import FeedForward, RMSNorm
from neurofound.nn.positions import apply_rope, rope_frequencies

# The tokenizer settings that shape this model's weights (checked by `check_tokenizer`).
TOKENIZER_SIZES = ("n_dim", "n_neuro", "codebook_size", "num_quantizers")


# ==============================================================================================================
# Configuration
# ==============================================================================================================
@dataclass
class BrainOmniConfig(ModelConfig):
    """Everything needed to rebuild a BrainOmni (serialised to config.json).

    `n_dim`, `n_neuro`, `codebook_size` and `num_quantizers` are the tokenizer's (feature width D, sources C',
    codes per level K, levels Q): they shape the weights, so `BrainOmni.check_tokenizer` refuses a tokenizer whose
    sizes differ (`sizes_from_tokenizer` reads them off one). `num_quantizers_used` (None = all) restricts the
    predicted levels to the first ones. `attn_dropout` acts in training only (module docstring). `n_classes` > 0
    adds the downstream classifier `head` (spec §5.1: Dropout(`head_dropout`) -> Linear(C' * lm_dim -> lm_dim) ->
    SELU -> Linear(-> n_classes)); 0 = none (pretraining).
    """

    lm_dim: int = 64
    lm_head: int = 4
    lm_depth: int = 4
    lm_dropout: float = 0.1
    attn_dropout: float = 0.1
    mask_ratio: float = 0.5
    random_token_prob: float = 0.2
    overlap_ratio: float = 0.25
    num_quantizers_used: int | None = None
    n_dim: int = 64
    n_neuro: int = 16
    codebook_size: int = 512
    num_quantizers: int = 4
    rope_base: float = 10000.0
    n_classes: int = 0
    head_dropout: float = 0.1
    reference_compat: bool = False

    def __post_init__(self):
        if self.num_quantizers_used is None:
            self.num_quantizers_used = self.num_quantizers
        for name in ("lm_dim", "lm_head", "lm_depth", "n_dim", "n_neuro", "codebook_size", "num_quantizers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"BrainOmniConfig.{name} must be >= 1, got {getattr(self, name)}")
        # each branch gets lm_dim // 2 features and lm_head // 2 heads (the reference floors an odd lm_head)
        half, heads = self.lm_dim // 2, self.lm_head // 2
        if self.lm_dim % 2 or heads < 1 or half % heads or (half // heads) % 2:
            raise ConfigError(f"lm_dim / 2 = {self.lm_dim / 2:g} features per branch must split into lm_head // 2 = "
                              f"{heads} heads of an even width (RoPE rotates feature pairs inside each head); e.g. "
                              f"lm_dim = {4 * max(heads, 1)}, lm_head = {2 * max(heads, 1)}")
        if not 1 <= self.num_quantizers_used <= self.num_quantizers:
            raise ConfigError(f"num_quantizers_used must be in [1, num_quantizers={self.num_quantizers}], got "
                              f"{self.num_quantizers_used}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1) (0.5 in the paper), got {self.mask_ratio}")
        if not 0.0 <= self.random_token_prob <= 1.0:
            raise ConfigError(f"random_token_prob must be in [0, 1] (0.2 in the paper), got {self.random_token_prob}")
        if not 0.0 <= self.overlap_ratio < 1.0:
            raise ConfigError(f"overlap_ratio must be in [0, 1) (0.25 in the paper), got {self.overlap_ratio}")
        if self.n_classes < 0 or self.n_classes == 1:
            raise ConfigError(f"n_classes must be 0 (no classifier head) or >= 2, got {self.n_classes}")
        for name in ("lm_dropout", "attn_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.rope_base > 1.0:
            raise ConfigError(f"rope_base must be > 1 (10000 in the reference), got {self.rope_base}")



def sizes_from_tokenizer(tokenizer) -> dict[str, Any]:
    """The config entries a BrainTokenizer fixes: `n_dim`, `n_neuro`, `codebook_size`, `num_quantizers` and
    `reference_compat`, e.g. `brainomni_small(**sizes_from_tokenizer(tok))`."""
    config = getattr(tokenizer, "config", None)
    if not isinstance(config, dict) or any(k not in config for k in TOKENIZER_SIZES):
        raise ContractError(f"BrainOmni needs a BrainTokenizer (config with {list(TOKENIZER_SIZES)}), got "
                            f"{type(tokenizer).__name__}; load one with neurofound.tokenizers.load_tokenizer(...)")
    sizes = {k: int(config[k]) for k in TOKENIZER_SIZES}
    sizes["reference_compat"] = bool(config.get("reference_compat", False))
    return sizes


# ==============================================================================================================
# Building blocks
# ==============================================================================================================
class RotaryEmbedding(nn.Module):
    """RoPE over the whole width of its input (Su et al. 2021); holds the reference's `freqs` buffer.

    Args:
        dim: rotated features (the temporal half, `lm_dim / 2`).
        base: RoPE base (10000).
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("freqs", rope_frequencies(dim, base), persistent=True)

    def _apply(self, fn, recurse=True):
        # `freqs` follows the module's device but stays fp32 under `.to(torch.bfloat16)` / `.half()`, as the
        # reference's complex64 cache does: a bf16 frequency is off by up to 0.4 %, ~0.6 rad at token 160.
        exact = self.freqs.float()
        super()._apply(fn, recurse)
        self.freqs = exact.to(self.freqs.device)
        return self

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`(..., T, dim)`, positions `(T,)` -> rotated `(..., T, dim)`."""
        return apply_rope(x, positions, self.freqs)


class SelfAttention(AttentionLayer):
    """Non-causal multi-head self-attention with a fused `qkv` projection (reference `SelfAttention`).

    `qkv` = Linear(dim, 3 dim) split in the order q, k, v; heads are contiguous `dim / n_head` slices; with
    `rope_base` set, q and k are rotated on the full width before the heads are split (each head gets its own
    slice of the frequencies, README §5). Attention runs through `neurofound.nn.attention.attention`.

    Args:
        dim: width of the (half) feature space.
        n_head: heads.
        dropout: dropout on the attention probabilities, training only.
        rope_base: None = no position code (the spatial branch).
        backend: the attention backend (`neurofound.nn.attention.set_backend` changes it later).
    """

    def __init__(self, dim: int, n_head: int, dropout: float, rope_base: float | None = None, backend: str = "auto"):
        super().__init__(backend)
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope_embedding_layer = RotaryEmbedding(dim, rope_base) if rope_base is not None else None

    def forward(self, x: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(N, L, dim) -> (N, L, dim)`; key_padding_mask `(N, L)` bool, True = real key (None: all real).

        Positions for RoPE are the token indices 0..L-1.
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.rope_embedding_layer is not None:
            positions = torch.arange(x.shape[1], device=x.device)
            q, k = self.rope_embedding_layer(q, positions), self.rope_embedding_layer(k, positions)
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=self.n_head) for t in (q, k, v))
        out = attention(q, k, v, key_padding_mask=key_padding_mask,
                        dropout_p=self.dropout if self.training else 0.0, backend=self.backend)
        return self.proj(rearrange(out, "n h l d -> n l (h d)"))


class CrissCrossBlock(nn.Module):
    """Pre-norm criss-cross block (reference `SpatialTemporalAttentionBlock`, README §4).

    x = x + [spatial(second half), temporal(first half)](RMSNorm(x)); x = x + FFN(RMSNorm(x)).
    """

    def __init__(self, cfg: BrainOmniConfig):
        super().__init__()
        half, heads = cfg.lm_dim // 2, cfg.lm_head // 2
        self.pre_attn_norm = RMSNorm(cfg.lm_dim)
        self.time_attn = SelfAttention(half, heads, cfg.attn_dropout, rope_base=cfg.rope_base)
        self.spatial_attn = SelfAttention(half, heads, cfg.attn_dropout)
        self.pre_ff_norm = RMSNorm(cfg.lm_dim)
        self.ff = FeedForward(cfg.lm_dim, cfg.lm_dropout)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, C', T, lm_dim) -> (B, C', T, lm_dim)`; token_mask `(B, T)` True = real time token (None: all)."""
        x = x + self._criss_cross(self.pre_attn_norm(x), token_mask)
        return x + self.ff(self.pre_ff_norm(x))

    def _criss_cross(self, x: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        batch, sources, _, dim = x.shape
        temporal = rearrange(x[..., : dim // 2], "b c t d -> (b c) t d")
        spatial = rearrange(x[..., dim // 2:], "b c t d -> (b t) c d")
        key_mask = None if token_mask is None else token_mask.repeat_interleave(sources, dim=0)  # (b c) t
        temporal = self.time_attn(temporal, key_padding_mask=key_mask)
        spatial = self.spatial_attn(spatial)  # every source is real: the tokenizer always yields C' of them
        # [spatial, temporal]: swapped relative to the input split, as the reference (README §4)
        return torch.cat([rearrange(spatial, "(b t) c d -> b c t d", b=batch),
                          rearrange(temporal, "(b c) t d -> b c t d", b=batch)], dim=-1)


# ==============================================================================================================
# Masking draws and outputs
# ==============================================================================================================
@dataclass
class MaskingDraws:
    """The three random draws of one masked forward (README §2), injectable for parity.

    Attributes:
        keep: `(B, C', T)` bool, True = visible (`rand > mask_ratio`).
        shuffle: `(n,)` int64, a permutation of the n real positions in row-major `(B, C', T)` order (n =
            B * C' * T when nothing is padded): real position i takes real position `shuffle[i]`'s vector as
            its random replacement.
        replace: `(B, C', T)` float in [0, 1): a masked position takes the mask token when
            `replace <= 1 - random_token_prob`, else keeps its random replacement.
    """

    keep: torch.Tensor
    shuffle: torch.Tensor
    replace: torch.Tensor

    @classmethod
    def draw(cls, shape: Sequence[int], mask_ratio: float, n_real: int, *, device=None,
             generator: torch.Generator | None = None) -> "MaskingDraws":
        """Draw in the reference's order: rand (keep), randperm (shuffle), rand (replace)."""
        keep = torch.rand(tuple(shape), device=device, generator=generator) > mask_ratio
        shuffle = torch.randperm(n_real, device=device, generator=generator)
        replace = torch.rand(tuple(shape), device=device, generator=generator)
        return cls(keep, shuffle, replace)


@dataclass
class BrainOmniOutput:
    """What a masked forward returns.

    Attributes:
        logits: `(B, C', T, Qu, K)` code logits at every position (Qu = num_quantizers_used).
        loss: cross-entropy over masked real positions x Qu levels (mean).
        acc_per_level: `(Qu,)` argmax accuracy at the masked positions, per RVQ level.
        acc_all: mean of `acc_per_level`.
        masked: `(B, C', T)` bool, the positions predicted (masked and real).
        token_mask: `(B, T)` bool, True = real time token.
        intermediates: with `return_intermediates=True`, `mid.lm_input (B, C', T, D)`,
            `mid.final_hidden (B, C', T, lm_dim)`, `mid.use_mask_token`, `mid.use_random_token` (B, C', T) bool.
    """

    logits: torch.Tensor
    loss: torch.Tensor
    acc_per_level: torch.Tensor
    acc_all: torch.Tensor
    masked: torch.Tensor
    token_mask: torch.Tensor
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)


# ==============================================================================================================
# The model
# ==============================================================================================================
@register_family(
    "brainomni",
    builders=("brainomni_small", "brainomni_tiny", "brainomni_base"),
    recipe="neurofound.recipes.brainomni:BrainOmniRecipe",
    tokenizers=("braintokenizer",),
    converter="neurofound.models.brainomni_convert:convert",
)
class BrainOmni(NeurofoundHubMixin, nn.Module):
    """BrainOmni stage 2 (Xiao et al., NeurIPS 2025); see the module docstring for the walk-through.

    The tokenizer is attached with `attach_tokenizer` (the recipe, `from_pretrained` and the converter do it):
    it is then frozen (`requires_grad=False`), kept in eval mode by `train()`, run under `no_grad`, and saved
    once under `model/tokenizer/`.

    Args:
        config: a BrainOmniConfig (or its dict form, loaded strictly).
    """

    config_class = BrainOmniConfig
    model_card_title = "BrainOmni"
    model_card_summary = (
        "BrainOmni stage 2 (Xiao et al., NeurIPS 2025): a criss-cross transformer trained by masked prediction "
        "of all RVQ levels of a frozen BrainTokenizer's codes, for EEG and MEG from any device; trained with "
        "neurofound."
    )
    model_card_citation = CITATION
    model_card_tags = ["neurofound", "brainomni", "eeg", "meg", "neuroscience"]
    _fsdp_units = (CrissCrossBlock,)

    def __init__(self, config):
        super().__init__()
        cfg = config if isinstance(config, BrainOmniConfig) else BrainOmniConfig.from_dict(dict(config))
        self.config = cfg
        self.tokenizer = None  # the frozen BrainTokenizer, attached with attach_tokenizer
        # N(0, 1) as in the reference; the reference's init hook never reaches a bare Parameter
        self.mask_token = nn.Parameter(torch.randn(cfg.n_dim))
        self.projection = nn.Linear(cfg.n_dim, cfg.lm_dim) if cfg.n_dim != cfg.lm_dim else nn.Identity()
        self.blocks = nn.ModuleList(CrissCrossBlock(cfg) for _ in range(cfg.lm_depth))
        self.predict_head = nn.Linear(cfg.lm_dim, cfg.num_quantizers_used * cfg.codebook_size)
        # walk-through 6: the downstream classifier of spec §5.1 (the reference's LazyLinear, sized C' * lm_dim)
        self.head = nn.Sequential(
            nn.Dropout(cfg.head_dropout), nn.Linear(cfg.n_neuro * cfg.lm_dim, cfg.lm_dim), nn.SELU(),
            nn.Linear(cfg.lm_dim, cfg.n_classes),
        ) if cfg.n_classes else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the reference's init: truncated normal (std 0.02, cut at +-2 absolute, i.e. hardly cut), zero bias
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------------------------------------------------
    # the tokenizer: frozen, always in eval mode
    # ---------------------------------------------------------------------------------------------------------
    def check_tokenizer(self, tokenizer) -> None:
        """The tokenizer's sizes and `reference_compat` must equal the config's (else `ContractError`)."""
        have = sizes_from_tokenizer(tokenizer)
        if not (isinstance(tokenizer, nn.Module) and hasattr(tokenizer, "tokenize")):
            raise ContractError(f"BrainOmni needs a learned BrainTokenizer (an nn.Module with tokenize()), got "
                                f"{type(tokenizer).__name__}")
        want = {k: getattr(self.config, k) for k in (*TOKENIZER_SIZES, "reference_compat")}
        bad = [f"{k}: model {v!r} vs tokenizer {have[k]!r}" for k, v in want.items() if have[k] != v]
        if bad:
            raise ContractError("the tokenizer does not fit this BrainOmni (" + "; ".join(bad) + "). Build the "
                                "model config from the tokenizer: brainomni_small(**sizes_from_tokenizer(tokenizer))")

    def attach_tokenizer(self, tokenizer) -> None:
        """Attach (after `check_tokenizer`) and freeze the BrainTokenizer."""
        super().attach_tokenizer(tokenizer)
        if tokenizer is not None:
            tokenizer.requires_grad_(False)
            tokenizer.eval()

    def train(self, mode: bool = True) -> "BrainOmni":
        """Set the training mode of everything but the tokenizer, which stays in eval (frozen codebooks)."""
        super().train(mode)
        if isinstance(self.tokenizer, nn.Module):
            self.tokenizer.eval()
        return self

    def _require_tokenizer(self):
        if not isinstance(self.tokenizer, nn.Module):
            raise ContractError("this BrainOmni has no tokenizer: attach a trained BrainTokenizer with "
                                "model.attach_tokenizer(tokenizer) (it provides the tokens and the source embedding)")
        return self.tokenizer

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor, sensors, *, sample_mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage-2 tokens of a signal with the frozen tokenizer (eval mode, no grad, overlap `overlap_ratio`).

        Args:
            x: `(B, C, samples)` preprocessed signal at the tokenizer's rate.
            sensors: the tokenizer's `SensorLayout` of the C channels.
            sample_mask: `(B, samples)` bool, real samples (right padding of shorter recordings; None: all).

        Returns:
            features `(B, C', T, D)`, indices `(B, C', T, Q)` int64, token_mask `(B, T)` bool.
        """
        tokenizer = self._require_tokenizer()
        if tokenizer.training:  # attached by plain assignment and switched to training by hand: codebooks stay frozen
            tokenizer.eval()
        return tokenizer.tokenize(x, sensors, overlap=self.config.overlap_ratio, sample_mask=sample_mask)

    def _tokens(self, x, sensors, tokens, sample_mask=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._require_tokenizer()
        if tokens is None:
            if x is None or sensors is None:
                raise DataError("pass a signal and its sensors (x, sensors) or precomputed tokens=(features, "
                                "indices, token_mask)")
            features, indices, token_mask = self.tokenize(x, sensors, sample_mask=sample_mask)
        else:
            if len(tokens) != 3:
                raise DataError(f"tokens must be (features, indices, token_mask or None), got {len(tokens)} items")
            features, indices, token_mask = tokens
        cfg = self.config
        if features.dim() != 4 or (features.shape[1], features.shape[3]) != (cfg.n_neuro, cfg.n_dim):
            raise DataError(f"token features must be (batch, {cfg.n_neuro} sources, time, {cfg.n_dim}), got "
                            f"{tuple(features.shape)}")
        batch, _, steps, _ = features.shape
        if indices.shape != (batch, cfg.n_neuro, steps, cfg.num_quantizers):
            raise DataError(f"token indices must be {(batch, cfg.n_neuro, steps, cfg.num_quantizers)}, got "
                            f"{tuple(indices.shape)}")
        if token_mask is None:
            token_mask = torch.ones(batch, steps, dtype=torch.bool, device=features.device)
        elif token_mask.shape != (batch, steps) or token_mask.dtype != torch.bool:
            raise DataError(f"token_mask must be a bool tensor {(batch, steps)}, got {token_mask.dtype} "
                            f"{tuple(token_mask.shape)}")
        return features, indices, token_mask

    def source_embedding(self) -> torch.Tensor:
        """`(C', D)` the tokenizer's compression queries, detached (README §3)."""
        return self._require_tokenizer().encoder.neuros.detach()

    # ---------------------------------------------------------------------------------------------------------
    # masked token prediction
    # ---------------------------------------------------------------------------------------------------------
    def corrupt(self, features: torch.Tensor, token_mask: torch.Tensor, draws: MaskingDraws
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask-token / random-token corruption (README §2).

        Args:
            features: `(B, C', T, D)` token vectors.
            token_mask: `(B, T)` True = real time token; padded ones are never masked nor drawn.
            draws: the random draws (`MaskingDraws.draw` or injected).

        Returns:
            corrupted features `(B, C', T, D)`, use_mask_token and use_random_token `(B, C', T)` bool.
        """
        batch, sources, steps, dim = features.shape
        real = token_mask[:, None, :].expand(batch, sources, steps)
        keep = draws.keep | ~real
        flat = features.reshape(-1, dim)
        real_index = real.reshape(-1).nonzero().squeeze(1)
        if draws.shuffle.shape != real_index.shape:
            raise DataError(f"draws.shuffle must permute the {real_index.numel()} real positions, got shape "
                            f"{tuple(draws.shuffle.shape)}")
        # position real_index[i] takes real_index[shuffle[i]]: with nothing padded, flat[shuffle] (the reference)
        random_tokens = flat.index_copy(0, real_index, flat[real_index[draws.shuffle]]).view_as(features)
        x = torch.where(keep[..., None], features, random_tokens)
        # reference: (keep + replace) > 0.8; for keep = 1 that always holds, for keep = 0 it is replace > 0.8
        stays = keep | (draws.replace > 1.0 - self.config.random_token_prob)
        x = torch.where(stays[..., None], x, self.mask_token.to(x.dtype))
        return x, ~keep & ~stays, ~keep & stays

    def forward(self, x: torch.Tensor | None = None, sensors=None, *, tokens=None, sample_mask=None,
                draws: MaskingDraws | None = None, generator: torch.Generator | None = None,
                return_intermediates: bool = False) -> BrainOmniOutput:
        """Masked token prediction: tokenize, corrupt, + source embedding, project, blocks, head, loss.

        Args:
            x: `(B, C, samples)` signal (with `sensors`, the tokenizer's `SensorLayout`), or None with `tokens`.
            sensors: the channels' `SensorLayout`.
            tokens: precomputed `(features, indices, token_mask or None)` from `tokenize` instead of x.
            sample_mask: `(B, samples)` bool, real samples of x (None: all).
            draws: the random draws to use; None = draw them (from `generator`, else the global RNG, in the
                reference's order, so `torch.manual_seed(s)` reproduces a reference forward under that seed).
            generator: a torch.Generator on the tokens' device for the draws.
            return_intermediates: fill `intermediates` with the fixture's `mid.*` tensors.

        Returns:
            BrainOmniOutput (loss and accuracies over the masked real positions).
        """
        features, indices, token_mask = self._tokens(x, sensors, tokens, sample_mask)
        batch, sources, steps, _ = features.shape
        if draws is None:
            draws = MaskingDraws.draw((batch, sources, steps), self.config.mask_ratio,
                                      int(token_mask.sum()) * sources, device=features.device, generator=generator)
        elif draws.keep.shape != (batch, sources, steps) or draws.replace.shape != (batch, sources, steps):
            raise DataError(f"draws.keep and draws.replace must be {(batch, sources, steps)}, got "
                            f"{tuple(draws.keep.shape)} and {tuple(draws.replace.shape)}")
        corrupted, use_mask_token, use_random_token = self.corrupt(features, token_mask, draws)
        lm_input = corrupted + self.source_embedding().to(corrupted.dtype)[None, :, None]
        h = self.projection(lm_input)
        block_mask = None if bool(token_mask.all()) else token_mask  # None keeps the fused kernels and == reference
        for block in self.blocks:
            h = block(h, block_mask)
        logits = rearrange(self.predict_head(h), "b c t (q k) -> b c t q k", q=self.config.num_quantizers_used)
        masked = use_mask_token | use_random_token
        loss, acc = self.masked_loss(logits, indices, masked)
        mids = {}
        if return_intermediates:
            mids = {"mid.lm_input": lm_input, "mid.final_hidden": h, "mid.use_mask_token": use_mask_token,
                    "mid.use_random_token": use_random_token}
        return BrainOmniOutput(logits=logits, loss=loss, acc_per_level=acc, acc_all=acc.mean(), masked=masked,
                               token_mask=token_mask, intermediates=mids)

    @staticmethod
    def masked_loss(logits: torch.Tensor, indices: torch.Tensor, masked: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy (fp32) over masked positions x levels, mean; argmax accuracy per level (README §7).

        Args:
            logits: `(B, C', T, Qu, K)`.
            indices: `(B, C', T, Q)` targets; the first Qu levels are used.
            masked: `(B, C', T)` bool, the positions scored (row-major order, as the reference).

        Returns:
            loss `()`, accuracy `(Qu,)`.
        """
        levels = logits.shape[-2]
        chosen_logits = logits[masked]  # (X, Qu, K)
        chosen_labels = indices[masked][:, :levels]  # (X, Qu)
        if chosen_labels.shape[0] == 0:
            raise DataError("no position was masked, so there is nothing to predict; use longer inputs or a larger "
                            "mask_ratio")
        loss = F.cross_entropy(chosen_logits.flatten(0, 1).float(), chosen_labels.flatten())
        acc = (chosen_logits.argmax(-1) == chosen_labels).float().mean(0)
        return loss, acc

    # ---------------------------------------------------------------------------------------------------------
    # downstream features
    # ---------------------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor | None = None, sensors=None, *, tokens=None, sample_mask=None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Downstream features: tokens (no masking) + source embedding -> projection -> all blocks but the last
        -> L2-normalised (eps 1e-6), as the reference `encode` (README §8).

        Args:
            x, sensors, sample_mask: signal `(B, C, samples)`, its `SensorLayout` and real samples; or tokens as
                in `forward`.

        Returns:
            features `(B, C', T, lm_dim)`, token_mask `(B, T)` bool.
        """
        features, _, token_mask = self._tokens(x, sensors, tokens, sample_mask)
        h = self.projection(features + self.source_embedding().to(features.dtype)[None, :, None])
        block_mask = None if bool(token_mask.all()) else token_mask
        for block in self.blocks[:-1]:
            h = block(h, block_mask)
        return F.normalize(h, p=2.0, dim=-1, eps=1e-6), token_mask

    def pooled(self, x: torch.Tensor | None = None, sensors=None, *, tokens=None, sample_mask=None) -> torch.Tensor:
        """`encode` averaged over the real time tokens and flattened: `(B, C' * lm_dim)` (spec §5.1)."""
        h, token_mask = self.encode(x, sensors, tokens=tokens, sample_mask=sample_mask)
        weight = token_mask.to(h.dtype)[:, None, :, None]
        return ((h * weight).sum(2) / weight.sum(2).clamp_min(1.0)).flatten(1)

    def classify(self, x: torch.Tensor | None = None, sensors=None, *, tokens=None, sample_mask=None
                 ) -> torch.Tensor:
        """Downstream class logits `(B, n_classes)`: `head(pooled(...))` (spec §5.1; needs `n_classes` > 0)."""
        if self.head is None:
            raise ConfigError("this BrainOmni has no classifier head (n_classes = 0); build it with n_classes=<number "
                              "of classes> for fine-tuning")
        return self.head(self.pooled(x, sensors, tokens=tokens, sample_mask=sample_mask))

    def model_card_fields(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "width / heads / blocks": f"{cfg.lm_dim} / {cfg.lm_head} / {cfg.lm_depth}",
            "tokens": f"{cfg.n_neuro} sources x time, {cfg.num_quantizers} RVQ levels of {cfg.codebook_size} codes "
                      f"(width {cfg.n_dim}), windows with overlap {cfg.overlap_ratio}",
            "levels predicted": cfg.num_quantizers_used,
            "masking": f"{cfg.mask_ratio:g} masked; of those {1 - cfg.random_token_prob:g} mask token, "
                       f"{cfg.random_token_prob:g} random token",
            "dropout (FFN / attention, training only)": f"{cfg.lm_dropout:g} / {cfg.attn_dropout:g}",
            "classifier head": f"{cfg.n_classes} classes" if cfg.n_classes else "none (pretraining)",
            "reference_compat": cfg.reference_compat,
        }


# ==============================================================================================================
# Sizes (the tokenizer entries are placeholders: pass sizes_from_tokenizer(tokenizer))
# ==============================================================================================================
def brainomni_small(**overrides) -> BrainOmniConfig:
    """CPU size: lm_dim 64, 4 heads (2 along time, 2 across sources, width 16), 4 blocks (~0.3M parameters),
    on a braintokenizer_small (D 64, 16 sources, 4 x 512 codes)."""
    cfg = dict(lm_dim=64, lm_head=4, lm_depth=4, n_dim=64, n_neuro=16, codebook_size=512, num_quantizers=4)
    cfg.update(overrides)
    return BrainOmniConfig(**cfg)


def brainomni_tiny(**overrides) -> BrainOmniConfig:
    """BrainOmni_tiny of the paper (Table 10): lm_dim 256, 8 heads, 12 blocks, on the released tokenizer."""
    cfg = dict(lm_dim=256, lm_head=8, lm_depth=12, n_dim=256, n_neuro=16, codebook_size=512, num_quantizers=4)
    cfg.update(overrides)
    return BrainOmniConfig(**cfg)


def brainomni_base(**overrides) -> BrainOmniConfig:
    """BrainOmni_base of the paper (Table 10): lm_dim 512, 16 heads, 12 blocks, on the released tokenizer."""
    cfg = dict(lm_dim=512, lm_head=16, lm_depth=12, n_dim=256, n_neuro=16, codebook_size=512, num_quantizers=4)
    cfg.update(overrides)
    return BrainOmniConfig(**cfg)
