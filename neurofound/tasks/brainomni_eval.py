"""Held-out evaluation of BrainOmni's two stages (called by `neurofound.recipes.brainomni`).

Stage 1 (`evaluate_tokenizer`), in eval mode, all channels, no noise (issue "Metrics"):

* `test/recon_corr`: mean over (recording, channel, window) of the Pearson r between the
  reconstruction and the per-window z-scored target, on the held-in devices' new subjects; beside
  it `test/recon_corr_{eeg,mag,grad}` and `test/recon_mse`;
* `test/recon_corr_unseen_device_{eeg,meg}` on the devices held out of pretraining, and
  `test/recon_corr_unseen_device`, the smaller of the two;
* `test/recon_corr_masked_channels`: 25 % of each recording's channels hidden from the encoder and
  decoded from the others (scored on the hidden ones), beside a spatial-interpolation baseline
  (inverse-distance weighting of the nearest visible sensors of the same type);
* `test/recon_corr_cross_device`: a subject's segment encoded on one device and decoded onto
  another device's sensors that recorded the same activity, scored against that device's
  recording (same modality);
* `test/codebook_usage`: the smallest, over RVQ levels, fraction of codes used on the test split;
  `test/codebook_usage_level{l}` and `test/codebook_perplexity_min` beside it.

Stage 2 (`evaluate_masked`): `test/masked_loss`, `test/masked_acc_level{q}` with a fixed masking
draw, and `test/masked_acc_level{q}_unigram_baseline` (always the most frequent training code).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurofound.data.sensors import EEG, GRAD, MAG
from neurofound.eval.sensor_metrics import codebook_usage, unigram_accuracy, window_mse, window_pcc
from neurofound.tasks.base import to_device
from neurofound.tasks.brainomni import sensors_of

log = logging.getLogger("neurofound")

_TYPE_KEYS = {EEG: "eeg", MAG: "mag", GRAD: "grad"}


@dataclass
class EvalOutput:
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _hidden_mask(mask: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """`(B, C)` bool: `max(floor(ratio * C_b), 1)` of each sample's real channels (a seeded draw)."""
    hidden = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        real = mask[b].nonzero().squeeze(1)
        n = max(int(ratio * real.numel()), 1)
        pick = real[torch.randperm(real.numel(), generator=generator)[:n].to(real.device)]
        hidden[b, pick] = True
    return hidden


def _idw_baseline(target: np.ndarray, positions: np.ndarray, types: np.ndarray, hidden: np.ndarray,
                  visible: np.ndarray, k: int = 4) -> np.ndarray:
    """Hidden channels predicted as the inverse-distance-weighted mean of the k nearest visible sensors of the
    same type (one sample: target `(C, N, L)`); returns the prediction `(C, N, L)` (zeros elsewhere)."""
    pred = np.zeros_like(target)
    for c in np.flatnonzero(hidden):
        cand = np.flatnonzero(visible & (types == types[c]))
        if not cand.size:
            continue
        d = np.linalg.norm(positions[cand, :3] - positions[c, :3], axis=1)
        near = np.argsort(d)[:k]
        w = 1.0 / np.maximum(d[near], 1e-6)
        pred[c] = np.tensordot(w / w.sum(), target[cand[near]], axes=1)
    return pred


class _RowStats:
    """Accumulates window PCCs by group."""

    def __init__(self):
        self.rows: dict[str, list[np.ndarray]] = {}

    def add(self, key: str, r: np.ndarray) -> None:
        self.rows.setdefault(key, []).append(r[np.isfinite(r)])

    def mean(self, key: str) -> float | None:
        vals = np.concatenate(self.rows.get(key, [np.zeros(0)]))
        return float(vals.mean()) if vals.size else None


