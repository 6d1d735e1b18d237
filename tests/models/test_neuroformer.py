"""Neuroformer model: shapes, causality, padding invariance, compat vs default, options, errors."""

from __future__ import annotations

import pytest
import torch

from neurofound.models.neuroformer import Neuroformer, NeuroformerConfig, neuroformer_base, neuroformer_small

N, S, SP = 6, 10, 14


def tiny(**kw) -> NeuroformerConfig:
    cfg = dict(n_neurons=N, block_size=S, block_size_prev=SP, n_embd=16, n_head=2, n_state_layers=1,
               n_history_layers=1, n_stimulus_layers=1, n_behavior_layers=1, frame_shape=[2, 8, 8],
               frame_kernel=[2, 4, 4], behavior_inputs=["phi"], behavior_targets={"speed": {"objective": "regression"}},
               contrastive=True, contrastive_vars=["id", "frames", "behavior.phi"], clip_embd=12, dropout=0.0,
               attn_dropout=0.0)
    cfg.update(kw)
    return NeuroformerConfig(**cfg)


def make_batch(cfg: NeuroformerConfig, B: int = 3, n_real: tuple = (7, 4, 1), seed: int = 0) -> dict:
    """Token sequences [SOS, events..., EOS, PAD...] of block length, plus frames and behaviour."""
    g = torch.Generator().manual_seed(seed)

    def seqs(L, lengths):
        ids = torch.full((B, L + 1), cfg.id_pad)
        dts = torch.full((B, L + 1), cfg.dt_pad)
        for b, n in enumerate(lengths):
            ev = torch.randint(0, cfg.n_neurons, (n,), generator=g)
            dv = torch.sort(torch.randint(0, cfg.n_dt, (n,), generator=g)).values
            ids[b, 0], dts[b, 0] = cfg.id_sos, 0
            ids[b, 1 : n + 1], dts[b, 1 : n + 1] = ev, dv
            ids[b, n + 1], dts[b, n + 1] = cfg.id_eos, cfg.dt_eos
        return ids, dts

    ids, dts = seqs(cfg.block_size, n_real)
    pids, pdts = seqs(cfg.block_size_prev, [min(SP - 2, n + 3) for n in n_real])
    batch = {"id": ids[:, :-1], "dt": dts[:, :-1], "target_id": ids[:, 1:], "target_dt": dts[:, 1:],
             "id_prev": pids[:, :-1], "dt_prev": pdts[:, :-1]}
    if cfg.frame_shape:
        batch["frames"] = torch.rand((B, 1, *cfg.frame_shape), generator=g)
    batch["behavior"] = {v: torch.randn(B, 1, 1, generator=g) for v in cfg.behavior_inputs}
    batch["behavior_dt"] = {v: torch.zeros(B, 1) for v in cfg.behavior_inputs}
    batch["behavior_target"] = {v: torch.randn(B, 1, generator=g) for v in cfg.behavior_targets}
    return batch


def tokenizer_for(cfg: NeuroformerConfig, dt: float = 0.01, frame_rate: float = 20.0):
    """The SpikeTokenizer that fits `cfg` (its dt vocabulary, blocks, frame count and compat mode)."""
    from neurofound.tokenizers.spike import SpikeTokenizer

    n_frames = cfg.frame_shape[0] if cfg.frame_shape else 3
    window = (cfg.n_dt - 1) * dt
    return SpikeTokenizer(n_neurons=cfg.n_neurons, dt=dt, window=window, window_prev=window,
                          block_size=cfg.block_size, block_size_prev=cfg.block_size_prev,
                          frame_window=n_frames / frame_rate, frame_rate=frame_rate,
                          reference_compat=cfg.reference_compat)


def model_for(cfg, seed=0):
    torch.manual_seed(seed)
    m = Neuroformer(cfg).eval()
    with torch.no_grad():  # move off the init values so that every parameter matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.attach_tokenizer(tokenizer_for(cfg))
    return m


