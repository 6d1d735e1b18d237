"""BrainOmni's two pretraining objectives as LightningModules (the models compute their own losses).

* `BrainTokenizerTask` (stage 1): masked-channel reconstruction through the residual VQ
  (`BrainTokenizerModel.forward`: 25 % of channels hidden, noise on the rest, all decoded).
  Optimiser of the reference (spec §2.6, paper Table 9): AdamW betas (0.5, 0.9), eps 1e-5, lr
  2e-4, weight decay 1e-2, 10 % warm-up then cosine to 0.05x. Validation reports the same loss
  with a fixed random draw per batch, so `val/loss` (the checkpoint monitor, the reference's
  "judge" loss) compares across validations.
* `MaskedTokenTask` (stage 2): masked prediction of all RVQ levels (`BrainOmni.forward`).
  AdamW betas (0.9, 0.95), eps 1e-6, weight decay 0.05 except on norms, the mask token, the input
  projection and the prediction head, 10 % warm-up then cosine to 0.1x (spec §4).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import lightning as L
import torch
from torch import nn

from neurofound.tasks.base import NeurofoundTask
from neurofound.tasks.optim import build_optimizer


def sensors_of(batch: dict):
    """The `SensorLayout` of a collated batch (`neurofound.data.sensor_datamodule.collate_sensors`)."""
    from neurofound.tokenizers.braintokenizer import SensorLayout

    return SensorLayout(positions=batch["positions"], types=batch["types"], mask=batch["mask"])


class _Pretrain(NeurofoundTask, ABC):
    def __init__(self, model: nn.Module, *, lr: float, weight_decay: float, betas: Sequence[float], eps: float,
                 warmup_frac: float, final_ratio: float, max_steps: int, no_decay: tuple[str, ...] = ()):
        super().__init__()
        self.model = model
        self.opt = dict(lr=float(lr), weight_decay=float(weight_decay), betas=tuple(float(b) for b in betas),
                        eps=float(eps), warmup_frac=float(warmup_frac), final_ratio=float(final_ratio),
                        max_steps=int(max_steps), no_decay=tuple(no_decay))
        self.save_hyperparameters(ignore=["model"])

    def configure_optimizers(self):
        o = self.opt
        warmup = int(round(o["warmup_frac"] * o["max_steps"]))
        return build_optimizer(self.model, o["lr"], o["weight_decay"], o["betas"], warmup, o["max_steps"],
                               eps=o["eps"], final_ratio=o["final_ratio"], no_decay=o["no_decay"])

    def _log_all(self, split: str, values: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, v in values.items():
            self.log(f"{split}/{name}", v.detach(), batch_size=batch_size, prog_bar=name == "loss",
                     sync_dist=split != "train")

    # the seed of a validation batch's random draw (masking, noise): the same draw at every validation,
    # so `val/loss` (the checkpoint monitor) compares across steps
    val_seed: int = 10_000

    @abstractmethod
    def _step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The objective's `{"loss": ..., other logged values}` on one batch."""

    def training_step(self, batch, batch_idx):
        values = self._step(batch)
        self._log_all("train", values, batch["x"].shape[0])
        return values["loss"]

    def validation_step(self, batch, batch_idx):
        state = torch.get_rng_state()
        torch.manual_seed(self.val_seed + batch_idx)
        try:
            values = self._step(batch)
        finally:
            torch.set_rng_state(state)
        self._log_all("val", values, batch["x"].shape[0])


class BrainTokenizerTask(_Pretrain):
    """Stage 1: the tokenizer's masked-channel reconstruction objective.

    Args:
        model: a `BrainTokenizerModel`.
        lr, weight_decay, betas, eps, warmup_frac, final_ratio, max_steps: the optimiser (defaults:
            the reference's).
    """

    def __init__(self, model: nn.Module, lr: float = 2e-4, weight_decay: float = 1e-2,
                 betas: Sequence[float] = (0.5, 0.9), eps: float = 1e-5, warmup_frac: float = 0.1,
                 final_ratio: float = 0.05, max_steps: int = 1000):
        super().__init__(model, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, warmup_frac=warmup_frac,
                         final_ratio=final_ratio, max_steps=max_steps)

    def _step(self, batch: dict):
        out = self.model(batch["x"], sensors_of(batch))
        return {"loss": out.losses["total"], **{k: v for k, v in out.losses.items() if k != "total"}}


