"""BrainOmni from the command line: stage 1 -> stage 2 -> fine-tuning, a user's own files, and user mistakes.

Everything runs on the CI-sized simulated corpus (`data.size=ci`) with a handful of steps: these tests prove the
paths work end to end and write what a user reads; the figures themselves are measured by scripts/bench_brainomni.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from helpers import ok, run_cli, user_error

pytestmark = pytest.mark.slow

FAST = ["data.size=ci", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "eval.max_batches=2"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bo") / "stage1"
    ok(run_cli("train", "experiment=brainomni_tokenizer_sim", *FAST, "eval.cross_device_pairs=2",
               f"hydra.run.dir={run}"))
    return run


@pytest.fixture(scope="module")
def stage2(stage1, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bo") / "stage2"
    ok(run_cli("train", "experiment=brainomni_sim", f"tokenizer.pretrained={stage1}", *FAST, "data.segment_seconds=4",
               f"hydra.run.dir={run}"))
    return run


def test_stage1_reports_every_reconstruction_metric_and_plot(stage1):
    m = json.loads((stage1 / "metrics.json").read_text())
    for key in ("test/recon_corr", "test/recon_corr_eeg", "test/recon_corr_mag", "test/recon_corr_grad",
                "test/recon_corr_unseen_device_eeg", "test/recon_corr_unseen_device_meg",
                "test/recon_corr_unseen_device", "test/recon_corr_masked_channels", "test/recon_corr_cross_device",
                "test/recon_mse", "test/codebook_usage", "test/codebook_usage_level1", "test/codebook_usage_level4",
                "test/codebook_perplexity_min"):
        assert key in m and np.isfinite(m[key]), key
    assert m["test/recon_corr_unseen_device"] == min(m["test/recon_corr_unseen_device_eeg"],
                                                     m["test/recon_corr_unseen_device_meg"])
    assert m["test/codebook_usage"] == min(m[f"test/codebook_usage_level{q}"] for q in range(1, 5))
    report = stage1 / "report"
    for png in ("reconstruction_held_in", "reconstruction_unseen_device", "topomap_held_in", "topomap_unseen_device",
                "codebook_usage"):
        assert (report / f"{png}.png").stat().st_size > 1000, png
    text = (report / "report.md").read_text()
    assert "interpolation" in text and "90% target" in text
    card = (stage1 / "model" / "README.md").read_text()
    assert "Preprocessing" in card and "256 Hz" in card and "common average" in card
    assert (stage1 / "model" / "tokenizer" / "tokenizer.safetensors").is_file()


def test_stage2_embeds_its_tokenizer_and_loads_on_its_own(stage1, stage2, tmp_path):
    import shutil

    from neurofound.models.registry import load_pretrained

    m = json.loads((stage2 / "metrics.json").read_text())
    for q in range(1, 5):
        assert f"test/masked_acc_level{q}" in m
    assert "test/masked_loss" in m and "test/masked_acc_level1_unigram_baseline" in m
    assert (stage2 / "report" / "masked_accuracy.png").is_file()
    weights = load_file(str(stage2 / "model" / "model.safetensors"))
    assert weights and not any(k.startswith("tokenizer.") for k in weights)  # stored once, under tokenizer/
    # the stage-1 run can go away: the stage-2 model folder holds everything it needs
    moved = tmp_path / "model"
    shutil.copytree(stage2 / "model", moved)
    model = load_pretrained(moved)
    tok1 = load_file(str(stage1 / "model" / "tokenizer" / "tokenizer.safetensors"))
    for k, v in model.tokenizer.state_dict().items():
        assert (v == tok1[k]).all(), k
    assert float(model.tokenizer.quantizer.rvq.layers[0]._codebook.inited) == 1.0


def test_finetune_lora_on_stage2_reports_balanced_accuracy_and_baselines(stage2, tmp_path):
    out = tmp_path / "lora"
    ok(run_cli("finetune", "experiment=brainomni_decode", f"init={stage2}/model", "data.size=ci",
               "finetune.mode=lora", "finetune.steps=3", "finetune.protocol.seeds=[0]", "finetune.protocol.lrs=[1e-3]",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"))
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test/balanced_acc", "test/balanced_acc_sd", "test/balanced_acc_scratch",
                "test/balanced_acc_csp_baseline"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
    assert m["finetune/runs"] == 5 and m["finetune/lora_layers"] > 0  # five subject-wise folds, one seed
    assert (out / "model" / "config.json").is_file()
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["n_classes"] == 3 and cfg["model_type"] == "brainomni"


def test_finetune_frozen_selects_the_learning_rate_on_validation(stage2, tmp_path):
    out = tmp_path / "frozen"
    ok(run_cli("finetune", "experiment=brainomni_decode", f"init={stage2}", "data.size=ci", "finetune.steps=3",
               "finetune.protocol.seeds=[0,1]", "finetune.protocol.lrs=[1e-4,1e-2]", "trainer.enable_progress_bar=false",
               f"hydra.run.dir={out}"))
    m = json.loads((out / "metrics.json").read_text())
    assert m["finetune/runs"] == 10 and m["finetune/seeds"] == 2
    assert m["finetune/lr_selected_median"] in (1e-4, 1e-2, 5.0005e-3)


def _write_user_file(tmp_path: Path, *, montage: bool = True) -> Path:
    """A real recording file a user could bring: one simulated raw (native rate, line noise) saved as FIF."""
    from neurofound.data.meeg_sim import simulate_raw_example

    raw = simulate_raw_example("biosemi64", seed=5, seconds=12.0)
    if not montage:
        raw.set_montage(None)
    path = tmp_path / "user_raw.fif"
    raw.save(path, overwrite=True)
    return path


def test_eval_scores_a_users_own_recording(stage1, tmp_path):
    path = _write_user_file(tmp_path)
    out = tmp_path / "eval"
    ok(run_cli("eval", "experiment=brainomni_tokenizer_sim", f"ckpt={stage1}/model", "data=mne", f"data.path={path}",
               "eval.max_batches=2", f"hydra.run.dir={out}"))
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test/recon_corr"]) and np.isfinite(m["test/recon_corr_eeg"])
    assert (out / "report" / "topomap_held_in.png").is_file()


def test_eeg_without_positions_asks_for_a_montage(stage1, tmp_path):
    path = _write_user_file(tmp_path, montage=False)
    user_error(run_cli("eval", "experiment=brainomni_tokenizer_sim", f"ckpt={stage1}/model", "data=mne",
                       f"data.path={path}", f"hydra.run.dir={tmp_path / 'x'}"), "montage")
    out = tmp_path / "with_montage"
    ok(run_cli("eval", "experiment=brainomni_tokenizer_sim", f"ckpt={stage1}/model", "data=mne", f"data.path={path}",
               "data.montage=biosemi64", "eval.max_batches=1", f"hydra.run.dir={out}"))


def test_pretrain_on_a_users_files(tmp_path):
    path = _write_user_file(tmp_path)
    out = tmp_path / "own"
    ok(run_cli("train", "experiment=brainomni_tokenizer_sim", "data=mne", f"data.path=[{path}]", "data.segment_seconds=2",
               "trainer.max_steps=2", "trainer.val_check_interval=1", "trainer.limit_val_batches=1",
               "trainer.enable_progress_bar=false", "eval.max_batches=1", f"hydra.run.dir={out}"))
    assert "test/recon_corr" in json.loads((out / "metrics.json").read_text())


def test_stage2_without_a_tokenizer_is_a_user_error(tmp_path):
    user_error(run_cli("train", "experiment=brainomni_sim", *FAST, f"hydra.run.dir={tmp_path}"),
               "tokenizer.pretrained")


def test_tokenizer_family_has_no_finetuning(stage1, tmp_path):
    user_error(run_cli("finetune", "experiment=brainomni_tokenizer_sim", f"init={stage1}", "data.size=ci",
                       f"hydra.run.dir={tmp_path}"), "stage 1")
