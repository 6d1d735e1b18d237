"""Autoregressive spike-token pretraining (Neuroformer-style) as a LightningModule.

The model computes its own (weighted) losses; this task adds what training needs around it:
logging under `split/name`, exact data-parallel loss normalisation, the optimiser and schedule.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from neurofound.errors import ConfigError, DataError
from neurofound.tasks.base import NeurofoundTask
from neurofound.tasks.optim import build_optimizer

# Losses whose reduction is a mean over non-PAD next-token targets (see `_ddp_token_scale`).
_TOKEN_LOSSES = {"id": "target_id", "dt": "target_dt"}


class SpikeGPTTask(NeurofoundTask):
    """Teacher-forced next ID/dt prediction (+ contrastive and behaviour terms of the model).

    Args:
        model: a spike GPT (`Neuroformer`) whose forward returns `.loss` with a `"total"` entry
            equal to the sum of the other entries.
        lr, weight_decay, betas: AdamW settings (decay on matmul weights only).
        warmup_steps, max_steps: linear warm-up then cosine decay to 10 %.
        objective: "total" (the model's weighted sum of every loss) or "behavior" (behaviour terms
            only, for fine-tuning behaviour heads on a frozen trunk).
    """

    def __init__(self, model: torch.nn.Module, lr: float = 3e-4, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 100,
                 max_steps: int = 1000, objective: str = "total"):
        super().__init__()
        betas = tuple(float(b) for b in betas)  # plain floats: checkpoints load with weights_only=True
        if objective not in ("total", "behavior"):
            raise ConfigError(f"objective must be 'total' or 'behavior', got {objective!r}")
        self.model = model
        self.save_hyperparameters(ignore=["model"])

    # -- steps ---------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]):
        return self.model(batch)

    def _ddp_token_scale(self, batch, name: str) -> torch.Tensor:
        """Factor that makes a per-rank token mean average into the global token mean.

        DDP averages gradients over ranks; a rank's loss is a mean over ITS non-PAD targets, so
        ranks with fewer tokens would weigh more than in a single-process run on the same global
        batch. Scaling by n_local * world / n_global makes the two identical.
        """
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return torch.ones((), device=self.device)
        pad = self._pad(name)
        n_local = (batch[_TOKEN_LOSSES[name]] != pad).sum().to(torch.float64)
        n_global = self.trainer.strategy.reduce(n_local.clone(), reduce_op="sum")
        return (n_local * world / n_global.clamp_min(1)).to(torch.float32)

    def _pad(self, name: str) -> int:
        cfg = self.model.config
        return cfg.id_pad if name == "id" else cfg.dt_pad

    def _objective(self, batch, out) -> torch.Tensor:
        if self.hparams.objective == "behavior":
            terms = [out.loss[v] for v in self.model.config.behavior_targets if v in out.loss]
            if not terms:
                raise DataError("objective='behavior' needs behaviour targets in the batch")
            return sum(terms)
        total = out.loss["total"]
        for name in _TOKEN_LOSSES:
            if name in out.loss:
                total = total + out.loss[name] * (self._ddp_token_scale(batch, name) - 1)
        return total

    def _token_metrics(self, batch, out) -> dict[str, torch.Tensor]:
        metrics = {}
        for name, logits in (("id", out.id_logits), ("dt", out.dt_logits)):
            target = batch[_TOKEN_LOSSES[name]]
            pad = self._pad(name)
            valid = target != pad
            metrics[f"{name}_loss"] = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(),
                                                     ignore_index=pad)
            correct = (logits.argmax(-1) == target) & valid
            metrics[f"{name}_acc"] = correct.sum() / valid.sum().clamp_min(1)
        for var, loss in out.loss.items():
            if var not in ("total", "id", "dt", "clip"):
                metrics[f"behavior_{var}_loss"] = loss
        if "clip" in out.loss:
            metrics["clip_loss"] = out.loss["clip"]
        return metrics

    def training_step(self, batch, batch_idx):
        out = self.model(batch)
        loss = self._objective(batch, out)
        bs = batch["id"].shape[0]
        self.log("train/loss", out.loss["total"], prog_bar=True, batch_size=bs)
        with torch.no_grad():
            for k, v in self._token_metrics(batch, out).items():
                self.log(f"train/{k}", v, batch_size=bs, prog_bar=k == "id_acc")
        return loss

    def _eval_step(self, batch, split: str):
        out = self.model(batch)
        bs = batch["id"].shape[0]
        self.log(f"{split}/loss", out.loss["total"], batch_size=bs, sync_dist=True, prog_bar=split == "val")
        for k, v in self._token_metrics(batch, out).items():
            self.log(f"{split}/{k}", v, batch_size=bs, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self.model, hp.lr, hp.weight_decay, hp.betas, hp.warmup_steps, hp.max_steps)
