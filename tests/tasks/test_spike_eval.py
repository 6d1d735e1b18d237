"""Behaviour scoring in tasks/spike_eval: regression targets get r / R^2, classification targets
balanced accuracy, with the data's and the model's class conventions in agreement."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neurofound.data.datamodule import SpikeDataModule
from neurofound.data.records import SpikeRecording
from neurofound.eval.metrics import balanced_accuracy
from neurofound.models.neuroformer import Neuroformer, NeuroformerConfig
from neurofound.tasks.spike_eval import behavior_metrics, teacher_forced
from neurofound.tokenizers.spike import SpikeTokenizer

EDGES = [5.0, 10.0]


class _Stub(torch.nn.Module):
    """Returns fixed behaviour logits; token logits are uniform."""

    behavior_classes = Neuroformer.behavior_classes

    def __init__(self, targets, logits):
        super().__init__()
        self.config = SimpleNamespace(id_pad=3, dt_pad=2, n_neurons=3, behavior_targets=targets)
        self.logits = logits
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch, need_weights=False):
        b, s = batch["target_id"].shape
        return SimpleNamespace(id_logits=torch.zeros(b, s, 4), dt_logits=torch.zeros(b, s, 3),
                               behavior=self.logits, attentions={})


def test_teacher_forced_scores_a_classification_target_with_balanced_accuracy():
    speed = torch.tensor([[1.0], [6.0], [12.0], [4.0], [8.0]])  # classes 0, 1, 2, 0, 1 (edges 5, 10)
    logits = {"speed": torch.eye(3)[[0, 1, 1, 2, 1]], "pupil": torch.tensor([[0.1], [0.4], [0.2], [0.9], [0.5]])}
    targets = {"speed": {"objective": "classification", "n_classes": 3, "bin_edges": EDGES},
               "pupil": {"objective": "regression"}}
    pupil = torch.tensor([[0.0], [0.5], [0.1], [1.0], [0.4]])
    batch = {"target_id": torch.zeros(5, 2, dtype=torch.long), "target_dt": torch.zeros(5, 2, dtype=torch.long),
             "behavior_target": {"speed": speed, "pupil": pupil}}
    metrics, behavior = teacher_forced(_Stub(targets, logits), [batch], split="test")
    # class 0: rows 0, 3 -> predicted 0, 2 (1/2); class 1: rows 1, 4 -> 1, 1 (1); class 2: row 2 -> 1 (0)
    assert metrics["test/behavior_speed_balanced_acc"] == pytest.approx(0.5)
    assert metrics["test/behavior_balanced_acc"] == pytest.approx(0.5)
    assert "test/behavior_speed_r" not in metrics
    assert metrics["test/behavior_r"] == pytest.approx(np.corrcoef(pupil.ravel(), logits["pupil"].ravel())[0, 1])
    assert "test/behavior_r2" not in metrics  # two targets: no single headline R^2
    np.testing.assert_array_equal(behavior["speed"], [[0, 1, 2, 0, 1], [0, 1, 1, 2, 1]])


def test_behavior_metrics_names():
    reg = {"speed": {"objective": "regression"}}
    out = behavior_metrics(reg, {"speed": [np.array([1.0, 2, 3])]}, {"speed": [np.array([1.0, 2, 4])]}, split="val")
    assert set(out) == {"val/behavior_r", "val/behavior_speed_r", "val/behavior_speed_r2", "val/behavior_r2"}
    cls = {"state": {"objective": "classification", "n_classes": 2}}
    out = behavior_metrics(cls, {"state": [np.array([0.0, 1, 1])]}, {"state": [np.array([0.0, 1, 0])]}, split="val")
    assert out == {"val/behavior_balanced_acc": 0.75, "val/behavior_state_balanced_acc": 0.75}
    assert behavior_metrics(cls, {"state": []}, {"state": []}, split="val") == {}


def test_datamodule_specs_build_the_model_and_classes_agree():
    """dm.behavior_target_specs() is the model config's behavior_targets; the model's classes of
    the batch targets are the data's raw values binned by the edges."""
    rng = np.random.default_rng(0)
    n, duration = 5, 12.0
    speed = np.abs(rng.normal(8.0, 5.0, int(duration * 20)))
    rec = SpikeRecording(spike_times=rng.uniform(0, duration, 400), unit_ids=rng.integers(0, n, 400), n_neurons=n,
                         duration=duration, behavior={"speed": (speed, 20.0)})
    tok = SpikeTokenizer(n, dt=0.01, window=0.05, window_prev=0.1, block_size=24, block_size_prev=40)
    dm = SpikeDataModule(rec, tok, batch_size=64, frames=False, behavior_targets=["speed"],
                         behavior_classes={"speed": {"bin_edges": EDGES}})
    specs = dm.behavior_target_specs()
    assert specs == {"speed": {"objective": "classification", "n_classes": 3, "bin_edges": EDGES}}
    cfg = NeuroformerConfig(n_neurons=n, n_dt=tok.n_dt, block_size=24, block_size_prev=40,
                            n_embd=16, n_head=2, n_state_layers=1, n_history_layers=1, n_stimulus_layers=0,
                            n_behavior_layers=0, behavior_targets=specs, dropout=0.0, attn_dropout=0.0)
    model = Neuroformer(cfg).eval()
    batch = next(iter(dm.dataloader("test")))
    raw = dm.tables["test"]["behavior_raw/speed"][batch["index"].numpy()]
    classes = model.behavior_classes("speed", batch["behavior_target"]["speed"]).numpy()
    np.testing.assert_array_equal(classes, np.searchsorted(EDGES, raw, side="left"))
    assert len(set(classes.tolist())) > 1

    metrics, behavior = teacher_forced(model, [batch], split="test")
    y, p = behavior["speed"]
    np.testing.assert_array_equal(y, classes)
    assert metrics["test/behavior_balanced_acc"] == pytest.approx(balanced_accuracy(y, p))
    assert "test/behavior_r" not in metrics
