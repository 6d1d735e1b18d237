"""Optimiser and schedule shared by the tasks (the reference's minGPT recipe, made explicit)."""

from __future__ import annotations

import math

import torch
from torch import nn

from neurofound.errors import ConfigError

# Weights of these modules are decayed; everything else (biases, norms, embeddings, learnt
# position tables) is not: the Neuroformer reference's `configure_optimizers` (spec 7.3).
_DECAY_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def param_groups(module: nn.Module, weight_decay: float, no_decay: tuple[str, ...] = ()) -> list[dict]:
    """Split trainable parameters into decayed (matmul weights) and non-decayed groups.

    Args:
        module: the model.
        weight_decay: decay of the matmul weights.
        no_decay: module-name prefixes whose weights are never decayed (e.g. BrainOmni's
            `projection` and `predict_head`, spec §4).
    """
    decay, kept, seen = [], [], set()
    for mod_name, mod in module.named_modules():
        exempt = any(mod_name == p or mod_name.startswith(p + ".") for p in no_decay)
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if isinstance(mod, _DECAY_MODULES) and name == "weight" and not exempt else kept).append(p)
    no_decay = kept
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
                    warmup_steps: int = 0, max_steps: int = 1000, *, eps: float = 1e-8, final_ratio: float = 0.1,
                    no_decay: tuple[str, ...] = (), lr_scales: dict[str, float] | None = None):
    """AdamW over `param_groups` with the warm-up + cosine schedule, in Lightning's format.

    Args:
        eps: AdamW's epsilon.
        final_ratio: the learning rate at `max_steps` as a fraction of `lr`.
        no_decay: module-name prefixes never decayed (see `param_groups`).
        lr_scales: module-name prefix -> learning-rate multiplier (e.g. `{"": 0.1, "head": 1.0}`: the
            longest matching prefix wins; "" matches everything).
    """
    groups = param_groups(module, weight_decay, no_decay)
    if not groups:
        raise ConfigError("no trainable parameters: every parameter of the model is frozen")
    if lr_scales:
        groups = _scale_groups(module, groups, lr_scales)
    opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    for g in opt.param_groups:  # LambdaLR scales each group's own base rate
        g["lr"] = lr * g.pop("lr_scale", 1.0)
        g["initial_lr"] = g["lr"]
    sched = warmup_cosine(opt, warmup_steps, max_steps, final_ratio)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _scale_groups(module: nn.Module, groups: list[dict], lr_scales: dict[str, float]) -> list[dict]:
    """Split each decay group further by learning-rate multiplier (longest matching name prefix)."""
    prefixes = sorted(lr_scales, key=len, reverse=True)

    def scale(name: str) -> float:
        for p in prefixes:
            if p == "" or name == p or name.startswith(p + "."):
                return float(lr_scales[p])
        return 1.0

    by_id = {id(p): scale(n) for n, p in module.named_parameters()}
    out = []
    for g in groups:
        split: dict[float, list] = {}
        for p in g["params"]:
            split.setdefault(by_id.get(id(p), 1.0), []).append(p)
        out += [{**g, "params": ps, "lr_scale": s} for s, ps in split.items()]
    return out
