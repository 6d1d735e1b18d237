"""LoRA (neurofound.nn.lora): exact identity at init, frozen base under training, merge round trip,
and the errors a caller can make. Most tests run on a real (small, CPU) Neuroformer."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurofound.data import SpikeDataModule, SpikeRecording
from neurofound.data.datamodule import collate
from neurofound.errors import ConfigError
from neurofound.models.neuroformer import Neuroformer, neuroformer_small
from neurofound.nn.lora import LoRALinear, apply_lora, count_trainable, lora_parameters, merge_lora
from neurofound.tokenizers.spike import SpikeTokenizer

N_NEURONS = 20


# ----------------------------------------------------------------------------------------------
# A real model and a real batch
# ----------------------------------------------------------------------------------------------
def _config(**overrides):
    kw = dict(n_neurons=N_NEURONS, block_size=16, block_size_prev=24, frame_shape=None, dropout=0.0, attn_dropout=0.0)
    return neuroformer_small(**{**kw, **overrides})


def _model(seed: int = 0, **overrides) -> Neuroformer:
    torch.manual_seed(seed)
    model = Neuroformer(_config(**overrides)).eval()
    model.attach_tokenizer(SpikeTokenizer(N_NEURONS, block_size=model.config.block_size,
                                          block_size_prev=model.config.block_size_prev))
    return model


@pytest.fixture(scope="module")
def batch() -> dict:
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.08, size=(N_NEURONS, 1000))  # 10 s at 10 ms
    rec = SpikeRecording.from_raster(counts, 0.01)
    dm = SpikeDataModule(rec, SpikeTokenizer(N_NEURONS, block_size=16, block_size_prev=24), batch_size=8, frames=False)
    dm.setup()
    ds = dm.datasets["train"]
    return collate(ds.__getitems__(list(range(8))))


def _non_lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}


# ----------------------------------------------------------------------------------------------
# Neuroformer
# ----------------------------------------------------------------------------------------------
def test_default_targets_wrap_query_and_value_of_every_attention_layer(batch):
    model = _model()
    with torch.no_grad():
        before = model(batch)
    wrapped = apply_lora(model)
    n_attn = sum(1 for name, _ in model.named_modules() if name.endswith(".attn"))
    assert n_attn > 0 and len(wrapped) == 2 * n_attn
    assert all(name.endswith((".attn.query", ".attn.value")) for name in wrapped)
    assert all(isinstance(model.get_submodule(name), LoRALinear) for name in wrapped)
    # B = 0: the adapted model computes exactly what the pretrained one did
    with torch.no_grad():
        after = model(batch)
    assert torch.equal(before.id_logits, after.id_logits) and torch.equal(before.dt_logits, after.dt_logits)
    assert torch.equal(before.loss["total"], after.loss["total"])


def test_trainable_fraction_default_vs_all_linear_layers():
    model = _model()
    total_before = count_trainable(model)[1]
    apply_lora(model)
    trainable, total = count_trainable(model)
    assert total == total_before + trainable  # only A and B were added, and only they train
    assert trainable == sum(p.numel() for p in lora_parameters(model))
    assert trainable / total < 0.05

    everything = _model()
    wrapped = apply_lora(everything, targets="*")
    assert len(wrapped) == sum(isinstance(m, nn.Linear) for m in _model().modules())
    all_trainable, all_total = count_trainable(everything)
    # rank 8 on every linear layer of a width-64 model is no longer a light adapter (about 15%)
    assert 0.10 < all_trainable / all_total < 0.25
    assert all_trainable > 3 * trainable


def test_training_moves_only_lora_and_merge_round_trips(batch, tmp_path):
    model = _model()
    apply_lora(model, rank=4, alpha=8.0)
    base = _non_lora_state(model)
    lora_before = [p.detach().clone() for p in lora_parameters(model)]
    with torch.no_grad():
        loss0 = model(batch).loss["total"].item()

    # every parameter is handed to AdamW, as a generic task might: frozen ones get no gradient,
    # so neither the update nor weight decay touches them
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(5):
        opt.zero_grad()
        model(batch).loss["total"].backward()
        opt.step()
    model.eval()

    with torch.no_grad():
        adapted = model(batch)
    assert adapted.loss["total"].item() < loss0
    after = _non_lora_state(model)
    assert after.keys() == base.keys()
    assert all(torch.equal(base[k], after[k]) for k in base), "a frozen tensor changed"
    assert all(not torch.equal(a, p) for a, p in zip(lora_before, lora_parameters(model)))

    assert merge_lora(model) == len(lora_before) // 2
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        merged = model(batch)
    torch.testing.assert_close(merged.id_logits, adapted.id_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(merged.dt_logits, adapted.dt_logits, atol=1e-6, rtol=0)

    # the merged model is the plain architecture: strict load into a fresh model, and save/load
    fresh = _model(seed=1)
    fresh.load_state_dict(model.state_dict(), strict=True)
    model.save_pretrained(tmp_path / "merged")
    loaded = Neuroformer.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        for m in (fresh, loaded):
            assert torch.equal(m(batch).id_logits, merged.id_logits)


def test_cached_generation_sees_the_update(batch):
    """Neuroformer's cached decoder reads `layer.weight` directly: it must include B @ A."""
    model = _model().double()
    apply_lora(model)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(0.0, 0.3)  # a large update: ignoring it changes what is generated
    context = {k: v for k, v in batch.items() if k not in ("id", "dt", "target_id", "target_dt")}
    context = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in context.items()}

    def run(m, use_cache):
        return m.generate(context, use_cache=use_cache, generator=torch.Generator().manual_seed(0))

    cached, uncached = run(model, True), run(model, False)
    assert torch.equal(cached.id_tokens, uncached.id_tokens) and torch.equal(cached.dt_tokens, uncached.dt_tokens)
    merged = copy.deepcopy(model)
    merge_lora(merged)
    assert torch.equal(run(merged, True).id_tokens, cached.id_tokens)
    plain = run(_model().double(), True)
    assert not torch.equal(plain.id_tokens, cached.id_tokens)


