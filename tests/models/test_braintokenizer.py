"""BrainTokenizer and its stage-1 model: mixed-device batches, tails, errors, codebook init, gradients,
save/load round trips, decoding to unseen sensors, the reference draw order and the converter."""

from __future__ import annotations

import json

import pytest
import torch

from neurofound.errors import CheckpointError, ConfigError, ContractError, DataError
from neurofound.models.brainomni_tokenizer import (
    BrainTokenizerModel,
    BrainTokenizerModelConfig,
    braintokenizer_base,
    braintokenizer_small,
)
from neurofound.tokenizers.braintokenizer import (
    BrainTokenizer,
    SensorLayout,
    window_pcc,
    zscore_windows,
)

torch.set_num_threads(1)
L = 128  # a short window keeps every test fast; the code paths are those of L = 512


def tiny(**kw) -> BrainTokenizerModelConfig:
    base = dict(window_length=L, n_filters=2, ratios=[4, 2, 2], n_dim=16, n_neuro=4, n_head=2, codebook_dim=16,
                codebook_size=16, num_quantizers=2)
    return braintokenizer_small(**{**base, **kw})


def layout(n_channels: int, seed: int) -> SensorLayout:
    g = torch.Generator().manual_seed(seed)
    return SensorLayout(torch.randn(1, n_channels, 6, generator=g), torch.randint(0, 3, (1, n_channels), generator=g))


def signal(n_channels: int, n_samples: int, seed: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_channels, n_samples, generator=g)


def initialised(cfg: BrainTokenizerModelConfig | None = None, seed: int = 0) -> BrainTokenizerModel:
    """A model whose codebooks went through one training step (k-means), in eval mode."""
    torch.manual_seed(seed)
    model = BrainTokenizerModel(cfg or tiny())
    sensors = SensorLayout(torch.randn(4, 6, 6), torch.randint(0, 3, (4, 6)))
    model.train()(signal(6, 4 * L, seed=99, batch=4), sensors)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> BrainTokenizerModel:
    return initialised()


def mixed_batch():
    """Sample A: 5 channels, 3 windows + a 40-sample tail; sample B: 3 channels, 2 windows. Garbage in the padding."""
    xa, sa = signal(5, 3 * L + 40, seed=1), layout(5, seed=1)
    xb, sb = signal(3, 2 * L, seed=2), layout(3, seed=2)
    x = 50 * signal(5, 3 * L + 40, seed=3, batch=2)  # padded channels and samples hold garbage
    x[0] = xa[0]
    x[1, :3, : 2 * L] = xb[0]
    sample_mask = torch.zeros(2, 3 * L + 40, dtype=torch.bool)
    sample_mask[0] = True
    sample_mask[1, : 2 * L] = True
    sensors = SensorLayout.batch([sa, sb])
    sensors.positions[1, 3:] = 7.0  # garbage geometry on the padded channels too
    return (xa, sa), (xb, sb), (x, sensors, sample_mask)


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# mixed devices in one batch
# ---------------------------------------------------------------------------------------------------------------
def test_mixed_batch_encode_and_decode_equal_per_sample(model):
    tok = model.tokenizer
    (xa, sa), (xb, sb), (x, sensors, sm) = mixed_batch()
    with torch.no_grad():
        out = tok.encode(x, sensors, sample_mask=sm)
        ea, eb = tok.encode(xa, sa), tok.encode(xb, sb)
        assert ea.latent.shape[2] == 4 and eb.latent.shape[2] == 2
        assert out.window_mask.tolist() == [[True] * 4, [True, True, False, False]]
        close(out.latent[0], ea.latent[0])
        close(out.latent[1, :, :2], eb.latent[0])
        assert torch.equal(out.codes[0], ea.codes[0]) and torch.equal(out.codes[1, :, :2], eb.codes[0])
        close(out.temporal_features[1, :3, : 2 * tok.latent_steps], eb.temporal_features[0])
        assert not out.temporal_features[1, 3:].any() and not out.sensor_embedding[1, 3:].any()
        rec = tok.decode(out.codes, sensors)
        close(rec[0], tok.decode(ea.codes, sa)[0])
        close(rec[1, :3, :2], tok.decode(eb.codes, sb)[0])
        assert not rec[1, 3:].any()  # padded target channels decode to exact zeros


