"""SEANet: reference key layout, old-style weight norm, Encodec padding and trimming, unit-gain init."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from neurofound.nn.seanet import (
    SConv1d,
    SConvTranspose1d,
    SEANetDecoder,
    SEANetEncoder,
    SLSTM,
    WeightNormConv1d,
    pad1d,
    unit_gain_,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "brainomni_tokenizer"

torch.set_num_threads(1)


def _fixture_sizes() -> dict:
    return json.loads((FIXTURE / "config.json").read_text())["constructor_kwargs"]


def _sub_state(prefix: str) -> dict[str, torch.Tensor]:
    sd = load_file(str(FIXTURE / "reference_state_dict.safetensors"))
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.mark.parametrize("cls,prefix", [(SEANetEncoder, "encoder.seanet_encoder."),
                                        (SEANetDecoder, "decoder.seanet_decoder.")])
def test_keys_and_shapes_are_the_references(cls, prefix):
    kw = _fixture_sizes()
    net = cls(1, kw["n_dim"], kw["n_filters"], kw["ratios"], kw["kernel_size"], kw["last_kernel_size"])
    ref = _sub_state(prefix)
    ours = net.state_dict()
    assert sorted(ours) == sorted(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)
    net.load_state_dict(ref, strict=True)


def test_weight_norm_matches_torch_old_style_weight_norm():
    torch.manual_seed(0)
    ours = WeightNormConv1d(3, 5, 4, stride=2)
    ours.weight_g.data.uniform_(0.5, 2.0)
    ref = torch.nn.Conv1d(3, 5, 4, stride=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.utils.weight_norm(ref)
    ref.weight_g.data.copy_(ours.weight_g.data)
    ref.weight_v.data.copy_(ours.weight_v.data)
    ref.bias.data.copy_(ours.bias.data)
    x = torch.randn(2, 3, 17)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-6)
    # at construction g = ||v|| (PyTorch's default effective weight)
    fresh = WeightNormConv1d(3, 5, 4)
    torch.testing.assert_close(fresh.weight_g, fresh.weight_v.norm(dim=(1, 2), keepdim=True))


def test_transposed_weight_norm_is_per_input_channel():
    torch.manual_seed(0)
    conv = WeightNormConv1d(6, 2, 8, stride=4, transposed=True)
    assert conv.weight_v.shape == (6, 2, 8) and conv.weight_g.shape == (6, 1, 1)
    conv.weight_g.data.fill_(3.0)
    w = conv.weight()
    torch.testing.assert_close(w.flatten(1).norm(dim=1), torch.full((6,), 3.0))
    ref = torch.nn.ConvTranspose1d(6, 2, 8, stride=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.utils.weight_norm(ref)
    ref.weight_g.data.copy_(conv.weight_g.data)
    ref.weight_v.data.copy_(conv.weight_v.data)
    ref.bias.data.copy_(conv.bias.data)
    x = torch.randn(1, 6, 5)
    torch.testing.assert_close(conv(x), ref(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("length,kernel,stride", [(512, 5, 1), (37, 8, 4), (16, 16, 8), (3, 5, 1), (2, 3, 1)])
def test_conv_padding_is_encodecs(length, kernel, stride):
    torch.manual_seed(0)
    conv = SConv1d(2, 3, kernel, stride=stride)
    x = torch.randn(1, 2, length)
    y = conv(x)
    assert y.shape[-1] == math.ceil(length / stride)
    # the same thing written out: reflect (zeros first on a short input), asymmetric split, extra right pad
    total = (kernel - 1) - (stride - 1)
    frames = math.ceil((length - kernel + total) / stride + 1)
    extra = (frames - 1) * stride + kernel - total - length
    left, right = total - total // 2, total // 2 + extra
    short = max(left, right) - length + 1 if length <= max(left, right) else 0
    padded = F.pad(F.pad(x, (0, short)), (left, right), mode="reflect")[..., : length + left + right]
    torch.testing.assert_close(y, F.conv1d(padded, conv.inner.weight(), conv.inner.bias, stride=stride))


def test_pad1d_reflects_like_torch_when_long_enough():
    x = torch.arange(6.0).view(1, 1, 6)
    torch.testing.assert_close(pad1d(x, 2, 3), F.pad(x, (2, 3), mode="reflect"))
    assert pad1d(torch.ones(1, 1, 1), 2, 2).shape[-1] == 5  # a 1-sample input still pads


def test_transposed_conv_trims_to_length_times_stride():
    torch.manual_seed(0)
    conv = SConvTranspose1d(4, 2, kernel_size=8, stride=4)
    x = torch.randn(3, 4, 5)
    y = conv(x)
    assert y.shape == (3, 2, 20)
    full = F.conv_transpose1d(x, conv.inner.weight(), conv.inner.bias, stride=4)  # 4 * (5 - 1) + 8 = 24
    torch.testing.assert_close(y, full[..., 2:22])  # trim k - s = 4: left 2, right 2


def test_slstm_adds_its_input():
    torch.manual_seed(0)
    m = SLSTM(4)
    x = torch.randn(2, 4, 7)
    y, _ = m.lstm(x.permute(2, 0, 1))
    torch.testing.assert_close(m(x), (y + x.permute(2, 0, 1)).permute(1, 2, 0))


def test_encoder_decoder_lengths_and_unit_gain_keeps_the_signal():
    torch.manual_seed(0)
    enc, dec = SEANetEncoder(1, 32, 4, [4, 2, 2], 5, 5), SEANetDecoder(1, 32, 4, [4, 2, 2], 5, 5)
    x = torch.randn(16, 1, 128)
    with torch.no_grad():
        z = enc(x)
        assert z.shape == (16, 32, 8) and dec(z).shape == (16, 1, 128)
        # PyTorch's default gains (g = ||v|| ~ 0.58) shrink the input-dependent part of the output
        default_signal = (enc(x) - enc(torch.zeros_like(x))).std()
        unit_gain_(enc)
        unit_gain_(dec)
        unit_signal = (enc(x) - enc(torch.zeros_like(x))).std()
        dec_signal = (dec(z) - dec(torch.zeros_like(z))).std() / z.std()
    assert default_signal < 0.2 < unit_signal
    assert 0.1 < dec_signal < 10
    # only the gains changed: the layout (and v) is the reference's
    assert all(m.weight_g.flatten().unique().numel() == 1 for m in enc.modules() if isinstance(m, WeightNormConv1d))
    tr = [m for m in dec.modules() if isinstance(m, WeightNormConv1d) and m.transposed]
    gains = [round(float(m.weight_g.detach()[0]), 4) for m in tr]
    assert gains == [round(math.sqrt(m.out_channels * m.stride / m.in_channels), 4) for m in tr]
