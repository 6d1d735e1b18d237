"""A toy family written outside neurofound: the proof that a family lands as new files.

It has everything a real family has and touches no shared code: a model registered in one place, a
tokenizer with weights (a learned codebook), a recipe, a task, a fine-tuning spec, and an
experiment config (tests/toy_configs, reached through `hydra.searchpath`). `tests/test_spine.py`
trains it from the command line, evaluates, exports, reloads it through a model folder, a `.ckpt`
and a Hub id, and fine-tunes it with LoRA. The process finds this module through the config key
`plugins` (or $NEUROFOUND_PLUGINS for commands without a config).

The task: classify multichannel signals whose class sets the frequency of a sinusoid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from neurofound import tokenizers
from neurofound.data.contracts import SensorContract
from neurofound.errors import ConfigError, ContractError
from neurofound.models.hub import NeurofoundHubMixin
from neurofound.models.registry import register_family
from neurofound.nn.multihead import MultiHeadAttention
from neurofound.recipes.base import DataBundle, EvalResult, Recipe, RunContext, Stage
from neurofound.runtime import instantiate_node
from neurofound.tasks.base import NeurofoundTask
from neurofound.tasks.optim import build_optimizer


# ------------------------------------------------------------------------------------------------
# tokenizer with weights
# ------------------------------------------------------------------------------------------------
@tokenizers.register("toy_codebook")
class ToyCodebook(tokenizers.Tokenizer, nn.Module):
    """(B, T, C) signals -> nearest of `n_codes` learned vectors per time step (straight-through)."""

    def __init__(self, n_channels: int = 4, n_codes: int = 8, dim: int = 16):
        nn.Module.__init__(self)
        self._set_config(n_channels=n_channels, n_codes=n_codes, dim=dim)
        self.n_channels, self.dim = n_channels, dim
        self.proj = nn.Linear(n_channels, dim)
        self.codebook = nn.Parameter(torch.randn(n_codes, dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> codes (B, T), quantised (B, T, dim), commitment loss."""
        z = self.proj(x)
        codes = torch.cdist(z, self.codebook.expand(z.shape[0], -1, -1)).argmin(-1)
        q = self.codebook[codes]
        commit = F.mse_loss(z, q.detach()) + F.mse_loss(q, z.detach())
        return codes, z + (q - z).detach(), commit


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
@dataclass
class ToyConfig:
    n_channels: int = 4
    dim: int = 16
    n_head: int = 2
    n_classes: int = 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True) -> "ToyConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        if strict and set(d) - names:
            raise ConfigError(f"unknown ToyConfig keys {sorted(set(d) - names)}")
        return cls(**{k: v for k, v in d.items() if k in names})


@register_family("toy", builders=("toy_small",), recipe="toy_family:ToyRecipe", tokenizers=("toy_codebook",))
class ToyModel(NeurofoundHubMixin, nn.Module):
    """Codebook tokens -> one self-attention layer -> mean pool -> class logits."""

    config_class = ToyConfig
    model_card_title = "Toy"
    model_card_summary = "A toy family from the test suite."

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.tokenizer = None
        self.norm = nn.LayerNorm(config.dim)
        self.attn = MultiHeadAttention(config.dim, config.n_head)
        self.head = nn.Linear(config.dim, config.n_classes)

    def check_tokenizer(self, tokenizer) -> None:
        if (tokenizer.n_channels, tokenizer.dim) != (self.config.n_channels, self.config.dim):
            raise ContractError(f"toy tokenizer ({tokenizer.n_channels} channels, dim {tokenizer.dim}) does not fit "
                                f"the model ({self.config.n_channels}, {self.config.dim})")

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, q, commit = self.tokenizer.encode(x)
        h = q + self.attn(self.norm(q), self.norm(q))[0]
        return h.mean(1), commit

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, commit = self.features(x)
        return self.head(pooled), commit


def toy_small(**overrides) -> ToyConfig:
    return ToyConfig(**overrides)


# ------------------------------------------------------------------------------------------------
# data, task
# ------------------------------------------------------------------------------------------------
class ToyData(L.LightningDataModule):
    def __init__(self, n_channels: int = 4, n_classes: int = 3, n_samples: int = 96, length: int = 32,
                 rate: float = 100.0, seed: int = 0, batch_size: int = 16, fail_with_bug: bool = False):
        super().__init__()
        if fail_with_bug:
            raise RuntimeError("a deliberate bug inside the toy family")
        rng = np.random.default_rng(seed)
        y = np.arange(n_samples) % n_classes
        t = np.arange(length) / rate
        freqs = 5.0 + 5.0 * y
        x = np.sin(2 * np.pi * freqs[:, None, None] * t[None, :, None] + rng.uniform(0, 6, (n_samples, 1, n_channels)))
        x = x + 0.3 * rng.standard_normal(x.shape)
        order = rng.permutation(n_samples)
        x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
        n_val = n_test = n_samples // 4
        self.splits = {"val": (x[:n_val], y[:n_val]), "test": (x[n_val:n_val + n_test], y[n_val:n_val + n_test]),
                       "train": (x[n_val + n_test:], y[n_val + n_test:])}
        self.batch_size, self.seed = batch_size, seed
        self.contract = SensorContract(channel_names=tuple(f"c{i}" for i in range(n_channels)),
                                       sensor_types=("EEG",) * n_channels, sampling_rate=rate, window=length)

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        x, y = self.splits[split]
        g = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=shuffle, generator=g)

    def train_dataloader(self):
        return self.loader("train", shuffle=True)

    def val_dataloader(self):
        return self.loader("val")

    def test_dataloader(self):
        return self.loader("test")