def _weighted(per_sample: list[dict], weights: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, w in weights.items():
        out[key] = sum(wi * d[key] for wi, d in zip(w, per_sample)) / sum(w)
    return out


def _check_mixed_losses(batch_losses, la, lb):
    # element-weighted means: time over real samples; pcc, amp, phase over (channel, window) rows;
    # commitment over the real windows of the sources
    weights = {"time": [5 * (3 * L + 40), 3 * 2 * L], "pcc": [5 * 4, 3 * 2], "amp": [5 * 4, 3 * 2],
               "phase": [5 * 4, 3 * 2], "commitment": [4, 2]}
    expected = _weighted([la, lb], weights)
    for key, value in expected.items():
        close(batch_losses[key], value)


def test_mixed_batch_full_path_losses_equal_per_sample(model):
    tok = model.tokenizer
    (xa, sa), (xb, sb), (x, sensors, sm) = mixed_batch()
    with torch.no_grad():
        out = tok(x, sensors, sample_mask=sm)
        oa, ob = tok(xa, sa), tok(xb, sb)
    close(out.reconstruction[0], oa.reconstruction[0])
    close(out.target[1, :3, :2], ob.target[0])
    assert not out.target[1, 3:].any() and not out.target[1, :, 2:].any()
    _check_mixed_losses(out.losses, oa.losses, ob.losses)


def test_mixed_batch_stage_one_forward_equals_per_sample(model):
    (xa, sa), (xb, sb), (x, sensors, sm) = mixed_batch()
    hidden = torch.zeros(2, 5, dtype=torch.bool)
    hidden[0, [1, 3]] = True
    hidden[1, 0] = True
    noise = signal(5, 4 * L, seed=4, batch=2).reshape(2, 5, 4, L)
    with torch.no_grad():
        out = model(x, sensors, hidden=hidden, noise=noise, sample_mask=sm)
        oa = model(xa, sa, hidden=hidden[:1], noise=noise[:1])
        ob = model(xb, sb, hidden=hidden[1:, :3], noise=noise[1:, :3, :2])
    assert out.perm is None and torch.equal(out.hidden, hidden)
    close(out.latent[0], oa.latent[0])
    close(out.latent[1, :, :2], ob.latent[0])
    close(out.reconstruction[1, :3, :2], ob.reconstruction[0])
    _check_mixed_losses(out.losses, oa.losses, ob.losses)


def test_padded_channels_change_neither_loss_nor_pcc(model):
    xb, sb = signal(3, 2 * L, seed=2), layout(3, seed=2)
    x = torch.cat([xb, 100 * signal(2, 2 * L, seed=8)], 1)
    padded = SensorLayout.batch([sb, layout(5, seed=9)])
    padded = SensorLayout(padded.positions[1:].clone(), padded.types[1:].clone(), padded.mask[1:].clone())
    padded.positions[0, :3], padded.types[0, :3] = sb.positions[0], sb.types[0]
    padded.mask[0] = torch.tensor([True, True, True, False, False])
    with torch.no_grad():
        plain, pad = model.reconstruct(xb, sb), model.reconstruct(x, padded)
    for key in ("time", "pcc", "amp", "phase", "commitment", "total"):
        close(pad.losses[key], plain.losses[key])
    pcc_plain, rows_plain = window_pcc(plain.reconstruction, plain.target, plain.sample_mask)
    pcc_pad, rows_pad = window_pcc(pad.reconstruction, pad.target, pad.sample_mask, pad.channel_mask)
    close(pcc_pad[:, :3], pcc_plain)
    assert rows_pad[:, :3].all() and not rows_pad[:, 3:].any() and rows_plain.all()


# ---------------------------------------------------------------------------------------------------------------
# windows and tails
# ---------------------------------------------------------------------------------------------------------------
def test_tail_is_padded_and_masked_by_default_and_dropped_under_reference_compat():
    cfg = tiny()
    tok = BrainTokenizer(**cfg.tokenizer_kwargs())
    compat = BrainTokenizer(**tiny(reference_compat=True).tokenizer_kwargs())
    x = signal(2, 2 * L + 44, seed=5)
    w, valid = tok.windows(x)
    assert w.shape == (1, 2, 3, L) and valid.sum().item() == 2 * L + 44
    assert torch.equal(w[0, :, 2, :44], x[0, :, 2 * L:]) and not w[0, :, 2, 44:].any()
    wc, validc = compat.windows(x)
    assert wc.shape == (1, 2, 2, L) and validc.all()  # overlap 0: the tail is dropped
    stride = int(L * 0.75)
    wo, valido = compat.windows(x, 0.25)  # overlap > 0: zero-padded to a whole stride, unmasked
    assert wo.shape[2] == (2 * L + 44 + stride - (2 * L + 44 - L) % stride - L) // stride + 1 and valido.all()
    wd, validd = tok.windows(x, 0.25)
    assert torch.equal(wd, wo)  # the same windows, but the default path masks the padding
    last_real = 2 * L + 44 - (wd.shape[2] - 1) * stride
    assert validd[0, -1].sum() == last_real and not validd[0, :-1].logical_not().any()


def test_input_shorter_than_a_window_is_an_error(model):
    x = signal(3, L - 1, seed=6)
    with pytest.raises(DataError, match="shorter than one window"):
        model.tokenizer.encode(x, layout(3, seed=6))
    compat = BrainTokenizer(**tiny(reference_compat=True).tokenizer_kwargs())
    w, valid = compat.windows(x)  # the reference zero-pads a short input to one window
    assert w.shape == (1, 3, 1, L) and valid.all()
    with pytest.raises(DataError, match="prefix"):
        model.tokenizer.windows(signal(3, 2 * L, seed=6), sample_mask=torch.rand(1, 2 * L) > 0.5)


def test_tokenize_shapes_and_token_mask(model):
    x = signal(4, 3 * L + 10, seed=7)
    features, indices, token_mask = model.tokenizer.tokenize(x, layout(4, seed=7), overlap=0.25)
    W = model.tokenizer.latent_steps
    n = token_mask.shape[1] // W
    assert features.shape == (1, 4, n * W, 16) and indices.shape == (1, 4, n * W, 2)
    assert token_mask.all()  # every overlapping window holds real samples here
    assert not model.training
    # decode accepts tokenize's flattened layout
    assert model.tokenizer.decode(indices, layout(2, seed=1)).shape == (1, 2, n, L)


# ---------------------------------------------------------------------------------------------------------------
# errors and codebooks
# ---------------------------------------------------------------------------------------------------------------
def test_decode_to_an_empty_sensor_set_is_an_error(model):
    codes = model.tokenizer.encode(signal(3, L, seed=1), layout(3, seed=1)).codes
    with pytest.raises(DataError, match="empty"):
        model.tokenizer.decode(codes, SensorLayout(torch.zeros(1, 0, 6), torch.zeros(1, 0, dtype=torch.long)))
    with pytest.raises(DataError, match="empty"):
        model.tokenizer.decode(codes, SensorLayout(torch.zeros(1, 2, 6), torch.zeros(1, 2, dtype=torch.long),
                                                   torch.zeros(1, 2, dtype=torch.bool)))
    with pytest.raises(DataError, match="unknown sensor type"):
        model.tokenizer.decode(codes, SensorLayout(torch.zeros(1, 2, 6), torch.full((1, 2), 3)))


def test_eval_with_uninitialised_codebooks_is_an_error():
    fresh = BrainTokenizerModel(tiny()).eval()
    with pytest.raises(DataError, match="train the tokenizer first or load trained weights"):
        fresh.tokenizer.encode(signal(3, L, seed=1), layout(3, seed=1))
    with pytest.raises(DataError, match="not initialised"):
        fresh.reconstruct(signal(3, L, seed=1), layout(3, seed=1))


def test_kmeans_runs_in_the_first_training_call_only():
    torch.manual_seed(0)
    fresh = BrainTokenizerModel(tiny())
    rvq = fresh.tokenizer.quantizer.rvq
    assert not rvq.is_initialised
    x, s = signal(4, 2 * L, seed=1, batch=2), SensorLayout(torch.randn(2, 4, 6), torch.randint(0, 3, (2, 4)))
    fresh.train()(x, s)
    assert rvq.is_initialised and bool(rvq.codebooks.abs().sum(-1).gt(0).all())
    first = rvq.codebooks.clone()
    fresh.train()(x, s)
    # a second k-means would redraw the centres; the EMA only nudges them (decay 0.99)
    assert (rvq.codebooks - first).abs().max() < 0.1
    compat = BrainTokenizerModel(tiny(reference_compat=True)).eval()
    with torch.no_grad():
        compat.tokenizer(x, s)  # the reference: k-means on the first call, eval included
    assert compat.tokenizer.quantizer.rvq.is_initialised


@pytest.mark.parametrize("rotation", [True, False])
def test_gradients_reach_the_encoder(rotation):
    torch.manual_seed(0)
    m = BrainTokenizerModel(tiny(rotation_trick=rotation)).train()
    out = m(signal(4, 2 * L, seed=1, batch=2), SensorLayout(torch.randn(2, 4, 6), torch.randint(0, 3, (2, 4))))
    out.losses["total"].backward()
    tok = m.tokenizer
    for name, p in [("encoder conv", tok.encoder.seanet_encoder.model[0].conv.conv.weight_v),
                    ("neuros", tok.encoder.neuros), ("k_proj", tok.encoder.k_proj.weight),
                    ("sensor_embed", tok.sensor_embed.pos_embedding_layer[0].weight),
                    ("decoder", tok.decoder.forwardsolution.kv.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert out.losses["judge"].requires_grad is False and torch.equal(out.losses["judge"], out.losses["total"].detach())


def test_hidden_channels_do_not_reach_the_latent(model):
    x, s = signal(5, 2 * L, seed=3), layout(5, seed=3)
    hidden = torch.tensor([[False, True, False, False, True]])
    y = x.clone()
    y[:, [1, 4]] = 30 * torch.randn(1, 2, 2 * L)
    with torch.no_grad():
        a, b = model.reconstruct(x, s, hidden=hidden), model.reconstruct(y, s, hidden=hidden)
        c = model.reconstruct(x, s)
    close(a.latent, b.latent)
    assert torch.equal(a.codes, b.codes)
    assert not torch.allclose(a.latent, c.latent, atol=1e-4)
    assert a.reconstruction.shape == (1, 5, 2, L) and a.hidden.sum() == 2
    with pytest.raises(DataError, match="visible"):
        model.reconstruct(x, s, hidden=torch.ones(1, 5, dtype=torch.bool))


def test_draw_hidden_per_sample_over_real_channels_only(model):
    torch.manual_seed(0)
    mask = torch.tensor([[True] * 8, [True] * 3 + [False] * 5, [True] + [False] * 7])
    hidden = model.draw_hidden(mask)
    assert hidden.sum(-1).tolist() == [2, 1, 0]  # max(int(0.25 C), 1), keeping one channel visible
    assert not (hidden & ~mask).any()


def test_reference_draw_order_and_permuted_output():
    m = initialised(tiny(reference_compat=True))
    x, s = signal(8, 2 * L + 30, seed=4, batch=2), SensorLayout(torch.randn(2, 8, 6), torch.randint(0, 3, (2, 8)))
    torch.manual_seed(7)
    with torch.no_grad():
        drawn = m(x, s)
    torch.manual_seed(7)
    perm = torch.randperm(8)
    noise = torch.randn(2, 8 - 2, 2, L)  # n_drop = max(int(0.25 * 8), 1) = 2; the tail is dropped: N = 2
    with torch.no_grad():
        injected = m(x, s, perm=perm, noise=noise)
    assert torch.equal(drawn.perm, perm)
    assert torch.equal(drawn.reconstruction, injected.reconstruction)
    w, _ = m.tokenizer.windows(x)
    close(injected.target, zscore_windows(w)[:, perm])  # PERMUTED channel order, as the reference
    assert injected.hidden[:, :2].all() and not injected.hidden[:, 2:].any()
    with pytest.raises(DataError, match="padded"):
        m(x, SensorLayout(s.positions, s.types, torch.ones(2, 8, dtype=torch.bool).index_fill(1, torch.tensor([7]),
                                                                                                False)), perm=perm)


def test_loss_presets():
    code, paper = initialised(), initialised(tiny(loss_preset="paper"))
    paper.load_state_dict(code.state_dict())
    x, s = signal(4, 2 * L, seed=5), layout(4, seed=5)
    with torch.no_grad():
        lc, lp = code.reconstruct(x, s).losses, paper.reconstruct(x, s).losses
    close(lp["commitment"], 2 * lc["commitment"])  # sum over 2 levels vs mean
    close(lc["total"], lc["time"] + torch.exp(-lc["pcc"]) + lc["commitment"] + lc["amp"] + 0.5 * lc["phase"])
    close(lp["total"], lp["time"] + torch.exp(-lp["pcc"]) + lp["commitment"] + lp["amp"] + lp["phase"])


# ---------------------------------------------------------------------------------------------------------------
# unseen sensors
# ---------------------------------------------------------------------------------------------------------------
def test_decode_to_sensors_never_seen(model):
    tok = model.tokenizer
    out = tok.encode(signal(4, 2 * L, seed=1), layout(4, seed=1))
    unseen = SensorLayout(torch.randn(1, 9, 6) * 3, torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2]]))
    with torch.no_grad():
        from_codes = tok.decode(out.codes, unseen)
        from_vectors = tok.decode(out.quantized, unseen)
    assert from_codes.shape == (1, 9, 2, L) and torch.isfinite(from_codes).all()
    close(from_codes, from_vectors)
    assert from_codes.std(-1).min() > 0  # a signal, not a constant, at every new sensor


