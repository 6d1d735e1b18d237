"""BrainOmni stage 2 (neurofound.models.brainomni): masking, padding, the frozen tokenizer, saving, LoRA, FSDP units.

Weight-for-weight parity with the reference is tests/parity (fixture `brainomni`); these tests use a tiny trained-
from-nothing BrainTokenizer (codebooks initialised by one training-mode call) and tiny stage-2 sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neurofound.errors import CheckpointError, ConfigError, ContractError, DataError, MissingFileError
from neurofound.models.brainomni import (BrainOmni, BrainOmniConfig, CrissCrossBlock, MaskingDraws, brainomni_base,
                                         brainomni_small, brainomni_tiny, sizes_from_tokenizer)
from neurofound.nn.attention import set_backend
from neurofound.nn.lora import apply_lora, lora_parameters, merge_lora
from neurofound.tasks.base import check_no_tying_across_units, fsdp_units
from neurofound.tokenizers.braintokenizer import BrainTokenizer, SensorLayout

TOKENIZER = dict(n_filters=4, ratios=[8, 4, 2], n_dim=16, n_neuro=4, n_head=2, codebook_dim=16, codebook_size=16,
                 num_quantizers=2)
SAMPLES = 1536  # 4 windows of 512 at stride 384 -> 32 time tokens


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sensors(batch: int, channels: int, seed: int = 0) -> SensorLayout:
    g = torch.Generator().manual_seed(seed)
    positions = torch.randn(batch, channels, 6, generator=g)
    return SensorLayout(positions, torch.randint(0, 3, (batch, channels), generator=g))


def _signal(batch: int, channels: int, samples: int = SAMPLES, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tokenizer() -> BrainTokenizer:
    torch.manual_seed(0)
    tok = BrainTokenizer(**TOKENIZER)
    tok.train()
    with torch.no_grad():
        tok.encode(_signal(4, 6, 1024, seed=7), _sensors(4, 6, seed=7))  # k-means init of the codebooks
    return tok.eval()


def _model(tokenizer, seed: int = 0, **overrides) -> BrainOmni:
    torch.manual_seed(seed)
    cfg = dict(lm_dim=16, lm_head=4, lm_depth=2, **sizes_from_tokenizer(tokenizer))
    cfg.update(overrides)
    model = BrainOmni(BrainOmniConfig(**cfg))
    model.attach_tokenizer(tokenizer)
    return model.eval()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# config, builders, tokenizer checks
# ---------------------------------------------------------------------------------------------------------------
def test_config_round_trip_and_errors(tokenizer):
    cfg = BrainOmniConfig(num_quantizers=3)
    assert cfg.num_quantizers_used == 3  # None = every level
    assert BrainOmniConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown BrainOmniConfig keys"):
        BrainOmniConfig.from_dict({**cfg.to_dict(), "lm_dimm": 8})
    with pytest.raises(ConfigError, match="even width"):
        BrainOmniConfig(lm_dim=12, lm_head=4)  # head width 3: RoPE pairs would straddle heads
    with pytest.raises(ConfigError, match="lm_head // 2 = 0 heads"):
        BrainOmniConfig(lm_dim=12, lm_head=1)
    assert BrainOmni(BrainOmniConfig(lm_dim=16, lm_head=5, lm_depth=1)).blocks[0].time_attn.n_head == 2  # floored
    with pytest.raises(ConfigError, match="num_quantizers_used"):
        BrainOmniConfig(num_quantizers_used=5, num_quantizers=4)
    with pytest.raises(ConfigError, match="mask_ratio"):
        BrainOmniConfig(mask_ratio=0.0)
    for builder, (dim, heads, depth) in ((brainomni_small, (64, 4, 4)), (brainomni_tiny, (256, 8, 12)),
                                         (brainomni_base, (512, 16, 12))):
        c = builder(**sizes_from_tokenizer(tokenizer))
        assert (c.lm_dim, c.lm_head, c.lm_depth, c.n_dim, c.n_neuro) == (dim, heads, depth, 16, 4)
    # the released sizes: base projects 256 -> 512, tiny needs no projection (no keys)
    assert isinstance(BrainOmni(brainomni_tiny(lm_depth=1)).projection, torch.nn.Identity)
    assert isinstance(BrainOmni(brainomni_base(lm_depth=1)).projection, torch.nn.Linear)


def test_check_tokenizer_refuses_a_tokenizer_of_other_sizes(tokenizer):
    model = BrainOmni(BrainOmniConfig(lm_dim=16, lm_head=4, lm_depth=1, **{**sizes_from_tokenizer(tokenizer),
                                                                            "codebook_size": 32}))
    with pytest.raises(ContractError, match="codebook_size: model 32 vs tokenizer 16"):
        model.attach_tokenizer(tokenizer)
    model = BrainOmni(BrainOmniConfig(lm_dim=16, lm_head=4, lm_depth=1, **{**sizes_from_tokenizer(tokenizer),
                                                                            "reference_compat": True}))
    with pytest.raises(ContractError, match="reference_compat: model True vs tokenizer False"):
        model.attach_tokenizer(tokenizer)
    with pytest.raises(ContractError, match="no tokenizer"):
        model.encode(_signal(1, 3), _sensors(1, 3))
    with pytest.raises(ContractError, match="BrainTokenizer"):
        sizes_from_tokenizer(object())


# ---------------------------------------------------------------------------------------------------------------
# masking
# ---------------------------------------------------------------------------------------------------------------
def test_masking_statistics_on_a_large_grid():
    """~50 % masked; of those ~80 % mask token, ~20 % a random token of the batch; visible ones untouched."""
    model = BrainOmni(BrainOmniConfig(n_dim=8, n_neuro=16, lm_dim=8, lm_head=2, lm_depth=1))
    shape = (4, 16, 500)  # 32000 positions: the binomial std of a fraction is < 0.003
    n = 4 * 16 * 500
    features = torch.arange(n * 8, dtype=torch.float32).reshape(*shape, 8)  # every vector different
    real = torch.ones(4, 500, dtype=torch.bool)
    draws = MaskingDraws.draw(shape, 0.5, n, generator=_gen(3))
    x, use_mask, use_random = model.corrupt(features, real, draws)
    masked = use_mask | use_random
    assert not bool((use_mask & use_random).any())
    assert torch.equal(masked, ~draws.keep)
    assert abs(masked.float().mean().item() - 0.5) < 0.01
    assert abs(use_mask[masked].float().mean().item() - 0.8) < 0.015
    assert torch.equal(x[~masked], features[~masked])  # visible positions are never touched
    assert torch.equal(x[use_mask], model.mask_token.detach().expand(int(use_mask.sum()), 8))
    # a random token is the vector of position shuffle[i] of the whole flattened batch (README §2)
    source = features.reshape(-1, 8)[draws.shuffle].view(*shape, 8)
    assert torch.equal(x[use_random], source[use_random])
    crossed = (draws.shuffle.view(shape) // (16 * 500)) != torch.arange(4)[:, None, None]
    assert bool(crossed[use_random].any())  # drawn across samples, not within one
    # random_token_prob = 1: every masked position keeps its random token
    model.config.random_token_prob = 1.0
    _, use_mask, use_random = model.corrupt(features, real, draws)
    assert not bool(use_mask.any()) and torch.equal(use_random, masked)


def test_default_draws_follow_the_reference_order(tokenizer):
    """Without injected draws the forward draws rand (keep), randperm (shuffle), rand (replace) from the global
    RNG, so seeding reproduces a reference forward (the parity test checks it against the fixture's seed)."""
    model = _model(tokenizer)
    tokens = model.tokenize(_signal(2, 5), _sensors(2, 5))
    torch.manual_seed(11)
    drawn = model(tokens=tokens)
    torch.manual_seed(11)
    draws = MaskingDraws.draw(drawn.masked.shape, 0.5, drawn.masked.numel())
    injected = model(tokens=tokens, draws=draws)
    assert torch.equal(drawn.masked, ~draws.keep)
    assert torch.equal(drawn.logits, injected.logits) and torch.equal(drawn.loss, injected.loss)
    # a generator makes eval draws reproducible without touching the global RNG
    a, b = model(tokens=tokens, generator=_gen(5)), model(tokens=tokens, generator=_gen(5))
    assert torch.equal(a.masked, b.masked) and torch.equal(a.loss, b.loss)


def test_loss_and_accuracy_over_masked_positions_and_levels(tokenizer):
    model = _model(tokenizer)
    tokens = model.tokenize(_signal(2, 5), _sensors(2, 5))
    out = model(tokens=tokens, generator=_gen(1))
    indices, masked = tokens[1], out.masked
    chosen = out.logits[masked]  # (X, Q, K)
    expected = torch.nn.functional.cross_entropy(chosen.reshape(-1, 16), indices[masked].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    acc = (chosen.argmax(-1) == indices[masked]).float().mean(0)
    assert torch.equal(out.acc_per_level, acc) and out.acc_per_level.shape == (2,)
    torch.testing.assert_close(out.acc_all, acc.mean())
    # num_quantizers_used = 1: one level predicted and scored
    one = _model(tokenizer, num_quantizers_used=1)
    out1 = one(tokens=tokens, generator=_gen(1))
    assert out1.logits.shape[-2:] == (1, 16) and out1.acc_per_level.shape == (1,)
    level0 = torch.nn.functional.cross_entropy(out1.logits[out1.masked][:, 0], indices[out1.masked][:, 0])
    torch.testing.assert_close(out1.loss, level0)


# ---------------------------------------------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------------------------------------------
def test_padded_time_tokens_stay_out_of_masking_loss_and_attention(tokenizer):
    model = _model(tokenizer)
    features, indices, _ = model.tokenize(_signal(2, 5), _sensors(2, 5))
    token_mask = torch.ones(2, features.shape[2], dtype=torch.bool)
    token_mask[1, 20:] = False  # sample 1: its last 12 time tokens hold only padding
    pad = ~token_mask[:, None, :].expand_as(indices[..., 0])
    poisoned = features.clone()
    poisoned[pad] = 100.0  # a value no real token vector has (they are sums of unit-scale codewords)
    other = features.clone()
    other[pad] = -3.0
    other_idx = indices.clone()
    other_idx[pad] = 0
    for seed in range(3):
        out = model(tokens=(poisoned, indices, token_mask), generator=_gen(seed), return_intermediates=True)
        assert not bool(out.masked[pad].any())  # padded positions are never masked, so never scored
        corrupted = out.intermediates["mid.lm_input"] - model.source_embedding()[None, :, None]
        assert float(corrupted[~pad].abs().max().detach()) < 50  # and never drawn as a random replacement
        assert bool(out.intermediates["mid.use_random_token"].any())
        again = model(tokens=(other, other_idx, token_mask), generator=_gen(seed))
        assert torch.equal(out.loss, again.loss) and torch.equal(out.acc_per_level, again.acc_per_level)
        torch.testing.assert_close(out.logits[~pad], again.logits[~pad], atol=1e-6, rtol=0)
    enc, enc_mask = model.encode(tokens=(poisoned, indices, token_mask))
    assert torch.equal(enc_mask, token_mask)
    pooled = model.pooled(tokens=(poisoned, indices, token_mask))
    torch.testing.assert_close(pooled[1], enc[1, :, :20].mean(1).flatten())
    with pytest.raises(DataError, match="permute the"):
        model(tokens=(features, indices, token_mask), draws=MaskingDraws.draw((2, 4, 32), 0.5, 2 * 4 * 32))


def test_a_padded_batch_equals_each_recording_alone(tokenizer):
    """sample_mask -> the tokenizer's token_mask -> masked keys: a short recording batched with a long one gets
    the features it gets alone."""
    model = _model(tokenizer)
    x, sensors = _signal(2, 5), _sensors(2, 5)
    sample_mask = torch.ones(2, SAMPLES, dtype=torch.bool)
    sample_mask[1, 768:] = False  # 2 real windows of 4
    enc, token_mask = model.encode(x, sensors, sample_mask=sample_mask)
    assert token_mask[0].all() and token_mask[1].sum() == 16
    single = SensorLayout(sensors.positions[1:], sensors.types[1:])
    alone, alone_mask = model.encode(x[1:, :, :768], single)
    assert alone_mask.all() and alone.shape[2] == 16
    torch.testing.assert_close(enc[1:, :, :16], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.pooled(x, sensors, sample_mask=sample_mask)[1:],
                               model.pooled(x[1:, :, :768], single), atol=1e-5, rtol=1e-5)
    out = model(x, sensors, sample_mask=sample_mask, generator=_gen(0))
    assert not bool(out.masked[1, :, 16:].any())


# ---------------------------------------------------------------------------------------------------------------
# features, dropout, backends
# ---------------------------------------------------------------------------------------------------------------
def test_encode_skips_the_last_block_and_pooled_flattens(tokenizer):
    model = _model(tokenizer, n_classes=3)
    x, sensors = _signal(2, 5), _sensors(2, 5)
    enc, _ = model.encode(x, sensors)
    assert enc.shape == (2, 4, 32, 16)
    torch.testing.assert_close(enc.norm(dim=-1), torch.ones(2, 4, 32))
    pooled = model.pooled(x, sensors)
    assert pooled.shape == (2, 4 * 16)
    torch.testing.assert_close(pooled, enc.mean(2).flatten(1))
    assert model.classify(x, sensors).shape == (2, 3)
    before = model(x, sensors, generator=_gen(0)).logits
    with torch.no_grad():
        model.blocks[-1].ff.layer[2].bias.add_(1.0)  # the last block: in the masked forward, not in encode
    assert torch.equal(model.encode(x, sensors)[0], enc)
    assert not torch.allclose(model(x, sensors, generator=_gen(0)).logits, before)
    with pytest.raises(ConfigError, match="no classifier head"):
        _model(tokenizer).classify(x, sensors)


def test_attention_dropout_only_in_training_and_backends_agree(tokenizer):
    model = _model(tokenizer, attn_dropout=0.5, lm_dropout=0.0)
    tokens = model.tokenize(_signal(2, 5), _sensors(2, 5))
    assert torch.equal(model.encode(tokens=tokens)[0], model.encode(tokens=tokens)[0])  # eval: deterministic
    model.train()
    a, b = model(tokens=tokens, generator=_gen(0)), model(tokens=tokens, generator=_gen(0))
    assert not torch.allclose(a.logits, b.logits)  # same draws, different attention dropout
    model.eval()
    sdpa = model(tokens=tokens, generator=_gen(0)).logits
    set_backend(model, "reference")  # the runtime setting attention.backend reaches every criss-cross attention
    assert [b.time_attn.backend for b in model.blocks] + [b.spatial_attn.backend for b in model.blocks] == [
        "reference"] * 4
    torch.testing.assert_close(model(tokens=tokens, generator=_gen(0)).logits, sdpa, atol=1e-5, rtol=1e-5)


def test_rope_frequencies_stay_fp32_in_a_bf16_block():
    cfg = BrainOmniConfig(lm_dim=16, lm_head=4, lm_depth=1, n_dim=16, n_neuro=4)
    block = CrissCrossBlock(cfg)
    freqs = block.time_attn.rope_embedding_layer.freqs.clone()
    block = block.to(torch.bfloat16)
    assert block.time_attn.qkv.weight.dtype == torch.bfloat16
    assert block.time_attn.rope_embedding_layer.freqs.dtype == torch.float32
    assert torch.equal(block.time_attn.rope_embedding_layer.freqs, freqs)
    out = block(torch.randn(2, 4, 40, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())


# ---------------------------------------------------------------------------------------------------------------
# the frozen tokenizer, gradients
# ---------------------------------------------------------------------------------------------------------------
def test_tokenizer_stays_frozen_and_in_eval_when_the_model_trains(tokenizer):
    model = _model(tokenizer, lm_dropout=0.0, attn_dropout=0.0)
    before = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    model.train()
    assert model.training and model.blocks[0].training and not model.tokenizer.training
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    out = model(_signal(2, 5), _sensors(2, 5), generator=_gen(0))
    out.loss.backward()
    assert all(p.grad is None for p in model.tokenizer.parameters())
    for name, p in model.named_parameters():
        if not name.startswith("tokenizer."):
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    after = model.tokenizer.state_dict()  # no EMA update, no dead-code restart, no k-means
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a tokenizer switched to training by hand is put back in eval before it tokenizes
    model.tokenizer.train()
    model.tokenize(_signal(1, 5), _sensors(1, 5))
    assert not model.tokenizer.training


# ---------------------------------------------------------------------------------------------------------------
# saving and loading
# ---------------------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip_with_the_embedded_tokenizer(tokenizer, tmp_path):
    from neurofound.models.registry import load_pretrained

    model = _model(tokenizer, n_classes=3)
    x, sensors = _signal(2, 5), _sensors(2, 5)
    out = model(x, sensors, generator=_gen(0))
    model.save_pretrained(tmp_path / "m")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not any(k.startswith("tokenizer.") for k in weights)  # stored once, under tokenizer/
    assert not any(k.endswith(".rotate") for k in weights)
    assert "blocks.0.time_attn.rope_embedding_layer.freqs" in weights and "head.1.weight" in weights
    tok_weights = load_file(str(tmp_path / "m" / "tokenizer" / "tokenizer.safetensors"))
    assert torch.equal(tok_weights["encoder.neuros"], tokenizer.encoder.neuros.detach())
    # a Lightning checkpoint holds the tokenizer's weights as model.tokenizer.* and its config as plain data
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "neurofound": model.checkpoint_metadata()}
    torch.save(ckpt, tmp_path / "last.ckpt")
    for loaded in (BrainOmni.from_pretrained(tmp_path / "m"), load_pretrained(tmp_path / "m"),
                   load_pretrained(tmp_path / "last.ckpt")):
        assert isinstance(loaded, BrainOmni) and loaded.config == model.config
        assert not loaded.training and not any(p.requires_grad for p in loaded.tokenizer.parameters())
        again = loaded(x, sensors, generator=_gen(0))
        assert torch.equal(again.logits, out.logits) and torch.equal(again.loss, out.loss)
        assert torch.equal(loaded.classify(x, sensors), model.classify(x, sensors))
        assert torch.equal(loaded.encode(x, sensors)[0], model.encode(x, sensors)[0])


# ---------------------------------------------------------------------------------------------------------------
# LoRA and FSDP
# ---------------------------------------------------------------------------------------------------------------
def test_lora_wraps_every_criss_cross_qkv(tokenizer):
    model = _model(tokenizer, lm_dropout=0.0, attn_dropout=0.0)
    tokens = model.tokenize(_signal(2, 5), _sensors(2, 5))
    before = model(tokens=tokens, generator=_gen(0)).logits
    model.requires_grad_(False)  # as finetune.configure_mode: everything frozen, then adapters on the trunk
    wrapped = apply_lora(model.blocks, targets=("qkv",), rank=2)
    assert wrapped == [f"{i}.{a}.qkv" for i in range(2) for a in ("time_attn", "spatial_attn")]
    assert torch.equal(model(tokens=tokens, generator=_gen(0)).logits, before)  # B = 0: unchanged at init
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in lora_parameters(model)}
    model.train()
    model(tokens=tokens, generator=_gen(0)).loss.backward()
    assert all(bool(m.lora_B.grad.abs().sum() > 0) for m in model.modules() if hasattr(m, "lora_B"))
    assert merge_lora(model) == 4
    fresh = _model(tokenizer, seed=1)
    fresh.load_state_dict(model.state_dict(), strict=True)  # the plain architecture again
    # a bare "proj" over the whole model would also reach the tokenizer's projections: target the blocks only
    names = apply_lora(_model(tokenizer), targets=("proj",))
    assert any(n.startswith("tokenizer.") for n in names)


def test_fsdp_units_are_the_criss_cross_blocks(tokenizer):
    model = _model(tokenizer, lm_depth=3)
    units = fsdp_units(model)
    assert len(units) == 3 and all(isinstance(u, CrissCrossBlock) for u in units)
    assert {id(u) for u in units} == {id(b) for b in model.blocks}
    assert not any(u is m for u in units for m in model.tokenizer.modules())  # the tokenizer stays in the root
    check_no_tying_across_units(model, units)


# ---------------------------------------------------------------------------------------------------------------
# conversion of the release layout (the fixture layout is tests/parity)
# ---------------------------------------------------------------------------------------------------------------
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "brainomni"


def _release_folder(folder: Path, state: dict, kwargs: dict) -> Path:
    folder.mkdir()
    (folder / "model_cfg.json").write_text(json.dumps(kwargs))
    torch.save(state, folder / "BrainOmni.pt")
    return folder


def test_convert_reads_the_release_layout_and_rebuilds_the_rope_cache(tmp_path):
    from neurofound.models.convert import convert

    kwargs = json.loads((FIXTURE / "config.json").read_text())["constructor_kwargs"]
    state = load_file(str(FIXTURE / "reference_state_dict.safetensors"))
    reference = BrainOmni.from_pretrained(convert("brainomni", FIXTURE, tmp_path / "fixture"))
    io = load_file(str(FIXTURE / "io.safetensors"))
    sensors = SensorLayout(io["in.pos"], io["in.sensor_type"])
    expected = reference.encode(io["in.x"], sensors)[0]
    rotate = [k for k in state if k.endswith(".rope_embedding_layer.rotate")]
    assert len(rotate) == kwargs["lm_depth"]
    no_cache = {f"module.{k}": v for k, v in state.items() if k not in rotate}  # DeepSpeed prefix, cache lost
    real_only = {k: (v.real.clone() if k in rotate else v) for k, v in state.items()}  # the export's cosines
    for name, variant in (("no_cache", no_cache), ("real_only", real_only)):
        out = convert("brainomni", _release_folder(tmp_path / name, variant, kwargs), tmp_path / f"{name}_out")
        model = BrainOmni.from_pretrained(out)
        assert model.config == reference.config
        assert torch.equal(model.encode(io["in.x"], sensors)[0], expected), name
    broken = dict(state)
    broken[rotate[0]] = state[rotate[0]] * 1j  # not exp(i t f)
    with pytest.raises(CheckpointError, match="not exp"):
        convert("brainomni", _release_folder(tmp_path / "broken", broken, kwargs), tmp_path / "broken_out")
    with pytest.raises(CheckpointError, match="blocks"):
        convert("brainomni", _release_folder(tmp_path / "deeper", state, {**kwargs, "lm_depth": 3}), tmp_path / "x")
    with pytest.raises(MissingFileError, match="BrainOmni.pt"):
        convert("brainomni", tmp_path / "no_cache_out", tmp_path / "y")  # a neurofound folder is no reference