class MaskedTokenTask(_Pretrain):
    """Stage 2: masked prediction of every RVQ level of the frozen tokenizer's codes.

    Args:
        model: a `BrainOmni` (its tokenizer frozen).
        lr, weight_decay, betas, eps, warmup_frac, final_ratio, max_steps: the optimiser (defaults:
            the reference's for BrainOmni_tiny).
        cache_tokens: tokenize each segment once and keep its tokens (`tokens`).
    """

    def __init__(self, model: nn.Module, lr: float = 5e-4, weight_decay: float = 0.05,
                 betas: Sequence[float] = (0.9, 0.95), eps: float = 1e-6, warmup_frac: float = 0.1,
                 final_ratio: float = 0.1, max_steps: int = 1000, cache_tokens: bool = True):
        super().__init__(model, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, warmup_frac=warmup_frac,
                         final_ratio=final_ratio, max_steps=max_steps,
                         no_decay=("mask_token", "projection", "predict_head", "head"))
        self.cache_tokens = bool(cache_tokens)
        self._tokens: dict[tuple[int, int, int], tuple[torch.Tensor, ...]] = {}

    val_seed = 20_000

    def tokens(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frozen tokenizer's tokens of a batch, cached by piece `(dataset, recording, start)`.

        The tokenizer is frozen and runs in eval mode, so a segment's tokens are the same at every
        epoch: each is computed once (on the CPU cache), which makes every later epoch of stage 2 as
        cheap as the transformer alone.
        """
        if not self.cache_tokens:
            return self.model.tokenize(batch["x"], sensors_of(batch))
        keys = list(zip(batch["dataset"].tolist(), batch["recording"].tolist(), batch["start"].tolist()))
        missing = [i for i, k in enumerate(keys) if k not in self._tokens]
        if missing:
            sub = {k: v[missing] for k, v in batch.items()}
            feats, idx, tmask = self.model.tokenize(sub["x"], sensors_of(sub))
            for j, i in enumerate(missing):
                self._tokens[keys[i]] = (feats[j].cpu(), idx[j].cpu(), tmask[j].cpu())
        dev = batch["x"].device
        return tuple(torch.stack([self._tokens[k][i] for k in keys]).to(dev) for i in range(3))

    def _step(self, batch: dict):
        out = self.model(tokens=self.tokens(batch))
        values = {"loss": out.loss, "masked_loss": out.loss}
        values.update({f"masked_acc_level{q + 1}": a for q, a in enumerate(out.acc_per_level)})
        return values




class ReconstructionCurve(L.Callback):
    """Log the held-out reconstruction PCC every `every_n_train_steps` steps (a learning curve, nothing more).

    Scores the tokenizer on up to `max_batches` batches of each split in `splits` ("test": new subjects of the
    pretraining devices; "unseen": devices held out of pretraining) and logs `curve/<split>_recon_corr`
    (and `_eeg` / `_meg` by modality). Checkpoints never monitor these keys: the curve watches held-out data,
    it does not select a model on it. Add it with `+callbacks.curve._target_=neurofound.tasks.brainomni.ReconstructionCurve`.
    """

    def __init__(self, every_n_train_steps: int = 250, splits: Sequence[str] = ("test", "unseen"),
                 max_batches: int | None = 8):
        super().__init__()
        self.every, self.splits, self.max_batches = int(every_n_train_steps), tuple(splits), max_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or not hasattr(pl_module.model, "reconstruct"):
            return
        from neurofound.tasks.brainomni_eval import recon_corr_by_modality

        dm = trainer.datamodule
        was = pl_module.model.training
        pl_module.model.eval()
        try:
            values = {}
            for split in self.splits:
                if split in getattr(dm, "datasets", {}) and len(dm.datasets[split]):
                    for key, v in recon_corr_by_modality(pl_module.model, dm.dataloader(split),
                                                         max_batches=self.max_batches).items():
                        values[f"curve/{split}_{key}"] = v
        finally:
            pl_module.model.train(was)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)


__all__ = ["BrainTokenizerTask", "MaskedTokenTask", "ReconstructionCurve", "sensors_of"]
