"""BrainTokenizer: EEG/MEG from any device -> a fixed number of latent sources -> residual-VQ codes, and back.

Stage 1 of BrainOmni (Xiao et al., "BrainOmni: A Brain Foundation Model for Unified EEG and MEG Signals",
NeurIPS 2025, arXiv 2505.18185; reference code OpenTSLab/BrainOmni @ 340d6b5). Spec §2; the fixture
README `tests/fixtures/reference/brainomni_tokenizer/README.md` is authoritative on what the code does and
is cited below as "README §n". Walk-through, in data-flow order (names = the reference's submodules):

1. `windows`: each channel is cut into 512-sample (2 s at 256 Hz) windows, stride `512 (1 - overlap)`;
   every window is encoded independently (README §1).
2. `sensor_embed`: a time-invariant embedding per channel from its 6-vector (position xyz + orientation
   xyz) and its type (EEG 0, MAG 1, GRAD 2): Lin-SELU-Lin, + type embedding, + FFN residual, RMSNorm
   (README §2).
3. `encoder.seanet_encoder`: a 1-channel SEANet per channel and window, 512 samples -> W = 512 /
   prod(ratios) latent steps of width D (README §3; `neurofound.nn.seanet`).
4. `encoder` compression ("backward solution"): per latent step, C' learned source queries
   (`encoder.neuros`, used raw, no query projection) attend over the channels; keys = `k_proj(z + e)`
   (signal + sensor identity), values = `backwardsolution.v(z)` (signal only), output
   `backwardsolution.proj` (README §4). Padded or hidden channels are masked keys.
5. `quantizer.rvq`: the latent is L2-normalised and quantised by a residual VQ with EMA codebooks
   (README §5; `neurofound.nn.rvq`). Codes `(B, C', N, W, Q)`; the quantised vector is the sum of the Q
   codewords.
6. `decoder` ("forward solution"): queries = the sensor embeddings of ANY target sensors (no
   projection), keys and values = `forwardsolution.kv(quantized)` split `[k | v]`, output
   `forwardsolution.proj`; then a SEANet decoder per channel and window back to 512 samples (README §6).
   Padded target channels are masked queries and decode to exact zeros.
7. The target is each channel's window z-scored over its samples (README §7); the losses are L1 +
   exp(-PCC) + commitment + amplitude L1 + 0.5 phase L1 on a periodic-Hamming, ortho rFFT (README §8).

Decoded signals are per-window z-scored (unitless), not volts: the tokenizer never sees the scale.

Mixed devices in one batch: channels are right-padded and `SensorLayout.mask` marks the real ones; the
masks go to the shared `neurofound.nn.attention.attention` as key padding (compression) and query
padding (decoder) masks, padded channels are never run through the SEANets, and every loss term,
correlation and normalisation skips them, so a mixed batch equals the per-sample results (to 1e-5).

Default path vs `reference_compat=True` (the reference, for weight-for-weight parity):

* tail: input shorter than one window is a `DataError`; a longer input's tail is zero-padded into a last
  window and masked (`sample_mask`, `window_mask`) rather than dropped. The reference zero-pads a short
  input to one window, DROPS the tail for overlap 0 and zero-pads it unmasked for overlap > 0.
* codebooks: k-means init on the first training batch; eval with uninitialised codebooks is a
  `DataError`. The reference runs k-means on the first call in any mode.
* the RVQ's EMA bookkeeping (`neurofound.nn.rvq.EuclideanCodebook`).

Initialisation (`init`): `"reference"` is the reference's (`_init_weights`: Linear weights trunc-normal
std 0.02 with zero bias, embeddings trunc-normal 0.02, RMSNorm 1; PyTorch defaults for the convolutions
and LSTMs, i.e. weight-norm gains `g = ||v||`; `encoder.neuros` standard normal). `"unit_gain"` (the
default) is the same except that every weight-norm gain is set so that its convolution keeps roughly
unit gain (`neurofound.nn.seanet.unit_gain_`: 1 for convolutions, sqrt(out * stride / in) for transposed
ones): with `g = ||v||` (about 0.58 per convolution) the signal dies in the SEANet stack and training
does not take off (README, "How the weights were produced"). Only values change, never the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from neurofound.errors import ConfigError, DataError, UnsupportedError
from neurofound.nn.attention import AttentionLayer, attention
from neurofound.nn.layers import FeedForward, RMSNorm
from neurofound.nn.rvq import REFERENCE_VECTORS_PER_STEP, ResidualVQ
from neurofound.nn.seanet import SEANetDecoder, SEANetEncoder, unit_gain_
from neurofound.tokenizers import register
from neurofound.tokenizers.base import Tokenizer

__all__ = [
    "BrainTokenizer",
    "SensorLayout",
    "TokenizerOutput",
    "zscore_windows",
    "window_pcc",
    "reconstruction_losses",
    "hamming_window",
    "INITS",
]

INITS = ("unit_gain", "unit_gain_conv", "reference")
N_SENSOR_TYPES = 3  # EEG 0, MAG 1, GRAD 2 (neurofound.data.sensors)
TARGET_EPS = 1e-6  # z-score denominator std + 1e-6 (README §7)
PCC_EPS = 1e-6  # PCC denominator std * std + 1e-6 (README §8)


# ================================================================================================================
# Sensors
# ================================================================================================================
@dataclass
class SensorLayout:
    """What the tokenizer knows of the sensors of a batch.

    Attributes:
        positions: `(B, C, 6)` float: position xyz (normalised per modality over the whole device),
            then orientation xyz (zeros for EEG).
        types: `(B, C)` long: 0 EEG, 1 MAG, 2 GRAD.
        mask: `(B, C)` bool, True = real channel, False = right padding (None: all real).
    """

    positions: torch.Tensor
    types: torch.Tensor
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        p, t, m = self.positions, self.types, self.mask
        if p.dim() != 3 or p.shape[-1] != 6:
            raise DataError(f"sensor positions must be (batch, channels, 6) = xyz + orientation, got "
                            f"{tuple(p.shape)}")
        if tuple(t.shape) != tuple(p.shape[:2]):
            raise DataError(f"sensor types must be (batch, channels) = {tuple(p.shape[:2])}, got {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise DataError(f"sensor types must be integer ids (0 EEG, 1 MAG, 2 GRAD), got dtype {t.dtype}")
        if m is not None and (m.dtype != torch.bool or tuple(m.shape) != tuple(t.shape)):
            raise DataError(f"the sensor mask must be a (batch, channels) = {tuple(t.shape)} bool tensor (True = "
                            f"real channel), got {tuple(m.shape)} {m.dtype}")

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    @property
    def n_channels(self) -> int:
        return self.positions.shape[1]

    @property
    def real(self) -> torch.Tensor:
        """`(B, C)` bool, True = real channel."""
        if self.mask is None:
            return torch.ones(self.types.shape, dtype=torch.bool, device=self.types.device)
        return self.mask

    @property
    def padded(self) -> bool:
        return self.mask is not None and not bool(self.mask.all())

    def to(self, device) -> "SensorLayout":
        return SensorLayout(self.positions.to(device), self.types.to(device),
                            None if self.mask is None else self.mask.to(device))

    def index_select(self, index: torch.Tensor) -> "SensorLayout":
        """The same sensors in the channel order `index (C',)` (shared by the whole batch)."""
        return SensorLayout(self.positions.index_select(1, index), self.types.index_select(1, index),
                            None if self.mask is None else self.mask.index_select(1, index))

    @classmethod
    def from_recording(cls, rec) -> "SensorLayout":
        """A batch of one from a `neurofound.data.sensors.SensorRecording`."""
        positions = torch.as_tensor(rec.positions, dtype=torch.float32).reshape(1, -1, 6)
        types = torch.as_tensor(rec.sensor_types, dtype=torch.long).reshape(1, -1)
        return cls(positions, types)

    @classmethod
    def batch(cls, layouts: Sequence["SensorLayout"]) -> "SensorLayout":
        """Stack layouts of different channel counts, right-padding channels (mask = real channels)."""
        if not layouts:
            raise DataError("SensorLayout.batch needs at least one layout")
        width = max(s.n_channels for s in layouts)
        pos, typ, msk = [], [], []
        for s in layouts:
            pad = width - s.n_channels
            pos.append(F.pad(s.positions, (0, 0, 0, pad)))
            typ.append(F.pad(s.types, (0, pad)))
            msk.append(F.pad(s.real, (0, pad), value=False))
        return cls(torch.cat(pos), torch.cat(typ), torch.cat(msk))


# ================================================================================================================
# Outputs and losses
# ================================================================================================================
@dataclass
class TokenizerOutput:
    """What `BrainTokenizer.encode` / `forward` return.

    Shapes: B batch, C sensors, C' sources, N windows, W latent steps per window, L window length, D width,
    Q levels.

    Attributes:
        latent: `(B, C', N, W, D)` source latents before L2 normalisation and quantisation.
        quantized: `(B, C', N, W, D)` sum of the Q codewords (of the L2-normalised latent).
        codes: `(B, C', N, W, Q)` int64 code indices.
        commitment: `()` commitment loss, mean over levels (the reference code's reduction).
        commitment_per_level: `(Q,)`.
        window_mask: `(B, N)` bool, the window holds real samples.
        sample_mask: `(B, N, L)` bool, real (not padded) samples.
        sensor_embedding: `(B, C, D)` (padded channels zero).
        temporal_features: `(B, C, N*W, D)` SEANet-encoder output, windows concatenated (zero for channels
            not encoded).
        decoder_sensor_features: `(B, C, N, W, D)` decoder cross-attention output (only from `forward`).
        reconstruction: `(B, C, N, L)` decoded, per-window z-scored signal (only from `forward`).
        target: `(B, C, N, L)` the z-scored input windows (only from `forward`).
        losses: the stage-1 loss terms of `reconstruction_losses` (only from `forward`).
    """

    latent: torch.Tensor
    quantized: torch.Tensor
    codes: torch.Tensor
    commitment: torch.Tensor
    commitment_per_level: torch.Tensor
    window_mask: torch.Tensor | None = None
    sample_mask: torch.Tensor | None = None
    sensor_embedding: torch.Tensor | None = None
    temporal_features: torch.Tensor | None = None
    decoder_sensor_features: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    target: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


def hamming_window(length: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The PERIODIC Hamming window (denominator `length`, `torch.hamming_window`'s default; README §8)."""
    return torch.hamming_window(length, periodic=True, device=device, dtype=dtype)


def _row_masks(sample_mask: torch.Tensor, channel_mask: torch.Tensor | None, n_channels: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B, C, N, L)` sample weights and `(B, C, N)` row validity from the sample and channel masks."""
    m = sample_mask[:, None].expand(-1, n_channels, -1, -1)
    if channel_mask is not None:
        m = m & channel_mask[:, :, None, None]
    return m, m.any(-1)


def zscore_windows(x: torch.Tensor, sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per channel and window: subtract the mean and divide by (unbiased std + 1e-6), over real samples.

    README §7: the reconstruction target. An all-zero window maps to 0; padded samples are 0.

    Args:
        x: `(B, C, N, L)` windows.
        sample_mask: `(B, N, L)` bool real samples (None: all).

    Returns:
        `(B, C, N, L)` float32.
    """
    x = x.float()
    if sample_mask is None:
        x = x - x.mean(dim=-1, keepdim=True)
        return x / (x.std(dim=-1, keepdim=True) + TARGET_EPS)
    m = sample_mask[:, None].to(x.dtype)
    n = m.sum(-1, keepdim=True)
    mean = (x * m).sum(-1, keepdim=True) / n.clamp(min=1)
    centred = (x - mean) * m
    std = (centred.pow(2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
    return centred / (std + TARGET_EPS)


def window_pcc(reconstruction: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor | None = None,
               channel_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson correlation per (batch, channel, window) row, over real samples (README §8).

    Covariance with 1/(n - 1) over (unbiased std * unbiased std + 1e-6), n = real samples of the window.

    Args:
        reconstruction, target: `(B, C, N, L)`.
        sample_mask: `(B, N, L)` bool (None: all samples real).
        channel_mask: `(B, C)` bool (None: all channels real).

    Returns:
        pcc `(B, C, N)` (0 on invalid rows) and rows `(B, C, N)` bool (real channel, >= 2 real samples).
    """
    rec, tgt = reconstruction.float(), target.float()
    B, C, N, L = rec.shape
    if sample_mask is None:
        sample_mask = torch.ones(B, N, L, dtype=torch.bool, device=rec.device)
    m, _ = _row_masks(sample_mask, channel_mask, C)
    w = m.to(rec.dtype)
    n = w.sum(-1)
    rows = n >= 2
    denom = (n - 1).clamp(min=1)
    rc = (rec - (rec * w).sum(-1, keepdim=True) / n.clamp(min=1)[..., None]) * w
    tc = (tgt - (tgt * w).sum(-1, keepdim=True) / n.clamp(min=1)[..., None]) * w
    cov = (rc * tc).sum(-1) / denom
    sigma = (rc.pow(2).sum(-1) / denom).sqrt() * (tc.pow(2).sum(-1) / denom).sqrt() + PCC_EPS
    return torch.where(rows, cov / sigma, torch.zeros_like(cov)), rows


def reconstruction_losses(reconstruction: torch.Tensor, target: torch.Tensor, sample_mask: torch.Tensor | None,
                          channel_mask: torch.Tensor | None, commitment_per_level: torch.Tensor, *,
                          phase_weight: float = 0.5, commitment_reduction: str = "mean") -> dict[str, torch.Tensor]:
    """The stage-1 loss terms over real channels and real samples (README §8).

    `total = time + exp(-pcc) + commitment + amp + phase_weight * phase` with
    time = mean |rec - target|; pcc = mean of `window_pcc` over rows; amp / phase = mean absolute
    difference of `|F|` / `angle F` with `F = rfft(hamming * signal, norm="ortho")` over the L samples
    (raw angles in (-pi, pi], no wrap-around, as the reference). Padded samples are zeroed in both signals
    before the transform (they add nothing to either spectrum); padded channels and windows without real
    samples are left out of every mean.

    Args:
        reconstruction, target: `(B, C, N, L)`.
        sample_mask: `(B, N, L)` bool or None (all real).
        channel_mask: `(B, C)` bool or None (all real).
        commitment_per_level: `(Q,)`.
        phase_weight: 0.5 in the reference code, 1 in the paper.
        commitment_reduction: "mean" over levels (the code) or "sum" (the paper).

    Returns:
        dict with `time`, `pcc`, `amp`, `phase`, `commitment`, `total` (scalars; only `total` needs grad).
    """
    if commitment_reduction not in ("mean", "sum"):
        raise ConfigError(f"commitment_reduction must be 'mean' or 'sum', got {commitment_reduction!r}")
    rec, tgt = reconstruction.float(), target.float()
    B, C, N, L = rec.shape
    if sample_mask is None:
        sample_mask = torch.ones(B, N, L, dtype=torch.bool, device=rec.device)
    m, rows = _row_masks(sample_mask, channel_mask, C)
    w = m.to(rec.dtype)
    time = ((rec - tgt).abs() * w).sum() / w.sum().clamp(min=1)
    pcc_rows, pcc_valid = window_pcc(rec, tgt, sample_mask, channel_mask)
    pcc = (pcc_rows * pcc_valid).sum() / pcc_valid.sum().clamp(min=1)
    window = hamming_window(L, device=rec.device)
    f_rec = torch.fft.rfft(window * (rec * w), dim=-1, norm="ortho")
    f_tgt = torch.fft.rfft(window * (tgt * w), dim=-1, norm="ortho")
    r = rows[..., None].to(rec.dtype)
    n_bins = r.sum().clamp(min=1) * f_rec.shape[-1]
    amp = ((f_rec.abs() - f_tgt.abs()).abs() * r).sum() / n_bins
    phase = ((torch.angle(f_rec) - torch.angle(f_tgt)).abs() * r).sum() / n_bins
    commitment = commitment_per_level.mean() if commitment_reduction == "mean" else commitment_per_level.sum()
    total = time + torch.exp(-pcc) + commitment + amp + phase_weight * phase
    return {"time": time, "pcc": pcc, "amp": amp, "phase": phase, "commitment": commitment, "total": total}


# ================================================================================================================
# Modules (names and order = the reference's state-dict keys)
# ================================================================================================================
class SensorEncoder(nn.Module):
    """`(B, C, 6)` positions + `(B, C)` types -> `(B, C, D)` sensor embeddings (README §2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.sensor_embedding_layer = nn.Embedding(N_SENSOR_TYPES, dim)
        self.pos_embedding_layer = nn.Sequential(nn.Linear(6, dim // 2), nn.SELU(), nn.Linear(dim // 2, dim))
        self.aggregate_mlp = FeedForward(dim, 0.0)
        self.norm = RMSNorm(dim)

    def forward(self, positions: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        e = self.pos_embedding_layer(positions)
        e = e + self.sensor_embedding_layer(types).type_as(e)
        e = e + self.aggregate_mlp(e)
        return self.norm(e)


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    return rearrange(x, "b l (h d) -> b h l d", h=n_head)


def _merge(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b h l d -> b l (h d)")


class BackwardSolution(AttentionLayer):
    """Source queries attend over channels: `v(z)` values, given keys; output `proj` (README §4).

    An `AttentionLayer`, so the runtime's `attention.backend` reaches it (`neurofound.nn.attention.set_backend`).
    """

    def __init__(self, dim: int, n_head: int, dropout: float, backend: str = "auto"):
        super().__init__(backend)
        self.n_head, self.dropout = n_head, dropout
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, signal: torch.Tensor,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        """queries `(n, C', D)`, keys / signal `(n, C, D)`, key_mask `(n, C)` -> `(n, C', D)`."""
        out = attention(_heads(queries, self.n_head), _heads(keys, self.n_head), _heads(self.v(signal), self.n_head),
                        key_padding_mask=key_mask, dropout_p=self.dropout if self.training else 0.0,
                        backend=self.backend)
        return self.proj(_merge(out))


class SourceEncoder(nn.Module):
    """SEANet per channel and window, then compression of the channels into C' sources (README §3-4)."""

    def __init__(self, n_filters: int, ratios: Sequence[int], kernel_size: int, last_kernel_size: int, dim: int,
                 n_head: int, dropout: float, n_neuro: int):
        super().__init__()
        self.seanet_encoder = SEANetEncoder(1, dim, n_filters, ratios, kernel_size, last_kernel_size)
        self.neuros = nn.Parameter(torch.randn(n_neuro, dim))
        self.backwardsolution = BackwardSolution(dim, n_head, dropout)
        self.k_proj = nn.Linear(dim, dim)

    def temporal(self, windows: torch.Tensor, channels: torch.Tensor | None) -> torch.Tensor:
        """`(B, C, N, L)` -> `(B, C, N*W, D)`; only the `channels (B, C)` that are True are encoded (others 0)."""
        B, C, N, L = windows.shape
        if channels is None or bool(channels.all()):
            z = self.seanet_encoder(windows.reshape(B * C * N, 1, L))
            return rearrange(z, "(b c n) d w -> b c (n w) d", b=B, c=C, n=N)
        keep = channels.reshape(-1)
        z = self.seanet_encoder(windows.reshape(B * C, N, L)[keep].reshape(-1, 1, L))
        z = rearrange(z, "(k n) d w -> k (n w) d", n=N)
        out = z.new_zeros(B * C, z.shape[1], z.shape[2])
        out[keep] = z
        return out.reshape(B, C, *z.shape[1:])

    def forward(self, windows: torch.Tensor, sensor_embedding: torch.Tensor, key_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """windows `(B, C, N, L)`, sensor_embedding `(B, C, D)`, key_mask `(B, C)` (True = use the channel).

        Returns:
            latent `(B, C', N, W, D)` and temporal features `(B, C, N*W, D)`.
        """
        B, C, N, _ = windows.shape
        z = self.temporal(windows, key_mask)
        T = z.shape[2]
        z_steps = rearrange(z, "b c t d -> (b t) c d")
        e = rearrange(sensor_embedding[:, None].expand(B, T, C, -1), "b t c d -> (b t) c d")
        queries = self.neuros.type_as(z)[None].expand(B * T, -1, -1)
        mask = None if key_mask is None else key_mask[:, None].expand(B, T, C).reshape(B * T, C)
        src = self.backwardsolution(queries, self.k_proj(z_steps + e), z_steps, mask)
        return rearrange(src, "(b n w) s d -> b s n w d", b=B, n=N), z


class BrainQuantizer(nn.Module):
    """L2 normalisation then the residual VQ (key `rvq`; README §5)."""

    def __init__(self, rvq: ResidualVQ):
        super().__init__()
        self.rvq = rvq

    def forward(self, latent: torch.Tensor, mask: torch.Tensor | None = None):
        return self.rvq(F.normalize(latent, p=2.0, dim=-1), mask)


class ForwardSolution(AttentionLayer):
    """Sensor-embedding queries attend over the sources: `kv` split `[k | v]`, output `proj` (README §6).

    An `AttentionLayer`, so the runtime's `attention.backend` reaches it.
    """

    def __init__(self, dim: int, n_head: int, dropout: float, backend: str = "auto"):
        super().__init__(backend)
        self.dim, self.n_head, self.dropout = dim, n_head, dropout
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, sources: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
        """queries `(n, C, D)`, sources `(n, C', D)`, query_mask `(n, C)` -> `(n, C, D)`."""
        k, v = torch.split(self.kv(sources), self.dim, dim=-1)
        out = attention(_heads(queries, self.n_head), _heads(k, self.n_head), _heads(v, self.n_head),
                        query_padding_mask=query_mask, dropout_p=self.dropout if self.training else 0.0,
                        backend=self.backend)
        return self.proj(_merge(out))


class SensorDecoder(nn.Module):
    """Sources -> any sensors: forward solution per latent step, then a SEANet decoder (README §6)."""

    def __init__(self, dim: int, n_head: int, n_filters: int, ratios: Sequence[int], kernel_size: int,
                 last_kernel_size: int, dropout: float):
        super().__init__()
        self.forwardsolution = ForwardSolution(dim, n_head, dropout)
        self.seanet_decoder = SEANetDecoder(1, dim, n_filters, ratios, kernel_size, last_kernel_size)

    def forward(self, quantized: torch.Tensor, sensor_embedding: torch.Tensor, query_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """quantized `(B, C', N, W, D)`, sensor_embedding `(B, C, D)`, query_mask `(B, C)` (True = decode).

        Returns:
            signal `(B, C, N, L)` (zero for masked channels) and sensor features `(B, C, N, W, D)`.
        """
        B, _, N, W, D = quantized.shape
        C = sensor_embedding.shape[1]
        sources = rearrange(quantized, "b s n w d -> (b n w) s d")
        queries = rearrange(sensor_embedding[:, None].expand(B, N * W, C, D), "b t c d -> (b t) c d")
        mask = None if query_mask is None else query_mask[:, None].expand(B, N * W, C).reshape(B * N * W, C)
        h = self.forwardsolution(queries, sources, mask)
        h = rearrange(h, "(b n w) c d -> b c n w d", b=B, n=N)
        if query_mask is not None:
            h = h * query_mask[:, :, None, None, None].to(h.dtype)
        if query_mask is None or bool(query_mask.all()):
            x = self.seanet_decoder(rearrange(h, "b c n w d -> (b c n) d w"))
            return rearrange(x, "(b c n) 1 l -> b c n l", b=B, c=C), h
        keep = query_mask.reshape(-1)
        x = self.seanet_decoder(rearrange(h.reshape(B * C, N, W, D)[keep], "k n w d -> (k n) d w"))
        x = rearrange(x, "(k n) 1 l -> k n l", n=N)
        out = x.new_zeros(B * C, N, x.shape[-1])
        out[keep] = x
        return out.reshape(B, C, N, -1), h


# ================================================================================================================
# The tokenizer
# ================================================================================================================
@register("braintokenizer")
class BrainTokenizer(Tokenizer, nn.Module):
    """BrainOmni's BrainTokenizer (see the module docstring for the walk-through and the options).

    Args:
        window_length: samples per window L (512 = 2 s at 256 Hz).
        n_filters: SEANet base width.
        ratios: SEANet strides (decoder order; the encoder runs them reversed); W = L / prod(ratios).
        kernel_size, last_kernel_size: first and last SEANet kernels.
        n_dim: latent width D.
        n_neuro: latent sources C'.
        n_head: attention heads of the compression and the decoder.
        dropout: attention dropout (training only; the reference applies it in eval too, and the
            release uses 0).
        codebook_dim, codebook_size, num_quantizers: the RVQ (projections when codebook_dim != n_dim).
        rotation_trick: rotation-trick gradients (True) or straight-through.
        quantize_optimize_method: "ema" (the release; the reference's SimVQ alternative is not
            implemented).
        sampling_rate: Hz the input must be at (recorded for the input contract).
        ema_decay, kmeans_iters, dead_code_threshold, dead_code_reference_vectors: the codebooks
            (`neurofound.nn.rvq`).
        init: "unit_gain" (default) or "reference" (module docstring).
        reference_compat: the reference's behaviour (module docstring).
    """

    def __init__(self, window_length: int = 512, n_filters: int = 32, ratios: Sequence[int] = (8, 4, 2),
                 kernel_size: int = 5, last_kernel_size: int = 5, n_dim: int = 256, n_neuro: int = 16, n_head: int = 4,
                 dropout: float = 0.0, codebook_dim: int = 256, codebook_size: int = 512, num_quantizers: int = 4,
                 rotation_trick: bool = True, quantize_optimize_method: str = "ema", sampling_rate: float = 256.0,
                 ema_decay: float = 0.99, kmeans_iters: int = 10, dead_code_threshold: float = 2.0,
                 dead_code_reference_vectors: int = REFERENCE_VECTORS_PER_STEP, init: str = "unit_gain",
                 reference_compat: bool = False):
        nn.Module.__init__(self)
        ratios = [int(r) for r in ratios]
        self._set_config(window_length=window_length, n_filters=n_filters, ratios=ratios, kernel_size=kernel_size,
                         last_kernel_size=last_kernel_size, n_dim=n_dim, n_neuro=n_neuro, n_head=n_head,
                         dropout=float(dropout), codebook_dim=codebook_dim, codebook_size=codebook_size,
                         num_quantizers=num_quantizers, rotation_trick=bool(rotation_trick),
                         quantize_optimize_method=quantize_optimize_method, sampling_rate=float(sampling_rate),
                         ema_decay=float(ema_decay), kmeans_iters=kmeans_iters,
                         dead_code_threshold=float(dead_code_threshold),
                         dead_code_reference_vectors=int(dead_code_reference_vectors), init=init,
                         reference_compat=bool(reference_compat))
        hop = math.prod(ratios)
        if window_length < 1 or window_length % hop:
            raise ConfigError(f"window_length {window_length} must be a positive multiple of prod(ratios) = {hop}")
        if n_dim % n_head:
            raise ConfigError(f"n_dim {n_dim} must be divisible by n_head {n_head}")
        if n_dim % 2:
            raise ConfigError(f"n_dim must be even (the sensor encoder's hidden width is n_dim / 2), got {n_dim}")
        if init not in INITS:
            raise ConfigError(f"init must be one of {list(INITS)}, got {init!r}")
        if quantize_optimize_method != "ema":
            raise UnsupportedError(f"quantize_optimize_method={quantize_optimize_method!r} is not implemented; the "
                                   f"released BrainTokenizer uses 'ema' (EMA codebooks): use quantize_optimize_method="
                                   f"'ema'")
        self.window_length, self.n_dim, self.n_neuro, self.n_head = window_length, n_dim, n_neuro, n_head
        self.codebook_size, self.num_quantizers = codebook_size, num_quantizers
        self.sampling_rate = float(sampling_rate)
        self.reference_compat = bool(reference_compat)
        self.latent_steps = window_length // hop

        self.sensor_embed = SensorEncoder(n_dim)
        self.encoder = SourceEncoder(n_filters, ratios, kernel_size, last_kernel_size, n_dim, n_head, dropout, n_neuro)
        self.quantizer = BrainQuantizer(ResidualVQ(
            n_dim, codebook_size, num_quantizers, codebook_dim, rotation_trick=rotation_trick, decay=ema_decay,
            kmeans_iters=kmeans_iters, dead_code_threshold=dead_code_threshold,
            dead_code_reference_vectors=dead_code_reference_vectors, reference_compat=reference_compat))
        self.decoder = SensorDecoder(n_dim, n_head, n_filters, ratios, kernel_size, last_kernel_size, dropout)
        self.apply(_reference_init)
        if init in ("unit_gain", "unit_gain_conv"):
            unit_gain_(self)
        if init == "unit_gain":
            self.apply(_unit_gain_linear)

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "BrainTokenizer":
        """Load from a tokenizer folder, a model folder (its `tokenizer/`), a stage-1 run folder, a `.ckpt` or a
        Hub id (as `neurofound.tokenizers.load_tokenizer`)."""
        from neurofound.errors import CheckpointError
        from neurofound.tokenizers import _tokenizer_dir, load_tokenizer

        path = Path(str(directory)).expanduser()
        found = _tokenizer_dir(path) if path.is_dir() else None
        tok = super().from_pretrained(found) if found is not None else load_tokenizer(directory)
        if not isinstance(tok, cls):
            raise CheckpointError(f"{directory} holds a {type(tok).__name__}, not a BrainTokenizer; pass a "
                                  f"BrainTokenizer folder or a BrainOmni model / run folder")
        return tok

    # ---- pieces ----------------------------------------------------------------------------------------------
    def windows(self, x: torch.Tensor, overlap: float = 0.0, *, sample_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut `x (B, C, T)` into windows `(B, C, N, L)`; also return the real samples `(B, N, L)` bool.

        Stride `int(L (1 - overlap))`. Default: every sample's real length (all of T, or the count of
        `sample_mask (B, T)`, a right-padded prefix) must hold one window (else `DataError`); windows
        cover it with the last one zero-padded and masked, `N = ceil((T - L) / stride) + 1`.
        `reference_compat` (README §1): a short input is zero-padded to L; for overlap 0 the tail is
        dropped (`N = T // L`); for overlap > 0 the input is zero-padded by `stride - (T - L) % stride`,
        unmasked.
        """
        if x.dim() != 3:
            raise DataError(f"x must be (batch, channels, samples), got {tuple(x.shape)}")
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
        L = self.window_length
        stride = int(L * (1 - overlap))
        if stride < 1:
            raise ConfigError(f"overlap {overlap} leaves a stride of {stride} samples; use a smaller overlap")
        B, _, T = x.shape
        if sample_mask is not None:
            if sample_mask.dtype != torch.bool or tuple(sample_mask.shape) != (B, T):
                raise DataError(f"sample_mask must be a (batch, samples) = {(B, T)} bool tensor, got "
                                f"{tuple(sample_mask.shape)} {sample_mask.dtype}")
            lengths = sample_mask.sum(-1)
            prefix = torch.arange(T, device=x.device)[None] < lengths[:, None]
            if not torch.equal(prefix, sample_mask):
                raise DataError("sample_mask must mark a prefix of each row (right padding only)")
            x = x * sample_mask[:, None].to(x.dtype)
        else:
            lengths = torch.full((B,), T, device=x.device)
        if self.reference_compat:
            if T < L:
                x, T = F.pad(x, (0, L - T)), L
            if overlap == 0.0:
                n = T // L
            else:
                remain = (T - L) % stride
                if remain:
                    x = F.pad(x, (0, stride - remain))
                n = (x.shape[-1] - L) // stride + 1
            if sample_mask is None:
                lengths = torch.full((B,), x.shape[-1], device=x.device)
        else:
            shortest = int(lengths.min()) if B else T
            if shortest < L:
                raise DataError(f"input of {shortest} samples is shorter than one window of {L} samples "
                                f"({L / self.sampling_rate:g} s at {self.sampling_rate:g} Hz); pass at least {L} "
                                f"samples per recording")
            n = math.ceil((T - L) / stride) + 1
            x = F.pad(x, (0, (n - 1) * stride + L - T))
        x = x[..., : (n - 1) * stride + L]
        windows = x.unfold(-1, L, stride)
        positions = torch.arange(x.shape[-1], device=x.device).unfold(0, L, stride)  # (N, L)
        valid = positions[None] < lengths[:, None, None]
        return windows, valid

    def sensor_embedding(self, sensors: SensorLayout) -> torch.Tensor:
        """`(B, C, D)` embeddings of the sensors (padded channels 0)."""
        types = sensors.types
        if types.numel() and (int(types.min()) < 0 or int(types.max()) >= N_SENSOR_TYPES):
            bad = sorted({int(t) for t in types[(types < 0) | (types >= N_SENSOR_TYPES)].tolist()})
            raise DataError(f"unknown sensor type id(s) {bad}; the BrainTokenizer knows 0 EEG, 1 MAG, 2 GRAD")
        if not bool(torch.isfinite(sensors.positions).all()):
            raise DataError("sensor positions hold NaN or Inf; every channel needs a position (set a montage for "
                            "EEG files without one)")
        e = self.sensor_embed(sensors.positions.float(), types.long())
        if sensors.mask is not None:
            e = e * sensors.mask[..., None].to(e.dtype)
        return e

    def encode_windows(self, windows: torch.Tensor, sensor_embedding: torch.Tensor, *,
                       key_mask: torch.Tensor | None = None,
                       window_mask: torch.Tensor | None = None) -> TokenizerOutput:
        """Encode and quantise windows `(B, C, N, L)` of sensors embedded as `(B, C, D)`.

        Args:
            key_mask: `(B, C)` bool, the channels the sources read (None: all).
            window_mask: `(B, N)` bool, windows holding real samples (the others stay out of the codebook
                updates and the commitment loss).
        """
        latent, temporal = self.encoder(windows, sensor_embedding, key_mask)
        mask = None
        if window_mask is not None and not bool(window_mask.all()):
            B, S, N, W, _ = latent.shape
            mask = window_mask[:, None, :, None].expand(B, S, N, W)
        q = self.quantizer(latent, mask)
        return TokenizerOutput(latent=latent, quantized=q.quantized, codes=q.indices,
                               commitment=q.commitment.mean(), commitment_per_level=q.commitment,
                               window_mask=window_mask, sensor_embedding=sensor_embedding, temporal_features=temporal)

    def decode_embedded(self, quantized: torch.Tensor, sensor_embedding: torch.Tensor,
                        query_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode `(B, C', N, W, D)` to the sensors embedded as `(B, C, D)`: signal `(B, C, N, L)`, features."""
        return self.decoder(quantized, sensor_embedding, query_mask)

    # ---- public API ------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, sensors: SensorLayout) -> None:
        """`DataError` unless `x (B, C, T)` matches the layout, every sample has a real channel and x is finite."""
        if x.dim() != 3:
            raise DataError(f"x must be (batch, channels, samples), got {tuple(x.shape)}")
        if (x.shape[0], x.shape[1]) != (sensors.batch_size, sensors.n_channels):
            raise DataError(f"x has (batch, channels) = {tuple(x.shape[:2])} but the sensor layout describes "
                            f"{(sensors.batch_size, sensors.n_channels)}")
        if sensors.n_channels == 0 or not bool(sensors.real.any(-1).all()):
            raise DataError("every sample needs at least one real sensor channel; drop empty samples")
        if not bool(torch.isfinite(x).all()):
            raise DataError("x holds NaN or Inf; repair or drop those channels first (bad-channel handling)")

    def encode(self, x: torch.Tensor, sensors: SensorLayout, overlap: float = 0.0, *,
               sample_mask: torch.Tensor | None = None) -> TokenizerOutput:
        """Codes and quantised source vectors of `x (B, C, T)`, preprocessed at `sampling_rate` Hz.

        Args:
            x: `(B, C, T)`; padded channels (`sensors.mask`) are ignored.
            sensors: the channels' layout.
            overlap: window overlap (0 in stage 1, 0.25 for stage 2).
            sample_mask: `(B, T)` bool, real samples (right padding; None: all).

        Returns:
            `TokenizerOutput` with latent, quantized, codes, commitment, window_mask, sample_mask,
            sensor_embedding, temporal_features.
        """
        return self._encode(x, sensors, overlap, sample_mask)[0]

    def _encode(self, x, sensors, overlap, sample_mask) -> tuple[TokenizerOutput, torch.Tensor]:
        self.check_input(x, sensors)
        windows, valid = self.windows(x, overlap, sample_mask=sample_mask)
        emb = self.sensor_embedding(sensors)
        out = self.encode_windows(windows, emb, key_mask=sensors.mask, window_mask=valid.any(-1))
        out.sample_mask = valid
        return out, windows

    def decode(self, codes_or_quantized: torch.Tensor, sensors: SensorLayout) -> torch.Tensor:
        """Per-window z-scored signals (unitless, NOT volts) of ANY target sensors, unseen ones included.

        Args:
            codes_or_quantized: codes `(B, C', N, W, Q)` int, or quantised vectors `(B, C', N, W, D)` float;
                `(B, C', N*W, Q | D)` (what `tokenize` returns) is accepted too.
            sensors: the target sensors (`mask` marks the real ones; padded ones decode to 0).

        Returns:
            `(B, C, N, L)`.
        """
        z = codes_or_quantized
        if z.dim() == 4:
            if z.shape[2] % self.latent_steps:
                raise DataError(f"{z.shape[2]} latent steps is not a whole number of windows of "
                                f"{self.latent_steps} steps")
            z = z.reshape(z.shape[0], z.shape[1], -1, self.latent_steps, z.shape[-1])
        if z.dim() != 5 or z.shape[1] != self.n_neuro or z.shape[3] != self.latent_steps:
            raise DataError(f"decode takes codes (B, {self.n_neuro}, N, {self.latent_steps}, {self.num_quantizers}) or "
                            f"quantised vectors (B, {self.n_neuro}, N, {self.latent_steps}, {self.n_dim}), got "
                            f"{tuple(codes_or_quantized.shape)}")
        if sensors.n_channels == 0 or not bool(sensors.real.any(-1).all()):
            raise DataError("decode needs at least one target sensor per sample; the target sensor set is empty")
        if sensors.batch_size != z.shape[0]:
            raise DataError(f"the codes are for {z.shape[0]} samples but the sensor layout for {sensors.batch_size}")
        if not z.dtype.is_floating_point:
            z = self.quantizer.rvq.decode(z.long())
        elif z.shape[-1] != self.n_dim:
            raise DataError(f"quantised vectors must have width {self.n_dim}, got {z.shape[-1]}")
        rec, _ = self.decode_embedded(z, self.sensor_embedding(sensors), sensors.mask)
        return rec

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor, sensors: SensorLayout, overlap: float = 0.25, *,
                 sample_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage-2 input, computed in eval mode without gradients (the tokenizer's mode is restored).

        Returns:
            features `(B, C', N*W, D)` quantised vectors, indices `(B, C', N*W, Q)` int64, token_mask
            `(B, N*W)` bool (time steps of windows holding real samples).
        """
        was_training = self.training
        self.eval()
        try:
            out = self.encode(x, sensors, overlap, sample_mask=sample_mask)
        finally:
            self.train(was_training)
        features = rearrange(out.quantized, "b s n w d -> b s (n w) d")
        indices = rearrange(out.codes, "b s n w q -> b s (n w) q")
        token_mask = out.window_mask[:, :, None].expand(-1, -1, self.latent_steps).reshape(x.shape[0], -1)
        return features, indices, token_mask

    def forward(self, x: torch.Tensor, sensors: SensorLayout, overlap: float = 0.0, *,
                sample_mask: torch.Tensor | None = None) -> TokenizerOutput:
        """The deterministic full path (the reference's `visualize`, README path A): all channels, no noise.

        Encode, quantise, decode every real channel, z-score the target, and compute the loss terms with
        the reference code's weights (phase 0.5, commitment mean over levels).

        Returns:
            `TokenizerOutput` with every field set.
        """
        out, windows = self._encode(x, sensors, overlap, sample_mask)
        rec, feats = self.decode_embedded(out.quantized, out.sensor_embedding, sensors.mask)
        out.decoder_sensor_features = feats
        out.reconstruction = rec.float()
        out.target = zscore_windows(windows, None if bool(out.sample_mask.all()) else out.sample_mask)
        if sensors.mask is not None:
            out.target = out.target * sensors.mask[:, :, None, None].to(out.target.dtype)
        out.losses = reconstruction_losses(out.reconstruction, out.target, out.sample_mask, sensors.mask,
                                           out.commitment_per_level)
        return out


def _unit_gain_linear(m: nn.Module) -> None:
    """Linear layers Xavier-uniform (zero bias) and the sensor-type embedding N(0, 1), instead of the reference's
    trunc-normal(0.02): with weights of std 0.02 the sensor embeddings of different positions differ by ~1e-3
    after the RMSNorm and the attention logits of compression and decoder are ~0, so every source reads the
    channel mean and every channel decodes the same signal; training sits on that symmetric plateau for
    hundreds of steps (docs/benchmarks.md, "BrainTokenizer initialisation")."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _reference_init(m: nn.Module) -> None:
    """The reference's `_init_weights`: Linear trunc-normal(0.02) with zero bias, Embedding trunc-normal(0.02),
    RMSNorm 1. Convolutions, LSTMs and `encoder.neuros` keep their PyTorch / randn init."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.trunc_normal_(m.weight, std=0.02)
    elif isinstance(m, RMSNorm):
        nn.init.ones_(m.weight)
