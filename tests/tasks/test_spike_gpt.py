"""SpikeGPTTask._token_metrics: the logged token losses and accuracies against a hand computation."""

import math
from types import SimpleNamespace

import pytest
import torch

from neurofound.tasks.spike_gpt import SpikeGPTTask

ID_PAD, DT_PAD = 3, 2


class _Stub(torch.nn.Module):
    config = SimpleNamespace(id_pad=ID_PAD, dt_pad=DT_PAD, behavior_targets={})


def test_token_metrics_by_hand():
    task = SpikeGPTTask(_Stub())
    # id: batch 1, 3 tokens, 4 classes; the third target is PAD (ignored)
    id_logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]])
    target_id = torch.tensor([[0, 1, ID_PAD]])
    # dt: 3 classes; targets 1, 0, 1 (no PAD), arg-max 1, 1, 0 -> one right
    dt_logits = torch.tensor([[[0.0, 1.0, 0.0], [0.0, math.log(3.0), 0.0], [1.0, 0.0, 0.0]]])
    target_dt = torch.tensor([[1, 0, 1]])
    out = SimpleNamespace(id_logits=id_logits, dt_logits=dt_logits,
                          loss={"total": torch.tensor(9.0), "id": torch.tensor(1.0), "dt": torch.tensor(1.0),
                                "speed": torch.tensor(0.5), "clip": torch.tensor(0.25)})
    m = task._token_metrics({"target_id": target_id, "target_dt": target_dt}, out)

    ce_row0 = -math.log(math.exp(2) / (math.exp(2) + 3))  # target 0 with logit 2 among 0, 0, 0
    ce_row1 = math.log(4)  # uniform over 4 classes
    assert m["id_loss"].item() == pytest.approx((ce_row0 + ce_row1) / 2, rel=1e-6)
    assert m["id_acc"].item() == pytest.approx(1 / 2)  # row 0 right, row 1 wrong (arg-max 0), PAD not counted

    e = math.e
    ce_dt = [-math.log(e / (e + 2)), -math.log(1 / 5), -math.log(1 / (e + 2))]
    assert m["dt_loss"].item() == pytest.approx(sum(ce_dt) / 3, rel=1e-6)
    assert m["dt_acc"].item() == pytest.approx(1 / 3)

    assert m["behavior_speed_loss"].item() == 0.5 and m["clip_loss"].item() == 0.25
    assert set(m) == {"id_loss", "id_acc", "dt_loss", "dt_acc", "behavior_speed_loss", "clip_loss"}


def test_token_accuracy_of_an_all_pad_batch_is_zero_not_nan():
    task = SpikeGPTTask(_Stub())
    out = SimpleNamespace(id_logits=torch.zeros(1, 2, 4), dt_logits=torch.zeros(1, 2, 3), loss={"total": torch.tensor(0.0)})
    m = task._token_metrics({"target_id": torch.full((1, 2), ID_PAD), "target_dt": torch.full((1, 2), DT_PAD)}, out)
    assert m["id_acc"].item() == 0.0 and m["dt_acc"].item() == 0.0
