"""Low-rank adaptation (LoRA) of linear layers, for fine-tuning any model family.

Hu, E. J., Shen, Y., Wallis, P., Allen-Zhu, Z., Li, Y., Wang, S., Wang, L. & Chen, W. (2021).
"LoRA: Low-Rank Adaptation of Large Language Models." arXiv:2106.09685 (ICLR 2022).

A frozen weight `W (out, in)` is adapted by a trainable low-rank update `scaling * B @ A`, with
`A (rank, in)`, `B (out, rank)` and `scaling = alpha / rank`:

    y = x @ W^T + b + dropout(x) @ A^T @ B^T * scaling

1. `B` starts at zero (paper, section 4.1), so at initialisation the adapted model computes
   exactly what the pretrained one did. `A` is drawn with `kaiming_uniform_(a=sqrt(5))` (the
   `nn.Linear` default) as in the authors' `loralib` and Hugging Face `peft`, rather than the
   Gaussian the paper's text mentions.
2. `apply_lora` swaps the chosen `nn.Linear` layers for `LoRALinear` wrappers in place and
   freezes every other parameter: only `A` and `B` train.
3. `merge_lora` folds `W + scaling * B @ A` back into plain `nn.Linear` layers, so the fine-tuned
   model has the original architecture and state-dict keys (`save_pretrained` / `from_pretrained`
   need nothing LoRA-specific) and runs at the original speed.

The default targets are the attention `query` and `value` projections (the paper's choice, section
7.1) at rank 8 (the `peft` default): about 4% of `neuroformer_small`'s parameters train. Rank 8 on
every linear layer of that model (width 64) would train about 15%, which is no longer a light
adapter.

Example:
    >>> wrapped = apply_lora(model)                       # query/value of every attention layer
    >>> trainable, total = count_trainable(model)
    >>> optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-3)
    >>> ...                                               # fine-tune
    >>> merge_lora(model); model.save_pretrained(folder)  # plain architecture again
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import nn

from neurofound.errors import ConfigError

DEFAULT_TARGETS = ("query", "value")


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update (Hu et al., 2021).

    The wrapped layer is kept as the submodule `base` (state-dict keys `<name>.base.weight`,
    `<name>.base.bias`); its weight and bias are frozen and never modified. The update lives in
    `lora_A (rank, in)` and `lora_B (out, rank)`.

    `weight` and `bias` read like those of an `nn.Linear`: `weight` is the effective
    `W + scaling * B @ A` (differentiable in `A` and `B`), so code that calls
    `F.linear(x, layer.weight, layer.bias)` itself (e.g. Neuroformer's cached generation) computes
    what `forward` does in eval mode instead of silently dropping the update.

    Args:
        base: the linear layer to adapt.
        rank: rank `r` of the update (>= 1).
        alpha: scale numerator; the update is multiplied by `alpha / rank`, so changing the rank
            does not change the size of the initial learning steps much (paper, section 4.1).
        dropout: dropout probability on the input of the LoRA branch only (training only).
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ConfigError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_hyperparameters(rank, alpha, dropout)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(self.rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, self.rank, **factory))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ Kaiming-uniform (as `nn.Linear`, loralib and peft), B = 0: the update starts at zero."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """Effective weight `W + scaling * B @ A`, shape `(out, in)`."""
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scaling

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., in)` -> `(..., out)`: base(x) + dropout(x) @ A^T @ B^T * scaling."""
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + update * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` with weight `W + scaling * B @ A` (same dtype, device and bias).

        The sum is formed in at least float32 and cast back, so a bfloat16 model does not lose
        the (small) update to rounding twice. The new layer's `requires_grad` follows the frozen
        base layer's, like the rest of a model that `apply_lora` froze.
        """
        w = self.base.weight
        compute = torch.promote_types(w.dtype, torch.float32)
        delta = (self.lora_B.to(compute) @ self.lora_A.to(compute)) * self.scaling
        linear = nn.utils.skip_init(nn.Linear, self.in_features, self.out_features,
                                    bias=self.base.bias is not None, device=w.device, dtype=w.dtype)
        linear.weight.copy_((w.to(compute) + delta).to(w.dtype))
        linear.weight.requires_grad_(w.requires_grad)
        if self.base.bias is not None:
            linear.bias.copy_(self.base.bias)
            linear.bias.requires_grad_(self.base.bias.requires_grad)
        return linear

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"


def apply_lora(
    module: nn.Module,
    targets: str | Sequence[str] = DEFAULT_TARGETS,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Wrap the targeted `nn.Linear` layers of `module` in `LoRALinear`, in place, and freeze the rest.

    A linear layer is targeted when one of `targets` equals the trailing dotted components of its
    qualified name (`"query"` and `"attn.query"` match `state_blocks.0.attn.query`), the full name,
    or matches it as an `fnmatch` glob (`"*.attn.query"`, `"decoder_blocks.*.attn.value"`; `*`
    also spans dots). Afterwards only the LoRA parameters require gradients.

    Args:
        module: the model; must not hold LoRA layers already (call `merge_lora` first).
        targets: one pattern or several (see above). Every pattern must match some linear layer,
            so a typo is an error rather than a silently smaller adapter.
        rank: rank of every update.
        alpha: the update is scaled by `alpha / rank`.
        dropout: dropout on the LoRA branch input.

    Returns:
        The qualified names of the wrapped layers, in module order.

    Raises:
        ConfigError: no or an unmatched target (the message lists the available linear layer
            names), bad hyperparameters, `module` already adapted, or `module` itself a target.
    """
    patterns = (targets,) if isinstance(targets, str) else tuple(str(t) for t in targets)  # Hydra may give 0
    if not patterns:
        raise ConfigError("apply_lora: targets is empty; name the linear layers to adapt, e.g. ('query', 'value')")
    _check_hyperparameters(rank, alpha, dropout)
    adapted = [name or "<module>" for name, m in module.named_modules() if isinstance(m, LoRALinear)]
    if adapted:
        raise ConfigError(
            f"apply_lora: the model already has LoRA layers ({', '.join(adapted[:4])}"
            f"{', ...' if len(adapted) > 4 else ''}); wrapping twice would stack adapters. "
            "Call merge_lora(model) first to fold them in."
        )

    # every path to a layer (remove_duplicate=False): a layer shared by two parents is replaced in both
    linears = [(name, m) for name, m in module.named_modules(remove_duplicate=False) if isinstance(m, nn.Linear)]
    matched = {p: [name for name, _ in linears if _matches(name, p)] for p in patterns}
    unmatched = [p for p, names in matched.items() if not names]
    if unmatched:
        available = sorted({_short_name(name) for name, _ in linears})
        raise ConfigError(
            f"apply_lora: no linear layer matches {', '.join(map(repr, unmatched))}. "
            f"Linear layers of this {type(module).__name__}: {', '.join(available) or 'none'} "
            "(a target matches the end of a layer's qualified name, the full name, or an fnmatch glob "
            "such as 'decoder_blocks.*.mlp.0')."
        )
    chosen = {name for names in matched.values() for name in names}
    if "" in chosen:
        raise ConfigError("apply_lora: the module itself is an nn.Linear; wrap it directly with LoRALinear(module)")

    wrapped, wrappers = [], {}  # id(linear) -> its wrapper: a shared layer gets one shared adapter
    for name, linear in linears:
        if name not in chosen:
            continue
        parent_name, _, child = name.rpartition(".")
        if id(linear) not in wrappers:
            wrappers[id(linear)] = LoRALinear(linear, rank=rank, alpha=alpha, dropout=dropout)
        setattr(module.get_submodule(parent_name), child, wrappers[id(linear)])
        wrapped.append(name)

    trainable = {id(p) for p in lora_parameters(module)}
    for p in module.parameters():
        p.requires_grad_(id(p) in trainable)
    return wrapped


def merge_lora(module: nn.Module) -> int:
    """Replace every `LoRALinear` in `module` by its merged `nn.Linear`, in place.

    The model then has its original architecture: its state dict loads strictly into a freshly
    built model of the same config.

    Args:
        module: a model adapted by `apply_lora` (a model without LoRA layers is left as it is).

    Returns:
        The number of layers merged.
    """
    if isinstance(module, LoRALinear):
        raise ConfigError("merge_lora: the module itself is a LoRALinear; use module.merged() instead")
    merged = {}  # id(layer) -> its merged nn.Linear: a shared layer stays shared
    for name, layer in list(module.named_modules(remove_duplicate=False)):
        if isinstance(layer, LoRALinear):
            if id(layer) not in merged:
                merged[id(layer)] = layer.merged()
            parent_name, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent_name), child, merged[id(layer)])
    return len(merged)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The `lora_A` and `lora_B` parameters of every `LoRALinear` in `module`, in module order."""
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """`(trainable, total)` numbers of parameter elements (shared parameters counted once)."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or fnmatchcase(name, pattern)


def _short_name(name: str) -> str:
    """Last component of a qualified name, or the last two when the last is an index (`mlp.0`)."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def _check_hyperparameters(rank: int, alpha: float, dropout: float) -> None:
    if isinstance(rank, bool) or not isinstance(rank, Integral) or rank < 1:
        raise ConfigError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if isinstance(alpha, bool) or not (isinstance(alpha, Real) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"LoRA alpha must be a finite number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not (isinstance(dropout, Real) and 0.0 <= dropout < 1.0):
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


__all__ = ["DEFAULT_TARGETS", "LoRALinear", "apply_lora", "merge_lora", "lora_parameters", "count_trainable"]