class ToyTask(NeurofoundTask):
    def __init__(self, model: ToyModel, lr: float = 1e-2):
        super().__init__()
        self.model = model
        self.lr = lr

    def _loss(self, batch):
        x, y = batch
        logits, commit = self.model(x)
        return F.cross_entropy(logits, y) + 0.25 * commit

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, batch_size=batch[0].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch), batch_size=batch[0].shape[0])

    def configure_optimizers(self):
        return build_optimizer(self.model, self.lr, 0.0, (0.9, 0.95), 0, 1000)


@torch.no_grad()
def _predict(model: ToyModel, loader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    ys, ps = [], []
    for x, y in loader:
        ys.append(y.numpy())
        ps.append(model(x)[0].argmax(-1).numpy())
    return np.concatenate(ys), np.concatenate(ps)


def _balanced_acc(y, p) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, p))


# ------------------------------------------------------------------------------------------------
# recipe and fine-tuning
# ------------------------------------------------------------------------------------------------
class ToyRecipe(Recipe):
    family = "toy"
    contract = SensorContract

    def data(self, cfg, tokenizer=None, *, purpose="train") -> DataBundle:
        dm = instantiate(cfg.data)
        if tokenizer is None:
            tokenizer = instantiate_node(cfg.tokenizer)(n_channels=len(dm.contract.channel_names))
        return DataBundle(datamodule=dm, contract=dm.contract, tokenizer=tokenizer,
                          description=f"toy sinusoids, seed {dm.seed}", preprocessing=["none (synthetic)"])

    def model(self, cfg, data: DataBundle) -> ToyModel:
        model = ToyModel(instantiate(cfg.model)(n_channels=len(data.contract.channel_names)))
        model.attach_tokenizer(data.tokenizer)
        model.input_contract = data.contract
        if cfg.tokenizer.get("pretrained"):  # a stage-2 model keeps its trained tokenizer as it is
            data.tokenizer.requires_grad_(False)
        return model

    def stages(self, cfg, data, model) -> list[Stage]:
        return [Stage("pretrain", instantiate(cfg.task)(model=model), data.datamodule)]

    def evaluate(self, ctx: RunContext, models) -> EvalResult:
        y, p = _predict(models["model"], ctx.data.datamodule.loader("test"))
        acc = _balanced_acc(y, p)
        chance = 1.0 / models["model"].config.n_classes
        verdict = "above" if acc > chance else "**not above**"
        return EvalResult(metrics={"test/balanced_acc": acc},
                          notes=[f"Balanced accuracy {acc:.3f} vs chance {chance:.3f}: {verdict} chance."])

    def finetune(self):
        return ToyFinetune()


class ToyFinetune:
    modes = ("frozen", "linear", "full", "lora")
    lora_targets = ("query", "value")
    objective = "classification"

    def prepare(self, pretrained: ToyModel, data: DataBundle) -> ToyModel:
        model = ToyModel(ToyConfig.from_dict(pretrained.config.to_dict()))
        model.attach_tokenizer(pretrained.tokenizer)
        model.load_state_dict(pretrained.state_dict())
        nn.init.normal_(model.head.weight, std=0.02)  # a fresh head for the downstream task
        nn.init.zeros_(model.head.bias)
        model.input_contract = data.contract
        return model

    def scratch(self, model: ToyModel) -> ToyModel:
        fresh = ToyModel(ToyConfig.from_dict(model.config.to_dict()))
        fresh.attach_tokenizer(ToyCodebook(**model.tokenizer.config))
        fresh.input_contract = model.input_contract
        return fresh

    def trunk(self, model):
        return [model.attn]

    def heads(self, model):
        return list(model.head.parameters())

    def loss(self, model, batch, mode):
        x, y = batch
        return F.cross_entropy(model(x)[0], y)

    def features(self, model, batch):
        return model.features(batch[0])[0]

    def labels(self, batch):
        return batch[1]

    def loader(self, data, split):
        return data.datamodule.loader(split)

    def predict(self, model, loader):
        return _predict(model, loader)

    def score(self, y_true, y_pred) -> dict[str, float]:
        return {"balanced_acc": _balanced_acc(y_true, y_pred)}
