"""What every neurofound task shares: the model it trains, and sharding it when it outgrows one device.

With `trainer=fsdp` the strategy is Lightning's `ModelParallelStrategy`, which leaves parallelism to
the LightningModule's `configure_model()`. `NeurofoundTask.configure_model` applies FSDP2
(`torch.distributed.fsdp.fully_shard`) to the model: each shard unit (a repeated block) first, then the
root, over the mesh's `data_parallel` dimension. Gradients are then reduce-scattered and averaged over
the data-parallel ranks, exactly as under DDP, so a task's DDP loss normalisation holds unchanged.

A sharded model's parameters are DTensors: only a whole forward pass (through the FSDP hooks)
sees full weights, and every rank must take part. After `fit`, gather the full weights into a plain
model before evaluating or saving it on one rank:

    model = gather_model(task, trainer)   # every rank calls it; rank 0 gets the model, others None
    if model is not None:
        model.save_pretrained(folder)
"""

from __future__ import annotations

from typing import Any, Iterable

import lightning as L
import torch
from torch import nn

from neurofound.errors import ConfigError


def to_device(batch: Any, device) -> Any:
    """Move every tensor of a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class NeurofoundTask(L.LightningModule):
    """A LightningModule that trains `self.model` (a pure `nn.Module`, set by the subclass).

    Shard units: a model may list the classes of its repeated blocks in a class attribute
    `_fsdp_units: tuple[type[nn.Module], ...]`; without it, every child of an `nn.ModuleList` is one
    unit (for a spike GPT: each transformer `Block`). Everything else (embeddings, heads) belongs to
    the root unit.
    """

    model: nn.Module

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain JSON-able data only, so that `neurofound export` can read the checkpoint with
        # torch.load(weights_only=True) and rebuild the model without unpickling objects.
        if hasattr(self.model, "checkpoint_metadata"):
            checkpoint["neurofound"] = self.model.checkpoint_metadata()

    def configure_model(self) -> None:
        # The device mesh exists only under ModelParallelStrategy (`trainer=fsdp`); Lightning calls this
        # hook again on every fit/validate/test, so a model sharded once is left as it is.
        if self.device_mesh is None or is_sharded(self.model):
            return
        shard_model(self.model, self.device_mesh["data_parallel"])


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules of `model` that each become one FSDP2 shard unit, innermost first."""
    types = getattr(model, "_fsdp_units", None)
    if types:
        units = [m for m in model.modules() if isinstance(m, tuple(types)) and m is not model]
    else:
        units = [child for m in model.modules() if isinstance(m, nn.ModuleList) for child in m]
    # modules() is pre-order (parents first); fully_shard must see nested units before their parents
    return units[::-1]


def check_no_tying_across_units(model: nn.Module, units: Iterable[nn.Module]) -> None:
    """FSDP2 shards each unit's parameters separately: a parameter reached from two units (weight
    tying across them) would be sharded twice and silently untied. Refuse it instead."""
    unit_ids = {id(u) for u in units}
    owner: dict[int, str] = {}

    def walk(module: nn.Module, prefix: str, unit: str) -> None:
        if id(module) in unit_ids:
            unit = prefix or "<root>"
        for name, p in module.named_parameters(recurse=False):
            if owner.setdefault(id(p), unit) != unit:
                raise ConfigError(f"parameter {prefix + '.' if prefix else ''}{name} is tied across FSDP shard units "
                                 f"{owner[id(p)]!r} and {unit!r}; put both modules in one unit (the model's "
                                 f"`_fsdp_units`) or untie them")
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name, unit)

    walk(model, "", "<root>")


def shard_model(model: nn.Module, mesh, **fsdp_kwargs) -> nn.Module:
    """Apply FSDP2 `fully_shard` to each unit of `model` (see `fsdp_units`), then to `model` itself.

    Args:
        model: the pure model; sharded in place (its class becomes an FSDP subclass of its own).
        mesh: a 1-D DeviceMesh of the data-parallel ranks.
        fsdp_kwargs: passed to `fully_shard` (e.g. `mp_policy=MixedPrecisionPolicy(...)`).
    """
    from torch.distributed.fsdp import fully_shard

    units = fsdp_units(model)
    check_no_tying_across_units(model, units)
    for unit in units:
        fully_shard(unit, mesh=mesh, **fsdp_kwargs)
    fully_shard(model, mesh=mesh, **fsdp_kwargs)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _rank(trainer: L.Trainer | None) -> int:
    if trainer is not None:
        return trainer.global_rank
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def full_state_dict(task_or_model: nn.Module, trainer: L.Trainer | None = None) -> dict[str, torch.Tensor] | None:
    """The model's complete (unsharded) state dict on CPU, on rank 0; None on the other ranks.

    A collective when the model is sharded: every rank must call it. Keys are the model's own
    (`tok_emb.weight`, ...), without the task's `model.` prefix.

    Args:
        task_or_model: a NeurofoundTask (its `.model` is used) or the model itself.
        trainer: gives the global rank; without it, torch.distributed's rank (0 when not distributed).
    """
    model = task_or_model.model if isinstance(task_or_model, NeurofoundTask) else task_or_model
    if not is_sharded(model):
        if _rank(trainer) != 0:
            return None
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # full_state_dict + cpu_offload: all-gathers each DTensor and keeps the result on rank 0 only
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if _rank(trainer) == 0 else None


def unsharded_copy(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh, plain (unsharded) instance of `model`'s class and config holding `state_dict` (strict).

    Works for any model built as `cls(config)` (the Hub mixin convention). The
    copy is on CPU, in eval mode, with the same tokenizer.
    """
    from torch.distributed.fsdp import FSDPModule

    # fully_shard swaps the class for a dynamic `FSDP<cls>(FSDPModule, cls)`: build the original one
    cls = type(model)
    if issubclass(cls, FSDPModule):
        cls = next(c for c in cls.__mro__[1:] if issubclass(c, nn.Module) and not issubclass(c, FSDPModule))
    fresh = cls(model.config)
    tok = getattr(model, "tokenizer", None)
    if isinstance(tok, nn.Module):  # a learned tokenizer: its weights are in the gathered state dict
        from neurofound import tokenizers

        fresh.tokenizer = tokenizers.get(tok.name).from_config(tok.config)
    elif tok is not None:
        fresh.tokenizer = tok
    fresh.load_state_dict(state_dict, strict=True)
    for attr in ("input_contract", "training_info"):
        if hasattr(model, attr):
            setattr(fresh, attr, getattr(model, attr))
    return fresh.eval()


def gather_model(task_or_model: nn.Module, trainer: L.Trainer | None = None) -> nn.Module | None:
    """The trained model as one plain module on rank 0 (None elsewhere); every rank must call it.

    An unsharded model is returned as it is; a sharded one is gathered (`full_state_dict`) into a
    fresh copy (`unsharded_copy`), ready for evaluation on one process and `save_pretrained`.
    """
    model = task_or_model.model if isinstance(task_or_model, NeurofoundTask) else task_or_model
    if not is_sharded(model):
        return model if _rank(trainer) == 0 else None
    state = full_state_dict(model, trainer)
    return None if state is None else unsharded_copy(model, state)
