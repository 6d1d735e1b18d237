"""The quickstart notebook runs end to end on the embedded data."""

from __future__ import annotations


import nbformat
import pytest
from nbclient import NotebookClient

from helpers import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("NF_NOTEBOOK_DURATION", "20")
    monkeypatch.setenv("NF_NOTEBOOK_STEPS", "10")
    nb = nbformat.read(ROOT / "notebooks" / "neuroformer_quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "identical outputs after the round trip: True" in outputs
    assert "test/connectivity_auroc" in outputs
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_brainomni_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("NF_NOTEBOOK_SIZE", "ci")
    monkeypatch.setenv("NF_NOTEBOOK_STEPS", "6")
    nb = nbformat.read(ROOT / "notebooks" / "brainomni_quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "identical outputs after the round trip: True" in outputs
    assert "test/recon_corr_unseen_device_eeg" in outputs and "mean PCC" in outputs
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
