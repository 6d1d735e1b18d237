"""``report.md``: the human-readable summary of a run folder's ``report/``.

The report holds a title, the run context (model, data, steps, ...), one metrics table per split
(metric names are ``split/name``), the figures embedded by path relative to the report, and a
few sentences in plain words for the comparisons a reader looks for first. Notes are written for
the metric names this package produces when they are present:

* ``connectivity_auroc`` / ``_auprc`` / ``_auroc_nonhub`` / ``_edge_density`` and
  ``baseline_<name>_auroc`` (``connectivity.connectivity_metrics``);
* ``set_f1`` with ``set_f1_ref`` (``metrics.set_f1`` corrected vs reference definition);
* ``empty_window_frac`` with ``true_empty_window_frac``;
* ``psth_r`` with ``psth_n_excluded``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from neurofound.io import atomic_write_text

__all__ = ["write_report", "group_by_split"]

_SPLIT_ORDER = ("train", "val", "test", "predict")


def group_by_split(metrics: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """``{"val/id_loss": x}`` -> ``{"val": {"id_loss": x}}``; names without a split go to ``"other"``.

    Splits come in the order train, val, test, predict, then the rest alphabetically.
    """
    groups: dict[str, dict[str, object]] = {}
    for key, value in metrics.items():
        split, name = key.split("/", 1) if "/" in key else ("other", key)
        groups.setdefault(split, {})[name] = value
    order = [s for s in _SPLIT_ORDER if s in groups] + sorted(s for s in groups if s not in _SPLIT_ORDER)
    return {s: dict(sorted(groups[s].items())) for s in order}


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    try:  # numpy scalars
        return _fmt(value.item())  # type: ignore[union-attr]
    except AttributeError:
        return str(value).replace("|", "\\|").replace("\n", " ")


def _num(d: Mapping[str, object], key: str) -> float | None:
    v = d.get(key)
    try:
        v = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _notes(split: str, m: Mapping[str, object]) -> list[str]:
    notes = []
    auroc = _num(m, "connectivity_auroc")
    if auroc is not None:
        text = f"**{split}, connectivity**: attention recovers the directed edges with AUROC {auroc:.3f} (0.5 is chance)"
        auprc, dens = _num(m, "connectivity_auprc"), _num(m, "connectivity_edge_density")
        if auprc is not None:
            text += f" and AUPRC {auprc:.3f}" + (f" (chance = edge density {dens:.3f})" if dens is not None else "")
        text += "."
        baselines = {k[len("baseline_"):-len("_auroc")]: _num(m, k) for k in m
                     if k.startswith("baseline_") and k.endswith("_auroc") and _num(m, k) is not None}
        if baselines:
            beaten = sorted(b for b, v in baselines.items() if auroc > v)
            best = max(baselines, key=lambda b: baselines[b])
            if len(beaten) == len(baselines):
                text += f" It beats every raster baseline (best: {best}, AUROC {baselines[best]:.3f})."
            elif not beaten:
                text += f" Every raster baseline does better (best: {best}, AUROC {baselines[best]:.3f})."
            else:
                text += (f" It beats {', '.join(beaten)} but not {best} (AUROC {baselines[best]:.3f}).")
            text += " Zero-lag and partial correlation are symmetric, so they cannot tell direction."
        nonhub = _num(m, "connectivity_auroc_nonhub")
        if nonhub is not None:
            text += f" Without the hub source columns the AUROC is {nonhub:.3f}."
        notes.append(text)
    f1, f1_ref = _num(m, "set_f1"), _num(m, "set_f1_ref")
    if f1 is not None and f1_ref is not None:
        notes.append(
            f"**{split}, generated spikes**: set F1 {f1:.3f} (corrected) vs {f1_ref:.3f} with the "
            "reference definition, which sets precision = recall = 1 whenever a window has no false "
            "positive or no false negative and skips windows without true spikes."
        )
    empty, empty_true = _num(m, "empty_window_frac"), _num(m, "true_empty_window_frac")
    if empty is not None and empty_true is not None:
        notes.append(f"**{split}, silence**: {100 * empty:.1f}% of generated windows are empty vs "
                     f"{100 * empty_true:.1f}% of true windows.")
    psth, excluded = _num(m, "psth_r"), _num(m, "psth_n_excluded")
    if psth is not None:
        notes.append(f"**{split}, rates**: mean per-neuron PSTH correlation r = {psth:.3f}"
                     + (f" ({int(excluded)} neurons without variance excluded)." if excluded is not None else "."))
    return notes


def write_report(report_dir: str | os.PathLike, metrics: Mapping[str, object],
                 figures: Mapping[str, str | os.PathLike] | None = None,
                 context: Mapping[str, object] | None = None) -> Path:
    """Write ``report_dir/report.md`` atomically (temp file + rename) and return its path.

    Args:
        report_dir: folder of the report (created if needed); figure links are relative to it.
        metrics: flat ``{"split/name": value}`` (as in ``metrics.json``).
        figures: figure name -> PNG path (absolute, or relative to the current directory).
        context: run context shown under the title, e.g. ``{"model": ..., "data": ...,
            "steps": ...}``; an optional ``"title"`` entry replaces the default title.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    context = dict(context or {})
    figures = dict(figures or {})
    title = context.pop("title", None) or "neurofound report" + (
        f": {context['model']}" if "model" in context else "") + (
        f" on {context['data']}" if "data" in context else "")

    lines = [f"# {title}", ""]
    if context:
        lines += ["## Run", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in context.items()] + [""]

    groups = group_by_split(metrics)
    lines += ["## Metrics", ""]
    if not groups:
        lines += ["No metrics were recorded.", ""]
    for split, values in groups.items():
        lines += [f"### {split}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_fmt(v)} |" for name, v in values.items()] + [""]

    missing = []
    if figures:
        lines += ["## Figures", ""]
        for name, fig_path in figures.items():
            fig_path = Path(fig_path)
            if not fig_path.is_file():
                missing.append(name)
                continue
            rel = Path(os.path.relpath(fig_path.resolve(), report_dir.resolve())).as_posix()
            lines += [f"### {name}", "", f"![{name}]({rel})", ""]

    notes = [n for split, values in groups.items() for n in _notes(split, values)]
    if missing:
        notes.append(f"Figures not found (not embedded): {', '.join(missing)}.")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]

    return atomic_write_text(report_dir / "report.md", "\n".join(lines))
