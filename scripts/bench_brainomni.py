"""BrainOmni benchmarks: the three-stage quickstart, a long stage-1 run with its curve, the modality ablation,
and tokenizer throughput. Each subcommand prints one JSON line per run (figures in docs/benchmarks.md).

    python scripts/bench_brainomni.py quickstart --seeds 1 2          # stage 1 -> 2 -> decode, cold cache, wall time
    python scripts/bench_brainomni.py pretrain --seeds 1 2 --steps 4000 --out runs/bench_bt
    python scripts/bench_brainomni.py ablation --tokenizer runs/bench_bt/seed1 --seeds 0 1 2 --out runs/ablation
    python scripts/bench_brainomni.py throughput                       # channel-windows/s, recording-seconds/s
    python scripts/bench_brainomni.py readout --model runs/ablation/both_seed0 data.seed=1   # what frozen features hold

Data seed 0 was used to tune (learning rate, steps, init); figures are reported on data seeds 1 and 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGE1 = ["test/recon_corr", "test/recon_corr_eeg", "test/recon_corr_mag", "test/recon_corr_grad",
          "test/recon_corr_unseen_device_eeg", "test/recon_corr_unseen_device_meg", "test/recon_corr_unseen_device",
          "test/recon_corr_masked_channels", "test/recon_corr_masked_channels_idw_baseline",
          "test/recon_corr_cross_device", "test/recon_mse", "test/codebook_usage", "test/codebook_usage_level1",
          "test/codebook_usage_level2", "test/codebook_usage_level3", "test/codebook_usage_level4",
          "test/codebook_perplexity_min", "train/steps", "train/fit_seconds"]
STAGE2 = ["test/masked_loss", "test/masked_acc_level1", "test/masked_acc_level2", "test/masked_acc_level3",
          "test/masked_acc_level4", "test/masked_acc_level1_unigram_baseline", "train/steps", "train/fit_seconds"]
DECODE = ["test/balanced_acc", "test/balanced_acc_sd", "test/balanced_acc_scratch", "test/balanced_acc_scratch_sd",
          "test/balanced_acc_csp_baseline", "test/balanced_acc_csp_baseline_sd", "finetune/runs"]


def _cli(args: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "neurofound.cli", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed: neurofound {' '.join(args)}")
    return time.perf_counter() - t0


def _metrics(run: Path, keys: list[str]) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {k: (round(m[k], 4) if isinstance(m.get(k), float) else m.get(k)) for k in keys if k in m}


def quickstart(args) -> None:
    """The README's three BrainOmni commands with the small builders, from an empty data cache."""
    out = Path(args.out or tempfile.mkdtemp(prefix="nf-bo-quick-"))
    for seed in args.seeds:
        env = {} if args.warm else {"NEUROFOUND_CACHE": tempfile.mkdtemp(prefix="nf-cold-cache-")}
        s1, s2, d = out / f"seed{seed}" / "stage1", out / f"seed{seed}" / "stage2", out / f"seed{seed}" / "decode"
        common = [f"data.seed={seed}", f"seed={seed}", *args.overrides]
        t1 = _cli(["train", "experiment=brainomni_tokenizer_sim", *common, f"hydra.run.dir={s1}"], env)
        t2 = _cli(["train", "experiment=brainomni_sim", f"tokenizer.pretrained={s1}", *common, f"hydra.run.dir={s2}"],
                  env)
        t3 = _cli(["finetune", "experiment=brainomni_decode", f"init={s2}", *common, f"hydra.run.dir={d}"], env)
        print(json.dumps({"bench": "brainomni_quickstart", "seed": seed, "cold_cache": not args.warm,
                          "wall_seconds": round(t1 + t2 + t3, 1), "stage1_seconds": round(t1, 1),
                          "stage2_seconds": round(t2, 1), "decode_seconds": round(t3, 1),
                          "stage1": _metrics(s1, STAGE1), "stage2": _metrics(s2, STAGE2), "decode": _metrics(d, DECODE)}),
              flush=True)


