"""Data parallel training on 2 CPU processes (gloo) equals one process on the same global batch."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from neurofound.data import SpikeDataModule, SpikeRecording
from neurofound.data.datamodule import collate
from neurofound.models.neuroformer import Neuroformer, neuroformer_small
from neurofound.tasks.spike_gpt import SpikeGPTTask
from neurofound.tokenizers.spike import SpikeTokenizer

pytestmark = pytest.mark.slow

PER_RANK, WORLD, STEPS = 4, 2, 3


def _dataset():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.08, size=(12, 2000))  # 12 neurons, 20 s at 10 ms: windows with varied token counts
    rec = SpikeRecording.from_raster(counts, 0.01)
    tok = SpikeTokenizer(12, block_size=16, block_size_prev=24)
    dm = SpikeDataModule(rec, tok, batch_size=PER_RANK, frames=False)
    dm.setup()
    return dm.datasets["train"], tok


def _model(tok) -> Neuroformer:
    torch.manual_seed(0)
    cfg = neuroformer_small(n_neurons=12, block_size=16, block_size_prev=24, frame_shape=None, n_embd=32,
                            n_state_layers=1, n_history_layers=1, dropout=0.0, attn_dropout=0.0)
    return Neuroformer(cfg)


class FixedBatches(SpikeGPTTask):
    """Each rank reads its own contiguous part of a fixed global batch per step (no sampler shuffling)."""

    def __init__(self, model, dataset, global_batch, world, offset=0):
        super().__init__(model, lr=1e-2, weight_decay=0.0, warmup_steps=0, max_steps=STEPS)
        self.dataset, self.global_batch, self.world, self.offset = dataset, global_batch, world, offset

    def train_dataloader(self):
        g, rank, o = self.global_batch, self.global_rank, self.offset
        local = g // self.world
        batches = [list(range(o + s * g + rank * local, o + s * g + (rank + 1) * local)) for s in range(STEPS)]
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate)


def _fit(task, devices):
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    trainer.fit(task)


def _rank_tokens(ds, start):
    batch = ds.__getitems__(list(range(start, start + PER_RANK * WORLD)))
    return [(batch["target_id"][r * PER_RANK:(r + 1) * PER_RANK] != 14).sum().item() for r in range(WORLD)]


def test_ddp_two_cpu_processes_match_single_process():
    ds, tok = _dataset()
    # start where the ranks' first halves hold different numbers of real tokens: the match below then
    # only holds thanks to the token-count normalisation of SpikeGPTTask._ddp_token_scale
    offset = next(o for o in range(len(ds) - (STEPS + 1) * PER_RANK * WORLD)
                  if len(set(_rank_tokens(ds, o))) == WORLD)
    single = FixedBatches(_model(tok), ds, PER_RANK * WORLD, 1, offset)
    _fit(single, 1)
    ddp = FixedBatches(_model(tok), ds, PER_RANK * WORLD, WORLD, offset)
    _fit(ddp, WORLD)

    for (name, a), (_, b) in zip(single.model.state_dict().items(), ddp.model.state_dict().items()):
        # Adam divides by |grad|, so float-rounding differences of near-zero gradients grow to ~1e-5;
        # a wrongly weighted rank would move weights by up to lr = 1e-2 per step
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3, msg=lambda m: f"{name}: {m}")
    probe = ds.__getitems__(list(range(offset + STEPS * PER_RANK * WORLD, offset + (STEPS + 1) * PER_RANK * WORLD)))
    single.model.eval(), ddp.model.eval()
    with torch.no_grad():
        la, lb = single.model(probe).loss["total"], ddp.model(probe).loss["total"]
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    # and the training really moved the weights
    fresh = _model(tok)
    moved = max((p - q).abs().max().item() for p, q in zip(fresh.parameters(), ddp.model.parameters()))
    assert moved > 1e-3
