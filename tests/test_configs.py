"""Every shipped config composes, every `_target_` instantiates, every experiment runs (fast_dev_run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import OmegaConf, open_dict

from helpers import FAST, run_cli
from neurofound.cli import CONFIG_DIR, _register_resolvers
from neurofound.runtime import instantiate_node, validate_targets

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
GROUPS = {g: sorted(p.stem for p in (CONFIG_DIR / g).glob("*.yaml"))
          for g in ("model", "data", "task", "trainer", "logger", "callbacks", "tokenizer", "eval", "finetune")}


def _compose(config_name="train", overrides=(), output_dir="."):
    _register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):  # what a real run sets before the job starts
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _targets(node, path=""):
    """Yield (path, node) for every mapping with a _target_ under `node`."""
    if OmegaConf.is_dict(node):
        if "_target_" in node:
            yield path, node
        for k in node:
            if k == "hydra":
                continue
            yield from _targets(node[k], f"{path}.{k}" if path else str(k))
    elif OmegaConf.is_list(node):
        for i, v in enumerate(node):
            yield from _targets(v, f"{path}[{i}]")


def test_config_groups_are_present():
    assert {"quickstart", "neuroformer_behavior", "neuroformer_nwb"} <= set(EXPERIMENTS)
    assert {"cpu", "gpu", "ddp", "fsdp"} <= set(GROUPS["trainer"])
    assert {"csv", "wandb"} <= set(GROUPS["logger"])
    for verb in ("train", "finetune", "eval", "generate"):
        assert (CONFIG_DIR / f"{verb}.yaml").is_file()
    assert (CONFIG_DIR / "hydra" / "launcher" / "submitit_slurm_neurofound.yaml").is_file()


def _experiment_using(group: str, option: str) -> str | None:
    """An experiment that selects `group=option` (so the option is composed with its own family's groups)."""
    import yaml

    exps = {name: yaml.safe_load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()) or {}
            for name in EXPERIMENTS}
    for name, text in exps.items():
        for entry in text.get("defaults", []) or []:
            if isinstance(entry, dict) and entry.get(f"override /{group}") == option:
                return name
    if group == "model":  # a size no experiment uses: an experiment of its family
        from neurofound.models.registry import builders

        target = (yaml.safe_load((CONFIG_DIR / "model" / f"{option}.yaml").read_text()) or {}).get("_target_", "")
        family = builders().get(str(target).rsplit(".", 1)[-1])
        return next((name for name, text in exps.items() if text.get("recipe") == family), None)
    return None