def test_forward_shapes_and_losses():
    cfg = tiny()
    m = model_for(cfg)
    out = m(make_batch(cfg), return_intermediates=True, need_weights=True)
    assert out.id_logits.shape == (3, S, N + 3)
    assert out.dt_logits.shape == (3, S, cfg.n_dt + 3)
    assert out.last_layer.shape == (3, S, 16)
    assert out.behavior["speed"].shape == (3, 1)
    assert set(out.clip_proj) == {"id", "frames", "behavior.phi"}
    assert out.clip_proj["id"].shape == (3, 12)  # default uses clip_embd (Q13 fixed)
    assert set(out.loss) == {"id", "dt", "speed", "clip", "total"}
    assert torch.isclose(out.loss["total"], sum(v for k, v in out.loss.items() if k != "total"))
    assert out.intermediates["mid.frame_tokens"].shape == (3, 1 + 1 * 2 * 2, 16)
    assert out.intermediates["mid.modality.behavior.all"].shape == (3, 1, 16)
    assert [w.shape for w in out.attentions["state"]] == [(3, 2, S, S)]
    assert [w.shape for w in out.attentions["history"]] == [(3, 2, S, SP)]
    assert [w.shape for w in out.attentions["decoder"]] == [(3, 2, S, S)]
    assert m.features(make_batch(cfg)).shape == (3, 16)
    out.loss["total"].backward()


def test_causality_default_path():
    cfg = tiny()
    m = model_for(cfg)
    b = make_batch(cfg, n_real=(8, 8, 8))
    b2 = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in b.items()}
    b2["id"][:, 6] = (b2["id"][:, 6] + 1) % N
    b2["dt"][:, 6] = (b2["dt"][:, 6] + 2) % cfg.n_dt
    with torch.no_grad():
        o1, o2 = m(b), m(b2)
    assert torch.allclose(o1.id_logits[:, :6], o2.id_logits[:, :6], atol=1e-6)
    assert torch.allclose(o1.dt_logits[:, :6], o2.dt_logits[:, :6], atol=1e-6)
    assert not torch.allclose(o1.id_logits[:, 6:], o2.id_logits[:, 6:], atol=1e-4)


def test_padding_invariance_default_path():
    cfg = tiny()
    m = model_for(cfg)
    b = make_batch(cfg, n_real=(5, 3, 2))
    short = {**b, "id": b["id"][:, :8], "dt": b["dt"][:, :8]}  # fewer trailing PADs
    del short["target_id"], short["target_dt"]
    # extra past PADs in different places: replace trailing past PADs' dt values (they must not matter)
    more_pad = {**b, "dt_prev": b["dt_prev"].clone()}
    more_pad["dt_prev"][b["id_prev"] == cfg.id_pad] = 0
    with torch.no_grad():
        full, part, pads = m(b), m(short), m(more_pad)
    real = b["id"][:, :8] != cfg.id_pad
    assert torch.allclose(full.id_logits[:, :8][real], part.id_logits[real], atol=1e-5)
    assert torch.allclose(full.behavior["speed"], part.behavior["speed"], atol=1e-5)
    assert torch.allclose(full.id_logits, pads.id_logits, atol=1e-5)
    # the same past with 3 fewer PAD slots (shorter past block input) gives the same outputs
    cut = {**b, "id_prev": b["id_prev"][:, :-3], "dt_prev": b["dt_prev"][:, :-3]}
    assert (b["id_prev"][:, -3:] == cfg.id_pad).all()
    with torch.no_grad():
        assert torch.allclose(m(cut).id_logits, full.id_logits, atol=1e-5)


def test_compat_differs_from_default_and_ignores_behaviour_values():
    d, c = tiny(), tiny(reference_compat=True, clip_embd=16)
    md = model_for(d)
    mc = Neuroformer(c).eval()
    sd = md.state_dict()
    sd["behavior_embeddings.phi.project.ln.weight"] = torch.ones(1)
    sd["behavior_embeddings.phi.project.ln.bias"] = torch.full((1,), 0.3)
    mc.load_state_dict({k: v for k, v in sd.items() if k != "clip_proj.weight"} | {"clip_proj.weight": torch.randn(16, 16)})
    b = make_batch(d)
    with torch.no_grad():
        od, oc = md(b), mc(b)
        b2 = {**b, "behavior": {"phi": b["behavior"]["phi"] * 7 + 3}}
        od2, oc2 = md(b2), mc(b2)
    assert not torch.allclose(od.id_logits, oc.id_logits, atol=1e-4)
    assert torch.equal(oc.id_logits, oc2.id_logits)  # Q8: values erased by LayerNorm(1)
    assert not torch.allclose(od.id_logits, od2.id_logits, atol=1e-6)  # default: values matter
    # compat needs exact block lengths (Q3), default accepts shorter
    with pytest.raises(ValueError, match="exactly block size"):
        mc({**b, "id": b["id"][:, :5], "dt": b["dt"][:, :5]})