# ---------------------------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------------------------
def test_save_pretrained_and_ckpt_round_trips(model, tmp_path):
    from neurofound.models.hub import load_checkpoint
    from neurofound.models.registry import load_pretrained
    from neurofound.tokenizers import load_tokenizer

    run = tmp_path / "run"
    model.save_pretrained(run / "model", training_data="synthetic")
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "neurofound": model.checkpoint_metadata()}, ckpt)
    x, s = signal(4, 2 * L, seed=11), layout(4, seed=11)
    with torch.no_grad():
        ref = model.reconstruct(x, s)
        for loaded in (BrainTokenizerModel.from_pretrained(run / "model"), load_pretrained(run),
                       load_checkpoint(ckpt)):
            assert loaded.config == model.config and not loaded.training
            out = loaded.reconstruct(x, s)
            assert torch.equal(out.reconstruction, ref.reconstruction) and torch.equal(out.codes, ref.codes)
        codes = model.tokenizer.encode(x, s).codes
        for spec in (run, run / "model", run / "model" / "tokenizer", ckpt):
            tok = BrainTokenizer.from_pretrained(spec)
            assert isinstance(tok, BrainTokenizer) and torch.equal(tok.eval().encode(x, s).codes, codes)
            assert tok.config == model.tokenizer.config
        assert torch.equal(load_tokenizer(run).eval().encode(x, s).codes, codes)
    assert not [k for k in model.state_dict() if not k.startswith("tokenizer.")]  # the model IS its tokenizer
    card = (run / "model" / "README.md").read_text()
    assert "xiao2025brainomni" in card and "z-scored" in card


