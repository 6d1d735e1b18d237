"""Fine-tuning for every family that has it: one task over a family's trunk / heads interface.

A family describes its fine-tuning with a `FinetuneSpec` (returned by its recipe); the shared job
(`neurofound finetune`) runs any mode of it against a from-scratch baseline:

* `frozen`: the trunk is frozen; the heads train on the downstream loss.
* `linear`: a closed-form probe (ridge for regression, logistic for classification) on pooled frozen
  trunk features; no gradient step.
* `full`: every parameter trains on the spec's full objective.
* `lora`: the trunk is frozen and its `lora_targets` linear layers get low-rank adapters
  (`neurofound.nn.lora`, Hu et al. 2021); adapters and heads train on the downstream loss.

A mode the family does not list in `spec.modes` is a `UnsupportedError`.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from neurofound.errors import ConfigError, UnsupportedError
from neurofound.tasks.base import NeurofoundTask, to_device
from neurofound.tasks.optim import build_optimizer

MODES = ("frozen", "linear", "full", "lora")


class FinetuneSpec(Protocol):
    """What a family tells the generic fine-tuning task (see docs/architecture.md, "Fine-tuning").

    Optional methods: `frozen_parts(model)` (modules frozen in every mode, `full` included, e.g. a
    frozen tokenizer), `baselines(data)` (named scores of other decoders on the same split or fold,
    reported as `test/<name>`), `figures(y_true, y_pred, report_dir, data)`.
    """

    modes: tuple[str, ...]
    lora_targets: tuple[str, ...]
    objective: str  # "regression" | "classification"

    def prepare(self, pretrained: nn.Module, data: Any) -> nn.Module:
        """The pretrained trunk with freshly initialised heads for the downstream targets."""

    def scratch(self, model: nn.Module) -> nn.Module:
        """The same architecture with fresh weights (the baseline)."""

    def trunk(self, model: nn.Module) -> Sequence[nn.Module]:
        """The modules frozen in `frozen` / `lora` mode and wrapped by LoRA."""

    def heads(self, model: nn.Module) -> Sequence[nn.Parameter]:
        """The parameters trained in `frozen` / `lora` mode."""

    def loss(self, model: nn.Module, batch: dict, mode: str) -> torch.Tensor:
        """The training objective of `mode` ("frozen", "lora", "full") on one batch."""

    def features(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """Pooled trunk features `(batch, dim)` for the `linear` probe."""

    def labels(self, batch: dict) -> torch.Tensor:
        """Downstream targets `(batch,)`."""

    def loader(self, data: Any, split: str):
        """An unshuffled loader of `split` ("train", "test"): contiguous rows for the probe's folds."""

    def predict(self, model: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
        """(y_true, y_pred) over a loader: values for regression, class ids for classification."""

    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        """Named scores (`behavior_r`, `balanced_acc`, ...); the job reports them as `test/<name>` and,
        for the baseline, `test/<name>_scratch`."""


def configure_mode(model: nn.Module, spec: FinetuneSpec, mode: str, *, lora_rank: int = 8, lora_alpha: float = 16.0,
                   lora_dropout: float = 0.0, lora_targets: Sequence[str] | None = None) -> list[str]:
    """Set `requires_grad` (and wrap LoRA adapters) for `mode`; returns the LoRA-wrapped layer names."""
    if mode not in MODES:
        raise ConfigError(f"finetune.mode={mode!r} is not one of {', '.join(MODES)}")
    if mode not in spec.modes:
        raise UnsupportedError(f"finetune.mode={mode} is not available for this family; its modes: "
                               f"{', '.join(spec.modes)}")
    wrapped: list[str] = []
    fixed = [p for m in (spec.frozen_parts(model) if hasattr(spec, "frozen_parts") else []) for p in m.parameters()]
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        for p in fixed:  # parts the family never trains (e.g. a frozen tokenizer)
            p.requires_grad_(False)
        return wrapped
    for p in model.parameters():
        p.requires_grad_(False)
    if mode == "lora":
        from neurofound.nn.lora import apply_lora

        targets = tuple(lora_targets or spec.lora_targets)
        for module in spec.trunk(model):
            wrapped += apply_lora(module, targets=targets, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout)
    for p in spec.heads(model):
        p.requires_grad_(True)
    return wrapped


def pooled_features(model: nn.Module, spec: FinetuneSpec, loader) -> tuple[np.ndarray, np.ndarray]:
    """Frozen pooled features and labels over a loader (for the `linear` probe)."""
    was_training = model.training
    model.eval()
    xs, ys = [], []
    dev = next(model.parameters()).device
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, dev)
            xs.append(spec.features(model, batch).float().cpu().numpy())
            ys.append(spec.labels(batch).reshape(-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(xs), np.concatenate(ys)


class FinetuneTask(NeurofoundTask):
    """Trains whatever `configure_mode` left trainable on the spec's objective of `mode`.

    Args:
        model: the model with heads (from `spec.prepare`, or `spec.scratch` for the baseline).
        spec: the family's FinetuneSpec.
        mode: "frozen", "lora" or "full" (`linear` has no gradient steps).
        lr, weight_decay, warmup_steps, max_steps: AdamW with warm-up and cosine decay.
        backbone_lr_scale: the learning rate of everything but the heads (`spec.heads`) as a fraction
            of `lr` (e.g. 0.1: the heads learn at 10x the backbone).
    """

    def __init__(self, model: nn.Module, spec: FinetuneSpec, mode: str, lr: float = 1e-3, weight_decay: float = 0.0,
                 warmup_steps: int = 0, max_steps: int = 100, backbone_lr_scale: float = 1.0):
        super().__init__()
        if mode not in ("frozen", "lora", "full"):
            raise ConfigError(f"FinetuneTask trains modes frozen, lora and full, not {mode!r}")
        self.model = model
        self.spec = spec
        self.mode = mode
        self.save_hyperparameters(ignore=["model", "spec"])

    def training_step(self, batch, batch_idx):
        loss = self.spec.loss(self.model, batch, self.mode)
        self.log("train/loss", loss, prog_bar=True, batch_size=_batch_size(batch))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.spec.loss(self.model, batch, self.mode), batch_size=_batch_size(batch),
                 sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        scales = None
        if hp.backbone_lr_scale != 1.0:
            heads = {id(p) for p in self.spec.heads(self.model)}
            scales = {"": hp.backbone_lr_scale, **{n: 1.0 for n, p in self.model.named_parameters() if id(p) in heads}}
        return build_optimizer(self.model, hp.lr, hp.weight_decay, (0.9, 0.95), hp.warmup_steps, hp.max_steps,
                               lr_scales=scales)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
    return 1


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