def _curve(run: Path) -> list[dict]:
    rows = []
    with (run / "logs" / "metrics.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            vals = {k: float(v) for k, v in r.items() if k.startswith("curve/") and v not in ("", None)}
            if vals:
                rows.append({"step": int(float(r["step"])), **{k[len("curve/"):]: round(v, 4) for k, v in vals.items()}})
    return rows


def pretrain(args) -> None:
    """A long stage-1 run per data seed, with the held-out reconstruction PCC every `--every` steps."""
    if args.replot:
        for f in args.replot:
            line = json.loads(Path(f).read_text())
            _plot_curve(line["curve"], Path(f).with_suffix(".png"), title=f"data seed {line['seed']}")
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="nf-bo-pretrain-"))
    for seed in args.seeds:
        run = out / f"seed{seed}"
        wall = _cli(["train", "experiment=brainomni_tokenizer_sim", f"data.seed={seed}", f"seed={seed}",
                     f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.every}",
                     f"callbacks.periodic.every_n_train_steps={args.every}",
                     "data.segment_seconds=4.0",  # the recorded long runs (the experiment's 2 s is for the quickstart)
                     "+callbacks.curve._target_=neurofound.tasks.brainomni.ReconstructionCurve",
                     f"+callbacks.curve.every_n_train_steps={args.every}", "trainer.enable_progress_bar=false",
                     *args.overrides, f"hydra.run.dir={run}"])
        curve = _curve(run)
        _plot_curve(curve, run / "report" / "recon_curve.png", title=f"data seed {seed}")
        print(json.dumps({"bench": "brainomni_pretrain", "seed": seed, "steps": args.steps,
                          "wall_seconds": round(wall, 1), **_metrics(run, STAGE1), "curve": curve}), flush=True)


