"""Training on CUDA in bf16 through Lightning, single device and FSDP2 (run by scripts/gpu_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batches(n_batches: int = 12, batch: int = 16):
    from neurofound.tokenizers.spike import SpikeTokenizer

    rng = np.random.default_rng(0)
    tok = SpikeTokenizer(20, block_size=40, block_size_prev=80)
    n = rng.poisson(20 * 8.0 * 30.0)
    times, units = np.sort(rng.uniform(0, 30.0, n)), rng.integers(0, 20, n)
    enc = tok.encode(times, units, tok.intervals(30.0, start=0.1))
    as_long = lambda a: torch.as_tensor(a.astype(np.int64))  # noqa: E731
    out = []
    for i in range(n_batches):
        s = slice(i * batch, (i + 1) * batch)
        out.append({"id": as_long(enc["id"][s, :-1]), "dt": as_long(enc["dt"][s, :-1]),
                    "target_id": as_long(enc["id"][s, 1:]), "target_dt": as_long(enc["dt"][s, 1:]),
                    "id_prev": as_long(enc["id_prev"][s, :-1]), "dt_prev": as_long(enc["dt_prev"][s, :-1])})
    return tok, out


@needs_cuda
@pytest.mark.parametrize("strategy", ["auto", "fsdp2"])
def test_bf16_training_on_cuda(strategy):
    import lightning as L
    from torch.utils.data import DataLoader

    from neurofound.models.neuroformer import Neuroformer, neuroformer_small
    from neurofound.tasks.base import gather_model
    from neurofound.tasks.spike_gpt import SpikeGPTTask

    tok, batches = _batches()
    torch.manual_seed(0)
    model = Neuroformer(neuroformer_small(n_neurons=20, frame_shape=None, dropout=0.0, attn_dropout=0.0))
    model.attach_tokenizer(tok)
    seen: list[float] = []

    class Task(SpikeGPTTask):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            seen.append(float(loss.detach()))
            return loss

    task = Task(model, lr=3e-3, warmup_steps=0, max_steps=36)
    kw = {}
    if strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        kw["strategy"] = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=36, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, **kw)
    trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    assert all(np.isfinite(seen)) and len(seen) == 36
    assert np.mean(seen[-6:]) < np.mean(seen[:6])  # it learns
    full = gather_model(task, trainer)
    assert full is not None and not any(type(m).__name__.startswith("FSDP") for m in full.modules())
