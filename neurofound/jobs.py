"""The verbs every family shares, once Hydra has composed and checked the config (called by `cli.py`).

`train`: seed, data, model, the recipe's stages fitted in order, the recipe's evaluation, the run
folder, the Hub push. `eval` and a recipe's extra verbs (`generate`) load a trained model and start
from the data config it recorded. `finetune` runs the recipe's FinetuneSpec in any mode against a
from-scratch baseline. Nothing here names a family: what is particular to one lives in its recipe.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from neurofound import runtime
from neurofound.errors import CheckpointError, ConfigError, UnsupportedError
from neurofound.recipes import DataBundle, EvalResult, Recipe, RunContext, get_recipe
from neurofound.runfolder import RunFolder

log = logging.getLogger("neurofound")

STAGES_FILE = "stages.json"


# ------------------------------------------------------------------------------------------------
# shared steps
# ------------------------------------------------------------------------------------------------
def _recipe(cfg: DictConfig) -> Recipe:
    from neurofound.models.registry import import_plugins

    import_plugins(cfg.get("plugins") or [])
    name = cfg.get("recipe")
    if not name:
        raise ConfigError("the config names no recipe; choose an experiment (neurofound list shows them) or set "
                          "recipe=<family>")
    return get_recipe(str(name))


def _user_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


def _load(spec: str, recipe: Recipe, *, what: str):
    from neurofound.models.registry import load_pretrained

    model = load_pretrained(spec)
    if model.model_type != recipe.family:
        raise ConfigError(f"{what}={spec} is a {model.model_type!r} model but the experiment's recipe is "
                          f"{recipe.family!r}; choose an experiment of the {model.model_type} family")
    return model


def _start_from_recorded_data(cfg: DictConfig, model, *, source: str) -> None:
    recorded = (getattr(model, "training_info", None) or {}).get("data_config")
    if runtime.merge_recorded_data(cfg, recorded, _user_overrides(), source=source):
        log.info("data: the config %s was trained on (with your data.* overrides on top)", source)


def _pretrained_tokenizer(cfg: DictConfig):
    spec = OmegaConf.select(cfg, "tokenizer.pretrained", default=None)
    if not spec:
        return None
    from neurofound.tokenizers import load_tokenizer

    tok = load_tokenizer(str(spec))
    log.info("tokenizer: %s from %s", tok.name, spec)
    return tok


def _write_config(run: RunFolder, cfg: DictConfig) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run.write_config(OmegaConf.to_yaml(OmegaConf.create(resolved)))


def _fast(cfg: DictConfig) -> bool:
    return bool(cfg.trainer.get("fast_dev_run"))


def _record(model, recipe: Recipe, cfg: DictConfig, data: DataBundle) -> None:
    model.record_training(recipe=recipe.family, data_config=runtime.recordable_data_config(cfg),
                          training_data=data.description, preprocessing=list(data.preprocessing) or None)


def _finish(cfg: DictConfig, run: RunFolder, models: dict[str, torch.nn.Module], metrics: dict[str, Any],
            result: EvalResult, context: dict[str, Any]) -> None:
    """metrics.json, the saved models (with their cards), report/, and the Hub push."""
    from neurofound.eval.plots import plot_training_curves
    from neurofound.eval.report import write_report

    figures = dict(result.figures)
    csv = run.root / "logs" / "metrics.csv"
    if csv.exists():
        try:
            figures["training_curves"] = plot_training_curves(csv, run.report / "training_curves.png")
        except ValueError as err:  # e.g. too few logged steps in a smoke run
            log.info("no training curves: %s", err)
    run.write_metrics(metrics)
    for where, model in models.items():
        model.record_training(metrics={k: v for k, v in metrics.items() if k.split("/")[0] in ("test", "val", "train")})
        model.save_pretrained(run.root / where)
    write_report(run.report, metrics, figures, {**context, **result.context}, notes=result.notes)
    push = OmegaConf.select(cfg, "export.push_to_hub", default=None)
    if push and models:
        next(iter(models.values())).push_to_hub(push)
    log.info("run folder: %s", run.root)


def _read_stages(run: RunFolder) -> dict[str, Any]:
    path = run.checkpoints / STAGES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _mark_stage(run: RunFolder, name: str, steps: int) -> None:
    from neurofound.io import atomic_write_text

    done = _read_stages(run)
    done[name] = {"steps": int(steps)}
    atomic_write_text(run.checkpoints / STAGES_FILE, json.dumps(done, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# verbs
# ------------------------------------------------------------------------------------------------
def train(cfg: DictConfig, run_dir: Path, *, resume: bool = False):
    """Fit the recipe's stages in order, evaluate, write the run folder. `resume`: continue a killed run."""
    from lightning.pytorch.utilities import rank_zero_only

    runtime.prepare(cfg)
    recipe = _recipe(cfg)
    run = RunFolder(run_dir)
    t0 = time.perf_counter()
    init = _load(cfg.init, recipe, what="init") if cfg.get("init") else None
    tokenizer = init.tokenizer if init is not None else _pretrained_tokenizer(cfg)
    data = recipe.data(cfg, tokenizer, purpose="train")
    if init is not None:
        recipe.check(init, data)
        model = init
    else:
        model = recipe.model(cfg, data)
    _record(model, recipe, cfg, data)
    runtime.apply_runtime(model, cfg)
    if rank_zero_only.rank == 0:
        _write_config(run, cfg)  # a resumed run: the folder's config, with a new trainer.max_steps if given

    from neurofound.tasks.base import gather_model

    stages = recipe.stages(cfg, data, model)
    done = _read_stages(run) if resume else {}
    trainer, fit_s = None, 0.0
    models: dict[str, torch.nn.Module] = {}
    for stage in stages:
        ckpt_dir = run.checkpoints if len(stages) == 1 else run.checkpoints / stage.name
        if stage.name in done and stage.save_to and (run.root / stage.save_to / "config.json").is_file():
            _restore_stage(stage, run)
            models[stage.save_to] = stage.task.model
            log.info("stage %s: finished before, restored from %s", stage.name, stage.save_to)
            continue
        trainer = runtime.build_trainer(cfg, run.root, checkpoint_dir=ckpt_dir, **stage.trainer_overrides)
        ckpt_path, log_before = None, []
        if resume and (ckpt_dir / "last.ckpt").exists():
            ckpt_path = str(ckpt_dir / "last.ckpt")
            step, pending = _checkpoint_step(ckpt_dir / "last.ckpt")
            log_before = runtime.read_csv_log(run.root / "logs" / "metrics.csv", before_step=step, pending=pending)
            log.info("stage %s: resuming from %s (step %d)", stage.name, ckpt_path, step)
        t_fit = time.perf_counter()
        trainer.fit(stage.task, datamodule=stage.datamodule, ckpt_path=ckpt_path, weights_only=True)
        fit_s += time.perf_counter() - t_fit
        if log_before and trainer.global_rank == 0:
            runtime.prepend_csv_log(run.root / "logs" / "metrics.csv", log_before)
        if not trainer.fast_dev_run:
            # last.ckpt is the final model of the stage (the callbacks save after validations and every N
            # steps, which need not coincide with the last step); every rank calls it, rank 0 writes
            trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)
            if trainer.global_rank == 0:
                _mark_stage(run, stage.name, trainer.global_step)
        # every rank takes part (collective under FSDP); rank 0 gets the whole, unsharded model
        gathered = gather_model(stage.task, trainer)
        if stage.save_to and gathered is not None:
            models[stage.save_to] = gathered
    if trainer is not None and trainer.global_rank != 0:
        return None

    metrics: dict[str, Any] = {}
    if trainer is not None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        metrics.update({"train/steps": trainer.global_step, "train/fit_seconds": fit_s})
    for m in models.values():
        m.eval()
    ctx = RunContext(cfg=cfg, run=run, data=data, verb="train", seed=int(cfg.seed), fast=_fast(cfg), trainer=trainer)
    result = recipe.evaluate(ctx, models)
    metrics.update(result.metrics)
    metrics["train/total_seconds"] = time.perf_counter() - t0
    context = {"command": f"neurofound train experiment={cfg.name}", "recipe": recipe.family,
               "model": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
               "data": data.description, "steps": trainer.global_step if trainer else 0}
    _finish(cfg, run, models, metrics, result, context)
    return metrics


