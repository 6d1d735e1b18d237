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

    def __init__(self, model, dataset, global_batch, world):
        super().__init__(model, lr=1e-2, weight_decay=0.0, warmup_steps=0, max_steps=STEPS)
        self.dataset, self.global_batch, self.world = dataset, global_batch, world

    def train_dataloader(self):
        g, rank = self.global_batch, self.global_rank
        local = g // self.world
        batches = [list(range(s * g + rank * local, s * g + (rank + 1) * local)) for s in range(STEPS)]
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate)


def _fit(task, devices):
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    trainer.fit(task)


def test_ddp_two_cpu_processes_match_single_process():
    ds, tok = _dataset()
    single = FixedBatches(_model(tok), ds, PER_RANK * WORLD, 1)
    _fit(single, 1)
    ddp = FixedBatches(_model(tok), ds, PER_RANK * WORLD, WORLD)
    _fit(ddp, WORLD)

    # the global batches hold different numbers of real tokens per rank, so this only holds with
    # the token-count normalisation of SpikeGPTTask._ddp_token_scale
    first = ds.__getitems__(list(range(PER_RANK * WORLD)))
    n_tokens = [(first["target_id"][r * PER_RANK:(r + 1) * PER_RANK] != 14).sum().item() for r in range(WORLD)]
    assert n_tokens[0] != n_tokens[1], "test data should give the ranks unequal token counts"

    for (name, a), (_, b) in zip(single.model.state_dict().items(), ddp.model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    probe = ds.__getitems__(list(range(STEPS * PER_RANK * WORLD, (STEPS + 1) * PER_RANK * WORLD)))
    single.model.eval(), ddp.model.eval()
    with torch.no_grad():
        la, lb = single.model(probe).loss["total"], ddp.model(probe).loss["total"]
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    # and the training really moved the weights
    fresh = _model(tok)
    moved = max((p - q).abs().max().item() for p, q in zip(fresh.parameters(), ddp.model.parameters()))
    assert moved > 1e-3
