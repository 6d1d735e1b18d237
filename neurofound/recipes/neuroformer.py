"""Neuroformer recipe: spikes (+ frames, behaviour) -> spike tokens -> autoregressive spike GPT.

Read top to bottom: data and tokenizer, model, the one stage ("pretrain"), evaluation (teacher-
forced tokens, generation, behaviour, connectivity from attention with its baselines) and the
report's notes, fine-tuning (behaviour decoding heads on the trunk) and the extra verb `generate`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neurofound.data.contracts import SpikeContract
from neurofound.errors import ConfigError, ContractError
from neurofound.models.neuroformer import Neuroformer
from neurofound.recipes.base import DataBundle, EvalResult, Recipe, RunContext, Stage
from neurofound.runtime import instantiate_node

log = logging.getLogger("neurofound")


class NeuroformerRecipe(Recipe):
    family = "neuroformer"
    contract = SpikeContract

    # ------------------------------------------------------------------------------------------------------------
    # 1. data and tokenizer
    # ------------------------------------------------------------------------------------------------------------
    def data(self, cfg: DictConfig, tokenizer=None, *, purpose: str = "train") -> DataBundle:
        """Recording -> SpikeTokenizer (from the config and the recording's neuron count, unless given) -> windows.

        For fine-tuning, the behaviour targets are `finetune.targets` and the training split keeps
        the contiguous fraction `finetune.train_fraction` (one past window before the next split).
        """
        recording = instantiate(cfg.data.recording)
        if tokenizer is None:
            tokenizer = instantiate_node(cfg.tokenizer)(n_neurons=recording.n_neurons)
        overrides: dict[str, Any] = {}
        if purpose == "finetune":
            targets = list(OmegaConf.select(cfg, "finetune.targets", default=None) or [])
            if not targets:
                raise ConfigError("finetune needs a behaviour variable to decode: set finetune.targets=[speed] "
                                  "(or data.behavior=[your variable])")
            overrides["behavior_targets"] = targets
            overrides["train_fraction"] = float(cfg.finetune.train_fraction)
        dm = instantiate(cfg.data.datamodule)(recording=recording, tokenizer=tokenizer, **overrides)
        dm.setup()
        log.info("data: %r; windows train/val/test = %s", recording, {k: len(v) for k, v in dm.intervals.items()})
        contract = dm.input_contract()
        return DataBundle(datamodule=dm, contract=contract, tokenizer=tokenizer, description=_describe(dm),
                          extra={"behavior_targets": dm.behavior_target_specs()})

    # ------------------------------------------------------------------------------------------------------------
    # 2. model
    # ------------------------------------------------------------------------------------------------------------
    def model(self, cfg: DictConfig, data: DataBundle) -> Neuroformer:
        """A fresh Neuroformer sized by `cfg.model` and shaped by the tokenizer and the data's contract."""
        tok, c = data.tokenizer, data.contract
        model_cfg = instantiate(cfg.model)(
            n_neurons=tok.n_neurons, n_dt=tok.n_dt, frame_shape=list(c.frame_shape) if c.frame_shape else None,
            behavior_inputs=list(c.behavior_inputs), behavior_targets=data.extra["behavior_targets"],
            reference_compat=tok.reference_compat,
        )
        model = Neuroformer(model_cfg)
        model.attach_tokenizer(tok)
        model.input_contract = c
        return model

    def check(self, model: Neuroformer, data: DataBundle) -> None:
        """Contract and tokenizer as every family, plus the sizes this data shapes (frames, behaviour inputs)."""
        super().check(model, data)
        cfg, c = model.config, data.contract
        have = list(c.frame_shape) if c.frame_shape else None
        bad = []
        if have != (list(cfg.frame_shape) if cfg.frame_shape else None):
            bad.append(f"frame_shape: model {cfg.frame_shape} vs data {have}")
        if list(c.behavior_inputs) != list(cfg.behavior_inputs):
            bad.append(f"behavior_inputs: model {cfg.behavior_inputs} vs data {list(c.behavior_inputs)}")
        if bad:
            raise ContractError("the pretrained model does not match this data (" + "; ".join(bad) + "). Set "
                                "data.frames / data.behavior_inputs to the model's")

    # ------------------------------------------------------------------------------------------------------------
    # 3. stages
    # ------------------------------------------------------------------------------------------------------------
    def stages(self, cfg: DictConfig, data: DataBundle, model: Neuroformer) -> list[Stage]:
        task = instantiate(cfg.task)(model=model)
        return [Stage("pretrain", task, data.datamodule, save_to="model")]

    # ------------------------------------------------------------------------------------------------------------
    # 4. evaluation and the report's notes
    # ------------------------------------------------------------------------------------------------------------
    def evaluate(self, ctx: RunContext, models: dict[str, torch.nn.Module]) -> EvalResult:
        from neurofound.tasks.spike_eval import evaluate_spike_model

        model = models["model"]
        e = ctx.cfg.eval
        untrained = None
        if e.untrained_baseline:
            untrained = fresh_copy(model, ctx.seed)
        res = evaluate_spike_model(model, ctx.data.datamodule, report_dir=ctx.report_dir, untrained_model=untrained,
                                   **eval_kwargs(ctx))
        return EvalResult(metrics=res.metrics, figures=res.figures, notes=notes(res.metrics, split=str(e.split)))

    # ------------------------------------------------------------------------------------------------------------
    # 5. fine-tuning and extra verbs
    # ------------------------------------------------------------------------------------------------------------
    def finetune(self) -> "BehaviorDecoding":
        return BehaviorDecoding()

    def verbs(self) -> dict[str, Callable]:
        return {"generate": generate}


# ================================================================================================================
# helpers
# ================================================================================================================
def _describe(dm) -> str:
    rec = dm.recording
    src = rec.meta.get("source", "recording") if isinstance(rec.meta, dict) else "recording"
    return (f"{src}: {rec.n_neurons} neurons, {rec.duration:g} s, {rec.n_spikes} spikes; windows "
            f"train/val/test = {len(dm.intervals['train'])}/{len(dm.intervals['val'])}/{len(dm.intervals['test'])} "
            f"(train_fraction {dm.train_fraction:g}, leakage-safe {dm.split_mode} split)")


def fresh_copy(model: Neuroformer, seed: int | None = None) -> Neuroformer:
    """A freshly initialised model of the same architecture, tokenizer and contract (the untrained and
    from-scratch baselines). With `seed`, the init draws from that seed and the global RNG is left as it was."""
    state = torch.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        fresh = type(model)(type(model.config).from_dict(model.config.to_dict()))
    finally:
        if seed is not None:
            torch.set_rng_state(state)
    fresh.attach_tokenizer(model.tokenizer)
    fresh.input_contract = model.input_contract
    return fresh.to(next(model.parameters()).device).eval()


def eval_kwargs(ctx: RunContext) -> dict[str, Any]:
    e = OmegaConf.to_container(ctx.cfg.eval, resolve=True)
    kw = dict(split=e["split"], generate=e["generate"], true_past=e["true_past"], connectivity=e["connectivity"],
              max_windows=e["max_windows"], n_stretches=e["n_stretches"], max_batches=e["max_batches"],
              psth_bin=e["psth_bin"], seed=ctx.seed, top_k=e["top_k"], top_p=e["top_p"],
              temperature=e["temperature"],
              connectivity_layers=None if e["connectivity_layers"] is None else tuple(e["connectivity_layers"]),
              connectivity_normalize=e["connectivity_normalize"],
              connectivity_relative_to=e["connectivity_relative_to"],
              connectivity_train_windows=e["connectivity_train_windows"])
    if ctx.fast:  # a smoke run: touch every path, on little data
        kw.update(max_windows=32, n_stretches=2, max_batches=1)
    return kw


def notes(m: dict[str, Any], *, split: str = "test") -> list[str]:
    """The report's plain-language notes: each headline figure beside its baselines, saying which wins."""
    def num(key):
        v = m.get(key)
        return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v)

    out = []
    for windows, what in ((split, "held-out test windows"), ("train", "training windows")):
        auroc = num(f"{windows}/connectivity_auroc")
        if auroc is None:
            continue
        rows = [("an untrained model (same architecture, fresh weights)", f"{windows}/connectivity_auroc_untrained"),
                ("zero-lag correlation of the raster", f"{windows}/connectivity_auroc_corr_baseline"),
                ("lagged cross-correlation of the raster", f"{windows}/connectivity_auroc_lagcorr_baseline"),
                ("partial correlation of the raster", f"{windows}/connectivity_auroc_pcorr_baseline")]
        for name, key in rows:
            value, plain = num(key), num(f"{key}_plain")
            if value is None:
                continue
            detail = ""
            if plain is not None:  # the baseline's stronger version is the one to beat
                detail = f" (best of {value:.3f} with the attention's normalisation and {plain:.3f} plain)"
                value = max(value, plain)
            verdict = "the model is better" if auroc > value else "**the baseline wins**"
            out.append(f"Connectivity AUROC from attention on the {what}: {auroc:.3f} vs {name} "
                       f"{value:.3f}{detail}: {verdict}.")
    if num(f"{split}/connectivity_auroc") is not None:
        out.append("Each raster baseline is computed on the same windows at 2, 5 and 10 ms bins (its best bin "
                   "counts); zero-lag and partial correlation are symmetric, so they cannot tell direction.")
    f1, f1_ref, f1_tp = num(f"{split}/set_f1"), num(f"{split}/set_f1_ref"), num(f"{split}/set_f1_truepast")
    if f1 is not None:
        extra = f"; with the true past {f1_tp:.3f}" if f1_tp is not None else ""
        ref = (f" ({f1_ref:.3f} with the reference definition, which sets precision = recall = 1 when a window "
               f"has no false positive or no false negative)") if f1_ref is not None else ""
        out.append(f"Generated spike sets (own past): set-F1 {f1:.3f}{ref}{extra}.")
    empty, empty_true = num(f"{split}/empty_window_frac"), num(f"{split}/true_empty_window_frac")
    if empty is not None and empty_true is not None:
        out.append(f"{100 * empty:.1f}% of generated windows are empty vs {100 * empty_true:.1f}% of recorded ones.")
    psth, psth_tp = num(f"{split}/psth_corr"), num(f"{split}/psth_corr_truepast")
    if psth is not None:
        extra = f", with the true past {psth_tp:.3f}" if psth_tp is not None else ""
        out.append(f"PSTH correlation of generated vs recorded spikes: own past {psth:.3f}{extra}.")
    r = num(f"{split}/behavior_r")
    if r is not None:
        out.append(f"Behaviour decoding r = {r:.3f} on held-out windows.")
    acc = num(f"{split}/behavior_balanced_acc")
    if acc is not None:
        out.append(f"Behaviour classification balanced accuracy = {acc:.3f}.")
    return out