def _checkpoint_step(path: Path) -> tuple[int, dict | None]:
    """The global step of a Lightning checkpoint (a file, or the folder of a sharded FSDP one) and the
    log row it stored for that step (`runtime.ResumeStateCallback`), if any."""
    if path.is_dir():  # distributed checkpoint: Lightning keeps the plain metadata in meta.pt
        path = path / "meta.pt"
    # memory-mapped: only the step is needed, not the weights and optimiser state
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("global_step", 0)), ckpt.get(runtime.ResumeStateCallback.LOG_ROW_KEY)


def _restore_stage(stage, run: RunFolder) -> None:
    from neurofound.weights import load_state_dict_strict, read_safetensors

    target = stage.task.model
    load_state_dict_strict(target, read_safetensors(run.root / stage.save_to / "model.safetensors"),
                           source=str(run.root / stage.save_to), exclude=("tokenizer.",) if isinstance(
                               getattr(target, "tokenizer", None), torch.nn.Module) else ())


def _trained(verb: str, cfg: DictConfig, run_dir: Path):
    """Recipe, trained model (`ckpt=`), run folder and the data it is applied to (checked against it)."""
    runtime.prepare(cfg)
    recipe = _recipe(cfg)
    if not cfg.get("ckpt"):
        raise ConfigError(f"{verb} needs ckpt=DIR|HUB_ID|CKPT (a run folder, model folder, checkpoint or Hub id)")
    model = _load(cfg.ckpt, recipe, what="ckpt")
    _start_from_recorded_data(cfg, model, source=f"ckpt={cfg.ckpt}")
    run = RunFolder(run_dir)
    _write_config(run, cfg)
    data = recipe.data(cfg, model.tokenizer, purpose=verb)
    recipe.check(model, data)
    runtime.apply_runtime(model, cfg)
    ctx = RunContext(cfg=cfg, run=run, data=data, verb=verb, seed=int(cfg.seed), fast=_fast(cfg))
    return recipe, model, ctx