@torch.no_grad()
def _score_split(model, loader, *, prefix: str, max_batches: int | None, hidden_ratio: float, seed: int,
                 codebook_size: int, keep_example: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """Reconstruction metrics of one split (plain reconstruction and masked channels)."""
    dev = _device_of(model)
    stats, mse_num, mse_den = _RowStats(), 0.0, 0.0
    per_channel: dict[tuple[int, int], list[float]] = {}
    codes, example = [], None
    g = torch.Generator().manual_seed(seed)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, dev)
        sensors = sensors_of(batch)
        out = model.reconstruct(batch["x"], sensors)
        rec, tgt = out.reconstruction.cpu().numpy(), out.target.cpu().numpy()
        mask = batch["mask"].cpu().numpy()
        valid = mask[:, :, None, None] & out.sample_mask.cpu().numpy()[:, None]
        r = window_pcc(rec, tgt, valid).reshape(rec.shape[:3])  # (B, C, N)
        types = batch["types"].cpu().numpy()
        stats.add("all", r.reshape(-1))
        for t, key in _TYPE_KEYS.items():
            stats.add(key, r[types == t].reshape(-1))
        for b in range(r.shape[0]):  # by the recording's modality (unseen devices: EEG vs MEG)
            for mod in loader.dataset.recordings[int(batch["recording"][b])].modalities:
                stats.add(f"modality_{mod.lower()}", r[b].reshape(-1))
        n = float(valid.sum())
        mse_num += window_mse(rec, tgt, valid) * n
        mse_den += n
        for b in range(r.shape[0]):
            rec_id = int(batch["recording"][b])
            for c in np.flatnonzero(mask[b]):
                per_channel.setdefault((rec_id, int(c)), []).append(float(np.nanmean(r[b, c])))
        win = out.sample_mask.any(-1).cpu().numpy()  # (B, N): windows holding real samples
        cq = out.codes.cpu().numpy()  # (B, C', N, W, Q)
        codes.append(cq.transpose(0, 2, 1, 3, 4)[win].reshape(-1, cq.shape[-1]))
        if keep_example and example is None:
            example = {"original": tgt[0], "reconstruction": rec[0], "mask": mask[0], "pcc": r[0],
                       "recording": int(batch["recording"][0])}
        # masked channels: hidden from the encoder, decoded from the others
        hidden = _hidden_mask(batch["mask"].cpu(), hidden_ratio, g).to(dev)
        out_h = model.reconstruct(batch["x"], sensors, hidden=hidden)
        hid = hidden.cpu().numpy()
        valid_h = hid[:, :, None, None] & out_h.sample_mask.cpu().numpy()[:, None]
        stats.add("masked", window_pcc(out_h.reconstruction.cpu().numpy(), out_h.target.cpu().numpy(), valid_h))
        pos, typ = batch["positions"].cpu().numpy(), types
        base = np.stack([_idw_baseline(tgt[b], pos[b], typ[b], hid[b], mask[b] & ~hid[b]) for b in range(len(tgt))])
        stats.add("masked_idw", window_pcc(base, tgt, valid_h))
    m: dict[str, float] = {}
    for mod in ("eeg", "meg"):
        v = stats.mean(f"modality_{mod}")
        if v is not None:
            m[f"{prefix}recon_corr_modality_{mod}"] = v
    for key, name in (("all", "recon_corr"), ("eeg", "recon_corr_eeg"), ("mag", "recon_corr_mag"),
                      ("grad", "recon_corr_grad"), ("masked", "recon_corr_masked_channels"),
                      ("masked_idw", "recon_corr_masked_channels_idw_baseline")):
        v = stats.mean(key)
        if v is not None:
            m[f"{prefix}{name}"] = v
    if mse_den:
        m[f"{prefix}recon_mse"] = mse_num / mse_den
    extra = {"per_channel": {k: float(np.mean(v)) for k, v in per_channel.items()}, "example": example}
    if codes:
        usage = codebook_usage(np.concatenate(codes), codebook_size)
        extra["usage"] = usage
        m[f"{prefix}codebook_usage"] = float(usage["usage"].min())
        for q, u in enumerate(usage["usage"], 1):
            m[f"{prefix}codebook_usage_level{q}"] = float(u)
        m[f"{prefix}codebook_perplexity_min"] = float(usage["perplexity"].min())
    return m, extra


@torch.no_grad()
def recon_corr_by_modality(model, loader, *, max_batches: int | None = None) -> dict[str, float]:
    """Mean window PCC of a split, overall and by the recordings' modality: `recon_corr`, `recon_corr_eeg`, `_meg`."""
    dev = _device_of(model)
    stats = _RowStats()
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, dev)
        out = model.reconstruct(batch["x"], sensors_of(batch))
        valid = batch["mask"].cpu().numpy()[:, :, None, None] & out.sample_mask.cpu().numpy()[:, None]
        r = window_pcc(out.reconstruction.cpu().numpy(), out.target.cpu().numpy(), valid).reshape(valid.shape[:3])
        stats.add("all", r.reshape(-1))
        for b in range(r.shape[0]):
            for mod in loader.dataset.recordings[int(batch["recording"][b])].modalities:
                stats.add(mod.lower(), r[b].reshape(-1))
    out = {"recon_corr": stats.mean("all")}
    out.update({f"recon_corr_{m}": stats.mean(m) for m in ("eeg", "meg")})
    return {k: v for k, v in out.items() if v is not None}


