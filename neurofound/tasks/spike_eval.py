"""Evaluation of a spike GPT on held-out windows: teacher-forced metrics, generation, behaviour,
connectivity from attention, and the report figures.

Everything here hands arrays to `neurofound.eval`; nothing parses configs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neurofound.eval import connectivity as conn
from neurofound.eval import metrics as M
from neurofound.eval import plots
from neurofound.tasks.base import to_device
from neurofound.eval import spike_metrics as SM

log = logging.getLogger(__name__)

# Connectivity readout (choices made on the quickstart LIF data, seed 0; see evaluate_spike_model):
# * layers: the FIRST state-encoder self-attention layer. Its keys are still the raw spike tokens
#   (neuron id + time), so attention to a key is attention to one neuron's spike; deeper layers
#   attend over mixtures of tokens, and the history cross-attention's keys (the whole previous
#   window, mostly tens of ms back, beyond the 1-4 ms delays) score at chance and dilute the mean.
# * relative to chance: summed attention / the attention a uniform softmax over the visible keys
#   would have given the same co-occurrences (AttentionConnectivity.matrix(relative_to="chance")).
#   Per co-occurrence (the reference), the causal mask alone leaks timing: an untrained model then
#   scores ~0.67 AUROC after centring; relative to chance it scores ~0.5, as it should.
# * normalisation: |double-centred log attention| per layer (see conn.normalize_attention): the
#   pair-specific excess or deficit of attention, so inhibitory edges count like excitatory ones.
# * windows: the headline `test/connectivity_auroc` reads the held-out test windows; the same readout
#   over the training windows is `train/connectivity_auroc` (60 s of held-out windows cap even an
#   ideal 2-4 ms recency attention at ~0.78 AUROC, against ~0.87 on 240 s). Each is scored beside
#   the raster baselines of its own windows. These defaults are keys of configs/eval/neuroformer.yaml.
CONNECTIVITY_LAYERS: tuple[str, ...] = ("state/0",)
CONNECTIVITY_NORMALIZE = "log_centred_abs"
CONNECTIVITY_RELATIVE_TO = "chance"


@dataclass
class SpikeEvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    generated: dict[str, Any] = field(default_factory=dict)


def _special_to_minus1(ids: torch.Tensor, n_neurons: int) -> np.ndarray:
    ids = ids.detach().cpu().numpy().astype(np.int64)
    ids[ids >= n_neurons] = -1
    return ids


@torch.no_grad()
def teacher_forced(model, loader, *, split: str = "test", attention: conn.AttentionConnectivity | None = None,
                   max_batches: int | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Token losses/accuracies (unweighted CE, PAD ignored) and behaviour predictions over `loader`.

    When `attention` is given, the softmax weights of the state-encoder and decoder self-attention
    (query = the neuron being predicted, keys = earlier tokens of the window) and of the history
    cross-attention (keys = past-window tokens) are accumulated into it.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    sums = {"id_loss": 0.0, "dt_loss": 0.0, "id_correct": 0.0, "dt_correct": 0.0, "n": 0.0}
    beh_true: dict[str, list] = {v: [] for v in cfg.behavior_targets}
    beh_pred: dict[str, list] = {v: [] for v in cfg.behavior_targets}
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, dev)
        out = model(batch, need_weights=attention is not None)
        for name, logits, target, pad in (("id", out.id_logits, batch["target_id"], cfg.id_pad),
                                          ("dt", out.dt_logits, batch["target_dt"], cfg.dt_pad)):
            valid = target != pad
            n = valid.sum().item()
            sums[f"{name}_loss"] += F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(),
                                                    ignore_index=pad, reduction="sum").item()
            sums[f"{name}_correct"] += ((logits.argmax(-1) == target) & valid).sum().item()
            if name == "id":
                sums["n"] += n
        for v in cfg.behavior_targets:
            if v in (batch.get("behavior_target") or {}):
                y, pred = batch["behavior_target"][v], out.behavior[v]
                if _is_classification(cfg, v):  # class indices: the model's own binning of the target
                    y, pred = model.behavior_classes(v, y.reshape(-1, 1)), pred.argmax(-1)
                beh_true[v].append(y.reshape(-1).float().cpu().numpy())
                beh_pred[v].append(pred.reshape(-1).float().cpu().numpy())
        if attention is not None:
            _accumulate_attention(attention, batch, out, cfg.n_neurons)
    model.train(was_training)
    n = max(sums["n"], 1.0)
    metrics = {f"{split}/id_loss": sums["id_loss"] / n, f"{split}/dt_loss": sums["dt_loss"] / n,
               f"{split}/id_acc": sums["id_correct"] / n, f"{split}/dt_acc": sums["dt_correct"] / n}
    metrics.update(behavior_metrics(cfg.behavior_targets, beh_true, beh_pred, split=split))
    behavior = {v: np.stack([np.concatenate(beh_true[v]), np.concatenate(beh_pred[v])])
                for v in cfg.behavior_targets if beh_true[v]}
    return metrics, behavior


def _is_classification(cfg, var: str) -> bool:
    return cfg.behavior_targets[var].get("objective", "regression") == "classification"


def behavior_metrics(targets: dict[str, dict], y_true: dict[str, list], y_pred: dict[str, list], *,
                     split: str) -> dict[str, float]:
    """Scores of behaviour predictions, per target `v`: a regression target gets
    `split/behavior_<v>_r` and `_r2`, a classification target `split/behavior_<v>_balanced_acc`.

    Headlines: `split/behavior_r` is the first regression target's r, `split/behavior_balanced_acc`
    the first classification target's balanced accuracy; `split/behavior_r2` when the only
    target is a regression target.

    Args:
        targets: the model config's `behavior_targets` (`{var: spec}`).
        y_true, y_pred: `{var: [arrays]}` of true values and predictions (class indices for a
            classification target), concatenated here.
    """
    out: dict[str, float] = {}
    for v, spec in targets.items():
        if not y_true.get(v):
            continue
        y, p = np.concatenate(y_true[v]), np.concatenate(y_pred[v])
        if spec.get("objective", "regression") == "classification":
            acc = M.balanced_accuracy(y, p)
            out.setdefault(f"{split}/behavior_balanced_acc", acc)
            out[f"{split}/behavior_{v}_balanced_acc"] = acc
            continue
        s = M.behavior_scores(y, p)
        out.setdefault(f"{split}/behavior_r", s["r"])
        out[f"{split}/behavior_{v}_r"] = s["r"]
        out[f"{split}/behavior_{v}_r2"] = s["r2"]
        if len(targets) == 1:
            out[f"{split}/behavior_r2"] = s["r2"]
    return out


def _accumulate_attention(acc: conn.AttentionConnectivity, batch: dict, out, n_neurons: int) -> None:
    """Add one batch's attention (layers named ``kind/layer``) to `acc`; see `teacher_forced`."""
    q = _special_to_minus1(batch["target_id"], n_neurons)
    k_curr = _special_to_minus1(batch["id"], n_neurons)
    k_past = _special_to_minus1(batch["id_prev"], n_neurons)
    for kind, keys, causal in (("state", k_curr, True), ("decoder", k_curr, True), ("history", k_past, False)):
        for layer, w in enumerate(out.attentions.get(kind, [])):
            acc.update(f"{kind}/{layer}", w.float().cpu().numpy(), q, keys, causal=causal)