def eval(cfg: DictConfig, run_dir: Path):  # noqa: A001 - the verb's name
    recipe, model, ctx = _trained("eval", cfg, run_dir)
    result = recipe.evaluate(ctx, {"model": model})
    context = {"command": f"neurofound eval experiment={cfg.name} ckpt={cfg.ckpt}", "recipe": recipe.family,
               "model": type(model).__name__, "data": ctx.data.description}
    _finish(cfg, ctx.run, {}, result.metrics, result, context)
    return result.metrics


def run_verb(verb: str, cfg: DictConfig, run_dir: Path):
    """A recipe's extra verb (e.g. `generate` of a spike model) on a trained model."""
    recipe = _recipe(cfg)
    verbs = recipe.verbs()
    if verb not in verbs:
        raise UnsupportedError(f"'{verb}' is not a verb of the {recipe.family} family; its verbs: "
                               f"{', '.join(['train', 'eval', 'finetune', *verbs])}")
    recipe, model, ctx = _trained(verb, cfg, run_dir)
    result = verbs[verb](ctx, model)
    context = {"command": f"neurofound {verb} experiment={cfg.name} ckpt={cfg.ckpt}", "recipe": recipe.family,
               "data": ctx.data.description}
    _finish(cfg, ctx.run, {}, result.metrics, result, context)
    return result.metrics


