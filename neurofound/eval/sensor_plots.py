"""Plots of sensor-signal models: reconstructions, per-channel topomaps, codebook use, token accuracy.

Arrays in, PNG files out (Agg backend); nothing here imports a model. Topomaps use
`mne.viz.plot_topomap` on sensor positions projected to 2-D (azimuthal equidistant projection from
the vertex, as MNE's own layouts), one map per sensor type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from neurofound.eval.plots import _save

__all__ = ["plot_codebook_usage", "plot_level_accuracy", "plot_reconstruction", "plot_topomaps", "project_2d"]

_TYPE_NAMES = ("EEG", "MAG", "GRAD")


def _figure(nrows: int = 1, ncols: int = 1, *, figsize=(6, 4), **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)  # no pyplot: nothing global to close, any backend
    return fig, fig.subplots(nrows, ncols, **kwargs)


def plot_reconstruction(original: np.ndarray, reconstruction: np.ndarray, path: str | os.PathLike, *,
                        names: Sequence[str] | None = None, sfreq: float = 256.0, title: str = "",
                        pcc: Sequence[float] | None = None) -> Path:
    """Original (black) and reconstructed (red) traces of a few channels, one panel each.

    Args:
        original, reconstruction: `(channels, samples)`, both per-window z-scored.
        names: channel labels; pcc: per-channel correlation shown in the label.
    """
    original, reconstruction = np.asarray(original), np.asarray(reconstruction)
    n = original.shape[0]
    fig, axes = _figure(n, 1, figsize=(10, 1.4 * n + 0.6), sharex=True, squeeze=False)
    t = np.arange(original.shape[1]) / sfreq
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t, original[i], color="black", lw=0.8, label="original")
        ax.plot(t, reconstruction[i], color="tab:red", lw=0.8, alpha=0.85, label="reconstructed")
        label = names[i] if names is not None else f"ch {i}"
        if pcc is not None:
            label += f"  r={pcc[i]:.2f}"
        ax.set_ylabel(label, rotation=0, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        axes[0, 0].set_title(title)
    return _save(fig, path)


def project_2d(positions: np.ndarray) -> np.ndarray:
    """`(C, 3)` positions (centred on the head) -> `(C, 2)`: azimuthal equidistant projection from +z."""
    p = np.asarray(positions, dtype=np.float64)[:, :3]
    r = np.linalg.norm(p, axis=1)
    r[r == 0] = 1.0
    theta = np.arccos(np.clip(p[:, 2] / r, -1.0, 1.0))
    phi = np.arctan2(p[:, 1], p[:, 0])
    return np.stack([theta * np.cos(phi), theta * np.sin(phi)], axis=1)


def plot_topomaps(values: np.ndarray, positions: np.ndarray, types: np.ndarray, path: str | os.PathLike, *,
                  title: str = "", label: str = "PCC", vlim: tuple[float, float] = (0.0, 1.0)) -> Path:
    """One `mne.viz.plot_topomap` per sensor type of per-channel `values` (sensors at one location averaged).

    Args:
        values: `(C,)` per-channel numbers (NaN channels are dropped).
        positions: `(C, 3+)` sensor xyz; types: `(C,)` type ids.
    """
    import mne

    values, types = np.asarray(values, dtype=np.float64), np.asarray(types)
    kinds = [t for t in range(len(_TYPE_NAMES)) if ((types == t) & np.isfinite(values)).sum() >= 3]
    fig, axes = _figure(1, max(1, len(kinds)), figsize=(3.6 * max(1, len(kinds)), 3.6), squeeze=False)
    for ax, t in zip(axes[0], kinds):
        keep = (types == t) & np.isfinite(values)
        xy = project_2d(positions[keep])
        # co-located sensors (a Neuromag triplet's two gradiometers) are averaged: the map needs distinct points
        key = np.round(xy, 4)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        vals = np.bincount(inv.ravel(), weights=values[keep]) / np.bincount(inv.ravel())
        im, _ = mne.viz.plot_topomap(vals, uniq, axes=ax, show=False, sphere=np.pi / 2, vlim=vlim, cmap="viridis",
                                     contours=0)
        ax.set_title(f"{_TYPE_NAMES[t]} (mean {np.nanmean(values[keep]):.2f})", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7, label=label)
    if not kinds:
        axes[0, 0].text(0.5, 0.5, "fewer than 3 channels of any type", ha="center", va="center")
        axes[0, 0].set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_codebook_usage(usage: Sequence[float], perplexity: Sequence[float], codebook_size: int,
                        path: str | os.PathLike, *, target: float = 0.9) -> Path:
    """Fraction of codes used (bars) and perplexity / codebook size (dots) per RVQ level."""
    usage, perplexity = np.asarray(usage), np.asarray(perplexity)
    fig, ax = _figure(figsize=(1.2 * len(usage) + 2.5, 3.2))
    levels = np.arange(1, len(usage) + 1)
    ax.bar(levels, usage, color="tab:blue", label="codes used")
    ax.plot(levels, perplexity / codebook_size, "o", color="tab:orange", label="perplexity / K")
    ax.axhline(target, color="grey", ls="--", lw=0.8, label=f"target {target:.0%}")
    ax.set_xticks(levels)
    ax.set_xlabel("RVQ level")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of the codebook")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_level_accuracy(accuracy: Sequence[float], baseline: Sequence[float] | None, path: str | os.PathLike, *,
                        title: str = "masked-token accuracy per RVQ level") -> Path:
    """Masked-token accuracy per level (bars) beside the unigram baseline (grey bars)."""
    accuracy = np.asarray(accuracy)
    fig, ax = _figure(figsize=(1.2 * len(accuracy) + 2.5, 3.2))
    levels = np.arange(1, len(accuracy) + 1)
    w = 0.38
    ax.bar(levels - w / 2, accuracy, w, color="tab:green", label="model")
    if baseline is not None:
        ax.bar(levels + w / 2, np.asarray(baseline), w, color="lightgrey", label="unigram baseline")
    ax.set_xticks(levels)
    ax.set_xlabel("RVQ level")
    ax.set_ylabel("accuracy at masked positions")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