# group options that need a value no default provides (a user's file), and the experiment a user's-data group is
# combined with on the command line (`neurofound train experiment=brainomni_tokenizer_sim data=mne ...`)
_REQUIRED = {("data", "nwb"): ["data.path=x.nwb"], ("data", "mne"): ["data.path=x.fif"]}
_COMPOSED_WITH = {("data", "mne"): "brainomni_tokenizer_sim"}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_target_instantiates(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    experiment = _COMPOSED_WITH.get((group, option)) or _experiment_using(group, option)
    overrides = [f"{group}={option}", f"hydra.run.dir={tmp_path}", *_REQUIRED.get((group, option), [])]
    if experiment is not None:
        overrides.insert(0, f"experiment={experiment}")
    cfg = _compose(overrides=overrides, output_dir=tmp_path)
    if OmegaConf.select(cfg, "data.duration") is not None:  # the spike simulator: a 3-s network is enough here
        cfg = _compose(overrides=[*overrides, "data.duration=3"], output_dir=tmp_path)
    found = list(_targets(cfg))
    assert found, "no _target_ in the composed config"
    validate_targets(cfg)  # every key is a real argument of its target (a builder's: of its config)
    for path, node in found:
        get_method(node._target_)  # importable
        if (path == "data.recording" and option == "nwb") or path == "data.corpus":
            continue  # a user's file / the EEG-MEG corpus: tests/data/ and the experiment runs below read them
        extra = {}
        if path == "trainer" and node.get("accelerator") == "gpu" and not torch.cuda.is_available():
            # the GPU trainers' other keys are still checked by instantiating them on the CPU
            extra = {"accelerator": "cpu", "precision": "32-true", "strategy": "auto", "devices": 1}
        obj = instantiate_node(node, **extra)
        assert obj is not None, path
    GlobalHydra.instance().clear()


def test_slurm_launcher_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(overrides=["hydra/launcher=submitit_slurm_neurofound", f"hydra.run.dir={tmp_path}"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.timeout_min == 720
    get_method(launcher._target_)
    GlobalHydra.instance().clear()


def test_unknown_key_is_refused():
    with pytest.raises(Exception, match="not_a_key"):
        _compose(overrides=["not_a_key=3"])
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def nwb_file(tmp_path_factory) -> Path:
    """A small NWB file with units, a speed TimeSeries and a trials table (written with pynwb)."""
    from datetime import datetime, timezone

    import numpy as np
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    rng = np.random.default_rng(0)
    nwb = NWBFile(session_description="test", identifier="t", session_start_time=datetime.now(timezone.utc))
    for _ in range(12):
        nwb.add_unit(spike_times=np.sort(rng.uniform(0, 30, 200)))
    t = np.arange(0, 30, 0.05)
    nwb.add_acquisition(TimeSeries(name="speed", data=np.sin(t) + 1, timestamps=t, unit="cm/s"))
    for s in range(0, 30, 5):
        nwb.add_trial(start_time=float(s), stop_time=float(s + 5))
    path = tmp_path_factory.mktemp("nwb") / "session.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    w = np.zeros((12, 12))
    w[1, 0] = 1.0
    np.save(path.with_suffix(".npy"), w)
    return path


# BrainOmni's stages build on each other: stage 2 needs a stage-1 tokenizer, decoding a stage-2 model
BRAINOMNI_FAST = ["data.size=ci", "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def brainomni_stages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("brainomni_fast")
    proc = run_cli("train", "experiment=brainomni_tokenizer_sim", *BRAINOMNI_FAST, f"hydra.run.dir={root / 's1'}")
    assert proc.returncode == 0, proc.stderr[-5000:]
    proc = run_cli("train", "experiment=brainomni_sim", f"tokenizer.pretrained={root / 's1'}", *BRAINOMNI_FAST,
                   "data.segment_seconds=4", f"hydra.run.dir={root / 's2'}")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return {"brainomni_tokenizer_sim": root / "s1", "brainomni_sim": root / "s2"}


def _brainomni_run(experiment: str, stages: dict[str, Path], tmp_path: Path) -> tuple[Path, str]:
    if experiment in stages:  # run by the fixture
        return stages[experiment], {"brainomni_tokenizer_sim": "test/recon_corr",
                                    "brainomni_sim": "test/masked_loss"}[experiment]
    assert experiment == "brainomni_decode", f"add {experiment} to the BrainOmni chain of this test"
    proc = run_cli("finetune", f"experiment={experiment}", f"init={stages['brainomni_sim']}", *BRAINOMNI_FAST,
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return tmp_path / "run", "test/balanced_acc"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment, tmp_path, nwb_file, request):
    if experiment.startswith("brainomni"):
        run, key = _brainomni_run(experiment, request.getfixturevalue("brainomni_stages"), tmp_path)
        metrics = json.loads((run / "metrics.json").read_text())
        assert key in metrics and np.isfinite(metrics[key]), (key, metrics)
        return
    extra = list(FAST) + ["trainer.fast_dev_run=true"]
    if experiment == "neuroformer_nwb":
        extra = [o for o in extra if not o.startswith("data.duration")]
        extra += [f"data.path={nwb_file}", "data.behavior=[speed]", f"data.true_weights={nwb_file.with_suffix('.npy')}",
                  "data.split_mode=trials"]
    if experiment == "neuroformer_base":
        extra = [o for o in extra if not o.startswith("model.")] + ["trainer=cpu", "data.batch_size=2"]
    proc = run_cli("train", f"experiment={experiment}", *extra, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test/id_loss" in metrics and metrics["test/id_loss"] > 0
    if experiment == "neuroformer_nwb":
        assert "test/connectivity_auroc" in metrics and "test/behavior_r" in metrics
