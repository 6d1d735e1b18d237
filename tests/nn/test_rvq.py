"""Residual VQ: reference distance and ties, k-means init only in training, EMA, dead-code restarts, rotation trick,
commitment, masks, usage counts and the torch.distributed synchronisation."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from neurofound.errors import DataError
from neurofound.nn.rvq import EuclideanCodebook, ResidualVQ, code_perplexity, code_usage, kmeans, rotate_to

torch.set_num_threads(1)


def _unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def _initialised(dim=8, k=16, **kw) -> EuclideanCodebook:
    cb = EuclideanCodebook(dim, k, **kw)
    cb.embed.copy_(_unit(k, dim, seed=1))
    cb.embed_avg.copy_(cb.embed * 3.0)
    cb.cluster_size.fill_(3.0)
    cb.inited.fill_(1.0)
    return cb


def test_keys_are_the_references():
    rvq = ResidualVQ(8, 16, 3)
    assert sorted(rvq.state_dict()) == sorted(f"layers.{l}._codebook.{b}" for l in range(3)
                                              for b in ("inited", "cluster_size", "embed", "embed_avg"))
    projected = ResidualVQ(8, 16, 2, codebook_dim=4)
    assert "layers.1.project_in.weight" in projected.state_dict()
    assert projected.codebooks.shape == (2, 16, 4)


def test_nearest_code_with_ties_to_the_first_index():
    cb = _initialised()
    x = _unit(50, 8, seed=2)
    brute = ((x[:, None] - cb.embed[None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(cb.quantize(x), brute)
    cb.embed[5] = cb.embed[2]  # an exact duplicate: every vector nearest to it must get index 2
    idx = cb.quantize(cb.embed[2:3].clone())
    assert idx.tolist() == [2]


def test_eval_with_uninitialised_codebooks_is_an_error_unless_reference_compat():
    rvq = ResidualVQ(8, 16, 2).eval()
    with pytest.raises(DataError, match="train the tokenizer first or load trained weights"):
        rvq(_unit(40, 8))
    with pytest.raises(DataError, match="not initialised"):
        rvq.encode(_unit(4, 8))
    compat = ResidualVQ(8, 16, 2, reference_compat=True).eval()
    compat(_unit(40, 8))  # the reference: k-means on the first call, in eval too
    assert compat.is_initialised


def test_kmeans_in_the_first_training_call_only_then_ema():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 16, 1, dead_code_threshold=0).train()
    cb = rvq.layers[0]._codebook
    x1, x2 = _unit(200, 8, seed=3), _unit(200, 8, seed=4)
    rvq(x1)
    assert cb.is_initialised
    embed, avg, size = cb.embed.clone(), cb.embed_avg.clone(), cb.cluster_size.clone()
    # per-step units: k-means counts rescaled to the vectors of the step, embed_avg = embed * size
    assert torch.isclose(size.sum(), torch.tensor(200.0), rtol=1e-4)
    out = rvq(x2)
    idx = out.indices[:, 0]
    counts = torch.bincount(idx, minlength=16).float()
    sums = torch.zeros(16, 8).index_add_(0, idx, x2)
    size_new = 0.99 * size + 0.01 * counts
    avg_new = 0.99 * avg + 0.01 * sums
    total = size_new.sum()
    smoothed = (size_new + 1e-6) / (total + 16e-6) * total
    torch.testing.assert_close(cb.cluster_size, size_new)
    torch.testing.assert_close(cb.embed_avg, avg_new)
    torch.testing.assert_close(cb.embed, avg_new / smoothed[:, None])
    assert torch.equal(idx, ((x2[:, None] - embed[None]) ** 2).sum(-1).argmin(-1))  # quantised before the update


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.eye(4) * 5
    samples = (centres.repeat_interleave(50, 0) + 0.01 * torch.randn(200, 4))
    found, bins = kmeans(samples, 4, 10)
    assert sorted(bins.tolist()) == [50.0] * 4
    assert torch.cdist(found, centres).min(1).values.max() < 0.1


def test_a_dead_code_gets_replaced_by_a_batch_vector_and_survives_the_update():
    torch.manual_seed(0)
    cb = _initialised().train()
    x = _unit(100, 8, seed=5)
    far = 10 * torch.ones(8)
    cb.embed[7] = far  # never chosen
    cb.embed_avg[7] = far * 3.0
    cb.cluster_size[7] = 0.0  # dead at any threshold > 0
    cb(x)
    assert (cb.embed[7] - x).abs().sum(-1).min() < 1e-6  # now one of the batch's vectors
    threshold = 2.0 * 100 / 327_680
    assert torch.isclose(cb.cluster_size[7], torch.tensor(threshold))


def test_dead_code_threshold_is_scaled_by_vectors_per_step():
    cb = _initialised().train()
    cb.cluster_size[3] = 0.01  # above 2 * 100 / 327680 = 6e-4: alive at this step size
    cb.embed_avg[3] = cb.embed[3] * 0.01
    x = _unit(100, 8, seed=6)
    assert cb.threshold(100) == pytest.approx(2.0 * 100 / 327_680)
    cb(x)
    assert cb.cluster_size[3] >= 0.0099 - 1e-6  # kept its EMA state: not restarted (that would set 6e-4)
    compat = _initialised(reference_compat=True).train()
    assert compat.threshold(100) == 2.0  # the reference's absolute count


def test_reference_compat_restart_is_overwritten_by_the_ema_update():
    """README §5 quirk kept under reference_compat: replace embed, then embed = embed_avg / smoothed counts."""
    cb = _initialised(reference_compat=True).train()
    cb.cluster_size.fill_(1.0)  # every code below the reference threshold of 2
    x = _unit(64, 8, seed=7)
    cb(x)
    total = cb.cluster_size.sum()
    smoothed = (cb.cluster_size + 1e-6) / (total + 16e-6) * total
    torch.testing.assert_close(cb.embed, cb.embed_avg / smoothed[:, None])


def test_rotation_trick_value_and_gradient():
    torch.manual_seed(0)
    src = torch.randn(5, 6, requires_grad=True)
    tgt = torch.randn(5, 6)
    out = rotate_to(src, tgt)
    torch.testing.assert_close(out, tgt, atol=1e-5, rtol=1e-5)
    # the Jacobian of one row is (|tgt| / |src|) R with R orthogonal (angles preserved, unlike straight-through)
    jac = torch.autograd.functional.jacobian(lambda s: rotate_to(s, tgt[:1]), src[:1].detach()).reshape(6, 6)
    scale = (tgt[0].norm() / src[0].detach().norm()) ** 2
    torch.testing.assert_close(jac @ jac.T, scale * torch.eye(6), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(jac, torch.eye(6) * scale.sqrt(), atol=1e-3)
    # a zero src (a residual the previous level matched exactly) still gets the codeword's value
    torch.testing.assert_close(rotate_to(torch.zeros(1, 6), tgt[:1]), tgt[:1])
    # and R maps the direction of src onto that of tgt
    torch.testing.assert_close(F.normalize(jac @ src[0].detach(), dim=0), F.normalize(tgt[0], dim=0), atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("rotation", [True, False])
def test_training_forward_keeps_values_and_passes_gradients(rotation):
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 16, 3, rotation_trick=rotation, dead_code_threshold=0)
    x = _unit(64, 8, seed=8)
    rvq.train()(x)  # initialise
    # freeze the codebooks (decay -> no change) to compare train and eval values on the same codebook
    for layer in rvq.layers:
        layer._codebook.decay = 1.0 - 1e-12
    z = x.clone().requires_grad_(True)
    train_out = rvq.train()(z)
    eval_out = rvq.eval()(x)
    torch.testing.assert_close(train_out.quantized, eval_out.quantized, atol=1e-5, rtol=1e-5)
    assert torch.equal(train_out.indices, eval_out.indices)
    train_out.quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    if not rotation:  # straight-through: each of the 3 levels passes its residual's gradient on unchanged
        torch.testing.assert_close(z.grad, torch.full_like(z, 3.0))


def test_commitment_per_level_and_eval_codewords_are_exact():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 16, 2)
    x = _unit(64, 8, seed=9)
    rvq.train()(x)
    out = rvq.eval()(x)
    residual, expected = x, []
    for q, layer in enumerate(rvq.layers):
        code = layer._codebook.embed[out.indices[:, q]]
        expected.append(0.25 * F.mse_loss(residual, code))
        residual = residual - code
    torch.testing.assert_close(out.commitment, torch.stack(expected))
    torch.testing.assert_close(out.quantized, rvq.decode(out.indices))
    assert torch.equal(rvq.encode(x), out.indices)


def test_masked_vectors_stay_out_of_init_ema_and_commitment():
    torch.manual_seed(0)
    x = _unit(80, 8, seed=10)
    mask = torch.arange(80) < 50
    a, b = ResidualVQ(8, 16, 2, dead_code_threshold=0), ResidualVQ(8, 16, 2, dead_code_threshold=0)
    torch.manual_seed(1)
    out_a = a.train()(torch.cat([x[:50], 100 * torch.ones(30, 8)]), mask)  # garbage in the masked rows
    torch.manual_seed(1)
    out_b = b.train()(x[:50])
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], msg=key)
    torch.testing.assert_close(out_a.commitment, out_b.commitment)


def test_code_usage_and_perplexity():
    idx = torch.tensor([[0, 1], [0, 2], [3, 2], [3, 2]])
    counts = code_usage(idx, 4)
    assert counts.tolist() == [[2, 0, 0, 2], [0, 1, 3, 0]]
    assert code_usage(idx, 4, mask=torch.tensor([True, False, False, False])).tolist() == [[1, 0, 0, 0],
                                                                                          [0, 1, 0, 0]]
    torch.testing.assert_close(code_perplexity(torch.tensor([[5, 5, 5, 5], [8, 0, 0, 0]])), torch.tensor([4.0, 1.0]))


def _ddp_worker(rank: int, world: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # every rank samples differently: only the broadcast keeps them equal
        rvq = ResidualVQ(8, 16, 2, dead_code_threshold=2.0).train()
        rvq(_unit(40, 8, seed=20 + rank))
        rvq(_unit(40, 8, seed=30 + rank))
        results[rank] = {k: v.clone() for k, v in rvq.state_dict().items()}
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_ranks_keep_identical_codebooks(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    a, b = results[0], results[1]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
