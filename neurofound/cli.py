"""`neurofound <verb>`: compose and check the config, run the verb, report errors.

```
neurofound train     experiment=NAME [key=value ...]
neurofound train     resume=RUN_DIR [trainer.max_steps=N]
neurofound finetune  experiment=NAME init=DIR|HUB_ID|CKPT [finetune.mode=frozen|linear|full|lora]
neurofound eval      experiment=NAME ckpt=DIR|HUB_ID|CKPT
neurofound generate  experiment=NAME ckpt=DIR|HUB_ID|CKPT      (a family's extra verb)
neurofound export    ckpt=CKPT|DIR out=DIR [push_to_hub=ORG/NAME]
neurofound convert   family=NAME reference=DIR out=DIR
neurofound list
```

The config verbs accept every Hydra override (`hydra.run.dir=...`, `-m seed=0,1,2`, `trainer=ddp`,
`logger=wandb`, `hydra/launcher=submitit_slurm`). A family's extra verbs (a `<verb>.yaml` beside
`train.yaml`) run the same way. A user's mistake (`neurofound.errors.UserError`: a missing file,
bad data, an unknown key) prints one message naming the problem and exits with status 2; set
`NEUROFOUND_DEBUG=1` to see the traceback. Anything else is a bug in neurofound: its traceback is
printed, then a line saying so, and the exit status is 1.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from pathlib import Path

from neurofound.errors import ConfigError, UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CORE_VERBS = ("train", "finetune", "eval")
OTHER_VERBS = ("export", "convert", "list")
BUG_LINE = ("neurofound: this is a bug in neurofound, not a mistake in your command; please report it with the "
            "traceback above")

log = logging.getLogger("neurofound")


def config_verbs() -> tuple[str, ...]:
    """The verbs run through Hydra: train, finetune, eval and the families' extra verbs (`<verb>.yaml`)."""
    extra = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem not in CORE_VERBS)
    return (*CORE_VERBS, *extra)


def _fail(message: str) -> None:
    print(f"neurofound: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _guarded(fn):
    """Run `fn`: a UserError prints as one line (exit 2); any other exception is a bug (traceback, exit 1)."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            if os.environ.get("NEUROFOUND_DEBUG"):
                raise
            _fail(str(err))
        except SystemExit:
            raise
        except Exception:
            traceback.print_exc()
            print(BUG_LINE, file=sys.stderr)
            raise SystemExit(1)

    return wrapper


# ------------------------------------------------------------------------------------------------
# Checking the composed config before Hydra runs it
# ------------------------------------------------------------------------------------------------
def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("nf.is_set"):
        OmegaConf.register_new_resolver("nf.is_set", lambda value: value is not None)


def _compose(verb: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="neurofound"):
        return compose(config_name=verb, overrides=overrides)


def _keys_at(cfg, path: str) -> list[str]:
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.select(cfg, path) if path else cfg
    if not isinstance(node, DictConfig):
        return []
    return sorted(str(k) for k in node.keys() if not (str(k).startswith("_") and str(k).endswith("_")))


def _addable(cfg, parent: str, present: list[str]) -> str:
    """For a `_target_` node: the arguments its callable takes that the config does not set yet."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.select(cfg, parent) if parent else None
    if not (isinstance(node, DictConfig) and "_target_" in node):
        return ""
    from neurofound.runtime import _callable_keys

    accepted, _ = _callable_keys(str(node["_target_"]))
    extra = sorted(set(accepted or ()) - set(present))
    return f"; add another argument with +{parent}.KEY=VALUE: {', '.join(extra)}" if extra else ""


def check_overrides(verb: str, overrides: list[str]) -> None:
    """Compose the config once and refuse unknown keys, naming the key and listing the valid ones.

    Hydra refuses `model.x=1` with a message that lists nothing; `+model.x=1` and `+data.x=1` it
    accepts. Here every `+key` must land under a `_target_` whose callable takes it (checked by
    `runtime.validate_targets`), or create a new object with its own `_target_`.
    """
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf import DictConfig, OmegaConf

    plain = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))
             or o.lstrip("+~").startswith("hydra.searchpath")]
    try:
        cfg = _compose(verb, plain)
    except OverrideParseException as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    except ConfigCompositionException as err:
        text = f"{err} {err.__cause__ or ''}"
        m = re.search(r"Could not override '([^']+)'", text) or re.search(r"full_key: (\S+)", text)
        if m and "not in struct" in text:
            key = m.group(1)
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            base = _compose(verb, [o for o in plain if not o.lstrip("+~").startswith(key + "=")])
            valid = _keys_at(base, parent)
            more = _addable(base, parent, valid)
            raise ConfigError(f"unknown key {key}; valid keys{' of ' + parent if parent else ''}: "
                              f"{', '.join(valid)}{more}") from None
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise ConfigError(" ".join(lines)) from None
    added = [o.split("=", 1)[0].lstrip("+") for o in plain if o.startswith("+") and "/" not in o.split("=", 1)[0]]
    if added:
        base = _compose(verb, [o for o in plain if not o.startswith("+")])
        for key in added:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if isinstance(node, DictConfig) and "_target_" in node:
                continue  # runtime.validate_targets checks the callable takes it
            existed = OmegaConf.select(base, parent) is not None if parent else True
            if existed:
                raise ConfigError(f"unknown key {key}; valid keys{' of ' + parent if parent else ''}: "
                                  f"{', '.join(_keys_at(base, parent))}")
    from neurofound.models.registry import import_plugins
    from neurofound.runtime import validate_targets

    import_plugins(cfg.get("plugins") or [])
    validate_targets(cfg)


