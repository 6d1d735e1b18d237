"""SEANet encoder and decoder (the Encodec layout), with old-style weight-normed convolutions.

Défossez et al., "High Fidelity Neural Audio Compression" (Encodec), arXiv 2210.13438, after Tagliasacchi
et al.'s SEANet. BrainOmni's BrainTokenizer runs one 1-channel SEANet per sensor and window (spec §2.2;
fixture README `brainomni_tokenizer` §3, §6). Everything here is written for that use and keeps the
reference's state-dict keys, so its weights load 1:1:

* convolutions are `SConv1d.conv.conv.{weight_g, weight_v, bias}` and `SConvTranspose1d.convtr.convtr.*`
  (Encodec's `SConv1d -> NormConv1d -> nn.Conv1d` nesting);
* the LSTM is `SLSTM.lstm.*` (a plain `nn.LSTM`);
* a residual block is `block.1`, `block.3` (the two convs between ELUs) and `shortcut` (a 1x1 conv);
* encoder and decoder are `model.<i>` of an `nn.Sequential` in the reference's order.

Weight norm is the old-style `torch.nn.utils.weight_norm(dim=0)`: `w = g * v / ||v||`, the norm taken over
every axis but 0. For a transposed convolution the weight is `(in, out, k)`, so axis 0, and with it the
gain `weight_g (in, 1, 1)`, is the INPUT channel (fixture README §6).

Padding is Encodec's non-causal rule (fixture README §3): for kernel k, stride s, dilation d the total
padding is `(k - 1) d - (s - 1)`, split `left = total - total // 2`, `right = total // 2`, plus an "extra"
right padding that completes the last frame (`ceil((T - k + total) / s + 1)` frames); mode `reflect`,
with zeros appended first when the input is shorter than the reflection. A transposed convolution trims
`k - s` samples afterwards, `left = total - total // 2`, `right = total // 2`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neurofound.errors import ConfigError

__all__ = [
    "WeightNormConv1d",
    "SConv1d",
    "SConvTranspose1d",
    "SLSTM",
    "SEANetResnetBlock",
    "SEANetEncoder",
    "SEANetDecoder",
    "unit_gain_",
    "extra_padding_for_conv1d",
    "pad1d",
]


# ----------------------------------------------------------------------------------------------------------------
# Weight-normed convolution
# ----------------------------------------------------------------------------------------------------------------
class WeightNormConv1d(nn.Module):
    """Conv1d (or ConvTranspose1d) with old-style weight norm: parameters `weight_g`, `weight_v`, `bias`.

    `weight_v` is `(out, in, k)` for a convolution and `(in, out, k)` for a transposed one (PyTorch's
    layouts); `weight_g` is `(weight_v.shape[0], 1, 1)`. The effective weight is
    `weight_g * weight_v / ||weight_v||` with the norm over axes 1 and 2. At construction `weight_v` and
    `bias` get PyTorch's default Conv1d / ConvTranspose1d initialisation and `weight_g = ||weight_v||`
    (what `torch.nn.utils.weight_norm` does), so the effective weight starts as PyTorch's default;
    `unit_gain_` changes only the gains.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation: as `nn.Conv1d`.
        bias: learn an additive bias.
        transposed: a transposed convolution (`F.conv_transpose1d`, no dilation).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 bias: bool = True, transposed: bool = False):
        super().__init__()
        if transposed and dilation != 1:
            raise ConfigError("a transposed SEANet convolution takes no dilation; use dilation=1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation, self.transposed = kernel_size, stride, dilation, transposed
        shape = (in_channels, out_channels, kernel_size) if transposed else (out_channels, in_channels, kernel_size)
        self.weight_v = nn.Parameter(torch.empty(shape))
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default conv init for `v` and `bias`, then `g = ||v||` (old-style weight norm)."""
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        if self.bias is not None:
            # PyTorch computes fan_in from the weight tensor as laid out: size(1) * k (for a transposed
            # conv that is the OUTPUT channels), so the default bias bound is 1/sqrt(that).
            fan_in = self.weight_v.shape[1] * self.kernel_size
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight_g.copy_(self._v_norm())

    def _v_norm(self) -> torch.Tensor:
        return self.weight_v.norm(dim=(1, 2), keepdim=True)

    def weight(self) -> torch.Tensor:
        """The effective weight `g * v / ||v||`, same layout as `weight_v`."""
        return self.weight_v * (self.weight_g / self._v_norm())

    def unit_gain(self) -> float:
        """The gain that keeps the output variance roughly equal to the input variance (white input).

        A convolution's output sample is a dot product with one row of norm g, so g = 1. A transposed
        convolution with stride s and kernel k adds k/s taps of each of its `in` input channels into each
        output sample, each weight having mean square g^2 / (out k): variance g^2 in / (out s), so
        g = sqrt(out s / in).
        """
        if not self.transposed:
            return 1.0
        return math.sqrt(self.out_channels * self.stride / self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(batch, in, T) -> (batch, out, T')` (no padding here: `SConv1d` pads, `SConvTranspose1d` trims)."""
        w = self.weight()
        if self.transposed:
            return F.conv_transpose1d(x, w, self.bias, stride=self.stride)
        return F.conv1d(x, w, self.bias, stride=self.stride, dilation=self.dilation)

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, {kind}"
                f"stride={self.stride}, dilation={self.dilation}, bias={self.bias is not None}")