@torch.no_grad()
def _cross_device(model, dataset, *, max_pairs: int | None) -> float | None:
    """Encode a segment on one device and decode it onto another device that recorded the same subject and time."""
    from neurofound.data.sensor_datamodule import collate_sensors
    from neurofound.tokenizers.braintokenizer import zscore_windows

    tok = model.tokenizer
    dev = _device_of(model)
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for i, it in enumerate(dataset.items):
        rec = dataset.recordings[it.recording]
        groups.setdefault((rec.subject, it.start), {})[rec.device] = i
    rows = []
    n = 0
    for (_, _), by_device in sorted(groups.items()):
        devices = sorted(by_device)
        for a in devices:
            for b in devices:
                if a == b:
                    continue
                ia, ib = dataset[by_device[a]], dataset[by_device[b]]
                ra, rb = dataset.recordings[dataset.items[by_device[a]].recording], \
                    dataset.recordings[dataset.items[by_device[b]].recording]
                if ra.modalities != rb.modalities:
                    continue
                if max_pairs is not None and n >= max_pairs:
                    break
                ba, bb = to_device(collate_sensors([ia]), dev), to_device(collate_sensors([ib]), dev)
                enc = tok.encode(ba["x"], sensors_of(ba))
                rec = tok.decode(enc.quantized, sensors_of(bb))
                windows, valid = tok.windows(bb["x"], 0.0)
                target = zscore_windows(windows, valid)
                r = window_pcc(rec.cpu().numpy(), target.cpu().numpy(), valid.cpu().numpy()[:, None])
                rows.append(r[np.isfinite(r)])
                n += 1
    return float(np.concatenate(rows).mean()) if rows and np.concatenate(rows).size else None


def evaluate_tokenizer(model, dm, report_dir: Path, *, max_batches: int | None = None, hidden_ratio: float = 0.25,
                       seed: int = 0, cross_device_pairs: int | None = 64, plots: bool = True) -> EvalOutput:
    """Stage-1 metrics and figures (module docstring) of a `BrainTokenizerModel` on a `SensorDataModule`."""
    report_dir = Path(report_dir)
    model.eval()
    res = EvalOutput()
    k = model.tokenizer.config["codebook_size"]
    held, held_extra = _score_split(model, dm.dataloader("test"), prefix="test/", max_batches=max_batches,
                                    hidden_ratio=hidden_ratio, seed=seed, codebook_size=k, keep_example=True)
    res.metrics.update({k_: v for k_, v in held.items() if "_modality_" not in k_})
    cross = _cross_device(model, dm.datasets["test"], max_pairs=cross_device_pairs)
    if cross is not None:
        res.metrics["test/recon_corr_cross_device"] = cross
    unseen_extra = None
    if len(dm.datasets["unseen"]):
        unseen, unseen_extra = _score_split(model, dm.dataloader("unseen"), prefix="unseen/", max_batches=max_batches,
                                            hidden_ratio=hidden_ratio, seed=seed + 1, codebook_size=k,
                                            keep_example=True)
        for mod in ("eeg", "meg"):
            if f"unseen/recon_corr_modality_{mod}" in unseen:
                res.metrics[f"test/recon_corr_unseen_device_{mod}"] = unseen[f"unseen/recon_corr_modality_{mod}"]
        present = [res.metrics[f"test/recon_corr_unseen_device_{m}"] for m in ("eeg", "meg")
                   if f"test/recon_corr_unseen_device_{m}" in res.metrics]
        if present:
            res.metrics["test/recon_corr_unseen_device"] = float(min(present))
        for key in ("recon_corr_masked_channels", "recon_mse", "codebook_usage"):
            if f"unseen/{key}" in unseen:
                res.metrics[f"test/unseen_device_{key}"] = unseen[f"unseen/{key}"]
    if plots:
        res.figures.update(_tokenizer_figures(dm, held_extra, unseen_extra, report_dir, k))
    return res


