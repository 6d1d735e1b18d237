"""Shared test setup: an isolated data cache, offline hubs, and a helper to run the CLI."""

from __future__ import annotations

import os
import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Keep caches out of the user's home, never touch the network, plot without a display."""
    os.environ.setdefault("NEUROFOUND_CACHE", str(tmp_path_factory.mktemp("neurofound-cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, _isolated_env):
    """One small quickstart run shared by the command-line tests (train -> eval, export, finetune, ...)."""
    from helpers import FAST, ok, run_cli

    run = tmp_path_factory.mktemp("runs") / "quick"
    # eval.max_windows is large enough to cover a PSTH bin, so every quickstart metric exists
    ok(run_cli("train", "experiment=quickstart", *FAST, "eval.max_windows=200", f"hydra.run.dir={run}"))
    return run