class _Nest(nn.Module):
    """One level of nesting under a fixed attribute name, so that keys read `conv.conv.weight_g`.

    Encodec wraps each convolution as `SConv1d.conv` (a `NormConv1d`) `.conv` (the `nn.Conv1d`); the
    middle level only applies an identity norm here, but its name is part of the released weights' keys.
    """

    def __init__(self, name: str, child: nn.Module):
        super().__init__()
        self._child_name = name
        self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self._child_name)(x)


# ----------------------------------------------------------------------------------------------------------------
# Encodec padding
# ----------------------------------------------------------------------------------------------------------------
def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last frame of a strided convolution complete (Encodec's rule)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """`F.pad` on the last axis; `reflect` on an input not longer than the padding first appends zeros.

    `F.pad(mode="reflect")` needs more samples than it reflects; Encodec then pads zeros on the right,
    reflects, and cuts those zeros off again, which is what is done here.
    """
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class SConv1d(nn.Module):
    """Non-causal weight-normed Conv1d with Encodec's padding: `(batch, in, T) -> (batch, out, ceil(T / stride))`.

    Keys: `conv.conv.{weight_g, weight_v, bias}`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 bias: bool = True, pad_mode: str = "reflect"):
        super().__init__()
        self.conv = _Nest("conv", WeightNormConv1d(in_channels, out_channels, kernel_size, stride, dilation, bias))
        self.pad_mode = pad_mode

    @property
    def inner(self) -> WeightNormConv1d:
        return self.conv.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.inner
        total = (c.kernel_size - 1) * c.dilation - (c.stride - 1)
        extra = extra_padding_for_conv1d(x.shape[-1], c.kernel_size, c.stride, total)
        right = total // 2
        return self.conv(pad1d(x, total - right, right + extra, self.pad_mode))


