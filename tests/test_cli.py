"""The command line end to end: train -> eval / generate / export / finetune, and user mistakes."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import FAST, ok as _ok, run_cli, user_error as _user_error

pytestmark = pytest.mark.slow

REQUIRED = ["test/id_loss", "test/dt_loss", "test/id_acc", "test/set_f1", "test/psth_corr", "test/behavior_r",
            "test/connectivity_auroc", "test/connectivity_auprc", "test/connectivity_auroc_nonhub",
            "test/connectivity_auroc_untrained", "test/connectivity_auroc_corr_baseline",
            "test/connectivity_auroc_lagcorr_baseline", "test/connectivity_auroc_pcorr_baseline"]


def test_train_writes_the_run_folder(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    missing = [k for k in REQUIRED if k not in metrics]
    assert not missing, f"metrics.json lacks {missing}"
    for k in REQUIRED:
        assert metrics[k] is None or isinstance(metrics[k], float)
    assert metrics["train/steps"] == 4
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    for f in ("config.json", "model.safetensors", "README.md", "tokenizer/tokenizer_config.json"):
        assert (trained_run / "model" / f).is_file(), f
    card = (trained_run / "model" / "README.md").read_text()
    assert "n_neurons" in card and "test/id_loss" in card
    for f in ("raster.png", "connectivity.png", "behavior.png", "report.md"):
        assert (trained_run / "report" / f).is_file(), f
    report = (trained_run / "report" / "report.md").read_text()
    assert "connectivity.png" in report


def test_checkpoint_loads_safely_and_matches_the_model_folder(trained_run):
    from neurofound.models.registry import load_pretrained

    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["neurofound"]["model_type"] == "neuroformer"
    a = load_pretrained(trained_run / "checkpoints" / "last.ckpt")
    b = load_pretrained(trained_run)  # a run folder means its model/
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.tokenizer.config == b.tokenizer.config


def test_eval_and_generate_on_a_run_folder(trained_run, tmp_path):
    out = tmp_path / "eval"
    _ok(run_cli("eval", "experiment=quickstart", *FAST, f"ckpt={trained_run}", f"hydra.run.dir={out}"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test/id_loss" in metrics and "test/connectivity_auroc" in metrics
    gen = tmp_path / "gen"
    _ok(run_cli("generate", "experiment=quickstart", *FAST, f"ckpt={trained_run}/model", "generate.max_windows=16",
                "generate.n_stretches=2", f"hydra.run.dir={gen}"))
    import numpy as np

    z = np.load(gen / "generated.npz")
    assert z["spike_times"].shape == z["unit_ids"].shape
    assert (z["unit_ids"] < 100).all() and (z["unit_ids"] >= 0).all()
    assert (gen / "report" / "raster.png").is_file()


def test_export_and_list(trained_run, tmp_path):
    proc = _ok(run_cli("export", f"ckpt={trained_run}/checkpoints/last.ckpt", f"out={tmp_path / 'exported'}"))
    assert "exported" in proc.stdout
    from neurofound.models.neuroformer import Neuroformer

    m = Neuroformer.from_pretrained(tmp_path / "exported")
    assert m.config.n_neurons == 100
    listing = _ok(run_cli("list")).stdout
    for word in ("neuroformer", "spike", "quickstart", "neuroformer_behavior", "neuroformer_nwb"):
        assert word in listing


@pytest.mark.parametrize("mode", ["frozen", "linear", "full", "lora"])
def test_finetune_modes_report_scratch_baseline(trained_run, tmp_path, mode):
    out = tmp_path / mode
    _ok(run_cli("finetune", "experiment=neuroformer_behavior", *FAST, f"init={trained_run}/model",
                f"finetune.mode={mode}", "finetune.steps=3", "finetune.train_fraction=0.05", f"hydra.run.dir={out}"))
    m = json.loads((out / "metrics.json").read_text())
    for k in ("test/behavior_r", "test/behavior_r2", "test/behavior_r_scratch", "test/behavior_r2_scratch"):
        assert k in m
    assert "train_fraction 0.05" in (out / "model" / "README.md").read_text()
    assert (out / "model" / "model.safetensors").is_file()
    if mode == "lora":
        assert 0 < m["finetune/trainable_fraction"] < 0.2 and m["finetune/lora_layers"] > 0
        from neurofound.models.neuroformer import Neuroformer

        Neuroformer.from_pretrained(out / "model")  # saved merged: the plain architecture loads strictly


def test_user_mistakes_print_a_message_not_a_traceback(tmp_path):
    _user_error(run_cli("train", "experiment=nope", f"hydra.run.dir={tmp_path / 'a'}"), "nope", "quickstart")
    _user_error(run_cli("train", "experiment=quickstart", "not_a_key=1", f"hydra.run.dir={tmp_path / 'b'}"),
                "not_a_key")
    _user_error(run_cli("eval", "experiment=quickstart", f"ckpt={tmp_path / 'missing'}",
                        f"hydra.run.dir={tmp_path / 'c'}", *FAST), "missing")
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    _user_error(run_cli("export", f"ckpt={bad}", f"out={tmp_path / 'x'}"), "corrupt")
    _user_error(run_cli("export", f"ckpt={bad}"), "out=")
    _user_error(run_cli("frobnicate"), "unknown command")
    _user_error(run_cli("convert", "family=nope", f"reference={tmp_path}", f"out={tmp_path / 'y'}"), "nope")


def test_convert_the_reference_fixture(tmp_path):
    from helpers import ROOT

    ref = ROOT / "tests" / "fixtures" / "reference" / "neuroformer"
    _ok(run_cli("convert", "family=neuroformer", f"reference={ref}", f"out={tmp_path / 'nf'}"))
    from neurofound.models.neuroformer import Neuroformer

    assert Neuroformer.from_pretrained(tmp_path / "nf").config.reference_compat is True


def test_multirun_seeds(tmp_path):
    proc = _ok(run_cli("train", "-m", "experiment=quickstart", *FAST, "seed=0,1", "eval.generate=false",
                       "eval.untrained_baseline=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"))
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(runs) == 2, proc.stdout[-2000:]
    losses = [json.loads((r / "metrics.json").read_text())["test/id_loss"] for r in runs]
    assert losses[0] != losses[1]  # different seeds, different models


def test_wandb_logger_offline(tmp_path):
    pytest.importorskip("wandb")
    run = tmp_path / "wb"
    _ok(run_cli("train", "experiment=quickstart", *FAST, "logger=wandb", "eval.generate=false",
                "eval.untrained_baseline=false", f"hydra.run.dir={run}", env={"WANDB_MODE": "offline"}))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, f"no offline wandb run under {run / 'wandb'}"
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 4


def test_trainer_ddp_from_the_command_line(tmp_path):
    """`trainer=ddp` re-launches the command in a second process (gloo on CPU) and still writes one run folder."""
    run = tmp_path / "ddp"
    _ok(run_cli("train", "experiment=quickstart", *FAST, "trainer=ddp", "eval.generate=false",
                "eval.untrained_baseline=false", f"hydra.run.dir={run}", env={"OMP_NUM_THREADS": "1"}))
    m = json.loads((run / "metrics.json").read_text())
    assert m["train/steps"] == 4 and "test/id_loss" in m
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_trainer_fsdp_from_the_command_line(tmp_path):
    """`trainer=fsdp` (ModelParallelStrategy + FSDP2, 2 CPU processes over gloo): the saved model is the
    gathered, unsharded one and loads on its own."""
    run = tmp_path / "fsdp"
    _ok(run_cli("train", "experiment=quickstart", *FAST, "trainer=fsdp", "eval.generate=false",
                "eval.untrained_baseline=false", f"hydra.run.dir={run}", env={"OMP_NUM_THREADS": "1"}))
    m = json.loads((run / "metrics.json").read_text())
    assert m["train/steps"] == 4 and "test/id_loss" in m
    assert (run / "checkpoints" / "last.ckpt").is_dir()  # a sharded (distributed) checkpoint folder
    from neurofound.models.registry import load_pretrained

    model = load_pretrained(run)
    assert model.config.n_embd == 32 and model.tokenizer is not None