def test_loss_weights_presets():
    w = Neuroformer(tiny()).loss_weights()
    assert w["id"] == pytest.approx(0.45) and w["dt"] == pytest.approx(0.3) and w["clip"] == 0.25
    w = Neuroformer(tiny(contrastive=False)).loss_weights()
    assert w["id"] == pytest.approx(0.6) and w["dt"] == pytest.approx(0.4) and w["clip"] == 0.0
    w = Neuroformer(tiny(contrastive=False, reference_compat=True)).loss_weights()  # Q14 gating bug
    assert w["id"] == pytest.approx(0.45) and w["dt"] == pytest.approx(0.3)
    w = Neuroformer(tiny(loss_preset="paper")).loss_weights()
    assert w["id"] == pytest.approx(0.6) and w["dt"] == pytest.approx(0.15) and w["speed"] == pytest.approx(0.1875)
    w = Neuroformer(tiny(loss_weights={"dt": 1.0})).loss_weights()
    assert w["dt"] == 1.0


def test_sinusoid_temporal_option():
    cfg = tiny(temporal_embedding="sinusoid")
    m = model_for(cfg)
    assert not any(k.startswith("temp_emb.") for k in m.state_dict())
    b = make_batch(cfg)
    b2 = {**b, "dt": (b["dt"] + 1) % cfg.n_dt}
    with torch.no_grad():
        o1, o2 = m(b), m(b2)
    assert torch.isfinite(o1.id_logits).all()
    assert not torch.allclose(o1.id_logits, o2.id_logits, atol=1e-5)


def test_classification_behaviour_head():
    cfg = tiny(behavior_targets={"speed": {"objective": "classification", "n_classes": 4, "bin_edges": [-1.0, 0.0, 1.0]}})
    m = model_for(cfg)
    b = make_batch(cfg)
    b["behavior_target"] = {"speed": torch.tensor([[-2.0], [0.5], [3.0]])}
    out = m(b)
    assert out.behavior["speed"].shape == (3, 4)
    assert m.behavior_classes("speed", b["behavior_target"]["speed"]).tolist() == [0, 2, 3]
    expected = torch.nn.functional.cross_entropy(out.behavior["speed"], torch.tensor([0, 2, 3]))
    assert torch.isclose(out.loss["speed"], expected)
    with pytest.raises(ValueError, match="n_classes"):
        tiny(behavior_targets={"speed": {"objective": "classification"}})


def test_symmetric_clip_differs_from_infonce():
    a = model_for(tiny(clip_loss="infonce"))
    s = Neuroformer(tiny(clip_loss="symmetric")).eval()
    s.load_state_dict(a.state_dict())
    b = make_batch(a.config)
    la, ls = a(b).loss["clip"], s(b).loss["clip"]
    assert torch.isfinite(la) and torch.isfinite(ls) and not torch.isclose(la, ls)


def test_parameter_split_for_frozen_finetune():
    m = Neuroformer(tiny())
    beh = {id(p) for p in m.behavior_parameters()}
    trunk = {id(p) for p in m.trunk_parameters()}
    assert beh and trunk and not (beh & trunk)
    assert beh | trunk == {id(p) for p in m.parameters()}
    assert id(m.behavior_heads["speed"].weight) in beh and id(m.head_id.weight) in trunk


def test_bad_inputs_give_clear_errors():
    cfg = tiny()
    m = model_for(cfg)
    b = make_batch(cfg)
    with pytest.raises(ValueError, match=r"\(B, 1, 2, 8, 8\).*got \(3, 1, 2, 8, 9\)"):
        m({**b, "frames": torch.rand(3, 1, 2, 8, 9)})
    bad = b["id"].clone()
    bad[0, 1] = N + 3
    with pytest.raises(ValueError, match="vocabulary has 9 entries"):
        m({**b, "id": bad})
    with pytest.raises(ValueError, match="block size"):
        m({**b, "id": torch.cat([b["id"], b["id"]], 1), "dt": torch.cat([b["dt"], b["dt"]], 1)})
    with pytest.raises(ValueError, match="unknown NeuroformerConfig keys"):
        NeuroformerConfig.from_dict({"n_neurons": 3, "bogus": 1})


def test_size_builders():
    base = neuroformer_base()
    assert (base.n_embd, base.n_head, base.block_size, base.block_size_prev) == (256, 8, 100, 700)
    t, h, w = base.frame_grid
    assert t * h * w == 264
    small = neuroformer_small()
    assert small.n_neurons == 100 and small.frame_shape == [3, 32, 56]
    m = Neuroformer(neuroformer_small(behavior_targets={"speed": {"objective": "regression"}}))
    b = make_batch(m.config, n_real=(10, 3, 0))
    b.pop("behavior_target")
    out = m.eval()(b)
    assert out.id_logits.shape == (3, small.block_size, 103)