class SConvTranspose1d(nn.Module):
    """Non-causal weight-normed ConvTranspose1d, trimmed by `k - s`: `(batch, in, T) -> (batch, out, T * stride)`.

    Keys: `convtr.convtr.{weight_g, weight_v, bias}`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.convtr = _Nest("convtr", WeightNormConv1d(in_channels, out_channels, kernel_size, stride, bias=bias,
                                                       transposed=True))

    @property
    def inner(self) -> WeightNormConv1d:
        return self.convtr.convtr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.inner
        y = self.convtr(x)
        total = c.kernel_size - c.stride
        right = total // 2
        return y[..., total - right: y.shape[-1] - right]


# ----------------------------------------------------------------------------------------------------------------
# LSTM and residual block
# ----------------------------------------------------------------------------------------------------------------
class SLSTM(nn.Module):
    """Unidirectional `nn.LSTM` over time with an additive skip: `(batch, dim, T) -> (batch, dim, T)`.

    Keys: `lstm.{weight_ih_l<i>, weight_hh_l<i>, bias_ih_l<i>, bias_hh_l<i>}`.
    """

    def __init__(self, dim: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # (T, batch, dim): nn.LSTM's default layout, as the reference
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


class SEANetResnetBlock(nn.Module):
    """`shortcut(x) + conv_k1(ELU(conv_k3(ELU(x))))`, the hidden width `dim // compress`, dilation 1.

    The shortcut is a 1x1 convolution (Encodec's `true_skip=False`). Keys: `block.1`, `block.3`
    (the convolutions; `block.0` and `block.2` are the ELUs) and `shortcut`.
    """

    def __init__(self, dim: int, kernel_size: int = 3, compress: int = 2, dilation: int = 1):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(nn.ELU(alpha=1.0), SConv1d(dim, hidden, kernel_size, dilation=dilation),
                                   nn.ELU(alpha=1.0), SConv1d(hidden, dim, 1))
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


# ----------------------------------------------------------------------------------------------------------------
# Encoder and decoder
# ----------------------------------------------------------------------------------------------------------------
def _check_sizes(n_filters: int, ratios: Sequence[int], kernel_size: int, last_kernel_size: int) -> None:
    if n_filters < 1 or not ratios or any(int(r) < 1 for r in ratios):
        raise ConfigError(f"SEANet needs n_filters >= 1 and ratios of positive ints, got n_filters={n_filters}, "
                          f"ratios={list(ratios)}")
    if kernel_size < 1 or last_kernel_size < 1:
        raise ConfigError(f"SEANet kernel sizes must be >= 1, got {kernel_size}, {last_kernel_size}")


class SEANetEncoder(nn.Module):
    """`(batch, channels, T) -> (batch, dimension, T / prod(ratios))`.

    conv(kernel_size) channels -> n_filters; for each r of `reversed(ratios)`: residual block, ELU,
    strided conv (kernel 2r, stride r) doubling the width; 2-layer LSTM with skip; ELU;
    conv(last_kernel_size) -> dimension.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 ratios: Sequence[int] = (8, 5, 4, 2), kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, compress: int = 2, lstm_layers: int = 2):
        super().__init__()
        _check_sizes(n_filters, ratios, kernel_size, last_kernel_size)
        self.ratios = [int(r) for r in ratios]
        self.hop_length = math.prod(self.ratios)
        width = n_filters
        layers: list[nn.Module] = [SConv1d(channels, width, kernel_size)]
        for r in reversed(self.ratios):
            layers += [SEANetResnetBlock(width, residual_kernel_size, compress), nn.ELU(alpha=1.0),
                       SConv1d(width, 2 * width, kernel_size=2 * r, stride=r)]
            width *= 2
        if lstm_layers:
            layers.append(SLSTM(width, lstm_layers))
        layers += [nn.ELU(alpha=1.0), SConv1d(width, dimension, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """`(batch, dimension, T) -> (batch, channels, T * prod(ratios))`, the encoder's mirror.

    conv(kernel_size) dimension -> 2^len(ratios) n_filters; 2-layer LSTM with skip; for each r of
    `ratios` (not reversed): ELU, transposed conv (kernel 2r, stride r) halving the width, residual
    block; ELU; conv(last_kernel_size) -> channels. No final activation.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 ratios: Sequence[int] = (8, 5, 4, 2), kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, compress: int = 2, lstm_layers: int = 2):
        super().__init__()
        _check_sizes(n_filters, ratios, kernel_size, last_kernel_size)
        self.ratios = [int(r) for r in ratios]
        self.hop_length = math.prod(self.ratios)
        width = n_filters * 2 ** len(self.ratios)
        layers: list[nn.Module] = [SConv1d(dimension, width, kernel_size)]
        if lstm_layers:
            layers.append(SLSTM(width, lstm_layers))
        for r in self.ratios:
            layers += [nn.ELU(alpha=1.0), SConvTranspose1d(width, width // 2, kernel_size=2 * r, stride=r),
                       SEANetResnetBlock(width // 2, residual_kernel_size, compress)]
            width //= 2
        layers += [nn.ELU(alpha=1.0), SConv1d(width, channels, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@torch.no_grad()
def unit_gain_(module: nn.Module) -> nn.Module:
    """Set every weight-norm gain under `module` to its unit gain (`WeightNormConv1d.unit_gain`); `v` is kept.

    With PyTorch's default init (`g = ||v||`, about 0.58 per convolution) the signal shrinks by that
    factor at every convolution and dies in a SEANet stack (fixture README, "How the weights were
    produced" step 2); only the gains change, so the weight layout is the reference's.
    """
    for m in module.modules():
        if isinstance(m, WeightNormConv1d):
            m.weight_g.fill_(m.unit_gain())
    return module
