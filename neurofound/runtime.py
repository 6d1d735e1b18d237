"""What jobs and recipes both use: seeding, the trainer, runtime settings, the recorded config.

Nothing here names a family. Recipes call these to build their stages; `jobs.py` calls them for
the verbs every family shares.
"""

from __future__ import annotations

import csv
import inspect
import io
import os
import logging
import random
import re
from pathlib import Path
from typing import Any, Iterable

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from neurofound.errors import ConfigError
from neurofound.io import atomic_write_text
from neurofound.runfolder import AtomicCheckpointIO, RunFolder

log = logging.getLogger("neurofound")

__all__ = ["RunFolder", "prepare", "apply_runtime", "build_trainer", "ResumeStateCallback", "validate_targets",
           "check_recorded_targets", "merge_recorded_data", "to_plain", "read_csv_log", "prepend_csv_log"]


# ------------------------------------------------------------------------------------------------
# Seeds, threads, runtime settings
# ------------------------------------------------------------------------------------------------
def prepare(cfg: DictConfig) -> None:
    """Seed every generator from `cfg.seed` and set the torch thread count (`cfg.threads`)."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


def apply_runtime(model: torch.nn.Module, cfg: DictConfig | None = None, *, backend: str | None = None,
                  compile: bool | None = None) -> torch.nn.Module:
    """Apply the settings that are never saved with a model: the attention backend and `compile`.

    Args:
        model: a freshly built or loaded model (changed in place).
        cfg: a config with `attention.backend` and `compile` (either may be absent).
        backend, compile: explicit values (override `cfg`).

    Returns:
        The model (compiled in place with `nn.Module.compile` when `compile` is on, so that its
        state-dict keys and its saving are unchanged).
    """
    from neurofound.nn.attention import set_backend

    if cfg is not None:
        backend = backend if backend is not None else OmegaConf.select(cfg, "attention.backend", default=None)
        compile = compile if compile is not None else OmegaConf.select(cfg, "compile", default=False)
    if backend:
        set_backend(model, str(backend))
    if compile:
        model.compile()
    return model


# ------------------------------------------------------------------------------------------------
# Trainer
# ------------------------------------------------------------------------------------------------
class ResumeStateCallback(L.Callback):
    """What exact resume needs beyond Lightning's own checkpoint: the RNG states, and the log on disk.

    Lightning restores the model, optimiser, loops and a stateful train loader, but not the global
    generators that dropout and random masking draw from; without them a resumed run diverges from
    an uninterrupted one at the first random draw. The torch, numpy and Python states are saved
    with every checkpoint and restored from it. The loggers are flushed at every checkpoint, so a
    killed run's log on disk reaches its last checkpoint.

    A checkpoint saved at the end of a training step (`every_n_train_steps`) is written before
    Lightning sends that step's metrics to the loggers (it does so right after the
    `on_train_batch_end` callbacks), and a resumed run does not run that step again. So the row the
    loggers are about to receive is stored in the checkpoint (`LOG_ROW_KEY`); `jobs.train` puts it
    back into the log of a resumed run whose killed predecessor did not write it.
    """

    LOG_ROW_KEY = "neurofound_pending_log_row"

    def __init__(self):
        self._in_train_batch_end = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning runs checkpoint callbacks after every other callback: a checkpoint saved from now
        # until the next batch, validation or the end of training is one saved at this step's end
        self._in_train_batch_end = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._in_train_batch_end = False

    def on_validation_start(self, trainer, pl_module) -> None:
        self._in_train_batch_end = False

    def on_train_end(self, trainer, pl_module) -> None:
        self._in_train_batch_end = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()
        connector = trainer._logger_connector
        if self._in_train_batch_end and trainer.loggers and connector.should_update_logs:
            # what `_LoggerConnector.log_metrics` will log for this step (Lightning 2.x)
            from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

            metrics = convert_tensors_to_scalars(connector.metrics["log"])
            if metrics:
                metrics.setdefault("epoch", trainer.current_epoch)
                checkpoint[self.LOG_ROW_KEY] = {"step": int(trainer.fit_loop.epoch_loop._batches_that_stepped),
                                                "metrics": metrics}

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": _python_state_to_plain(random.getstate()),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        np.random.set_state(_numpy_state_from_plain(state_dict["numpy"]))
        random.setstate(_python_state_from_plain(state_dict["python"]))
        if state_dict.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _numpy_state_to_plain(state) -> dict[str, Any]:
    # plain containers and tensors only, so that checkpoints load with torch.load(weights_only=True)
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_plain(d: dict[str, Any]):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _python_state_to_plain(state) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_plain(d: dict[str, Any]):
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])


def build_trainer(cfg: DictConfig, run_dir: Path, *, checkpoint_dir: Path | None = None, checkpoints: bool = True,
                  **overrides) -> L.Trainer:
    """The Lightning trainer of `cfg.trainer` with the run's logger and callbacks.

    Args:
        cfg: the run config (`trainer`, `logger`, `callbacks`).
        run_dir: the run folder (Lightning's default_root_dir).
        checkpoint_dir: where this stage's ModelCheckpoint callbacks write (default `<run>/checkpoints`).
        checkpoints: False for throw-away fits (e.g. a from-scratch baseline): no checkpoint callbacks.
        overrides: Trainer keyword arguments that win over the config (e.g. a stage's max_steps;
            `logger=False` for a throw-away fit that writes no log).
    """
    logger = overrides.pop("logger") if "logger" in overrides else instantiate(cfg.logger) if cfg.get("logger") \
        else False
    skip = set() if checkpoints else {"checkpoint", "periodic"}
    if logger is False:
        skip.add("lr_monitor")  # Lightning's LearningRateMonitor refuses a trainer without a logger
    if not cfg.trainer.get("enable_progress_bar", True):
        skip.add("progress")  # Lightning refuses a progress-bar callback when the bar is off
    callbacks: list[L.Callback] = []
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else RunFolder(run_dir).checkpoints
    for name, c in (cfg.get("callbacks") or {}).items():
        if c is None or name in skip:
            continue
        if "ModelCheckpoint" in str(c.get("_target_", "")):
            callbacks.append(instantiate(c, dirpath=str(ckpt_dir)))
        else:
            callbacks.append(instantiate(c))
    callbacks.append(ResumeStateCallback())
    # atomic single-file checkpoints; a sharded (FSDP) checkpoint is a folder the strategy writes itself
    kwargs = dict(logger=logger, callbacks=callbacks, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()])
    if not checkpoints:
        kwargs["enable_checkpointing"] = False
    kwargs.update(overrides)
    return instantiate(cfg.trainer, **kwargs)


def read_csv_log(path: Path, *, before_step: int, pending: dict | None = None) -> list[dict[str, str]]:
    """The rows of a CSV metrics log logged before `before_step` (the checkpoint a run resumes from).

    `pending` is the row the checkpoint stored for its own step (`ResumeStateCallback.LOG_ROW_KEY`);
    it is added when the killed run did not get to write it.
    """
    path = Path(path)
    rows = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "") == "" or int(float(r["step"])) < before_step]
    if pending:
        step = str(pending["step"])
        if not any(r.get("step") == step and any(r.get(k) for k in pending["metrics"]) for r in rows):
            rows.append({**{k: str(v) for k, v in pending["metrics"].items()}, "step": step})
    return rows


def prepend_csv_log(path: Path, rows: list[dict[str, str]]) -> None:
    """Put `rows` (an interrupted run's log up to its checkpoint) before what the resumed run logged.

    Lightning's CSVLogger starts a fresh file in a folder that already holds one, and a killed run's
    rows after its last checkpoint were logged again by the resumed run, so the log is rebuilt as
    rows-before-the-checkpoint + the resumed run's rows.
    """
    path = Path(path)
    if not rows:
        return
    new = []
    if path.is_file():
        with path.open(newline="") as f:
            new = list(csv.DictReader(f))
    keys = sorted({k for r in rows + new for k in r})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows + new)
    atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------
# Config checks
# ------------------------------------------------------------------------------------------------
def to_plain(node: Any) -> Any:
    """An OmegaConf node as plain Python containers (resolved)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _callable_keys(target: str) -> tuple[set[str] | None, str]:
    """Accepted keyword names of a `_target_` (None: accepts anything), and a description."""
    from neurofound.models.registry import builders, get_family, resolve

    try:
        fn = resolve(target if ":" in target else _colon(target))
    except Exception:
        return None, target  # instantiate will report an unimportable target itself
    fam = builders().get(target.rsplit(".", 1)[-1])
    if fam is not None and getattr(fn, "__module__", "") == get_family(fam).model_class.__module__:
        import dataclasses

        cfg_cls = get_family(fam).model_class.config_class
        return {f.name for f in dataclasses.fields(cfg_cls)}, f"{target} ({cfg_cls.__name__})"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, target
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None, target
    return {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL,) and n != "self"}, target


def _colon(target: str) -> str:
    """`a.b.c.Name` -> `a.b.c:Name` (the last importable module split)."""
    import importlib

    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return f"{module}:{'.'.join(parts[i:])}"
    return target


# Keys of a config group that neurofound reads itself and never passes to the group's `_target_`.
RESERVED_KEYS = {"tokenizer": ("pretrained",)}


def instantiate_node(node: DictConfig, **kwargs) -> Any:
    """`hydra.utils.instantiate` without the group's reserved keys (e.g. `tokenizer.pretrained`)."""
    reserved = {k for keys in RESERVED_KEYS.values() for k in keys}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    for key in reserved:
        plain.pop(key, None)
    return instantiate(plain, **kwargs)


def validate_targets(cfg: Any, *, path: str = "") -> None:
    """Every `_target_` node's keys must be arguments its callable accepts (`ConfigError` naming the key
    and listing the valid ones). Hydra's own keys (`_partial_`, `_convert_`, ...) and the group's
    reserved keys (`RESERVED_KEYS`) are skipped."""
    if isinstance(cfg, (DictConfig, ListConfig)) and (cfg._is_none() or cfg._is_missing()):
        return
    if isinstance(cfg, DictConfig):
        target = cfg.get("_target_") if "_target_" in cfg else None
        if isinstance(target, str):
            accepted, what = _callable_keys(target)
            if accepted is not None:
                reserved = set(RESERVED_KEYS.get(path, ()))
                keys = [k for k in cfg.keys() if not (str(k).startswith("_") and str(k).endswith("_"))
                        and k not in reserved]
                unknown = [k for k in keys if k not in accepted]
                if unknown:
                    where = f"{path}." if path else ""
                    raise ConfigError(f"unknown key {where}{unknown[0]} for {what}; valid keys: "
                                      f"{', '.join(sorted(accepted))}")
        for key in cfg.keys():
            if not path and key == "hydra":
                continue
            child = cfg._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                validate_targets(child, path=f"{path}.{key}" if path else str(key))
    elif isinstance(cfg, ListConfig):
        for i, child in enumerate(cfg):
            if isinstance(child, (DictConfig, ListConfig)):
                validate_targets(child, path=f"{path}[{i}]")


def check_recorded_targets(node: Any, *, source: str, allowed: Iterable[str] = ()) -> None:
    """A config recorded in a model (possibly from the Hub) may only instantiate `neurofound.` callables,
    or those of the plugin modules the user named (`allowed`: `plugins` and $NEUROFOUND_PLUGINS)."""
    prefixes = ("neurofound.", *(f"{m}." for m in allowed))
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(prefixes):
            raise ConfigError(f"{source} asks to instantiate {target!r}; a recorded config may only name "
                              f"neurofound.* targets (or those of your plugins). Pass data=<group> to choose "
                              f"the data yourself")
        for value in node.values():
            check_recorded_targets(value, source=source, allowed=allowed)
    elif isinstance(node, list):
        for value in node:
            check_recorded_targets(value, source=source, allowed=allowed)


_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


def recordable_data_config(cfg: DictConfig) -> dict:
    """`cfg.data` as a model records it: interpolations inside `data` stay live (so that a later
    `data.seed=2` also moves `data.recording.seed: ${data.seed}`); references to anything outside
    `data` (`${seed}`, `${model.block_size}`) are resolved to the values this run used."""

    def walk(node, path):
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            refs = _INTERPOLATION.findall(node)
            inner = all(r.split(":")[-1].strip().startswith("data.") for r in refs)
            if not inner:
                value = OmegaConf.select(cfg, path, throw_on_missing=False)
                return to_plain(value)
        return node

    return walk(OmegaConf.to_container(cfg.data, resolve=False), "data")


def _data_overrides(overrides: Iterable[str]) -> tuple[list[str], bool]:
    """The user's `data.*` overrides (as `key=value` dotlist) and whether they chose another data group."""
    dotlist, new_group = [], False
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "data" or key.startswith("data/"):
            new_group = True
        elif key.startswith("data."):
            dotlist.append(o.lstrip("+~"))
    return dotlist, new_group


def merge_recorded_data(cfg: DictConfig, recorded: dict | None, overrides: Iterable[str], *, source: str) -> bool:
    """Replace `cfg.data` by the data config a model was trained on, with the user's `data.*`
    overrides applied on top. Choosing another data group (`data=nwb`) keeps the composed one.

    Returns:
        True when the recorded config was used.
    """
    dotlist, new_group = _data_overrides(overrides)
    if not recorded or new_group:
        return False
    from neurofound.models.registry import PLUGINS_ENV

    plugins = [*(cfg.get("plugins") or []), *(m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m)]
    check_recorded_targets(recorded, source=source, allowed=plugins)
    merged = OmegaConf.create(recorded)
    if dotlist:
        user = OmegaConf.from_dotlist([d[len("data."):] for d in dotlist])
        merged = OmegaConf.merge(merged, user)
    with _open_struct(cfg):
        cfg.data = merged
    return True


class _open_struct:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def __enter__(self):
        self.flag = OmegaConf.is_struct(self.cfg)
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc):
        OmegaConf.set_struct(self.cfg, self.flag)
        return False