@torch.no_grad()
def attention_connectivity(model, loader, *, max_batches: int | None = None) -> conn.AttentionConnectivity:
    """Accumulate the attention of `model` over the windows of `loader` (no metrics).

    Same readout as `teacher_forced` (query = the neuron being predicted; state/decoder
    self-attention keys = earlier tokens of the window, history cross-attention keys = the past
    window), used when the connectivity is read from other windows than the metrics' split.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    n = model.config.n_neurons
    acc = conn.AttentionConnectivity(n)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = to_device(batch, dev)
        _accumulate_attention(acc, batch, model(batch, need_weights=True), n)
    model.train(was_training)
    return acc


def connectivity_readout(acc: conn.AttentionConnectivity, *, layers: tuple[str, ...] | None = CONNECTIVITY_LAYERS,
                         normalize: str = CONNECTIVITY_NORMALIZE,
                         relative_to: str = CONNECTIVITY_RELATIVE_TO) -> np.ndarray:
    """The directed ``(N_target, N_source)`` matrix from accumulated attention.

    Args:
        acc: attention accumulated with layers named ``kind/layer`` (``state/0``, ``history/1``).
        layers: which layers to average: exact names (``"state/0"``) or whole kinds (``"state"``,
            ``"decoder"``, ``"history"``); None: all. Entries the model lacks are skipped; if none
            is present, every layer is used.
        normalize: per-layer normalisation (``conn.NORMALIZATIONS``), applied before the mean.
        relative_to: ``"chance"`` or ``"count"``, see ``AttentionConnectivity.matrix``.
    """
    if layers is None:
        chosen = acc.layers
    else:
        chosen = [l for l in acc.layers if str(l) in layers or str(l).split("/")[0] in layers]
    return acc.matrix(chosen or None, normalize=normalize, relative_to=relative_to)


def _stretches(intervals: np.ndarray, window: float, n_stretches: int, max_windows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `intervals` to generate (sorted) and a stretch id per row.

    Runs of consecutive windows are cut into `n_stretches` contiguous stretches of (almost) equal
    length; each stretch is an independent own-past rollout whose first window's past is real.
    """
    order = np.argsort(intervals, kind="stable")
    if max_windows is not None and order.size > max_windows:
        # keep whole stretches: evenly spaced starts, each a contiguous run
        per = max(1, max_windows // n_stretches)
        starts = np.linspace(0, order.size - per, n_stretches).astype(int)
        order = np.concatenate([order[s:s + per] for s in starts])
        seg = np.repeat(np.arange(n_stretches), per)
        return order, seg
    seg = np.minimum((np.arange(order.size) * n_stretches) // max(order.size, 1), n_stretches - 1)
    # a gap in time (split boundary) also starts a new stretch
    t = intervals[order]
    gaps = np.concatenate([[0], np.cumsum(np.diff(t) > window * 1.5)])
    _, seg = np.unique(np.stack([seg, gaps]), axis=1, return_inverse=True)
    return order, seg.reshape(-1)


@torch.no_grad()
def generate_split(model, dm, *, split: str = "test", mode: str = "own_past", n_stretches: int = 16,
                   max_windows: int | None = 1200, batch_size: int = 128, seed: int = 0,
                   top_k: int = 0, top_p: float = 0.95, temperature: float = 1.0):
    """Generate every (selected) window of `split`; returns (GenerationResult, rows of the split table)."""
    ds = dm.datasets[split]
    intervals = dm.intervals[split]
    rows, seg = _stretches(intervals, dm.window, n_stretches, max_windows)
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    kw = dict(top_k=top_k, top_p=top_p, temperature=temperature, top_k_dt=top_k, top_p_dt=top_p,
              temperature_dt=temperature)
    if mode == "own_past":
        batch = to_device(ds.__getitems__(rows.tolist()), dev)
        batch["segment"] = torch.as_tensor(seg, device=dev)
        result = model.generate(batch, mode="own_past", tokenizer=dm.tokenizer, generator=gen, **kw)
        return result, rows
    results = []
    for start in range(0, rows.size, batch_size):
        idx = rows[start:start + batch_size]
        batch = to_device(ds.__getitems__(idx.tolist()), dev)
        results.append((model.generate(batch, mode="true_past", generator=gen, **kw), start))
    # merge the per-batch results into one (window indices offset by the batch start)
    merged = {k: np.concatenate([getattr(r, k) + (off if k == "window" else 0) for r, off in results])
              for k in ("spike_times", "unit_ids", "window", "segment", "intervals", "segments")}
    return dataclasses.replace(results[0][0], **merged), rows


def generation_metrics(result, rows: np.ndarray, dm, *, split: str, suffix: str = "",
                       psth_bin: float = SM.DEFAULT_PSTH_BIN) -> dict[str, float]:
    """Set-F1 (reference and corrected), timing F1, empty-window fraction and PSTH r of generated spikes."""
    truth = dm.held_out_spikes(split)
    n_windows = rows.size
    pos = np.full(len(truth["sets"]), -1)
    pos[rows] = np.arange(n_windows)
    true_sets = [truth["sets"][r] for r in rows]
    pred_sets = [np.array(sorted(s)) for s in result.window_sets()]
    out = {}
    ref = SM.set_f1_ref(true_sets, pred_sets)
    fixed = SM.set_f1(true_sets, pred_sets)
    keep = pos[truth["window"]] >= 0
    tim = SM.timing_f1(truth["times"][keep], truth["unit_ids"][keep], pos[truth["window"][keep]],
                      result.spike_times, result.unit_ids, result.window, n_windows=n_windows)
    n_gen = np.bincount(result.window, minlength=n_windows)
    n_true = np.array([len(s) for s in true_sets])
    out.update({f"{split}/set_f1{suffix}": fixed["f1"], f"{split}/set_f1_ref{suffix}": ref["f1"],
                f"{split}/set_precision{suffix}": fixed["precision"], f"{split}/set_recall{suffix}": fixed["recall"],
                f"{split}/timing_f1{suffix}": tim["f1"],
                f"{split}/empty_window_frac{suffix}": SM.empty_window_frac(n_gen),
                f"{split}/true_empty_window_frac{suffix}": SM.empty_window_frac(n_true)})
    true_counts, _ = dm.held_out_counts(split, psth_bin)
    gen_counts, _ = dm.held_out_counts(split, psth_bin, spike_times=result.spike_times, unit_ids=result.unit_ids)
    # only bins inside generated windows count: restrict to bins where generation ran
    gen_windows_counts, _ = dm.held_out_counts(split, psth_bin, spike_times=result.intervals - dm.window / 2,
                                               unit_ids=np.zeros(result.intervals.size, np.int64))
    covered = gen_windows_counts.sum(0) >= max(1, int(round(psth_bin / dm.window)) // 2)
    if covered.sum() >= 3:
        ps = SM.psth_corr(true_counts[:, covered], gen_counts[:, covered])
        name = "psth_corr_truepast" if suffix == "_truepast" else f"psth_corr{suffix}"
        out[f"{split}/{name}"] = ps["r"]
        out[f"{split}/psth_n_excluded{suffix}"] = ps["n_excluded"]
    return out


BASELINE_BINS = (0.002, 0.005, 0.01)  # s; the reference's dt is 10 ms, the synaptic delays 1-4 ms


def connectivity_scores(dm, matrix: np.ndarray, *, split: str, windows: str, untrained: np.ndarray | None = None,
                        normalize: str = CONNECTIVITY_NORMALIZE, baseline_bins=BASELINE_BINS) -> dict[str, float]:
    """Score attention-derived connectivity and the raster baselines of the same windows.

    Metrics are named `windows/connectivity_*` (`test/...`: held-out test windows; `train/...`: the
    training windows). The raster baselines (zero-lag, lagged and partial correlation) are computed
    on the same windows and get the same normalisation as the attention (`normalize`, see
    `conn.normalize_attention`), so "above the baseline" compares like with like; their plain
    magnitudes are reported as `..._baseline_plain`. Each baseline is computed at every bin width of
    `baseline_bins`; the headline `connectivity_auroc_<name>_baseline` is its BEST bin (the strongest
    version of that baseline), and every bin is reported (`..._baseline_<ms>ms`), so that a choice of
    dt can never make the baselines look weaker than they are.
    """
    rec = dm.recording
    if rec.true_weights is None:
        return {}
    hubs = None if rec.hubs is None else list(np.asarray(rec.hubs))
    m = conn.connectivity_metrics(rec.true_weights, attention=matrix, hub_ids=hubs)
    p = f"{windows}/connectivity"
    out = {f"{p}_auroc": m["connectivity_auroc"], f"{p}_auprc": m["connectivity_auprc"],
           f"{p}_edge_density": m["connectivity_edge_density"]}
    if "connectivity_auroc_nonhub" in m:
        out[f"{p}_auroc_nonhub"] = m["connectivity_auroc_nonhub"]
    best: dict[str, tuple[float, float]] = {}
    best_plain: dict[str, float] = {}
    observed = ~np.eye(rec.n_neurons, dtype=bool)
    for width in baseline_bins:
        raster, _ = dm.held_out_counts(windows, float(width))
        for ours, mat in zip(("corr", "lagcorr", "pcorr"), conn.baseline_matrices(raster).values()):
            plain = conn.score(mat, rec.true_weights)["auroc"]
            s = conn.score(conn.normalize_attention(mat, observed, mode=normalize), rec.true_weights, hub_ids=hubs)
            out[f"{p}_auroc_{ours}_baseline_{width * 1e3:g}ms"] = s["auroc"]
            if ours not in best or s["auroc"] > best[ours][0]:
                best[ours] = (s["auroc"], s["auprc"])
            best_plain[ours] = max(best_plain.get(ours, -np.inf), plain)
    for ours, (auroc, auprc) in best.items():
        out[f"{p}_auroc_{ours}_baseline"] = auroc
        out[f"{p}_auprc_{ours}_baseline"] = auprc
        out[f"{p}_auroc_{ours}_baseline_plain"] = best_plain[ours]
    if untrained is not None:
        out[f"{p}_auroc_untrained"] = conn.score(untrained, rec.true_weights)["auroc"]
    return out


def evaluate_spike_model(model, dm, *, split: str = "test", report_dir: str | Path | None = None,
                         untrained_model=None, generate: bool = True, true_past: bool = True,
                         connectivity: bool = True, max_windows: int | None = 1200, n_stretches: int = 16,
                         max_batches: int | None = None, psth_bin: float = SM.DEFAULT_PSTH_BIN, seed: int = 0,
                         top_k: int = 0, top_p: float = 0.95, temperature: float = 1.0,
                         connectivity_layers: tuple[str, ...] | None = CONNECTIVITY_LAYERS,
                         connectivity_normalize: str = CONNECTIVITY_NORMALIZE,
                         connectivity_relative_to: str = CONNECTIVITY_RELATIVE_TO,
                         connectivity_train_windows: bool = True) -> SpikeEvalResult:
    """The full evaluation of a spike GPT on `split` (metrics named `split/name`) and its figures.

    Connectivity (when the data has true weights): attention is accumulated as in `teacher_forced`
    over the held-out windows of `split`, read from `connectivity_layers` with
    `connectivity_relative_to` and the per-layer `connectivity_normalize` (see `connectivity_readout`;
    the defaults are the CONNECTIVITY_* choices made on seed 0), and scored beside the raster
    baselines of the same windows (`connectivity_scores`): `split/connectivity_auroc`. With
    `connectivity_train_windows`, the same readout over the training windows (the data the model
    learned from, 4x more windows) is reported as `train/connectivity_auroc`, with the baselines of
    the training raster. `split/connectivity_auroc_plain` is the literal readout (every state /
    decoder / history layer, attention per co-occurrence, no normalisation) on `split`'s windows.
    """
    dm.setup()
    res = SpikeEvalResult()
    t0 = time.perf_counter()
    want_conn = connectivity and dm.recording.true_weights is not None
    acc = conn.AttentionConnectivity(model.config.n_neurons) if want_conn else None
    loader = dm.dataloader(split)
    tf, behavior = teacher_forced(model, loader, split=split, attention=acc, max_batches=max_batches)
    res.metrics.update(tf)
    log.info("teacher-forced %s metrics in %.1fs", split, time.perf_counter() - t0)

    if want_conn:
        t1 = time.perf_counter()
        truth = dm.recording.true_weights
        read = dict(layers=connectivity_layers, normalize=connectivity_normalize, relative_to=connectivity_relative_to)
        score_kw = dict(normalize=connectivity_normalize)
        windows = [split]
        if connectivity_train_windows and split != "train" and len(dm.intervals.get("train", ())):
            windows.append("train")
        for w in windows:
            acc_w = acc if w == split else attention_connectivity(model, dm.dataloader(w), max_batches=max_batches)
            untrained = None
            if untrained_model is not None:
                acc_u = attention_connectivity(untrained_model, dm.dataloader(w), max_batches=max_batches)
                untrained = connectivity_readout(acc_u, **read)
            matrix = connectivity_readout(acc_w, **read)
            res.metrics.update(connectivity_scores(dm, matrix, split=split, windows=w, untrained=untrained, **score_kw))
            if w == split:
                res.generated["connectivity"] = matrix
        plain = connectivity_readout(acc, layers=None, normalize="none", relative_to="count")
        res.metrics[f"{split}/connectivity_auroc_plain"] = conn.score(plain, truth)["auroc"]
        log.info("connectivity (%s windows) in %.1fs", "+".join(windows), time.perf_counter() - t1)
        if report_dir is not None:
            rec = dm.recording
            res.figures["connectivity"] = plots.plot_connectivity(
                res.generated["connectivity"], truth, Path(report_dir) / "connectivity.png",
                hub_ids=None if rec.hubs is None else list(rec.hubs),
                auroc=res.metrics.get(f"{split}/connectivity_auroc"))

    if generate:
        t1 = time.perf_counter()
        kw = dict(split=split, n_stretches=n_stretches, max_windows=max_windows, seed=seed, top_k=top_k,
                  top_p=top_p, temperature=temperature)
        own, rows = generate_split(model, dm, mode="own_past", **kw)
        res.metrics.update(generation_metrics(own, rows, dm, split=split, psth_bin=psth_bin))
        res.generated["own_past"] = own
        if true_past:
            tp, rows_tp = generate_split(model, dm, mode="true_past", **kw)
            res.metrics.update(generation_metrics(tp, rows_tp, dm, split=split, suffix="_truepast", psth_bin=psth_bin))
        log.info("generation metrics in %.1fs", time.perf_counter() - t1)
        if report_dir is not None:
            truth = dm.held_out_spikes(split)
            t_lo = float(np.sort(own.intervals)[0] - dm.window)
            t_rng = (t_lo, t_lo + 5.0)
            res.figures["raster"] = plots.plot_raster(truth["times"], truth["unit_ids"], own.spike_times,
                                                      own.unit_ids, Path(report_dir) / "raster.png", t_range=t_rng)

    if behavior and report_dir is not None:
        var, yp = next(iter(behavior.items()))
        y = dm.denormalize_behavior(var, yp[0]) if var in dm.behavior_stats else yp[0]
        p = dm.denormalize_behavior(var, yp[1]) if var in dm.behavior_stats else yp[1]
        name = f"{var} (class)" if _is_classification(model.config, var) else var
        res.figures["behavior"] = plots.plot_behavior(y, p, Path(report_dir) / "behavior.png", name=name)
    res.generated["behavior"] = behavior
    return res
