"""Report figures: each function draws one PNG, writes it to ``path`` and returns the path.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas directly,
so importing this module never switches the global pyplot backend of the caller (a notebook
keeps its inline backend) and nothing needs a display.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from neurofound.errors import ConfigError, DataError

__all__ = ["plot_raster", "plot_connectivity", "plot_behavior", "plot_training_curves"]


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"plots are written as PNG; give a path ending in .png, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_raster(true_times: np.ndarray, true_ids: np.ndarray, pred_times: np.ndarray,
                pred_ids: np.ndarray, path: str | os.PathLike, *, neurons: Sequence[int] | None = None,
                t_range: tuple[float, float] | None = None, title: str = "held-out vs generated spikes") -> Path:
    """Two raster panels (held-out on top, generated below), shared time axis, same neurons.

    Args:
        true_times, true_ids: ``(spikes,)`` held-out spike times (s) and neuron ids.
        pred_times, pred_ids: ``(spikes,)`` generated spikes.
        path: output ``.png``.
        neurons: neurons to show (default: all that fire in either).
        t_range: ``(start, stop)`` seconds to show (default: everything).
        title: figure title.
    """
    data = []
    for t, u in ((true_times, true_ids), (pred_times, pred_ids)):
        t, u = np.asarray(t, dtype=np.float64).ravel(), np.asarray(u, dtype=np.int64).ravel()
        if t.shape != u.shape:
            raise DataError(f"spike times {t.shape} and ids {u.shape} differ")
        data.append((t, u))
    if neurons is None:
        neurons = np.union1d(data[0][1], data[1][1])
    neurons = np.asarray(neurons, dtype=np.int64)
    row = {int(n): i for i, n in enumerate(neurons)}
    fig = Figure(figsize=(10, 6))
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    for ax, (t, u), name in zip(axes, data, ("held-out", "generated")):
        keep = np.isin(u, neurons)
        if t_range is not None:
            keep &= (t >= t_range[0]) & (t < t_range[1])
        rows = np.array([row[int(x)] for x in u[keep]], dtype=np.int64)
        ax.scatter(t[keep], rows, s=25, marker="|", linewidths=1,
                   color="black" if name == "held-out" else "tab:red")
        if len(neurons) <= 30:  # few neurons: label rows with their ids
            ax.set_yticks(np.arange(len(neurons)), [str(int(x)) for x in neurons], fontsize=7)
        ax.set_ylabel(f"{name}\nneuron")
        ax.set_ylim(-1, max(len(neurons), 1))
        ax.set_title(f"{name}: {int(keep.sum())} spikes", fontsize=9)
    if t_range is not None:
        axes[1].set_xlim(*t_range)
    axes[1].set_xlabel("time (s)")
    fig.suptitle(title)
    return _save(fig, path)


def plot_connectivity(matrix: np.ndarray, true_weights: np.ndarray, path: str | os.PathLike, *,
                      hub_ids: Sequence[int] | None = None, auroc: float | None = None,
                      label: str = "attention") -> Path:
    """Side-by-side heat maps: inferred ``matrix[target, source]`` and the true weights.

    Hub SOURCE columns are marked with a dashed line on both panels; the AUROC (if given) goes in
    the title. The diagonal of the inferred matrix is blanked (it is never scored).
    """
    m = np.array(matrix, dtype=np.float64)
    w = np.asarray(true_weights, dtype=np.float64)
    if m.shape != w.shape or m.ndim != 2:
        raise DataError(f"matrix {m.shape} and true_weights {w.shape} must be the same (N, N) shape")
    np.fill_diagonal(m, np.nan)
    fig = Figure(figsize=(11, 5))
    ax_m, ax_w = fig.subplots(1, 2)
    im = ax_m.imshow(m, cmap="viridis", interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax_m, shrink=0.8)
    lim = float(np.max(np.abs(w))) or 1.0
    im = ax_w.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax_w, shrink=0.8)
    for ax, name in ((ax_m, f"inferred ({label})"), (ax_w, "true weights")):
        for h in hub_ids if hub_ids is not None else ():
            ax.axvline(h, color="orange", lw=0.8, ls="--")
        ax.set_xlabel("source neuron")
        ax.set_ylabel("target neuron")
        ax.set_title(name)
    suffix = f"  AUROC = {auroc:.3f}" if auroc is not None else ""
    fig.suptitle(f"connectivity: {label} vs truth{suffix}" + ("  (dashed: hub sources)" if hub_ids is not None else ""))
    return _save(fig, path)


def plot_behavior(y_true: np.ndarray, y_pred: np.ndarray, path: str | os.PathLike, *,
                  t: np.ndarray | None = None, name: str = "behaviour") -> Path:
    """Predicted vs true behaviour: time-series overlay (left) and scatter with Pearson r (right)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size < 2:
        raise DataError(f"y_true {y.shape} and y_pred {p.shape} must be equal-length 1-D with >= 2 samples")
    xlabel = "window" if t is None else "time (s)"
    t = np.arange(y.size) if t is None else np.asarray(t, dtype=np.float64).ravel()
    if t.shape != y.shape:
        raise DataError(f"t {t.shape} must have one time per sample {y.shape}")
    r = float(np.corrcoef(y, p)[0, 1]) if y.std() > 0 and p.std() > 0 else float("nan")
    fig = Figure(figsize=(12, 4))
    ax_t, ax_s = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.5, 1]})
    ax_t.plot(t, y, color="black", lw=1, label="true")
    ax_t.plot(t, p, color="tab:red", lw=1, alpha=0.8, label="predicted")
    ax_t.set_xlabel(xlabel)
    ax_t.set_ylabel(name)
    ax_t.legend(loc="upper right", fontsize=8)
    ax_s.scatter(y, p, s=6, alpha=0.5)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax_s.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax_s.set_xlabel(f"true {name}")
    ax_s.set_ylabel(f"predicted {name}")
    ax_s.set_title(f"r = {r:.3f}")
    fig.suptitle(f"{name}: predicted vs true")
    return _save(fig, path)


def plot_training_curves(metrics_csv: str | os.PathLike, path: str | os.PathLike, *,
                         keys: Sequence[str] | None = None) -> Path:
    """Training curves from a Lightning ``CSVLogger`` ``metrics.csv`` (one panel per metric).

    Columns named ``split/name`` are grouped by ``name`` so ``train/id_loss`` and ``val/id_loss``
    share a panel; the x axis is ``step`` (or the row number). Empty cells are skipped.

    Args:
        metrics_csv: path of the CSV file.
        path: output ``.png``.
        keys: metric names (the part after ``split/``) to plot; default all numeric columns.
    """
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{metrics_csv} has no rows")

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan

    step = np.array([num(r.get("step")) for r in rows]) if "step" in rows[0] else np.arange(len(rows), dtype=float)
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for col in rows[0]:
        if col in ("step", "epoch"):
            continue
        vals = np.array([num(r[col]) for r in rows])
        if np.all(np.isnan(vals)):
            continue
        metric = col.split("/", 1)[-1]
        if keys is not None and metric not in keys and col not in keys:
            continue
        panels.setdefault(metric, []).append((col, vals))
    if not panels:
        raise DataError(f"no numeric metric columns to plot in {metrics_csv} (keys={keys})")
    n = len(panels)
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig = Figure(figsize=(4.5 * ncol, 3.2 * nrow))
    axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
    for ax, (metric, series) in zip(axes, panels.items()):
        for col, vals in series:
            ok = ~np.isnan(vals) & ~np.isnan(step)
            ax.plot(step[ok], vals[ok], marker="." if ok.sum() < 30 else None, label=col)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)
