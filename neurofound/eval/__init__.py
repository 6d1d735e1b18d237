"""Evaluation on numpy arrays: metrics, spike metrics, connectivity from attention, probes, plots, report.

This layer imports no model, no Lightning and no Hydra: a task moves tensors to numpy and
calls these functions. Submodules: ``metrics`` (any modality), ``spike_metrics`` (spike trains),
``connectivity``, ``probes``, ``plots``, ``report``.
"""

from neurofound.eval import connectivity, metrics, plots, probes, report, spike_metrics
from neurofound.eval.connectivity import AttentionConnectivity, connectivity_metrics
from neurofound.eval.metrics import (
    auroc,
    balanced_accuracy,
    behavior_scores,
    explained_variance,
    mae,
    pearson_r,
    r2_score,
)
from neurofound.eval.probes import ridge_probe
from neurofound.eval.report import write_report
from neurofound.eval.spike_metrics import empty_window_frac, psth_corr, set_f1, set_f1_ref, timing_f1

__all__ = [
    "AttentionConnectivity",
    "auroc",
    "balanced_accuracy",
    "behavior_scores",
    "connectivity",
    "connectivity_metrics",
    "empty_window_frac",
    "explained_variance",
    "mae",
    "metrics",
    "pearson_r",
    "plots",
    "probes",
    "psth_corr",
    "r2_score",
    "report",
    "ridge_probe",
    "set_f1",
    "set_f1_ref",
    "spike_metrics",
    "timing_f1",
    "write_report",
]