def test_config_round_trip_builders_and_tokenizer_check(model):
    cfg = tiny(loss_preset="paper", noise_std=0.2)
    assert BrainTokenizerModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown BrainTokenizerModelConfig keys"):
        BrainTokenizerModelConfig.from_dict({**cfg.to_dict(), "n_dims": 3})
    with pytest.raises(ConfigError, match="loss_preset"):
        tiny(loss_preset="nope")
    small, base = braintokenizer_small(), braintokenizer_base()
    assert (small.n_filters, small.n_dim, small.n_neuro, small.n_head, small.codebook_size, small.codebook_dim,
            small.num_quantizers) == (8, 64, 16, 4, 512, 64, 4)
    assert (base.n_filters, base.n_dim, base.codebook_dim, base.ratios) == (32, 256, 256, [8, 4, 2])
    other = BrainTokenizer(**tiny(n_neuro=8).tokenizer_kwargs())
    with pytest.raises(ContractError, match="n_neuro: model 4 vs tokenizer 8"):
        model.check_tokenizer(other)
    with pytest.raises(ConfigError, match="multiple"):
        BrainTokenizer(window_length=100, ratios=[8, 4, 2])


def test_family_and_tokenizer_are_registered():
    from neurofound import tokenizers
    from neurofound.models.registry import get_family

    fam = get_family("brainomni_tokenizer")
    assert fam.model_class is BrainTokenizerModel and fam.tokenizers == ("braintokenizer",)
    assert fam.builder("braintokenizer_base")().n_dim == 256
    assert fam.converter_fn().__module__ == "neurofound.models.brainomni_convert"
    assert tokenizers.get("braintokenizer") is BrainTokenizer


