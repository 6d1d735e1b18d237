"""`neurofound <verb>`: compose the config, instantiate, run, write the run folder.

```
neurofound train     experiment=NAME [key=value ...]
neurofound finetune  experiment=NAME init=DIR|HUB_ID|CKPT [finetune.mode=frozen|linear|full|lora]
neurofound eval      experiment=NAME ckpt=DIR|HUB_ID|CKPT
neurofound generate  experiment=NAME ckpt=DIR|HUB_ID|CKPT
neurofound export    ckpt=CKPT|DIR out=DIR [push_to_hub=ORG/NAME]
neurofound convert   family=NAME reference=DIR out=DIR
neurofound list
```

The four Hydra verbs accept every Hydra override (`hydra.run.dir=...`, `-m seed=0,1,2`,
`trainer=ddp`, `logger=wandb`, `hydra/launcher=submitit_slurm`). A user's mistake (a missing file,
bad data, an unknown key) prints one message naming the problem and exits with status 2; set
`NEUROFOUND_DEBUG=1` to see the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
HYDRA_VERBS = ("train", "finetune", "eval", "generate")
OTHER_VERBS = ("export", "convert", "list")

log = logging.getLogger("neurofound")


class UsageError(Exception):
    """A mistake in how the command was called (printed without a traceback)."""


# Exceptions that describe a problem with the user's input rather than a bug in neurofound.
USER_ERRORS = (UsageError, ValueError, FileNotFoundError, NotImplementedError, KeyError)


def _fail(message: str) -> None:
    print(f"neurofound: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _guarded(fn):
    """Run `fn`, turning a user error into a one-line message (traceback with NEUROFOUND_DEBUG=1)."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            if os.environ.get("NEUROFOUND_DEBUG"):
                raise
            msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            _fail(f"{msg}")

    return wrapper


# ------------------------------------------------------------------------------------------------
# Hydra verbs
# ------------------------------------------------------------------------------------------------
def _job(verb: str):
    def job(cfg):
        from hydra.core.hydra_config import HydraConfig

        from neurofound import jobs

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # Lightning prints through its own console handler; without this every line shows twice
        logging.getLogger("lightning.pytorch").propagate = False
        return _guarded(getattr(jobs, verb))(cfg, run_dir)

    return job


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("nf.is_set"):
        OmegaConf.register_new_resolver("nf.is_set", lambda value: value is not None)


def _run_hydra(verb: str, overrides: list[str]) -> None:
    import hydra

    _register_resolvers()

    argv = sys.argv
    # Hydra reads its overrides from sys.argv[1:]. The verb travels in the environment, so that
    # processes re-launched with the same overrides (Lightning's DDP launcher does that) know it.
    os.environ["NEUROFOUND_VERB"] = verb
    sys.argv = [argv[0], *overrides]
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=verb, version_base="1.3")(_job(verb))()
    finally:
        sys.argv = argv


# ------------------------------------------------------------------------------------------------
# Plain verbs (no config composition)
# ------------------------------------------------------------------------------------------------
def _parse_kv(args: list[str], allowed: dict[str, bool], verb: str) -> dict[str, str]:
    """Parse `key=value` arguments; `allowed` maps key -> required."""
    out: dict[str, str] = {}
    for arg in args:
        if "=" not in arg:
            raise UsageError(f"'{verb}' takes key=value arguments, got {arg!r} (e.g. "
                             f"{' '.join(k + '=...' for k in allowed)})")
        key, value = arg.split("=", 1)
        if key not in allowed:
            raise UsageError(f"unknown argument {key!r} for '{verb}'; it accepts: {', '.join(allowed)}")
        out[key] = value
    missing = [k for k, required in allowed.items() if required and k not in out]
    if missing:
        raise UsageError(f"'{verb}' needs {', '.join(k + '=...' for k in missing)}")
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
        raise UsageError("'list' takes no arguments")
    print(jobs.listing())


USAGE = __doc__.split("```")[1].strip("\n")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + USAGE)
        return
    verb, rest = argv[0], argv[1:]
    if "=" in verb and os.environ.get("NEUROFOUND_VERB") in HYDRA_VERBS:
        # a worker process re-launched by Lightning (DDP) with the parent's overrides only
        verb, rest = os.environ["NEUROFOUND_VERB"], argv
    if verb in HYDRA_VERBS:
        _run_hydra(verb, rest)
    elif verb == "export":
        _export(rest)
    elif verb == "convert":
        _convert(rest)
    elif verb == "list":
        _list(rest)
    else:
        _fail(f"unknown command {verb!r}; choose one of: {', '.join(HYDRA_VERBS + OTHER_VERBS)}")


if __name__ == "__main__":
    main()
