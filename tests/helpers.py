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


def ok(proc):
    """Assert a CLI run succeeded (showing its output otherwise) and return it."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def user_error(proc, *needles: str):
    """A user's mistake: exit status 2, one clear message, no Python traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}: {text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in:\n{text[-2000:]}"


def compose(verb: str, overrides: list[str]):
    """The config `neurofound VERB OVERRIDES...` would run (composed in this process, not resolved)."""
    from neurofound.cli import _compose, _register_resolvers

    _register_resolvers()
    return _compose(verb, overrides)
