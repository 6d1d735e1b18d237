"""The spine: one registration per family, recipes, contracts, learned tokenizers, runtime settings,
recorded data configs, errors, and the toy family that lands as new files only.

Each test here fails on the pre-recipe code (the issue's "What was found" list).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch

from helpers import FAST, ROOT, ok, run_cli, user_error

PKG = ROOT / "neurofound"
TOY_CONFIGS = ROOT / "tests" / "toy_configs"
TOY = ["experiment=toy", f"hydra.searchpath=[file://{TOY_CONFIGS}]"]
TOY_ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
           "NEUROFOUND_PLUGINS": "toy_family"}


# ------------------------------------------------------------------------------------------------
# layers: imports point one way
# ------------------------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "neurofound" else parts[0]


# what each layer may not import (DESIGN.md: cli -> jobs -> recipes -> runtime/tasks -> {models, data, ...})
FORBIDDEN = {
    "tasks": {"jobs", "cli", "recipes", "runtime", "hydra"},
    "models": {"jobs", "cli", "recipes", "runtime", "tasks", "hydra", "lightning"},
    "data": {"jobs", "cli", "recipes", "runtime", "tasks", "hydra"},
    "eval": {"jobs", "cli", "recipes", "runtime", "tasks", "models", "hydra", "lightning"},
    "tokenizers": {"jobs", "cli", "recipes", "runtime", "tasks", "hydra", "lightning"},
    "nn": {"jobs", "cli", "recipes", "runtime", "tasks", "models", "data", "hydra", "lightning"},
    "runtime": {"jobs", "cli", "recipes"},
    "recipes": {"jobs", "cli"},
    "jobs": {"cli"},
    "io": {"jobs", "cli", "recipes", "runtime", "tasks", "models", "torch", "lightning", "hydra"},
    "errors": {"neurofound"},
}


def test_imports_point_one_way():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        layer = _layer(".".join(rel.parts))
        for target in _imports(path):
            t = _layer(target)
            if t in FORBIDDEN.get(layer, ()) and t != layer:
                bad.append(f"{rel} imports {target}")
    assert not bad, "\n".join(bad)


def test_shared_code_names_no_family():
    """jobs, cli and runtime know no family; adding one needs no edit there."""
    for name in ("jobs.py", "cli.py", "runtime.py", "recipes/base.py", "tasks/finetune.py", "tasks/base.py"):
        text = (PKG / name).read_text().lower()
        for word in ("neuroformer", "spiketokenizer", "spike_gpt", "evaluate_spike", "brainomni", "braintokenizer"):
            assert word not in text, f"{name} names {word}"


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------
def test_family_registered_in_one_place():
    from neurofound.models.registry import families, get_family
    from neurofound.recipes import get_recipe

    fam = get_family("neuroformer")
    assert fam.builder("neuroformer_small")().n_embd == 64
    assert get_recipe("neuroformer").family == "neuroformer"
    assert fam.converter_fn().__module__ == "neurofound.models.neuroformer_convert"
    assert "neuroformer" in families()
    with pytest.raises(KeyError, match="unknown model family 'nope'; known families: .*neuroformer"):
        get_family("nope")


def test_missing_model_type_is_an_error_not_a_default(tmp_path):
    from neurofound.models.registry import load_pretrained

    from models.test_neuroformer import model_for, tiny

    model_for(tiny()).save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "neuroformer"
    cfg.pop("model_type")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no 'model_type'"):
        load_pretrained(tmp_path / "m")
    cfg["model_type"] = "gpt5"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KeyError, match="unknown model family 'gpt5'"):
        load_pretrained(tmp_path / "m")


# ------------------------------------------------------------------------------------------------
# contracts, model config vs tokenizer config, runtime settings
# ------------------------------------------------------------------------------------------------
def test_contracts_round_trip_and_name_the_field():
    from neurofound.data.contracts import InputContract, SensorContract, SpikeContract, VolumeContract, VoxelContract

    spikes = SpikeContract(n_neurons=10, dt=0.01, window=0.05, window_prev=0.05, frame_shape=[3, 8, 8])
    for c in (spikes, SensorContract(("Cz", "MEG0111"), ("EEG", "MAG"), 256.0, 512),
              VoxelContract(feature_dim=512, n_voxels=1000), VolumeContract((91, 109, 91), (2.0, 2.0, 2.0), "MNI152")):
        assert InputContract.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match=r"dt: model 0\.01 vs data 0\.02"):
        spikes.check(SpikeContract(n_neurons=10, dt=0.02, window=0.05, window_prev=0.05))
    spikes.check(SpikeContract(n_neurons=10, dt=0.01, window=0.05, window_prev=0.05, behavior_inputs=("x",)))
    eeg_meg = SensorContract(("a", "b"), ("EEG", "MAG"), 256.0, 512)
    eeg_meg.check(SensorContract(("c", "d", "e"), ("EEG", "EEG", "EEG"), 256.0, 512))  # any channels, same types
    with pytest.raises(ValueError, match="sensor_types"):
        eeg_meg.check(SensorContract(("c",), ("SEEG",), 256.0, 512))
    with pytest.raises(ValueError, match="sampling_rate: model 256.0 vs data 250.0"):
        eeg_meg.check(SensorContract(("a",), ("EEG",), 250.0, 512))
    VoxelContract(512, 10).check(VoxelContract(512, 99999))
    with pytest.raises(ValueError, match="kind"):
        spikes.check(VoxelContract(512))


def test_model_config_holds_sizes_and_the_tokenizer_semantics():
    import dataclasses

    from neurofound.models.neuroformer import Neuroformer, NeuroformerConfig, neuroformer_small
    from neurofound.tokenizers.spike import SpikeTokenizer

    fields = {f.name for f in dataclasses.fields(NeuroformerConfig)}
    assert not fields & {"dt", "window", "window_prev", "frame_rate", "frame_window", "attention_backend"}
    cfg = neuroformer_small(n_neurons=5, frame_shape=None)
    m = Neuroformer(cfg)
    good = SpikeTokenizer(5, dt=0.01, window=0.05, window_prev=0.05, block_size=40, block_size_prev=80)
    m.attach_tokenizer(good)
    with pytest.raises(ValueError, match="n_dt: model 6 vs tokenizer 11"):
        m.attach_tokenizer(SpikeTokenizer(5, dt=0.005, window=0.05, window_prev=0.05, block_size=40,
                                          block_size_prev=80))
    with pytest.raises(ValueError, match="reference_compat: model False vs tokenizer True"):
        m.attach_tokenizer(SpikeTokenizer(5, block_size=40, block_size_prev=80, reference_compat=True))


def test_reference_compat_is_one_setting():
    """The top-level key reaches tokenizer and model together."""
    from helpers import compose

    from neurofound.recipes import get_recipe

    cfg = compose("train", ["experiment=quickstart", "reference_compat=true", "data.duration=20"])
    assert cfg.tokenizer.reference_compat is True and "reference_compat" not in cfg.model
    recipe = get_recipe("neuroformer")
    data = recipe.data(cfg)
    model = recipe.model(cfg, data)
    assert model.config.reference_compat is True and model.tokenizer.reference_compat is True


def test_backend_is_a_runtime_setting(tmp_path):
    """A model saved while `flash` was chosen loads and runs on CPU with sdpa; the backend is never saved."""
    from neurofound.models.neuroformer import Neuroformer
    from neurofound.nn.attention import set_backend
    from neurofound.nn.multihead import MultiHeadAttention
    from neurofound.runtime import apply_runtime

    from models.test_neuroformer import make_batch, model_for, tiny

    m = model_for(tiny())
    set_backend(m, "flash")
    m.save_pretrained(tmp_path / "m")
    assert "attention_backend" not in json.loads((tmp_path / "m" / "config.json").read_text())
    loaded = Neuroformer.from_pretrained(tmp_path / "m")
    apply_runtime(loaded, backend="sdpa")
    assert {mod.backend for mod in loaded.modules() if isinstance(mod, MultiHeadAttention)} == {"sdpa"}
    with torch.no_grad():
        out = loaded(make_batch(tiny()))
    assert torch.isfinite(out.loss["total"])
    keys = list(loaded.state_dict())
    apply_runtime(loaded, compile=True)  # in place: the same module, the same state-dict keys
    assert loaded._compiled_call_impl is not None and list(loaded.state_dict()) == keys


# ------------------------------------------------------------------------------------------------
# run folder
# ------------------------------------------------------------------------------------------------
def test_metrics_json_is_replaced_not_merged(tmp_path):
    from neurofound.runfolder import RunFolder

    rf = RunFolder(tmp_path)
    rf.write_metrics({"test/old": 1.0, "test/a": 2.0})
    rf.write_metrics({"test/a": 3.0})
    assert json.loads(rf.metrics_path.read_text()) == {"test/a": 3.0}


def test_run_folder_holds_the_config_used_and_the_report_reads_real_metrics(trained_run):
    import yaml

    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["recipe"] == "neuroformer" and cfg["data"]["duration"] == 20 and cfg["model"]["n_embd"] == 32
    assert "${" not in (trained_run / "config.yaml").read_text()  # resolved
    m = json.loads((trained_run / "metrics.json").read_text())
    report = (trained_run / "report" / "report.md").read_text()
    for windows, what in (("test", "held-out test windows"), ("train", "training windows")):
        auroc = m[f"{windows}/connectivity_auroc"]
        key = f"{windows}/connectivity_auroc_lagcorr_baseline"
        lag = max(m[key], m[f"{key}_plain"])  # the stronger version of the baseline
        line = next(ln for ln in report.splitlines() if "lagged cross-correlation" in ln and what in ln)
        assert f"{auroc:.3f} vs lagged cross-correlation of the raster {lag:.3f}" in line
        assert ("baseline wins" in line) == (lag >= auroc)


def test_export_card_states_contract_data_and_metrics(trained_run, tmp_path):
    ok(run_cli("export", f"ckpt={trained_run}/checkpoints/last.ckpt", f"out={tmp_path / 'x'}"))
    card = (tmp_path / "x" / "README.md").read_text()
    assert "Not recorded" not in card
    m = json.loads((trained_run / "metrics.json").read_text())
    assert "n_neurons (must match) | 100" in card and "brian2-lif: 100 neurons, 20 s" in card
    assert f"| test/id_loss | {m['test/id_loss']:.4g} |" in card


# ------------------------------------------------------------------------------------------------
# eval starts from the data the model was trained on
# ------------------------------------------------------------------------------------------------
def test_eval_uses_the_recorded_data_config(tmp_path):
    import yaml

    run = tmp_path / "seed1"
    ok(run_cli("train", "experiment=quickstart", *FAST, "data.seed=1", "eval.generate=false",
               "eval.connectivity=false", "eval.untrained_baseline=false", f"hydra.run.dir={run}"))
    ev = tmp_path / "eval"
    ok(run_cli("eval", "experiment=quickstart", f"ckpt={run}", "eval.generate=false", "eval.connectivity=false",
               "eval.max_batches=2", f"hydra.run.dir={ev}"))
    used = yaml.safe_load((ev / "config.yaml").read_text())
    assert used["data"]["seed"] == 1 and used["data"]["recording"]["seed"] == 1 and used["data"]["duration"] == 20
    a, b = (json.loads((p / "metrics.json").read_text())["test/id_loss"] for p in (run, ev))
    assert a == pytest.approx(b, rel=1e-6)  # the same held-out windows of the same (seed-1) network
    # a data.* override applies on top of the recorded config
    ev2 = tmp_path / "eval2"
    ok(run_cli("eval", "experiment=quickstart", f"ckpt={run}", "data.seed=2", "eval.generate=false",
               "eval.connectivity=false", "eval.max_batches=2", f"hydra.run.dir={ev2}"))
    assert yaml.safe_load((ev2 / "config.yaml").read_text())["data"]["recording"]["seed"] == 2


def test_recorded_configs_only_instantiate_neurofound_targets():
    from omegaconf import OmegaConf

    from neurofound.runtime import merge_recorded_data

    cfg = OmegaConf.create({"data": {"x": 1}})
    evil = {"recording": {"_target_": "os.system", "command": "echo hi"}}
    with pytest.raises(ValueError, match="os.system"):
        merge_recorded_data(cfg, evil, [], source="hub:evil/model")
    assert merge_recorded_data(cfg, evil, ["data=lif"], source="x") is False  # the user chose the data


def test_untrained_baseline_is_a_fresh_model(trained_run, tmp_path):
    """With init=, connectivity_auroc_untrained is a freshly initialised model's (the same as a run
    from scratch on the same data and seed), not a copy of the pretrained one."""
    run = tmp_path / "init"
    ok(run_cli("train", "experiment=quickstart", *FAST, "eval.max_windows=200", f"init={trained_run}",
               f"hydra.run.dir={run}"))
    a = json.loads((trained_run / "metrics.json").read_text())["test/connectivity_auroc_untrained"]
    b = json.loads((run / "metrics.json").read_text())["test/connectivity_auroc_untrained"]
    assert a == pytest.approx(b, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,key,valid", [
    ("model.x=1", "model.x", "n_embd"),
    ("+model.unknown_key=1", "model.unknown_key", "n_embd"),
    ("+data.zzz=1", "data.zzz", "duration"),
    ("+zzz=1", "zzz", "seed"),
])
def test_unknown_keys_name_the_key_and_list_the_valid_ones(tmp_path, override, key, valid):
    user_error(run_cli("train", "experiment=quickstart", override, f"hydra.run.dir={tmp_path}"), key, valid)


def test_a_bug_keeps_its_traceback(tmp_path):
    proc = run_cli("train", *TOY, "data.fail_with_bug=true", f"hydra.run.dir={tmp_path}", env=TOY_ENV)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-2000:]
    assert "Traceback" in text and "a deliberate bug inside the toy family" in text
    assert "this is a bug in neurofound" in text


def test_validation_raises_user_errors():
    """Validation code raises UserError subclasses (printed as one line), never bare ValueError."""
    from neurofound.errors import UserError

    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                line = path.read_text().splitlines()[node.lineno - 1]
                if name in ("ValueError", "KeyError", "FileNotFoundError") and "not the user's" not in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "raise a neurofound.errors class instead:\n" + "\n".join(offenders)
    assert issubclass(UserError, Exception)


# ------------------------------------------------------------------------------------------------
# the toy family: a family as new files only
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "run"
    ok(run_cli("train", *TOY, f"hydra.run.dir={run}", env=TOY_ENV))
    return run


def test_toy_family_trains_evaluates_and_stores_its_tokenizer_once(toy_run):
    from safetensors.torch import load_file

    m = json.loads((toy_run / "metrics.json").read_text())
    assert m["train/steps"] == 12 and 0.0 <= m["test/balanced_acc"] <= 1.0
    weights = load_file(str(toy_run / "model" / "model.safetensors"))
    tok_weights = load_file(str(toy_run / "model" / "tokenizer" / "tokenizer.safetensors"))
    assert not [k for k in weights if k.startswith("tokenizer.")]  # stored exactly once
    assert set(tok_weights) == {"codebook", "proj.weight", "proj.bias"}
    assert "chance" in (toy_run / "report" / "report.md").read_text()
    assert "sensors" in (toy_run / "model" / "README.md").read_text()
    ok(run_cli("list", env=TOY_ENV))


def _hub_cache(tmp_path: Path, model_dir: Path, repo_id: str) -> Path:
    """A Hugging Face cache holding `model_dir` as the snapshot of `repo_id` (what a download leaves)."""
    import shutil

    home = tmp_path / "hf"
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(model_dir, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return home


def test_toy_family_reloads_identically_through_folder_ckpt_and_hub(toy_run, tmp_path, monkeypatch):
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    importlib.import_module("toy_family")
    from neurofound.models.registry import load_pretrained
    from neurofound.tokenizers import load_tokenizer

    home = _hub_cache(tmp_path, toy_run / "model", "toy-org/toy-model")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(home / "hub"))
    torch.manual_seed(123)  # a fresh init would differ: every path must restore the saved weights
    folder = load_pretrained(toy_run / "model")
    ckpt = load_pretrained(toy_run / "checkpoints" / "last.ckpt")
    hub = load_pretrained("toy-org/toy-model")
    x = torch.randn(5, 32, 4)
    with torch.no_grad():
        ref = folder(x)[0]
        for other in (ckpt, hub):
            assert torch.equal(other(x)[0], ref)
            for k, v in folder.state_dict().items():
                assert torch.equal(other.state_dict()[k], v), k
    tok = load_tokenizer(toy_run)  # a run folder names its model's tokenizer
    assert torch.equal(tok.codebook, folder.tokenizer.codebook)


def test_stage_two_builds_on_a_trained_tokenizer(toy_run, tmp_path):
    """`tokenizer.pretrained=<run dir>`: a new model on the trained tokenizer, whose weights it embeds."""
    from safetensors.torch import load_file

    run = tmp_path / "stage2"
    ok(run_cli("train", *TOY, f"tokenizer.pretrained={toy_run}", "seed=1", f"hydra.run.dir={run}", env=TOY_ENV))
    a = load_file(str(toy_run / "model" / "tokenizer" / "tokenizer.safetensors"))
    b = load_file(str(run / "model" / "tokenizer" / "tokenizer.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_file(str(run / "model" / "model.safetensors"))["head.weight"].shape == (3, 16)


def test_unsupported_finetune_mode_is_a_user_error():
    from neurofound.errors import UserError
    from neurofound.tasks.finetune import configure_mode

    from toy_family import ToyFinetune

    class ProbeOnly(ToyFinetune):
        modes = ("linear",)

    with pytest.raises(UserError, match="finetune.mode=lora is not available.*linear"):
        configure_mode(torch.nn.Linear(2, 2), ProbeOnly(), "lora")
    with pytest.raises(UserError, match="not one of frozen, linear, full, lora"):
        configure_mode(torch.nn.Linear(2, 2), ProbeOnly(), "adapters")


def test_toy_family_finetunes_with_lora_and_exports(toy_run, tmp_path):
    out = tmp_path / "lora"
    ok(run_cli("finetune", *TOY, f"init={toy_run}", "finetune.mode=lora", f"hydra.run.dir={out}", env=TOY_ENV))
    m = json.loads((out / "metrics.json").read_text())
    assert {"test/balanced_acc", "test/balanced_acc_scratch", "finetune/trainable_fraction"} <= set(m)
    assert m["finetune/lora_layers"] == 2  # query and value of the one attention layer
    ok(run_cli("export", f"ckpt={out}/model", f"out={tmp_path / 'exported'}", env=TOY_ENV))
    assert "test/balanced_acc" in (tmp_path / "exported" / "README.md").read_text()


# ------------------------------------------------------------------------------------------------
# LoRA on a real family
# ------------------------------------------------------------------------------------------------
def test_lora_trains_under_five_percent_and_leaves_the_base_bitwise():
    import numpy as np

    from neurofound.data import SpikeDataModule, SpikeRecording
    from neurofound.data.datamodule import collate
    from neurofound.models.neuroformer import Neuroformer, neuroformer_small
    from neurofound.recipes import DataBundle
    from neurofound.recipes.neuroformer import BehaviorDecoding
    from neurofound.tasks.finetune import configure_mode, count_trainable
    from neurofound.tokenizers.spike import SpikeTokenizer

    rng = np.random.default_rng(0)
    rec = SpikeRecording.from_raster(rng.poisson(0.05, (100, 2000)), 0.01,
                                     behavior={"speed": (rng.standard_normal(2000), 100.0)})
    tok = SpikeTokenizer(100, block_size=40, block_size_prev=80)
    dm = SpikeDataModule(rec, tok, batch_size=8, frames=False, behavior_targets=["speed"])
    dm.setup()
    data = DataBundle(dm, dm.input_contract(), tok, extra={"behavior_targets": {"speed": {"objective": "regression"}}})
    pre = Neuroformer(neuroformer_small(frame_shape=None))
    pre.attach_tokenizer(tok)
    spec = BehaviorDecoding()
    model = spec.prepare(pre, data)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = configure_mode(model, spec, "lora")
    trainable, total = count_trainable(model)
    assert wrapped and trainable / total < 0.05
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    batch = collate(dm.datasets["train"].__getitems__(list(range(8))))
    for _ in range(3):
        opt.zero_grad()
        spec.loss(model, batch, "lora").backward()
        opt.step()
    after = model.state_dict()
    trunk = [k for k in base if not k.startswith("behavior_")]
    for k in trunk:
        key = k if k in after else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        assert torch.equal(after[key], base[k]), k


def test_behaviour_target_classified_from_the_config():
    """`data.behavior_classes` turns a behaviour target into a classification head scored with
    balanced accuracy, through the recipe (data -> model -> evaluation)."""
    from helpers import compose

    from neurofound.recipes import get_recipe
    from neurofound.tasks.spike_eval import teacher_forced

    cfg = compose("train", ["experiment=quickstart", "data.duration=8", "data.behavior_classes={speed: "
                            "{bin_edges: [0.1, 0.3]}}", "model.n_embd=32", "model.n_state_layers=1",
                            "model.n_history_layers=1", "model.n_stimulus_layers=1"])
    recipe = get_recipe("neuroformer")
    data = recipe.data(cfg)
    model = recipe.model(cfg, data)
    assert model.config.behavior_targets["speed"] == {"objective": "classification", "n_classes": 3,
                                                       "bin_edges": [0.1, 0.3]}
    metrics, _ = teacher_forced(model, data.datamodule.dataloader("test"), max_batches=2)
    assert 0.0 <= metrics["test/behavior_balanced_acc"] <= 1.0 and "test/behavior_r" not in metrics


def test_finetune_summary_compares_with_scratch_and_every_baseline():
    from neurofound.jobs import _finetune_notes

    notes = _finetune_notes({"test/balanced_acc": 0.40, "test/balanced_acc_sd": 0.02, "test/balanced_acc_scratch": 0.39,
                             "test/balanced_acc_scratch_sd": 0.01, "test/balanced_acc_csp_baseline": 0.61,
                             "test/balanced_acc_csp_baseline_sd": 0.05}, "frozen")
    assert len(notes) == 1
    assert "from scratch 0.390 (a tie" in notes[0] and "**the csp baseline wins**" in notes[0]
    better = _finetune_notes({"test/balanced_acc": 0.7, "test/balanced_acc_scratch": 0.5}, "full")[0]
    assert "the fine-tuned model is better" in better and "wins" not in better