def test_targets_by_full_name_and_glob():
    model = _model()
    first = "state_blocks.0.attn.query"
    assert apply_lora(_model(), targets=first) == [first]
    assert apply_lora(_model(), targets="attn.proj") == [n for n, m in model.named_modules() if n.endswith("attn.proj")]
    wrapped = apply_lora(_model(), targets=("*.attn.query", "decoder_blocks.*.attn.value"))
    assert wrapped == [n for n, m in model.named_modules()
                       if n.endswith(".attn.query") or (n.startswith("decoder_blocks.") and n.endswith(".attn.value"))]


def test_no_match_lists_the_available_linear_layers():
    model = _model()
    with pytest.raises(ConfigError) as e:
        apply_lora(model, targets=("q_proj", "v_proj"))
    msg = str(e.value)
    assert "'q_proj'" in msg and "'v_proj'" in msg
    listed = msg.split("Neuroformer: ")[1].split(" (")[0].split(", ")
    # deduplicated short names; an index alone ('0') would not say which layer it is
    assert listed == ["head_dt", "head_id", "key", "mlp.0", "mlp.2", "proj", "query", "value"]
    # a typo next to a valid target is an error too, and nothing was wrapped
    with pytest.raises(ConfigError, match="'valu'"):
        apply_lora(model, targets=("query", "valu"))
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_wrapping_twice_is_an_error():
    model = _model()
    apply_lora(model)
    for targets in (("query", "value"), ("key",)):
        with pytest.raises(ConfigError, match="merge_lora"):
            apply_lora(model, targets=targets)


# ----------------------------------------------------------------------------------------------
# A toy MLP (no Neuroformer)
# ----------------------------------------------------------------------------------------------
class ToyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(6, 12)
        self.act = nn.GELU()
        self.down = nn.Linear(12, 3, bias=False)
        self.norm = nn.LayerNorm(3)

    def forward(self, x):
        return self.norm(self.down(self.act(self.up(x))))