# ================================================================================================================
# fine-tuning: behaviour decoding from the trunk
# ================================================================================================================
class BehaviorDecoding:
    """The paper's few-shot behaviour decoding as a FinetuneSpec (neurofound.tasks.finetune).

    Heads: the behaviour heads, behaviour input embeddings and behaviour cross-attention blocks
    (`Neuroformer.behavior_parameters`); the trunk is everything else. `frozen` and `lora` train on the
    behaviour loss, `full` on the model's full objective (spike tokens + behaviour), as does the
    from-scratch baseline: a frozen random trunk would be a straw man.
    """

    modes = ("frozen", "linear", "full", "lora")
    lora_targets = ("query", "value")

    def __init__(self):
        self.specs: dict[str, dict] = {}

    @property
    def var(self) -> str:
        return next(iter(self.specs))

    @property
    def objective(self) -> str:
        return self.specs[self.var].get("objective", "regression")

    def prepare(self, pretrained: Neuroformer, data: DataBundle) -> Neuroformer:
        self.specs = dict(data.extra["behavior_targets"])
        if pretrained.config.behavior_targets:
            log.warning("the pretrained model already has behaviour heads %s: it saw behaviour labels during "
                        "pretraining, so this is not a label-free few-shot comparison",
                        sorted(pretrained.config.behavior_targets))
        cfg = pretrained.config.to_dict()
        cfg["behavior_targets"] = self.specs
        model = Neuroformer(type(pretrained.config).from_dict(cfg))
        missing, unexpected = model.load_state_dict(pretrained.state_dict(), strict=False)
        other_missing = sorted(k for k in missing if not k.startswith("behavior_heads."))
        unexpected = [k for k in unexpected if not k.startswith("behavior_heads.")]
        if other_missing or unexpected:
            raise ContractError(f"pretrained weights do not fit: missing {other_missing}, unexpected {unexpected}")
        model.attach_tokenizer(pretrained.tokenizer)
        model.input_contract = data.contract
        return model

    def scratch(self, model: Neuroformer) -> Neuroformer:
        return fresh_copy(model).train()

    def trunk(self, model: Neuroformer) -> list[torch.nn.Module]:
        return [m for m in (model.state_blocks, model.frame_blocks, model.history_blocks, model.stimulus_blocks,
                            model.decoder_blocks) if len(m)]

    def heads(self, model: Neuroformer) -> list[torch.nn.Parameter]:
        return model.behavior_parameters()

    def loss(self, model: Neuroformer, batch: dict, mode: str) -> torch.Tensor:
        out = model(batch)
        if mode == "full":
            return out.loss["total"]
        return sum(out.loss[v] for v in self.specs)

    def features(self, model: Neuroformer, batch: dict) -> torch.Tensor:
        return model.features(batch)

    def labels(self, batch: dict) -> torch.Tensor:
        y = batch["behavior_target"][self.var].reshape(-1)
        if self.objective == "classification":  # the model's own binning (bin_edges, or the class index itself)
            edges = self.specs[self.var].get("bin_edges")
            return torch.bucketize(y, torch.tensor(edges, dtype=y.dtype)) if edges is not None else y.round().long()
        return y

    def loader(self, data: DataBundle, split: str):
        return data.datamodule.dataloader(split, shuffle=False)

    def predict(self, model: Neuroformer, loader) -> tuple[np.ndarray, np.ndarray]:
        from neurofound.tasks.spike_eval import teacher_forced

        _, behavior = teacher_forced(model, loader)
        y, p = behavior[self.var]
        if self.objective == "classification":
            y = self.labels({"behavior_target": {self.var: torch.as_tensor(y)}}).numpy()
        return y, p

    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        from neurofound.eval.metrics import behavior_scores

        if self.objective == "classification":
            from sklearn.metrics import balanced_accuracy_score

            return {"behavior_balanced_acc": float(balanced_accuracy_score(y_true, y_pred))}
        s = behavior_scores(y_true, y_pred)
        return {"behavior_r": s["r"], "behavior_r2": s["r2"]}

    def figures(self, y_true: np.ndarray, y_pred: np.ndarray, report_dir, data: DataBundle) -> dict:
        from neurofound.eval import plots

        if self.objective == "classification":
            return {}
        dm, var = data.datamodule, self.var
        if var in dm.behavior_stats:
            y_true, y_pred = dm.denormalize_behavior(var, y_true), dm.denormalize_behavior(var, y_pred)
        return {"behavior": plots.plot_behavior(y_true, y_pred, report_dir / "behavior.png", name=var)}


