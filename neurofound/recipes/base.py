"""The shapes every recipe shares: what a family hands to the shared jobs, and what it gets back.

A recipe (one file per family in this package) reads like a script: it builds its data,
tokenizer, model and task from the config, names its stages, evaluates, and writes its notes.
Shared steps (the trainer, the run folder, the Hub) live in `neurofound.runtime` and
`neurofound.jobs` and are called, never copied.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig

from neurofound.data.contracts import InputContract
from neurofound.errors import ContractError
from neurofound.runfolder import RunFolder


@dataclass
class DataBundle:
    """The data of a run: its datamodule, input contract and tokenizer.

    Attributes:
        datamodule: what the stages fit on (set up).
        contract: the data's input contract (stored with a model trained on it).
        tokenizer: the tokenizer the data was encoded with (None for families without one).
        description: one line for the model card's "Training data".
        preprocessing: the steps applied to the raw recordings, in order (for the model card).
        extra: anything else the recipe's own evaluation needs.
    """

    datamodule: Any
    contract: InputContract | None
    tokenizer: Any = None
    description: str = ""
    preprocessing: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """One fit of a run. Stages are fitted in order; a resumed run skips the finished ones.

    Attributes:
        name: "pretrain"; AnatCL: "anatcl_global", "simclr"; BraInCoRL: "synthetic", "real".
        task: the LightningModule to fit (its `model` attribute is what gets saved).
        datamodule: the data to fit on.
        save_to: run-folder path of the saved model ("model", "models/simclr") or None.
        trainer_overrides: Trainer arguments for this stage only (e.g. max_steps).
    """

    name: str
    task: L.LightningModule
    datamodule: Any
    save_to: str | None = "model"
    trainer_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What a recipe's evaluation and extra verbs get from the shared job."""

    cfg: DictConfig
    run: RunFolder
    data: DataBundle
    verb: str
    seed: int
    fast: bool = False  # a smoke run (fast_dev_run): touch every path on little data
    trainer: L.Trainer | None = None

    @property
    def report_dir(self) -> Path:
        return self.run.report


@dataclass
class EvalResult:
    """Metrics (`split/name`), figures (name -> PNG), the report's notes and extra report context."""

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


class Recipe(ABC):
    """Base class of the family recipes (see docs/architecture.md, "Recipes").

    Subclasses set `family` (== the model's `model_type`) and `contract`, and implement `data`,
    `model` and `stages`; `evaluate`, `finetune` and `verbs` are optional.
    """

    family: ClassVar[str] = ""
    contract: ClassVar[type[InputContract] | None] = None

    # -- building -------------------------------------------------------------------------------------------------
    @abstractmethod
    def data(self, cfg: DictConfig, tokenizer: Any = None, *, purpose: str = "train") -> DataBundle:
        """The run's data. `tokenizer` is a trained model's (eval, fine-tuning) or a pretrained one
        (`tokenizer.pretrained=`); None: build it from the config (and the data, where it needs it).
        `purpose` is the verb ("train", "eval", "finetune", "generate", ...)."""

    @abstractmethod
    def model(self, cfg: DictConfig, data: DataBundle) -> torch.nn.Module:
        """A freshly initialised model for `data` (sizes from the config and the data's contract)."""

    @abstractmethod
    def stages(self, cfg: DictConfig, data: DataBundle, model: torch.nn.Module) -> list[Stage]:
        """The fits of a training run, in order."""

    # -- checking -------------------------------------------------------------------------------------------------
    def check(self, model: torch.nn.Module, data: DataBundle) -> None:
        """A trained model meeting data: the tokenizer must fit and the data must meet the model's contract."""
        if data.tokenizer is not None and hasattr(model, "check_tokenizer"):
            model.check_tokenizer(data.tokenizer)
        mine = getattr(model, "input_contract", None)
        if mine is not None and data.contract is not None:
            mine.check(data.contract, model=f"this {self.family} model")
        elif data.contract is not None and self.contract is not None and not isinstance(data.contract, self.contract):
            raise ContractError(f"{self.family} takes {self.contract.kind} input, the data is {data.contract.kind}")

    # -- after training ------------------------------------------------------------------------------------------
    def evaluate(self, ctx: RunContext, models: dict[str, torch.nn.Module]) -> EvalResult:
        """Held-out metrics, figures and the report's notes (default: nothing beyond the fit's own)."""
        return EvalResult()

    def finetune(self):
        """The family's `FinetuneSpec` (neurofound.tasks.finetune), or None when it has no fine-tuning."""
        return None

    def verbs(self) -> dict[str, Callable[[RunContext, torch.nn.Module], EvalResult]]:
        """Extra command-line verbs of this family (`neurofound <verb> experiment=... ckpt=...`)."""
        return {}
