"""Exact resume: a training run killed mid-epoch (SIGKILL) and resumed equals an uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, ok, run_cli, user_error

pytestmark = pytest.mark.slow

# 279 training windows at batch 64: 5 batches an epoch, so the checkpoint at step 7 is mid-epoch and
# the run crosses several epoch boundaries after it. Dropout is on, so the RNG states matter.
ARGS = ["experiment=quickstart", "data.duration=20", "trainer.max_steps=24", "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "callbacks.periodic.every_n_train_steps=7", "eval.generate=false", "eval.max_batches=2",
        "model.n_embd=32", "model.n_state_layers=1", "model.n_history_layers=1", "model.n_stimulus_layers=1",
        "model.dropout=0.1", "model.attn_dropout=0.1", "threads=1"]
TIMING = ("train/fit_seconds", "train/total_seconds")


def _curve(run: Path, key: str) -> dict[int, str]:
    """The last logged value of `key` per step (as written, so equality is bitwise)."""
    out = {}
    with (run / "logs" / "metrics.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get(key):
                out[int(row["step"])] = row[key]
    return out


def _kill_after_first_checkpoint(run: Path) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "neurofound.cli", "train", *ARGS, f"hydra.run.dir={run}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run never wrote a checkpoint"
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def test_killed_run_resumes_exactly(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    ok(run_cli("train", *ARGS, f"hydra.run.dir={full}"))
    step = _kill_after_first_checkpoint(killed)
    assert 0 < step < 24 and step % 5 != 0  # mid-epoch
    assert not (killed / "metrics.json").exists()  # it really died before the end
    # The worst moment for the kill: right after the checkpoint is written, before Lightning logs the
    # checkpoint's own step (it does so after the checkpoint callbacks). Make that the case every time.
    log = killed / "logs" / "metrics.csv"
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r["step"] == "" or int(r["step"]) < step - 1]
    with log.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)

    # only trainer.max_steps may change; anything else is the user's mistake, not a silent new run
    user_error(run_cli("train", f"resume={killed}", "model.n_embd=64"), "only trainer.max_steps")
    ok(run_cli("train", f"resume={killed}"))

    for key in ("train/loss", "train/id_acc", "val/loss"):
        a, b = _curve(full, key), _curve(killed, key)
        assert a and a == b, key  # bitwise: the same loss curve, before and after the kill
    ma = {k: v for k, v in json.loads((full / "metrics.json").read_text()).items() if k not in TIMING}
    mb = {k: v for k, v in json.loads((killed / "metrics.json").read_text()).items() if k not in TIMING}
    assert ma == mb
    assert (killed / "model" / "model.safetensors").read_bytes() == (full / "model" / "model.safetensors").read_bytes()


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """Checkpoints are written to a temporary file and renamed: a process killed while writing
    leaves the previous checkpoint whole."""
    path = tmp_path / "last.ckpt"
    torch.save({"global_step": 7, "state_dict": {"w": torch.ones(3)}}, path)
    code = textwrap.dedent(f"""
        import time

        from neurofound.io import atomic_save_file

        def writer(tmp):
            with open(tmp, "wb") as f:
                f.write(b"partial checkpoint bytes")
                f.flush()
                print("writing", flush=True)
                time.sleep(60)

        atomic_save_file({str(path)!r}, writer)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 7 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
