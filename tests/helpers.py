"""Helpers shared by the command-line tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `neurofound ARGS...` in a fresh process; returns the CompletedProcess (text mode)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("NEUROFOUND_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "neurofound.cli", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


# Small, fast versions of the embedded data and model for command-line tests.
FAST = [
    "data.duration=20", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false", "eval.max_windows=32", "eval.n_stretches=2", "eval.max_batches=2",
    "model.n_embd=32", "model.n_state_layers=1", "model.n_history_layers=1", "model.n_stimulus_layers=1",
]