def generate(ctx: RunContext, model: Neuroformer) -> EvalResult:
    """`neurofound generate`: own-past (or true-past) generation on a split, saved as generated.npz."""
    from neurofound.eval import plots
    from neurofound.tasks.spike_eval import generate_split, generation_metrics

    dm = ctx.data.datamodule
    g = ctx.cfg.generate
    kw = dict(split=g.split, n_stretches=g.n_stretches, max_windows=g.max_windows, seed=ctx.seed,
              top_k=g.top_k, top_p=g.top_p, temperature=g.temperature)
    result, rows = generate_split(model, dm, mode=g.mode, **kw)
    out = ctx.run.root / "generated.npz"
    np.savez(out, spike_times=result.spike_times, unit_ids=result.unit_ids, window=result.window,
             segment=result.segment, intervals=result.intervals, split_rows=rows)
    suffix = "_truepast" if g.mode == "true_past" else ""
    metrics = generation_metrics(result, rows, dm, split=g.split, suffix=suffix)
    truth = dm.held_out_spikes(g.split)
    t0 = float(np.sort(result.intervals)[0] - dm.window)
    figures = {"raster": plots.plot_raster(truth["times"], truth["unit_ids"], result.spike_times, result.unit_ids,
                                           ctx.report_dir / "raster.png", t_range=(t0, t0 + 5.0))}
    log.info("generated %d spikes in %d windows -> %s", result.spike_times.size, rows.size, out)
    return EvalResult(metrics=metrics, figures=figures, notes=notes(metrics, split=str(g.split)),
                      context={"generated spikes": int(result.spike_times.size), "file": str(out)})


__all__ = ["BehaviorDecoding", "NeuroformerRecipe", "eval_kwargs", "fresh_copy", "generate", "notes"]