# ---------------------------------------------------------------------------------------------------------------
# converter: the release layout
# ---------------------------------------------------------------------------------------------------------------
def test_convert_reads_the_release_layout(model, tmp_path):
    from neurofound.models.brainomni_convert import convert_tokenizer

    ref = tmp_path / "release"
    ref.mkdir()
    kw = {k: v for k, v in model.tokenizer.config.items() if k in (
        "window_length", "n_filters", "ratios", "kernel_size", "last_kernel_size", "n_dim", "n_neuro", "n_head",
        "dropout", "codebook_dim", "codebook_size", "num_quantizers", "rotation_trick", "quantize_optimize_method")}
    (ref / "model_cfg.json").write_text(json.dumps({**kw, "channel_mask_ratio": 0.25, "extra_reference_kwarg": 1}))
    torch.save({f"module.{k}": v for k, v in model.tokenizer.state_dict().items()}, ref / "BrainTokenizer.pt")
    converted = BrainTokenizerModel.from_pretrained(convert_tokenizer(ref, tmp_path / "out"))
    assert converted.config.reference_compat and converted.config.n_neuro == model.config.n_neuro
    x, s = signal(3, 2 * L, seed=12), layout(3, seed=12)
    with torch.no_grad():
        assert torch.equal(converted.tokenizer.encode(x, s).codes, model.tokenizer.encode(x, s).codes)
    torch.save([torch.zeros(1)], ref / "BrainTokenizer.pt")
    with pytest.raises(CheckpointError, match="BrainTokenizer.pt"):
        convert_tokenizer(ref, tmp_path / "out2")


