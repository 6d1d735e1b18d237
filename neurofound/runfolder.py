"""The run folder every `neurofound` verb writes (see DESIGN.md, "The command line").

```
<run>/
  config.yaml       the resolved config actually used (after merging a model's recorded data config)
  metrics.json      flat {"split/metric": value} of the final evaluation (replaced by a re-run)
  checkpoints/      Lightning checkpoints (last.ckpt and best), written atomically
  model/            Hugging Face format: config.json, model.safetensors, training.json, README.md (+ tokenizer/)
  report/           PNG plots and report.md
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from neurofound.io import atomic_save_file, atomic_write_text, json_safe


class RunFolder:
    """Paths and writers of one run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def report(self) -> Path:
        p = self.root / "report"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def write_config(self, text: str) -> Path:
        """Write `config.yaml` (the resolved config of this run)."""
        return atomic_write_text(self.config_path, text)

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.exists() else {}

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write `metrics.json`: a flat, sorted `{"split/name": value}` dict. A re-run into the same
        folder replaces the file, so no stale key of an earlier run survives."""
        current: dict[str, Any] = {}
        for key, value in metrics.items():
            if "/" not in key:
                raise ValueError(f"metric name {key!r} must be 'split/name' (e.g. 'test/id_loss')")  # a bug, not the user's
            current[key] = json_safe(value)
        atomic_write_text(self.metrics_path, json.dumps(dict(sorted(current.items())), indent=2) + "\n")
        return self.metrics_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file, fsyncs, then renames.

    A crash or a full disk mid-save leaves the previous `last.ckpt` intact instead of a
    truncated file that would fail to resume.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        # torch.save streams into the temporary file: no second in-memory copy of the checkpoint
        atomic_save_file(path, lambda tmp: torch.save(checkpoint, tmp))
