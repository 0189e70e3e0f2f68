"""The worked-example notebooks run top to bottom, and are committed without outputs."""
import json
import sys
from pathlib import Path

import pytest

import dualcalc as dc

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))


def test_notebooks_exist_and_are_stripped():
    assert {"01_register_your_own_activation.ipynb", "02_hermite_vs_closed_form.ipynb",
            "03_ntk_sketch_digits.ipynb", "04_predictions_diabetes.ipynb"} <= set(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = json.loads((NB_DIR / name).read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, name


def test_notebooks_match_their_generator():
    sys.path.insert(0, str(NB_DIR))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(NB_DIR))
    assert make_notebooks.main(["--check"]) == 0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="pip install 'dualcalc[notebooks]' to run the notebooks")
    nbformat = pytest.importorskip("nbformat", reason="pip install 'dualcalc[notebooks]'")
    pytest.importorskip("ipykernel", reason="pip install 'dualcalc[notebooks]'")
    pytest.importorskip("matplotlib", reason="pip install 'dualcalc[notebooks]'")
    if "sketch" in name and not hasattr(dc, "KernelSketch"):
        pytest.skip("dc.KernelSketch has not landed yet")
    monkeypatch.setenv("DUALCALC_CATALOG_DIR", str(tmp_path / "catalog"))  # no writes to ~/.config
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