def test_attention_backend_reaches_both_attention_layers(model):
    import copy

    from neurofound.nn.attention import set_backend

    (_, _), (_, _), (x, sensors, sm) = mixed_batch()
    ref = copy.deepcopy(model)
    assert set_backend(ref, "reference") == 2  # the compression (backward) and the decoder (forward) solutions
    with torch.no_grad():
        a, b = model.tokenizer(x, sensors, sample_mask=sm), ref.tokenizer(x, sensors, sample_mask=sm)
    close(a.latent, b.latent)
    close(a.reconstruction, b.reconstruction)


def test_sensor_layout_from_a_recording_and_validation(model):
    import numpy as np

    from neurofound.data.sensors import SensorRecording

    rng = np.random.default_rng(0)
    rec = SensorRecording(data=rng.standard_normal((3, 2 * L)), sfreq=256.0, ch_names=("Cz", "MEG 0111", "MEG 0112"),
                          sensor_types=[0, 1, 2], positions=rng.standard_normal((3, 6)))
    s = SensorLayout.from_recording(rec)
    assert s.positions.shape == (1, 3, 6) and s.types.tolist() == [[0, 1, 2]] and not s.padded
    with torch.no_grad():
        out = model.tokenizer.encode(torch.as_tensor(rec.data)[None], s)
    assert out.codes.shape == (1, 4, 2, model.tokenizer.latent_steps, 2)
    with pytest.raises(DataError, match="positions"):
        SensorLayout(torch.zeros(1, 3, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(DataError, match=r"\(batch, channels\)"):
        model.tokenizer.encode(torch.zeros(1, 4, 2 * L), s)
    with pytest.raises(DataError, match="NaN"):
        model.tokenizer.encode(torch.full((1, 3, 2 * L), float("nan")), s)