def finetune(cfg: DictConfig, run_dir: Path):
    """Fine-tune `init=` in `finetune.mode` and the same architecture from scratch, same steps and settings.

    The protocol (`finetune.protocol`): for every fold of the data (`folds` > 1 needs a datamodule
    with `set_fold`, e.g. subject-wise folds) and every seed, each learning rate of `lrs` is fitted
    and the one with the best validation score is scored on the test split; the from-scratch
    baseline gets the same search. Figures are means over folds and seeds, `_sd` their standard
    deviation. A recipe's baselines (`spec.baselines(data)`) are scored on the same folds. With one
    fold, one seed and one rate this is a single fit of each, scored on the data's own test split.
    The model saved in `model/` is the fine-tuned one of the first fold and seed.
    """
    from neurofound.tasks.finetune import MODES

    runtime.prepare(cfg)
    recipe = _recipe(cfg)
    spec = recipe.finetune()
    if spec is None:
        raise UnsupportedError(f"the {recipe.family} family has no fine-tuning (it adapts in context); use "
                               f"neurofound eval")
    mode = str(cfg.finetune.mode)
    if mode not in MODES:
        raise ConfigError(f"finetune.mode={mode!r} is not one of {', '.join(MODES)}")
    if mode not in spec.modes:
        raise UnsupportedError(f"finetune.mode={mode} is not available for the {recipe.family} family; its modes: "
                               f"{', '.join(spec.modes)}")
    if not cfg.get("init"):
        raise ConfigError("finetune needs init=DIR|HUB_ID|CKPT: the pretrained model to start from")
    pretrained = _load(cfg.init, recipe, what="init")
    _start_from_recorded_data(cfg, pretrained, source=f"init={cfg.init}")
    run = RunFolder(run_dir)
    _write_config(run, cfg)
    data = recipe.data(cfg, pretrained.tokenizer, purpose="finetune")
    recipe.check(pretrained, data)
    folds, seeds, lrs = _protocol(cfg, data)
    steps = 1 if _fast(cfg) else int(cfg.finetune.steps)
    metrics: dict[str, Any] = {"finetune/steps": steps}
    scores: dict[str, list[float]] = {}
    chosen: list[float] = []
    saved = None
    figures_of: tuple | None = None
    for fold in folds:
        if fold is not None:
            data.datamodule.set_fold(fold)
            log.info("fold %d/%d: %s", fold + 1, len(folds), getattr(data.datamodule, "describe", lambda: "")())
        if hasattr(spec, "baselines"):
            for name, value in spec.baselines(data).items():
                scores.setdefault(name, []).append(float(value))
        for seed in seeds:
            model, y_true, y_pred, lr, info = _fit_selected(cfg, run, spec, data, pretrained, mode, seed, lrs, steps,
                                                            checkpoints=saved is None)
            chosen.append(lr)
            for name, value in spec.score(y_true, y_pred).items():
                scores.setdefault(name, []).append(float(value))
            if cfg.finetune.get("scratch_baseline", True):
                _, ys_true, ys_pred, _, _ = _fit_selected(cfg, run, spec, data, model, "full", seed, lrs, steps,
                                                          checkpoints=False, scratch=True)
                for name, value in spec.score(ys_true, ys_pred).items():
                    scores.setdefault(f"{name}_scratch", []).append(float(value))
            if saved is None:
                saved, figures_of = model, (y_true, y_pred)
                metrics.update(info)
    for name, values in scores.items():
        metrics[f"test/{name}"] = float(np.mean(values))
        if len(values) > 1:
            metrics[f"test/{name}_sd"] = float(np.std(values))
    if len(chosen) > 1:
        metrics["finetune/runs"] = len(chosen)
        metrics["finetune/folds"] = len(folds)
        metrics["finetune/seeds"] = len(seeds)
    if len(lrs) > 1:
        metrics["finetune/lr_selected_median"] = float(np.median(chosen))
    log.info("fine-tuned (%s) vs from scratch: %s", mode,
             {k: round(float(v), 4) for k, v in metrics.items() if k.startswith("test/")})

    if folds[0] is not None:
        data.datamodule.set_fold(folds[0])  # the figures and the saved model are those of the first fold
    figures = spec.figures(*figures_of, run.report, data) if hasattr(spec, "figures") else {}
    saved.eval()
    _record(saved, recipe, cfg, data)
    result = EvalResult(metrics={}, figures=figures, notes=_finetune_notes(metrics, mode))
    context = {"command": f"neurofound finetune experiment={cfg.name} init={cfg.init} finetune.mode={mode}",
               "recipe": recipe.family, "model": type(saved).__name__, "data": data.description,
               "protocol": f"{len(folds)} fold(s) x {len(seeds)} seed(s), learning rates {lrs}"
                           + (" chosen on validation" if len(lrs) > 1 else "")}
    _finish(cfg, run, {"model": saved}, metrics, result, context)
    return metrics