# ------------------------------------------------------------------------------------------------
# Config verbs
# ------------------------------------------------------------------------------------------------
def _job(verb: str):
    def job(cfg):
        from hydra.core.hydra_config import HydraConfig

        from neurofound import jobs

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # Lightning prints through its own console handler; without this every line shows twice
        logging.getLogger("lightning.pytorch").propagate = False
        fn = getattr(jobs, verb) if verb in CORE_VERBS else (lambda c, d: jobs.run_verb(verb, c, d))
        return _guarded(fn)(cfg, run_dir)

    return job


def _run_hydra(verb: str, overrides: list[str]) -> None:
    import hydra

    _register_resolvers()
    if not any(o in ("-m", "--multirun") or o.startswith("-") for o in overrides):
        _guarded(check_overrides)(verb, overrides)
    argv = sys.argv
    # Hydra reads its overrides from sys.argv[1:]. The verb travels in the environment, so that
    # processes re-launched with the same overrides (Lightning's DDP launcher does that) know it.
    os.environ["NEUROFOUND_VERB"] = verb
    sys.argv = [argv[0], *overrides]
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=verb, version_base="1.3")(_job(verb))()
    finally:
        sys.argv = argv


def _resume(rest: list[str]) -> None:
    """`neurofound train resume=RUN_DIR [trainer.max_steps=N]`: continue a killed run in its folder."""
    from omegaconf import OmegaConf

    from neurofound import jobs

    os.environ["NEUROFOUND_VERB"] = "train"
    run_dir = Path(next(o.split("=", 1)[1] for o in rest if o.startswith("resume="))).expanduser()
    jobs.check_resume_overrides(rest)
    cfg = jobs.load_run_config(run_dir)
    for o in rest:
        if o.lstrip("+~").startswith("trainer.max_steps="):
            OmegaConf.update(cfg, "trainer.max_steps", int(o.split("=", 1)[1]), force_add=True)
            if OmegaConf.select(cfg, "task.max_steps") is not None:
                OmegaConf.update(cfg, "task.max_steps", int(o.split("=", 1)[1]))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("lightning.pytorch").propagate = False
    jobs.train(cfg, run_dir, resume=True)


# ------------------------------------------------------------------------------------------------
# Plain verbs (no config composition)
# ------------------------------------------------------------------------------------------------
def _parse_kv(args: list[str], allowed: dict[str, bool], verb: str) -> dict[str, str]:
    """Parse `key=value` arguments; `allowed` maps key -> required."""
    out: dict[str, str] = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"'{verb}' takes key=value arguments, got {arg!r} (e.g. "
                              f"{' '.join(k + '=...' for k in allowed)})")
        key, value = arg.split("=", 1)
        if key not in allowed:
            raise ConfigError(f"unknown argument {key!r} for '{verb}'; it accepts: {', '.join(allowed)}")
        out[key] = value
    missing = [k for k, required in allowed.items() if required and k not in out]
    if missing:
        raise ConfigError(f"'{verb}' needs {', '.join(k + '=...' for k in missing)}")
    return out


@_guarded
def _export(args: list[str]) -> None:
    from neurofound import jobs

    kv = _parse_kv(args, {"ckpt": True, "out": True, "push_to_hub": False}, "export")
    path = jobs.export(kv["ckpt"], kv["out"], kv.get("push_to_hub"))
    print(f"exported to {path}")


@_guarded
def _convert(args: list[str]) -> None:
    from neurofound.models.convert import convert

    kv = _parse_kv(args, {"family": True, "reference": True, "out": True}, "convert")
    path = convert(kv["family"], kv["reference"], kv["out"])
    print(f"converted {kv['family']} reference weights to {path}")


@_guarded
def _list(args: list[str]) -> None:
    from neurofound import jobs

    if args:
        raise ConfigError("'list' takes no arguments")
    print(jobs.listing(CONFIG_DIR))


USAGE = __doc__.split("```")[1].strip("\n")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + USAGE)
        return
    verb, rest = argv[0], argv[1:]
    verbs = config_verbs()
    if "=" in verb and os.environ.get("NEUROFOUND_VERB") in verbs:
        # a worker process re-launched by Lightning (DDP) with the parent's overrides only
        verb, rest = os.environ["NEUROFOUND_VERB"], argv
    if verb == "train" and any(o.startswith("resume=") for o in rest):
        _guarded(_resume)(rest)
    elif verb in verbs:
        _run_hydra(verb, rest)
    elif verb == "export":
        _export(rest)
    elif verb == "convert":
        _convert(rest)
    elif verb == "list":
        _list(rest)
    else:
        _fail(f"unknown command {verb!r}; choose one of: {', '.join(verbs + OTHER_VERBS)}")


if __name__ == "__main__":
    main()
