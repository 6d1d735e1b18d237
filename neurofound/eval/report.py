"""``report.md``: the human-readable summary of a run folder's ``report/``.

The report holds a title, the run context (model, data, steps, ...), the notes (sentences in plain
words that put each headline figure beside its baselines and say when a baseline wins; each
family's recipe writes them from the metrics it produced), one metrics table per split (metric
names are ``split/name``), and the figures embedded by path relative to the report.
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


def write_report(report_dir: str | os.PathLike, metrics: Mapping[str, object],
                 figures: Mapping[str, str | os.PathLike] | None = None,
                 context: Mapping[str, object] | None = None, notes: list[str] | None = None) -> Path:
    """Write ``report_dir/report.md`` atomically (temp file + rename) and return its path.

    Args:
        report_dir: folder of the report (created if needed); figure links are relative to it.
        metrics: flat ``{"split/name": value}`` (as in ``metrics.json``).
        figures: figure name -> PNG path (absolute, or relative to the current directory).
        context: run context shown under the title, e.g. ``{"model": ..., "data": ...,
            "steps": ...}``; an optional ``"title"`` entry replaces the default title.
        notes: the recipe's plain-language notes (headline figures beside their baselines).
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
    notes = list(notes or [])
    if notes:
        lines += ["## Summary", ""] + [f"- {n}" for n in notes] + [""]

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

    if missing:
        lines += ["## Notes", "", f"- Figures not found (not embedded): {', '.join(missing)}.", ""]

    return atomic_write_text(report_dir / "report.md", "\n".join(lines))
