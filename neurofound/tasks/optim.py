"""Optimiser and schedule shared by the tasks (the reference's minGPT recipe, made explicit)."""

from __future__ import annotations

import math

import torch
from torch import nn

from neurofound.errors import ConfigError

# Weights of these modules are decayed; everything else (biases, norms, embeddings, learnt
# position tables) is not: the Neuroformer reference's `configure_optimizers` (spec 7.3).
_DECAY_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into decayed (matmul weights) and non-decayed groups."""
    decay, no_decay, seen = [], [], set()
    for mod in module.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if isinstance(mod, _DECAY_MODULES) and name == "weight" else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def warmup_cosine(optimizer, warmup_steps: int, max_steps: int, final_ratio: float = 0.1):
    """Linear warm-up to the base rate, then cosine decay to `final_ratio` of it at `max_steps`."""
    warmup_steps = max(0, int(warmup_steps))
    max_steps = max(int(max_steps), warmup_steps + 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95),
                    warmup_steps: int = 0, max_steps: int = 1000):
    """AdamW over `param_groups` with the warm-up + cosine schedule, in Lightning's format."""
    groups = param_groups(module, weight_decay)
    if not groups:
        raise ConfigError("no trainable parameters: every parameter of the model is frozen")
    opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    sched = warmup_cosine(opt, warmup_steps, max_steps)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