def _protocol(cfg: DictConfig, data: DataBundle) -> tuple[list, list[int], list[float]]:
    """Folds (None: the data's own split), seeds and learning rates of `finetune.protocol`."""
    proto = OmegaConf.select(cfg, "finetune.protocol", default=None) or {}
    n_folds = int(proto.get("folds", 1) or 1)
    if n_folds > 1 and not hasattr(data.datamodule, "set_fold"):
        raise ConfigError(f"finetune.protocol.folds={n_folds} needs data split into folds, which this data does not "
                          f"offer; set finetune.protocol.folds=1")
    dm_folds = getattr(data.datamodule, "n_folds", None)
    if n_folds > 1 and dm_folds is not None and dm_folds != n_folds:
        raise ConfigError(f"finetune.protocol.folds={n_folds} but the data is split into {dm_folds} folds")
    folds: list = list(range(n_folds)) if n_folds > 1 else [None]
    seeds = [int(s) for s in (proto.get("seeds") or [cfg.seed])]
    lrs = [float(v) for v in (proto.get("lrs") or [cfg.finetune.lr])]
    if _fast(cfg):  # a smoke run touches every path once
        folds, seeds, lrs = folds[:1], seeds[:1], lrs[:1]
    return folds, seeds, lrs


def _fit_selected(cfg: DictConfig, run: RunFolder, spec, data: DataBundle, source, mode: str, seed: int,
                  lrs: list[float], steps: int, *, checkpoints: bool, scratch: bool = False):
    """Fit `mode` at each learning rate of `lrs` (one seed), keep the best on validation, score it on test.

    `source` is the pretrained model (or, with `scratch`, a prepared model whose architecture is
    re-initialised). Returns (model, y_true, y_pred on test, chosen lr, info metrics).
    """
    from neurofound.tasks.finetune import FinetuneTask, configure_mode, count_trainable, pooled_features

    ft = cfg.finetune
    info: dict[str, Any] = {}
    if mode == "linear":  # closed form: the probe picks its own strength by cross-validation on train
        torch.manual_seed(seed)
        model = spec.prepare(source, data)
        runtime.apply_runtime(model, cfg)
        configure_mode(model, spec, "frozen")  # validates the mode's availability and freezes the trunk
        from neurofound.eval.probes import logistic_probe, ridge_probe

        tr_x, tr_y = pooled_features(model, spec, spec.loader(data, "train"))
        te_x, te_y = pooled_features(model, spec, spec.loader(data, "test"))
        probe = (logistic_probe if spec.objective == "classification" else ridge_probe)(tr_x, tr_y, te_x)
        info.update({f"finetune/probe_{k}": v for k, v in probe.items() if k in ("alpha", "C")})
        for p in model.parameters():
            p.requires_grad_(True)
        return model, te_y, probe["pred"], float("nan"), info
    best = None
    for lr in lrs:
        torch.manual_seed(seed)
        if scratch:
            model = spec.scratch(source)
        else:
            model = spec.prepare(source, data)
        runtime.apply_runtime(model, cfg)
        wrapped = configure_mode(model, spec, mode, lora_rank=int(ft.lora.rank), lora_alpha=float(ft.lora.alpha),
                                 lora_dropout=float(ft.lora.dropout),
                                 lora_targets=list(ft.lora.targets or []) or None)
        trainable, total = count_trainable(model)
        task = FinetuneTask(model, spec, mode, lr=lr, weight_decay=float(ft.get("weight_decay", 0.0)),
                            warmup_steps=int(ft.warmup_steps), max_steps=steps,
                            backbone_lr_scale=float(ft.get("backbone_lr_scale", 1.0)))
        first = checkpoints and best is None  # the fit whose checkpoints and log the run folder keeps
        extra = {} if first else {"logger": False}
        trainer = runtime.build_trainer(cfg, run.root, checkpoints=first, max_steps=steps,
                                        val_check_interval=max(1, min(steps, int(cfg.trainer.val_check_interval))),
                                        **extra)
        trainer.fit(task, datamodule=data.datamodule)
        val_score = None
        if len(lrs) > 1:
            yv, pv = spec.predict(model, spec.loader(data, "val"))
            val_score = float(next(iter(spec.score(yv, pv).values())))
        if best is None or (val_score is not None and val_score > best[0]):
            best = (val_score, lr, model, wrapped, trainable, total)
    _, lr, model, wrapped, trainable, total = best
    info.update({"finetune/trainable_params": trainable, "finetune/trainable_fraction": trainable / total})
    if wrapped:
        info["finetune/lora_layers"] = len(wrapped)
    y_true, y_pred = spec.predict(model, spec.loader(data, "test"))
    if wrapped:
        from neurofound.nn.lora import merge_lora

        merge_lora(model)  # the saved model is the plain architecture
    for p in model.parameters():
        p.requires_grad_(True)
    return model, y_true, y_pred, lr, info