def test_toy_mlp_forward_merge_and_freezing():
    torch.manual_seed(0)
    mlp = ToyMLP()
    x = torch.randn(5, 4, 6)
    reference = mlp(x).detach()
    w_up = mlp.up.weight.detach().clone()

    assert apply_lora(mlp, targets=("up", "down"), rank=2, alpha=4.0) == ["up", "down"]
    assert torch.equal(mlp(x), reference)
    assert [n for n, p in mlp.named_parameters() if p.requires_grad] == [
        "up.lora_A", "up.lora_B", "down.lora_A", "down.lora_B"]
    layer = mlp.up
    assert layer.scaling == 2.0 and layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (12, 2)
    assert torch.all(layer.lora_B == 0) and layer.lora_A.abs().max() <= 1 / math.sqrt(6)  # kaiming_uniform(a=sqrt(5))

    with torch.no_grad():
        for p in lora_parameters(mlp):
            p.normal_()
    h = torch.randn(5, 6)
    expected = F.linear(h, w_up, mlp.up.bias) + h @ layer.lora_A.T @ layer.lora_B.T * 2.0
    torch.testing.assert_close(layer(h), expected)
    torch.testing.assert_close(F.linear(h, layer.weight, layer.bias), expected)  # effective weight
    adapted = mlp(x).detach()
    assert merge_lora(mlp) == 2
    assert type(mlp.up) is nn.Linear and mlp.down.bias is None
    assert not mlp.up.weight.requires_grad  # merged layers stay frozen like the rest of the model
    torch.testing.assert_close(mlp(x), adapted, atol=1e-6, rtol=0)
    assert set(mlp.state_dict()) == set(ToyMLP().state_dict())
    assert merge_lora(mlp) == 0


def test_dropout_only_on_the_lora_branch():
    torch.manual_seed(0)
    base = nn.Linear(8, 4)
    layer = LoRALinear(base, rank=2, dropout=0.5).train()
    x = torch.randn(32, 8)
    assert torch.equal(layer(x), base(x))  # B = 0: dropout of the branch input cannot show
    with torch.no_grad():
        layer.lora_B.normal_()
    assert not torch.equal(layer(x), layer(x))  # random masks on the branch
    layer.eval()
    torch.testing.assert_close(layer(x), layer.merged()(x))  # outputs ~ 4: float32 rounding ~ 4e-6


def test_base_weights_unchanged_and_dtype_kept():
    base = nn.Linear(4, 4).to(torch.float64)
    w = base.weight.detach().clone()
    layer = LoRALinear(base, rank=3)
    assert layer.lora_A.dtype == torch.float64 and not base.weight.requires_grad and not base.bias.requires_grad
    with torch.no_grad():
        layer.lora_B.fill_(1.0)
    merged = layer.merged()
    assert merged.weight.dtype == torch.float64 and torch.equal(base.weight, w)
    assert merged.weight is not base.weight


@pytest.mark.parametrize("kwargs", [dict(rank=0), dict(rank=2.5), dict(alpha=0.0), dict(alpha=float("nan")),
                                    dict(dropout=1.0), dict(dropout=-0.1)])
def test_bad_hyperparameters(kwargs):
    with pytest.raises(ConfigError):
        apply_lora(ToyMLP(), targets="up", **kwargs)
    with pytest.raises(ConfigError):
        LoRALinear(nn.Linear(2, 2), **kwargs)


def test_caller_errors_on_toy_modules():
    with pytest.raises(ConfigError, match="targets is empty"):
        apply_lora(ToyMLP(), targets=())
    with pytest.raises(ConfigError, match="LoRALinear"):
        apply_lora(nn.Linear(3, 3), targets="*")
    with pytest.raises(ConfigError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ConfigError, match="none"):
        apply_lora(nn.Sequential(nn.ReLU()), targets="x")


def test_shared_linear_is_wrapped_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    apply_lora(model, targets="*")
    assert model[0] is model[2] and isinstance(model[0], LoRALinear)
    assert len(lora_parameters(model)) == 2 and count_trainable(model)[0] == 2 * 3 * 8
    assert merge_lora(model) == 1
    assert model[0] is model[2] and type(model[0]) is nn.Linear
