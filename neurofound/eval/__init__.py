"""Evaluation on numpy arrays: metrics, connectivity from attention, probes, plots, report.

This layer imports no model, no Lightning and no Hydra: a task moves tensors to numpy and
calls these functions. Submodules: ``metrics``, ``connectivity``, ``probes``, ``plots``,
``report``.
"""

from neurofound.eval import connectivity, metrics, plots, probes, report
from neurofound.eval.connectivity import AttentionConnectivity, connectivity_metrics
from neurofound.eval.metrics import (
    behavior_scores,
    bin_spikes,
    cross_entropy,
    empty_window_frac,
    group_by_window,
    pearson_r,
    psth_corr,
    r2_score,
    set_f1,
    set_f1_ref,
    timing_f1,
    token_accuracy,
)
from neurofound.eval.probes import ridge_probe
from neurofound.eval.report import write_report

__all__ = [
    "AttentionConnectivity",
    "behavior_scores",
    "bin_spikes",
    "connectivity",
    "connectivity_metrics",
    "cross_entropy",
    "empty_window_frac",
    "group_by_window",
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
    "timing_f1",
    "token_accuracy",
    "write_report",
]