def _finetune_notes(metrics: dict[str, Any], mode: str) -> list[str]:
    """One line per headline metric: the fine-tuned model against from-scratch and every `<metric>_*_baseline`.

    A difference inside the larger of the two spreads (`_sd`) over folds and seeds is called a tie.
    """
    notes = []
    for key, value in sorted(metrics.items()):
        if not key.startswith("test/") or value is None or key.endswith(("_sd", "_scratch")) or "_baseline" in key:
            continue
        others = [("from scratch", f"{key}_scratch")]
        others += [(k[len(key) + 1:-len("_baseline")].replace("_", " ") + " baseline", k) for k in sorted(metrics)
                   if k.startswith(f"{key}_") and k.endswith("_baseline")]
        parts = []
        for name, other in others:
            base = metrics.get(other)
            if base is None:
                continue
            spread = max(float(metrics.get(f"{key}_sd") or 0.0), float(metrics.get(f"{other}_sd") or 0.0))
            if abs(value - base) <= spread:
                verdict = "a tie within the spread over folds and seeds"
            elif value > base:
                verdict = "the fine-tuned model is better"
            else:
                verdict = f"**the {name} wins**"
            parts.append(f"{name} {base:.3f} ({verdict})")
        if parts:
            notes.append(f"{key.split('/', 1)[1]}: fine-tuned ({mode}) {value:.3f} vs " + "; ".join(parts) + ".")
    return notes


def export(ckpt: str, out: str, push_to_hub: str | None = None) -> Path:
    """Write a model folder (the same card as `train`: contract, training data, metrics) and push it."""
    from neurofound.models.registry import load_pretrained

    model = load_pretrained(ckpt)
    out_dir = Path(out)
    model.save_pretrained(out_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
    return out_dir


def listing(config_dir: Path) -> str:
    """Families (sizes, recipe, tokenizers, converter), tokenizers and experiments."""
    import yaml

    from neurofound import tokenizers
    from neurofound.models.registry import families

    lines = ["families:"]
    for name, fam in families().items():
        lines.append(f"  {name:<22} {fam.model_class.__name__} (sizes: {', '.join(fam.builders) or '-'}; "
                     f"tokenizers: {', '.join(fam.tokenizers) or '-'}; "
                     f"converter: {'yes' if fam.converter else 'no'})")
    lines.append("tokenizers:")
    lines += [f"  {name}" for name in tokenizers.available()]
    lines.append("experiments:")
    for p in sorted((config_dir / "experiment").glob("*.yaml")):
        text = p.read_text()
        first = next((ln.lstrip("# ").strip() for ln in text.splitlines()
                      if ln.startswith("#") and "@package" not in ln), "")
        recipe = (yaml.safe_load(text) or {}).get("recipe", "")
        lines.append(f"  {p.stem:<26} [{recipe}] {first}")
    return "\n".join(lines)


def check_resume_overrides(overrides: list[str]) -> None:
    """`resume=<run>` continues with the run's own config: only trainer.max_steps may change."""
    bad = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(("resume", "trainer.max_steps"))]
    if bad:
        raise ConfigError(f"resume continues with the run folder's config.yaml; only trainer.max_steps may be "
                          f"changed, got {bad}")


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no config.yaml, so it cannot be resumed; pass the folder of a "
                              f"`neurofound train` run")
    return OmegaConf.load(path)
