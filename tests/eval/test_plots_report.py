"""Plots write real PNGs; the report embeds them and groups metrics by split."""

import numpy as np
import pytest
from matplotlib.image import imread

from neurofound.errors import ConfigError, DataError
from neurofound.eval import plots
from neurofound.eval.report import group_by_split, write_report


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _figures(tmp_path):
    rng = np.random.default_rng(0)
    n = 12
    t_true, u_true = rng.uniform(0, 2, 80), rng.integers(0, n, 80)
    t_gen, u_gen = rng.uniform(0, 2, 60), rng.integers(0, n, 60)
    w = np.zeros((n, n))
    w[:, 3] = 1.0
    m = rng.random((n, n))
    y = np.sin(np.linspace(0, 6, 100))
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/id_loss,val/id_loss,val/id_acc\n"
                   "0,10,3.0,,\n0,20,2.5,,\n0,20,,2.7,0.1\n1,30,2.0,,\n1,40,,2.2,0.3\n")
    figdir = tmp_path / "run" / "report"
    return {
        "raster": plots.plot_raster(t_true, u_true, t_gen, u_gen, figdir / "raster.png",
                                    neurons=range(6), t_range=(0.0, 1.5)),
        "connectivity": plots.plot_connectivity(m, w, figdir / "conn.png", hub_ids=[3], auroc=0.73),
        "behavior": plots.plot_behavior(y, y + 0.1 * rng.normal(size=100), figdir / "beh.png",
                                        t=np.arange(100) * 0.05, name="speed"),
        "training": plots.plot_training_curves(csv, figdir / "curves.png"),
    }


def test_plots_write_pngs(tmp_path):
    figs = _figures(tmp_path)
    for name, path in figs.items():
        assert path.is_file() and _is_png(path), name
        img = imread(path)
        assert img.shape[0] > 200 and img.shape[1] > 400, name
        assert img[..., :3].std() > 0.01, f"{name} is blank"
    # raster: 10 x 6 in at 120 dpi
    assert imread(figs["raster"]).shape[:2] == (720, 1200)
    with pytest.raises(ConfigError, match=".png"):
        plots.plot_behavior([0, 1], [0, 1], tmp_path / "x.jpg")
    with pytest.raises(DataError, match="same"):
        plots.plot_connectivity(np.zeros((3, 3)), np.zeros((4, 4)), tmp_path / "c.png")


def test_group_by_split_orders_splits():
    groups = group_by_split({"test/b": 1, "val/a": 2, "train/z": 3, "val/0": 4, "lr": 5})
    assert list(groups) == ["train", "val", "test", "other"]
    assert list(groups["val"]) == ["0", "a"]


def test_write_report(tmp_path):
    """The generic writer: context, the recipe's notes first, one table per split, figures by relative path."""
    figs = _figures(tmp_path)
    report_dir = tmp_path / "run" / "report"
    metrics = {"val/id_loss": 2.25, "test/set_f1": 0.3123, "test/speed_r": float("nan")}
    figs["missing"] = tmp_path / "nope.png"
    notes = ["Connectivity AUROC 0.800 vs lagged cross-correlation 0.900: **the baseline wins**."]
    out = write_report(report_dir, metrics, figs,
                       context={"model": "neuroformer_small", "data": "hub network", "steps": 500}, notes=notes)
    assert out == report_dir / "report.md"
    text = out.read_text()
    assert text.startswith("# neurofound report: neuroformer_small on hub network\n")
    assert "- **steps**: 500" in text
    assert text.index("## Summary") < text.index("## Metrics")  # the notes come first
    assert "- " + notes[0] in text
    assert text.index("### val") < text.index("### test")
    assert "| id_loss | 2.25 |" in text and "| set_f1 | 0.3123 |" in text and "| speed_r | n/a |" in text
    assert "![raster](raster.png)" in text and "![training](curves.png)" in text
    assert "Figures not found (not embedded): missing." in text
    assert sorted(p.name for p in report_dir.iterdir() if p.name.startswith(".")) == []  # no temp file left
    # a report elsewhere links figures by relative path
    other = write_report(tmp_path / "elsewhere", {}, {"raster": figs["raster"]})
    assert "![raster](../run/report/raster.png)" in other.read_text()
    assert "No metrics were recorded." in other.read_text()
