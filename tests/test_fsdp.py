"""FSDP2 (`trainer=fsdp`: ModelParallelStrategy + `fully_shard`) on 2 CPU processes over gloo.

* 2 sharded processes equal one unsharded process on the same global batch (with gradient clipping);
* the gathered full state dict saves with `save_pretrained` and loads with `from_pretrained`;
* resuming from a sharded (distributed) checkpoint equals an uninterrupted run.

ModelParallelStrategy launches its other ranks by re-running the main script (it has no spawn
launcher), so the FSDP runs live in `_fsdp_runs`, run as `python tests/test_fsdp.py OUT`; rank 0
writes the results to OUT and the tests compare them with a single process run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurofound.data import SpikeDataModule, SpikeRecording
from neurofound.data.datamodule import collate
from neurofound.models.neuroformer import Neuroformer, neuroformer_small
from neurofound.tasks.base import (check_no_tying_across_units, fsdp_units, full_state_dict, is_sharded,
                                   unsharded_copy)
from neurofound.tasks.spike_gpt import SpikeGPTTask
from neurofound.tokenizers.spike import SpikeTokenizer

PER_RANK, WORLD, STEPS = 4, 2, 4
CLIP = 0.5  # below the gradient norms of these steps, so clipping is active (see the test)
ROOT = Path(__file__).resolve().parents[1]


def _dataset():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.08, size=(12, 2000))  # 12 neurons, 20 s at 10 ms: windows with varied token counts
    rec = SpikeRecording.from_raster(counts, 0.01)
    tok = SpikeTokenizer(12, block_size=16, block_size_prev=24)
    dm = SpikeDataModule(rec, tok, batch_size=PER_RANK, frames=False)
    dm.setup()
    return dm.datasets["train"], tok


def _offset(ds) -> int:
    """First window where the ranks' halves of a global batch hold different numbers of real tokens,
    so that matching one process needs SpikeGPTTask's token-count normalisation under FSDP too."""
    def rank_tokens(start):
        batch = ds.__getitems__(list(range(start, start + PER_RANK * WORLD)))
        return {(batch["target_id"][r * PER_RANK:(r + 1) * PER_RANK] != 14).sum().item() for r in range(WORLD)}
    return next(o for o in range(len(ds)) if len(rank_tokens(o)) == WORLD)


def _model(tok, seed=0) -> Neuroformer:
    torch.manual_seed(seed)
    cfg = neuroformer_small(n_neurons=12, block_size=16, block_size_prev=24, frame_shape=None, n_embd=32,
                            n_state_layers=1, n_history_layers=1, dropout=0.0, attn_dropout=0.0)
    model = Neuroformer(cfg)
    model.tokenizer = tok
    return model


def _norm(grads) -> float:
    norm = torch.nn.utils.get_total_norm(grads)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor when sharded


class FixedBatches(SpikeGPTTask):
    """Each rank reads its own contiguous part of a fixed global batch per step.

    An epoch is one step, its loader rebuilt from the step count (`reload_dataloaders_every_n_epochs=1`):
    a resumed run then sees the batches an uninterrupted one sees, however Lightning restores its loop
    counters (it cannot resume a plain DataLoader mid-epoch).
    """

    def __init__(self, model, world, offset):
        super().__init__(model, lr=1e-2, weight_decay=0.1, warmup_steps=0, max_steps=STEPS)
        self.world, self.offset = world, offset
        self.dataset = _dataset()[0]  # not an argument: hyperparameters in checkpoints must be plain data
        self.grad_norms: list[tuple[float, float]] = []  # (before, after) clipping, per step

    def train_dataloader(self):
        g, local = PER_RANK * WORLD, PER_RANK * WORLD // self.world
        start = self.offset + self.trainer.global_step * g + self.global_rank * local
        return DataLoader(self.dataset, batch_sampler=[list(range(start, start + local))], collate_fn=collate)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        before = _norm(grads)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.grad_norms.append((before, _norm(grads)))


def _trainer(max_steps: int, strategy="auto", devices=1) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=max_steps, precision="32-true",
                     gradient_clip_val=CLIP, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0,
                     num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1)


def _fsdp_trainer(max_steps: int) -> L.Trainer:
    from lightning.pytorch.strategies import ModelParallelStrategy

    # what trainer=fsdp builds (neurofound/configs/trainer/fsdp.yaml)
    strategy = ModelParallelStrategy(data_parallel_size=WORLD, tensor_parallel_size=1, save_distributed_checkpoint=True)
    return _trainer(max_steps, strategy, devices=WORLD)


