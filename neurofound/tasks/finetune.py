"""Few-shot behaviour decoding from a pretrained spike GPT (the paper's fine-tuning protocol).

The pretrained model is fine-tuned on a small contiguous fraction of the training split and
compared with the same architecture trained from scratch on the same fraction, with the same
number of steps and the same optimiser settings. Modes:

* `frozen`: the trunk is frozen; the behaviour head and behaviour blocks train on the behaviour loss.
* `linear`: a ridge probe (alpha by contiguous cross-validation on the fraction) on pooled frozen features.
* `full`: every parameter trains on the model's full objective (spike tokens + behaviour).

The from-scratch baseline always trains every parameter on the full objective: a frozen random
trunk would be a straw man.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from neurofound.eval.probes import ridge_probe
from neurofound.models.neuroformer import Neuroformer
from neurofound.runfolder import RunFolder
from neurofound.tasks.spike_eval import _to, teacher_forced

log = logging.getLogger(__name__)


def with_behavior_heads(pretrained: Neuroformer, targets: list[str]) -> Neuroformer:
    """Copy of `pretrained` with regression heads for `targets` (new heads freshly initialised).

    Only the new behaviour-head weights may be missing; any other difference is an error.
    """
    cfg = pretrained.config.to_dict()
    cfg["behavior_targets"] = {v: {"objective": "regression"} for v in targets}
    model = Neuroformer(type(pretrained.config).from_dict(cfg))
    missing, unexpected = model.load_state_dict(pretrained.state_dict(), strict=False)
    new = {k for k in missing if k.startswith("behavior_heads.")}
    other_missing = sorted(set(missing) - new)
    unexpected = [k for k in unexpected if not k.startswith("behavior_heads.")]
    if other_missing or unexpected:
        raise ValueError(f"pretrained weights do not fit: missing {other_missing}, unexpected {unexpected}")
    model.tokenizer = pretrained.tokenizer
    return model


@torch.no_grad()
def pooled_features(model, loader, var: str) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    xs, ys = [], []
    dev = next(model.parameters()).device
    for batch in loader:
        batch = _to(batch, dev)
        xs.append(model.features(batch).float().cpu().numpy())
        ys.append(batch["behavior_target"][var].reshape(-1).cpu().numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _train(cfg, run_dir: Path, model, dm, objective: str, *, checkpoints: bool, steps: int):
    from neurofound.jobs import build_trainer

    ft = cfg.finetune
    task = instantiate(cfg.task)(model=model, lr=float(ft.lr), warmup_steps=int(ft.warmup_steps),
                                 max_steps=steps, objective=objective)
    trainer = build_trainer(cfg, run_dir, checkpoints=checkpoints, max_steps=steps,
                            val_check_interval=max(1, min(steps, int(cfg.trainer.val_check_interval))))
    trainer.fit(task, datamodule=dm)
    return trainer


def run_finetune(cfg, run_dir: Path, mode: str):
    from neurofound.jobs import build_datamodule, check_contract
    from neurofound.models.registry import load_pretrained

    pretrained = load_pretrained(cfg.init)
    if pretrained.config.behavior_targets:
        log.warning("the pretrained model already has behaviour heads %s: it saw behaviour labels during "
                    "pretraining, so this is not a label-free few-shot comparison",
                    sorted(pretrained.config.behavior_targets))
    targets = list(cfg.finetune.targets or [])
    if not targets:
        raise ValueError("finetune needs a behaviour variable to decode: set finetune.targets=[speed] "
                         "(or data.behavior=[your variable])")
    dm = build_datamodule(cfg, tokenizer=pretrained.tokenizer, behavior_targets=targets)
    check_contract(pretrained, dm)
    var = targets[0]
    steps = int(cfg.finetune.steps)
    if int(cfg.trainer.get("fast_dev_run") or 0):
        steps = 1
    rf = RunFolder(run_dir)
    metrics: dict[str, float] = {"finetune/train_windows": len(dm.intervals["train"]),
                                 "finetune/train_fraction": float(dm.train_fraction), "finetune/steps": steps}

    # 1. the pretrained model, adapted by `mode`
    model = with_behavior_heads(pretrained, targets)
    if mode == "linear":
        tr_x, tr_y = pooled_features(model, dm.dataloader("train"), var)
        te_x, te_y = pooled_features(model, dm.dataloader("test"), var)
        probe = ridge_probe(tr_x, tr_y, te_x, te_y)
        y_true, y_pred = te_y, probe["pred"]
        metrics.update({"test/behavior_r": probe["r"], "test/behavior_r2": probe["r2"],
                        "finetune/ridge_alpha": probe["alpha"]})
    else:
        if mode == "frozen":
            for p in model.trunk_parameters():
                p.requires_grad_(False)
        objective = "behavior" if mode == "frozen" else "total"
        _train(cfg, run_dir, model, dm, objective, checkpoints=True, steps=steps)
        tf, beh = teacher_forced(model, dm.dataloader("test"))
        metrics.update({"test/behavior_r": tf["test/behavior_r"], "test/behavior_r2": tf["test/behavior_r2"],
                        "test/id_loss": tf["test/id_loss"], "test/id_acc": tf["test/id_acc"]})
        y_true, y_pred = beh[var]
    for p in model.parameters():
        p.requires_grad_(True)

    # 2. the same architecture from scratch, same fraction, same steps, same optimiser settings
    torch.manual_seed(int(cfg.seed))
    scratch = Neuroformer(type(model.config).from_dict(model.config.to_dict()))
    scratch.tokenizer = model.tokenizer
    _train(cfg, run_dir, scratch, dm, "total", checkpoints=False, steps=steps)
    tf_s, _ = teacher_forced(scratch, dm.dataloader("test"))
    metrics.update({"test/behavior_r_scratch": tf_s["test/behavior_r"],
                    "test/behavior_r2_scratch": tf_s["test/behavior_r2"]})
    log.info("behaviour r (%s, fraction %g): fine-tuned %.3f vs from scratch %.3f", mode, dm.train_fraction,
             metrics["test/behavior_r"], metrics["test/behavior_r_scratch"])

    from neurofound.eval import plots

    y_t = dm.denormalize_behavior(var, np.asarray(y_true)) if var in dm.behavior_stats else y_true
    y_p = dm.denormalize_behavior(var, np.asarray(y_pred)) if var in dm.behavior_stats else y_pred
    figures = {"behavior": plots.plot_behavior(y_t, y_p, rf.report / "behavior.png", name=var)}
    return metrics, figures, model, dm