def _plot_curve(curve: list[dict], path: Path, *, title: str) -> None:
    from matplotlib.figure import Figure

    if not curve:
        return
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    steps = [r["step"] for r in curve]
    for key, label in (("test_recon_corr_eeg", "held-in EEG"), ("test_recon_corr_meg", "held-in MEG"),
                       ("unseen_recon_corr_eeg", "unseen EEG (biosemi64)"),
                       ("unseen_recon_corr_meg", "unseen MEG (CTF-275)")):
        ax.plot(steps, [r.get(key) for r in curve], marker="o", ms=3, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("reconstruction PCC")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def ablation(args) -> None:
    """A fixed tokenizer; stage 2 on EEG only, MEG only and both with equal epochs; each decodes both held-out sets."""
    import math

    out = Path(args.out or tempfile.mkdtemp(prefix="nf-bo-ablation-"))
    counts = _train_segments(args.tokenizer, args.overrides)
    for modality in ("EEG", "MEG", "both"):
        n = counts["both" if modality == "both" else modality]
        steps = max(1, math.ceil(args.epochs * n / args.batch))  # equal epochs: steps follow the data size
        for seed in args.seeds:
            run = out / f"{modality}_seed{seed}"
            mod = "null" if modality == "both" else modality
            wall = _cli(["train", "experiment=brainomni_sim", f"tokenizer.pretrained={args.tokenizer}", f"seed={seed}",
                         f"data.modality={mod}", f"data.batch_size={args.batch}", "data.channel_budget=null",
                         f"trainer.max_steps={steps}", "trainer.enable_progress_bar=false", *args.overrides,
                         f"hydra.run.dir={run}"])
            line = {"bench": "brainomni_ablation", "pretrain_modality": modality, "seed": seed, "steps": steps,
                    "epochs": args.epochs, "wall_seconds": round(wall, 1), **_metrics(run, STAGE2)}
            for device in ("biosemi64", "ctf275"):
                d = out / f"{modality}_seed{seed}_decode_{device}"
                _cli(["finetune", "experiment=brainomni_decode", f"init={run}", f"data.downstream_device={device}",
                      f"seed={seed}", f"finetune.protocol.seeds=[{seed}]", "finetune.scratch_baseline=false",
                      *args.decode_overrides, f"hydra.run.dir={d}"])
                line[f"decode_{device}"] = _metrics(d, DECODE)
            print(json.dumps(line), flush=True)


def _train_segments(tokenizer: str, overrides: list[str]) -> dict[str, int]:
    """Training segments of stage 2's data, by modality (what an epoch is for each pretraining set)."""
    from neurofound.recipes.brainomni import load_corpus
    from neurofound.data.sensor_datamodule import SensorDataModule
    from hydra import compose, initialize_config_dir

    from neurofound.cli import CONFIG_DIR, _register_resolvers

    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=brainomni_sim", *overrides])
    corpus = load_corpus(cfg, "train")
    seconds = float(cfg.data.segment_seconds)
    out = {}
    for key, modality in (("EEG", "EEG"), ("MEG", "MEG"), ("both", None)):
        dm = SensorDataModule(corpus, segment_seconds=seconds, modality=modality)
        out[key] = len(dm.datasets["train"])
    return out


def throughput(args) -> None:
    """Tokenizer encode throughput (channel-windows/s) and the recording seconds of a 306-channel MEG per second."""
    import torch

    from neurofound.models.brainomni_tokenizer import braintokenizer_base, braintokenizer_small
    from neurofound.tokenizers.braintokenizer import BrainTokenizer, SensorLayout

    torch.set_num_threads(args.threads)
    for name, builder in (("braintokenizer_small", braintokenizer_small), ("braintokenizer_base", braintokenizer_base)):
        tok = BrainTokenizer(**builder().tokenizer_kwargs())
        tok.train()
        x0 = torch.randn(2, 8, 1024)
        s0 = SensorLayout(torch.randn(2, 8, 6), torch.zeros(2, 8, dtype=torch.long))
        tok.encode(x0, s0)  # k-means init on a first training call
        tok.eval()
        for n_ch, seconds in ((19, 10.0), (306, 10.0)):
            x = torch.randn(1, n_ch, int(seconds * 256))
            s = SensorLayout(torch.randn(1, n_ch, 6), torch.randint(0, 3, (1, n_ch)))
            with torch.no_grad():
                tok.encode(x, s)  # warm-up
                reps, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    tok.encode(x, s)
                    reps += 1
            dt = (time.perf_counter() - t0) / reps
            windows = n_ch * int(seconds * 256 // 512)
            print(json.dumps({"bench": "brainomni_throughput", "model": name, "channels": n_ch,
                              "input_seconds": seconds, "threads": args.threads,
                              "encode_seconds": round(dt, 4), "channel_windows_per_s": round(windows / dt, 1),
                              "recording_seconds_per_s": round(seconds / dt, 2)}), flush=True)


def readout(args) -> None:
    """Cross-subject linear read-outs of the downstream trials: what the frozen representations hold.

    For each held-out device, subject-grouped 4-fold logistic regression (standardised features) on the
    stage-2 pooled features (the paper's `encode`: mean over time of L2-normalised tokens), on the
    tokenizer's quantised vectors averaged over time, and on their standard deviation over time; against
    log band power (mu 8-13 Hz, beta 18-25 Hz, per channel) and band-passed CSP + LDA on the same trials.
    """
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from scipy.signal import welch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurofound.cli import CONFIG_DIR, _register_resolvers
    from neurofound.data.sensor_datamodule import TrialDataModule
    from neurofound.eval.metrics import balanced_accuracy
    from neurofound.eval.probes import csp_lda
    from neurofound.models.brainomni import BrainOmni
    from neurofound.recipes.brainomni import load_corpus, sensors_of

    torch.set_num_threads(args.threads)
    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=brainomni_decode", *args.overrides])
    corpus = load_corpus(cfg, "train")
    model = BrainOmni.from_pretrained(str(Path(args.model) / "model") if (Path(args.model) / "model").is_dir()
                                      else args.model).eval()
    for device in ("biosemi64", "ctf275"):
        dm = TrialDataModule(corpus, device=device, n_folds=5)
        feats: dict[str, list] = {"stage-2 pooled (paper encode)": [], "tokenizer mean over time": [],
                                  "tokenizer std over time": []}
        xs, ys, subjects = [], [], []
        for split in ("train", "val", "test"):
            for batch in dm.dataloader(split):
                with torch.no_grad():
                    toks = model.tokenize(batch["x"], sensors_of(batch))
                    feats["stage-2 pooled (paper encode)"].append(model.pooled(tokens=toks).numpy())
                    feats["tokenizer mean over time"].append(toks[0].mean(2).flatten(1).numpy())
                    feats["tokenizer std over time"].append(toks[0].std(2).flatten(1).numpy())
                xs.append(batch["x"].numpy())
                ys.append(batch["label"].numpy())
                subjects += [dm.recordings[r].subject for r in batch["recording"].tolist()]
        x, y, groups = np.concatenate(xs), np.concatenate(ys), np.array(subjects)
        f, p = welch(x, fs=dm.sampling_rate, nperseg=int(dm.sampling_rate), axis=-1)
        bands = [np.log(p[..., (f >= lo) & (f <= hi)].mean(-1)) for lo, hi in ((8, 13), (18, 25))]
        table = {k: np.concatenate(v) for k, v in feats.items()}
        table["log band power (mu, beta)"] = np.concatenate(bands, axis=1)
        line = {"bench": "brainomni_readout", "device": device, "model": str(args.model), "trials": int(len(y)),
                "chance": round(1.0 / len(np.unique(y)), 4)}
        folds = list(GroupKFold(n_splits=4).split(x, y, groups))
        for name, feat in table.items():
            accs = []
            for tr, te in folds:
                clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(feat[tr], y[tr])
                accs.append(balanced_accuracy(y[te], clf.predict(feat[te])))
            line[name] = round(float(np.mean(accs)), 4)
        line["CSP + LDA (8-30 Hz)"] = round(float(np.mean([balanced_accuracy(y[te], csp_lda(
            x[tr], y[tr], x[te], n_components=(6,), sfreq=dm.sampling_rate)["pred"]) for tr, te in folds])), 4)
        pooled = table["stage-2 pooled (paper encode)"]
        line["stage-2 pooled: mean correlation between trials"] = round(float(np.corrcoef(pooled)[
            np.triu_indices(len(pooled), 1)].mean()), 6)
        print(json.dumps(line), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quickstart")
    q.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    q.add_argument("--warm", action="store_true")
    p = sub.add_parser("pretrain")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--replot", nargs="*", default=None, help="only redraw the curves of these JSON lines (files)")
    a = sub.add_parser("ablation")
    a.add_argument("--tokenizer", required=True, help="a trained stage-1 run (the fixed tokenizer)")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a.add_argument("--epochs", type=float, default=20.0)
    a.add_argument("--batch", type=int, default=8)
    a.add_argument("--decode-overrides", nargs="*", default=[])
    t = sub.add_parser("throughput")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seconds", type=float, default=5.0)
    r = sub.add_parser("readout")
    r.add_argument("--model", required=True, help="a stage-2 run or model folder")
    r.add_argument("--threads", type=int, default=1)
    for s in (q, p, a, r):
        s.add_argument("--out", default=None)
        s.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = ap.parse_args()
    if not hasattr(args, "overrides"):
        args.overrides = []
    {"quickstart": quickstart, "pretrain": pretrain, "ablation": ablation, "throughput": throughput,
     "readout": readout}[args.cmd](args)


if __name__ == "__main__":
    main()