def _fsdp_runs(out: Path) -> None:
    """Every rank runs this; Lightning starts rank 1 at the first fit. Rank 0 writes the results to `out`."""
    ds, tok = _dataset()
    offset = _offset(ds)
    results = {}

    # 1. an uninterrupted run; rank 0 saves the gathered model as `neurofound train` would
    task = FixedBatches(_model(tok), WORLD, offset)
    trainer = _fsdp_trainer(STEPS)
    trainer.fit(task)
    assert is_sharded(task.model)
    state = full_state_dict(task, trainer)  # collective: every rank calls it
    if state is not None:
        results.update(full=state, grad_norms=task.grad_norms)
        unsharded_copy(task.model, state).save_pretrained(out / "model")

    # 2. half the steps, then a sharded checkpoint (a folder: one file per rank + metadata)
    task = FixedBatches(_model(tok), WORLD, offset)
    trainer = _fsdp_trainer(STEPS // 2)
    trainer.fit(task)
    trainer.save_checkpoint(out / "half.ckpt")

    # 3. resume into a differently initialised model: everything must come from the checkpoint
    task = FixedBatches(_model(tok, seed=1), WORLD, offset)
    trainer = _fsdp_trainer(STEPS)
    trainer.fit(task, ckpt_path=out / "half.ckpt")
    state = full_state_dict(task, trainer)
    if state is not None:
        results.update(resumed=state, resumed_steps=trainer.global_step)
        torch.save(results, out / "results.pt")


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    # a clean launch: no distributed variables left over from other tests (e.g. ddp_spawn's MASTER_PORT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    # PYTHONSAFEPATH: tests/ must not come first on sys.path, or tests/tokenizers hides the `tokenizers` package
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])), PYTHONSAFEPATH="1",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, torch.load(out / "results.pt", weights_only=True)


@pytest.fixture(scope="module")
def single():
    ds, tok = _dataset()
    task = FixedBatches(_model(tok), 1, _offset(ds))
    _trainer(STEPS).fit(task)
    return task, ds


def _assert_same(a: dict, b: dict, atol=1e-6, rtol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.slow
def test_fsdp_two_cpu_processes_match_single_process(fsdp, single):
    (_, results), (task, _) = fsdp, single
    # same global gradient norm before and after clipping on every step, and clipping did act
    np.testing.assert_allclose(results["grad_norms"], task.grad_norms, rtol=1e-5)
    assert all(before > CLIP for before, _ in task.grad_norms)
    # Adam divides by |grad|, so float-rounding differences of near-zero gradients grow: most weights agree
    # to ~1e-7, a few to ~1e-4 (as in tests/test_ddp.py); a wrongly weighted rank would move them by ~lr = 1e-2
    _assert_same(results["full"], task.model.state_dict(), atol=2e-4, rtol=1e-3)
    diffs = torch.cat([(results["full"][k] - v).abs().flatten() for k, v in task.model.state_dict().items()])
    assert diffs.median() < 1e-6
    fresh = _model(task.model.tokenizer).state_dict()
    assert max((v - fresh[k]).abs().max().item() for k, v in results["full"].items()) > 1e-3  # training moved them


@pytest.mark.slow
def test_gathered_state_dict_round_trips_through_save_pretrained(fsdp, single):
    (out, results), (_, ds) = fsdp, single
    loaded = Neuroformer.from_pretrained(out / "model")
    built = Neuroformer(loaded.config)
    built.load_state_dict(results["full"], strict=True)
    _assert_same(loaded.state_dict(), built.state_dict(), atol=0, rtol=0)
    assert loaded.tokenizer is not None and loaded.tokenizer.config == _dataset()[1].config
    batch = ds.__getitems__(list(range(PER_RANK * WORLD)))
    loaded.eval(), built.eval()
    with torch.no_grad():
        a, b = loaded(batch), built(batch)
    torch.testing.assert_close(a.id_logits, b.id_logits, atol=0, rtol=0)
    torch.testing.assert_close(a.loss["total"], b.loss["total"], atol=0, rtol=0)


@pytest.mark.slow
def test_fsdp_resumes_from_a_sharded_checkpoint(fsdp):
    out, results = fsdp
    assert (out / "half.ckpt").is_dir() and (out / "half.ckpt" / "meta.pt").is_file()
    assert results["resumed_steps"] == STEPS
    # optimizer moments, schedule and step count all came back: same weights as without the interruption
    _assert_same(results["resumed"], results["full"])


def test_shard_units_are_the_repeated_blocks_innermost_first():
    model = _model(SpikeTokenizer(12, block_size=16, block_size_prev=24))
    units = fsdp_units(model)
    assert units and all(type(u).__name__ == "Block" for u in units)
    assert len(units) == sum(len(m) for m in model.modules() if isinstance(m, torch.nn.ModuleList))

    class Declared(torch.nn.Module):
        _fsdp_units = (torch.nn.Sequential,)

        def __init__(self):
            super().__init__()
            self.outer = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2))
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])  # not a unit: the model chose its own

    m = Declared()
    assert fsdp_units(m) == [m.outer[0], m.outer]  # fully_shard needs the inner unit first


def test_weights_tied_across_shard_units_are_refused():
    blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    blocks[1].weight = blocks[0].weight
    with pytest.raises(ValueError, match="tied across FSDP shard units"):
        check_no_tying_across_units(blocks, fsdp_units(blocks))
    # tying inside the root unit (an embedding and an output head, say) is fine
    root = torch.nn.ModuleDict({"emb": torch.nn.Embedding(4, 2), "head": torch.nn.Linear(2, 4, bias=False),
                                "blocks": torch.nn.ModuleList([torch.nn.Linear(2, 2)])})
    root["head"].weight = root["emb"].weight
    check_no_tying_across_units(root, fsdp_units(root))


if __name__ == "__main__":
    _fsdp_runs(Path(sys.argv[1]))