def _tokenizer_figures(dm, held: dict, unseen: dict | None, report_dir: Path, codebook_size: int) -> dict[str, Path]:
    from neurofound.eval.sensor_plots import plot_codebook_usage, plot_reconstruction, plot_topomaps

    figs: dict[str, Path] = {}
    for name, extra, split in (("held_in", held, "test"), ("unseen_device", unseen, "unseen")):
        if not extra or extra.get("example") is None:
            continue
        ex = extra["example"]
        rec = dm.datasets[split].recordings[ex["recording"]]
        chans = np.flatnonzero(ex["mask"])[:: max(1, int(ex["mask"].sum()) // 4)][:4]
        orig = ex["original"][chans, :2].reshape(len(chans), -1)
        recon = ex["reconstruction"][chans, :2].reshape(len(chans), -1)
        pcc = np.nanmean(ex["pcc"][chans, :2], axis=1)
        figs[f"reconstruction_{name}"] = plot_reconstruction(
            orig, recon, report_dir / f"reconstruction_{name}.png", names=[rec.ch_names[c] for c in chans],
            title=f"{rec.device}, subject {rec.subject}: original vs reconstructed (per-window z-scored)", pcc=pcc)
        per = {c: v for (r, c), v in extra["per_channel"].items() if r == ex["recording"]}
        values = np.array([per.get(c, np.nan) for c in range(rec.n_channels)])
        figs[f"topomap_{name}"] = plot_topomaps(values, rec.positions, rec.sensor_types,
                                                report_dir / f"topomap_{name}.png",
                                                title=f"reconstruction PCC per channel, {rec.device}")
    if held.get("usage") is not None:
        figs["codebook_usage"] = plot_codebook_usage(held["usage"]["usage"], held["usage"]["perplexity"],
                                                     codebook_size, report_dir / "codebook_usage.png")
    return figs


@torch.no_grad()
def evaluate_masked(model, dm, report_dir: Path, *, max_batches: int | None = None, seed: int = 0,
                    plots: bool = True) -> EvalOutput:
    """Stage-2 metrics (module docstring) of a `BrainOmni` on a `SensorDataModule`."""
    report_dir = Path(report_dir)
    model.eval()
    dev = _device_of(model)
    q_used = model.config.num_quantizers_used
    res = EvalOutput()
    # the unigram baseline's codes: the most frequent code per level over the training tokens
    train_codes = [[] for _ in range(q_used)]
    for i, batch in enumerate(dm.dataloader("train")):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, dev)
        _, idx, tmask = model.tokenize(batch["x"], sensors_of(batch))
        real = tmask[:, None, :].expand(idx.shape[:3])
        for q in range(q_used):
            train_codes[q].append(idx[..., q][real].cpu().numpy())
    g = torch.Generator(device=dev).manual_seed(seed)
    losses, weights, accs = [], [], []
    test_codes = [[] for _ in range(q_used)]
    for i, batch in enumerate(dm.dataloader("test")):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, dev)
        tokens = model.tokenize(batch["x"], sensors_of(batch))
        out = model(tokens=tokens, generator=g)
        n = float(out.masked.sum())
        losses.append(float(out.loss) * n)
        accs.append(out.acc_per_level.cpu().numpy() * n)
        weights.append(n)
        for q in range(q_used):
            test_codes[q].append(tokens[1][..., q][out.masked].cpu().numpy())
    if not weights:
        return res
    total = sum(weights)
    res.metrics["test/masked_loss"] = sum(losses) / total
    acc = np.sum(accs, axis=0) / total
    base = []
    for q in range(q_used):
        res.metrics[f"test/masked_acc_level{q + 1}"] = float(acc[q])
        if train_codes[q]:
            b = unigram_accuracy(np.concatenate(train_codes[q]), np.concatenate(test_codes[q]))
            res.metrics[f"test/masked_acc_level{q + 1}_unigram_baseline"] = b
            base.append(b)
    if plots:
        from neurofound.eval.sensor_plots import plot_level_accuracy

        res.figures["masked_accuracy"] = plot_level_accuracy(acc, base or None, report_dir / "masked_accuracy.png")
    return res


__all__ = ["EvalOutput", "evaluate_masked", "evaluate_tokenizer", "recon_corr_by_modality"]
