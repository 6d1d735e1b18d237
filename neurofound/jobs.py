"""What each `neurofound` verb does once Hydra has composed its config (called by `cli.py`).

Each job builds data -> model -> task -> trainer from the config, runs, evaluates and writes the
run folder (`metrics.json`, `checkpoints/`, `model/`, `report/`).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neurofound.runfolder import AtomicCheckpointIO, RunFolder

log = logging.getLogger("neurofound")

FINETUNE_MODES = ("frozen", "linear", "full", "lora")


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
def _prepare(cfg: DictConfig) -> None:
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


def build_datamodule(cfg: DictConfig, tokenizer=None, **overrides):
    """Recording -> tokenizer (from the config, or the pretrained model's own) -> datamodule."""
    recording = instantiate(cfg.data.recording)
    if tokenizer is None:
        tokenizer = instantiate(cfg.tokenizer)(n_neurons=recording.n_neurons)
    dm = instantiate(cfg.data.datamodule)(recording=recording, tokenizer=tokenizer, **overrides)
    dm.setup()
    log.info("data: %r; windows train/val/test = %s", recording,
             {k: len(v) for k, v in dm.intervals.items()})
    return dm


def _contract_kwargs(dm) -> dict[str, Any]:
    c = dm.input_contract()
    frame_shape = [c["n_frames"], *c["frame_shape"]] if c["frame_shape"] else None
    return dict(n_neurons=c["n_neurons"], dt=c["dt"], window=c["window"], window_prev=c["window_prev"],
                frame_window=c["frame_window"], frame_rate=c["frame_rate"], frame_shape=frame_shape,
                block_size=c["block_size"], block_size_prev=c["block_size_prev"],
                behavior_inputs=list(c["behavior_inputs"]),
                behavior_targets={v: {"objective": "regression"} for v in c["behavior_targets"]})


def build_model(cfg: DictConfig, dm):
    """A fresh model sized by the config and shaped by the data's input contract."""
    from neurofound.models.neuroformer import Neuroformer

    model_cfg = instantiate(cfg.model)(**_contract_kwargs(dm), attention_backend=cfg.attention.backend)
    model = Neuroformer(model_cfg)
    model.tokenizer = dm.tokenizer
    return model


def check_contract(model, dm, *, ignore_behavior: bool = False) -> None:
    """A pretrained model must match the data it is applied to: a mismatch is an error, never padding."""
    want = _contract_kwargs(dm)
    have = model.config.to_dict()
    keys = ["n_neurons", "dt", "window", "window_prev", "block_size", "block_size_prev", "frame_shape"]
    if not ignore_behavior:
        keys += ["behavior_inputs"]
    bad = [f"{k}: model {have.get(k)!r} vs data {want[k]!r}" for k in keys
           if (list(have.get(k)) if isinstance(have.get(k), (list, tuple)) else have.get(k)) != want[k]]
    if bad:
        raise ValueError("the pretrained model does not match this data (" + "; ".join(bad) + "). Use data "
                         "recorded with the same neurons and settings, or set the data/tokenizer keys to the model's")


def build_trainer(cfg: DictConfig, run_dir: Path, *, checkpoints: bool = True, **overrides) -> L.Trainer:
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    skip = set() if checkpoints else {"checkpoint"}
    if not cfg.trainer.get("enable_progress_bar", True):
        skip.add("progress")  # Lightning refuses a progress-bar callback when the bar is off
    callbacks = [instantiate(c) for name, c in (cfg.get("callbacks") or {}).items()
                 if c is not None and name not in skip]
    kwargs = dict(logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                  default_root_dir=str(run_dir))
    if not checkpoints:
        kwargs["enable_checkpointing"] = False
    kwargs.update(overrides)
    return instantiate(cfg.trainer, **kwargs)


def _eval_kwargs(cfg: DictConfig, trainer: L.Trainer | None = None) -> dict[str, Any]:
    e = OmegaConf.to_container(cfg.eval, resolve=True)
    kw = dict(split=e["split"], generate=e["generate"], true_past=e["true_past"], connectivity=e["connectivity"],
              max_windows=e["max_windows"], n_stretches=e["n_stretches"], max_batches=e["max_batches"],
              psth_bin=e["psth_bin"], seed=int(cfg.seed), top_k=e["top_k"], top_p=e["top_p"],
              temperature=e["temperature"])
    if trainer is not None and trainer.fast_dev_run:  # a smoke run: touch every path, on little data
        kw.update(max_windows=32, n_stretches=2, max_batches=1)
    return kw


def _describe_data(cfg: DictConfig, dm) -> str:
    rec = dm.recording
    src = rec.meta.get("source", "recording") if isinstance(rec.meta, dict) else "recording"
    return (f"{src}: {rec.n_neurons} neurons, {rec.duration:g} s, {rec.n_spikes} spikes; windows "
            f"train/val/test = {len(dm.intervals['train'])}/{len(dm.intervals['val'])}/{len(dm.intervals['test'])} "
            f"(train_fraction {dm.train_fraction:g}, leakage-safe {dm.split_mode} split)")


def _finish(cfg, run_dir: Path, model, dm, metrics: dict, figures: dict, context: dict, *, save_model=True) -> None:
    from neurofound.eval.plots import plot_training_curves
    from neurofound.eval.report import write_report

    rf = RunFolder(run_dir)
    csv = run_dir / "logs" / "metrics.csv"
    if csv.exists():
        try:
            figures["training_curves"] = plot_training_curves(csv, rf.report / "training_curves.png")
        except ValueError as err:  # e.g. too few logged steps in a smoke run
            log.info("no training curves: %s", err)
    rf.write_metrics(metrics)
    if save_model:
        model.save_pretrained(rf.model, training_data=_describe_data(cfg, dm), metrics=metrics)
    write_report(rf.report, metrics, figures, context)
    push = cfg.get("export", {}).get("push_to_hub") if save_model else None
    if push:
        model.push_to_hub(push)
    log.info("run folder: %s", run_dir)


# ------------------------------------------------------------------------------------------------
# verbs
# ------------------------------------------------------------------------------------------------
def train(cfg: DictConfig, run_dir: Path):
    from neurofound.models.registry import load_pretrained
    from neurofound.tasks.spike_eval import evaluate_spike_model

    _prepare(cfg)
    t0 = time.perf_counter()
    if cfg.get("init"):
        model = load_pretrained(cfg.init)
        dm = build_datamodule(cfg, tokenizer=model.tokenizer)
        check_contract(model, dm)
    else:
        dm = build_datamodule(cfg)
        model = build_model(cfg, dm)
    untrained = copy.deepcopy(model) if cfg.eval.untrained_baseline else None
    task = instantiate(cfg.task)(model=model)
    trainer = build_trainer(cfg, run_dir)
    t_fit = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_s = time.perf_counter() - t_fit
    if not trainer.fast_dev_run:
        # last.ckpt is the final model (the callback saves it after validations, which need not
        # coincide with the last step); every rank calls it, rank 0 writes (atomically)
        trainer.save_checkpoint(RunFolder(run_dir).checkpoints / "last.ckpt")
    if trainer.global_rank != 0:
        return None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics.update({"train/steps": trainer.global_step, "train/fit_seconds": fit_s})
    model.eval()
    res = evaluate_spike_model(model, dm, report_dir=RunFolder(run_dir).report, untrained_model=untrained,
                               **_eval_kwargs(cfg, trainer))
    metrics.update(res.metrics)
    metrics["train/total_seconds"] = time.perf_counter() - t0
    context = {"command": f"neurofound train experiment={cfg.name}", "model": type(model).__name__,
               "parameters": sum(p.numel() for p in model.parameters()), "data": _describe_data(cfg, dm),
               "steps": trainer.global_step}
    _finish(cfg, run_dir, model, dm, metrics, res.figures, context)
    return metrics


def _load_for(verb: str, cfg: DictConfig):
    """The trained model named by `ckpt=` and the data it is applied to (checked against it)."""
    from neurofound.models.registry import load_pretrained

    _prepare(cfg)
    if not cfg.get("ckpt"):
        raise ValueError(f"{verb} needs ckpt=DIR|HUB_ID|CKPT (a run folder, model folder, checkpoint or Hub id)")
    model = load_pretrained(cfg.ckpt)
    dm = build_datamodule(cfg, tokenizer=model.tokenizer)
    check_contract(model, dm, ignore_behavior=True)
    return model, dm


def eval(cfg: DictConfig, run_dir: Path):  # noqa: A001 - the verb's name
    from neurofound.tasks.spike_eval import evaluate_spike_model

    model, dm = _load_for("eval", cfg)
    res = evaluate_spike_model(model, dm, report_dir=RunFolder(run_dir).report, **_eval_kwargs(cfg))
    context = {"command": f"neurofound eval ckpt={cfg.ckpt}", "model": type(model).__name__,
               "data": _describe_data(cfg, dm)}
    _finish(cfg, run_dir, model, dm, res.metrics, res.figures, context, save_model=False)
    return res.metrics


def generate(cfg: DictConfig, run_dir: Path):
    import numpy as np

    from neurofound.eval import plots
    from neurofound.tasks.spike_eval import generate_split, generation_metrics

    model, dm = _load_for("generate", cfg)
    g = cfg.generate
    kw = dict(split=g.split, n_stretches=g.n_stretches, max_windows=g.max_windows, seed=int(cfg.seed),
              top_k=g.top_k, top_p=g.top_p, temperature=g.temperature)
    result, rows = generate_split(model, dm, mode=g.mode, **kw)
    rf = RunFolder(run_dir)
    out = run_dir / "generated.npz"
    np.savez(out, spike_times=result.spike_times, unit_ids=result.unit_ids, window=result.window,
             segment=result.segment, intervals=result.intervals, split_rows=rows)
    suffix = "_truepast" if g.mode == "true_past" else ""
    metrics = generation_metrics(result, rows, dm, split=g.split, suffix=suffix)
    truth = dm.held_out_spikes(g.split)
    t0 = float(np.sort(result.intervals)[0] - dm.window)
    figures = {"raster": plots.plot_raster(truth["times"], truth["unit_ids"], result.spike_times, result.unit_ids,
                                           rf.report / "raster.png", t_range=(t0, t0 + 5.0))}
    context = {"command": f"neurofound generate ckpt={cfg.ckpt} generate.mode={g.mode}",
               "generated spikes": int(result.spike_times.size), "file": str(out)}
    _finish(cfg, run_dir, model, dm, metrics, figures, context, save_model=False)
    log.info("generated %d spikes in %d windows -> %s", result.spike_times.size, rows.size, out)
    return metrics


def finetune(cfg: DictConfig, run_dir: Path):
    from neurofound.tasks.finetune import run_finetune

    _prepare(cfg)
    mode = str(cfg.finetune.mode)
    if mode not in FINETUNE_MODES:
        raise ValueError(f"finetune.mode={mode!r} is not one of {', '.join(FINETUNE_MODES)}")
    if mode == "lora":
        raise NotImplementedError("finetune.mode=lora is not available yet (LoRA adapters arrive in a later "
                                  "release); use finetune.mode=frozen, linear or full")
    if not cfg.get("init"):
        raise ValueError("finetune needs init=DIR|HUB_ID|CKPT: the pretrained model to start from")
    metrics, figures, model, dm = run_finetune(cfg, run_dir, mode)
    context = {"command": f"neurofound finetune init={cfg.init} finetune.mode={mode} "
                          f"data.train_fraction={cfg.data.train_fraction}",
               "model": type(model).__name__, "data": _describe_data(cfg, dm)}
    _finish(cfg, run_dir, model, dm, metrics, figures, context)
    return metrics


def export(ckpt: str, out: str, push_to_hub: str | None = None) -> Path:
    from neurofound.models.registry import load_pretrained

    model = load_pretrained(ckpt)
    out_dir = Path(out)
    model.save_pretrained(out_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
    return out_dir


def listing() -> str:
    from neurofound import tokenizers
    from neurofound.cli import CONFIG_DIR
    from neurofound.models.registry import FAMILIES

    lines = ["models:"]
    for fam, (_, cls, builders) in FAMILIES.items():
        lines.append(f"  {fam:<14} {cls} (sizes: {', '.join(builders)})")
    lines.append("tokenizers:")
    lines += [f"  {name}" for name in tokenizers.available()]
    lines.append("experiments:")
    for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in p.read_text().splitlines()
                      if ln.startswith("#") and "@package" not in ln), "")
        lines.append(f"  {p.stem:<22} {first}")
    return "\n".join(lines)
