"""The notebooks of ``notebooks/``: each runs in a real Jupyter kernel in quick mode, with no
cell raising and at least one figure drawn; each ``.ipynb`` holds the same code as its
jupytext ``.py`` twin; and each committed ``.ipynb`` carries the outputs of such a run, so
that a code host shows its figures.

After editing a notebook's ``.py``, ``jupytext --sync notebooks/NAME.py`` updates the
``.ipynb``; then store its outputs (docs/building.md says how).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
QUICK_SECONDS = 60  # what a notebook may take in quick mode, kernel start included
FIGURE = "image/png"


def percent_cells(text: str) -> list[str]:
    """Code cells of a jupytext percent file (the header and markdown cells dropped)."""
    cells = []
    for chunk in text.split("# %%")[1:]:
        header, _, body = chunk.partition("\n")
        if "[markdown]" not in header:
            cells.append(body.strip())
    return cells


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    text = cell["source"]
    return ("".join(text) if isinstance(text, list) else text).strip()


def figures(notebook: dict) -> int:
    return sum(FIGURE in output.get("data", {}) for cell in code_cells(notebook) for output in cell.get("outputs", []))


def test_there_are_notebooks():
    assert {"regret_plots", "function_approximation"} <= {path.stem for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_is_paired_with_its_py_file(path):
    twin = path.with_suffix(".py")
    assert twin.is_file(), f"{path.name} has no jupytext twin {twin.name}"
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert [source(cell) for cell in code_cells(notebook)] == percent_cells(twin.read_text(encoding="utf-8")), (
        f"{path.name} and {twin.name} hold different code: run `jupytext --sync {twin.relative_to(ROOT)}`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_carries_its_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = code_cells(notebook)
    assert all(cell.get("execution_count") for cell in cells), f"{path.name}: some cells were never run"
    errors = [o for cell in cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} stores an error output"
    assert figures(notebook) >= 1, f"{path.name} stores no figure: a code host would show none"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_a_kernel_in_quick_mode(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient", reason='nbclient is in the dev extra: pip install -e ".[dev]"')
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("XPO_SIM_QUICK", "1")  # the kernel inherits this process's environment
    monkeypatch.delenv("XPO_SIM_RESULTS", raising=False)
    notebook = nbformat.read(path, as_version=4)
    for cell in code_cells(notebook):
        cell["outputs"] = []
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=False,
                                     resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    client.execute()  # a cell that raises fails here with nbclient's CellExecutionError
    seconds = time.perf_counter() - start
    assert figures(notebook) >= 1, f"{path.name} drew no figure in the kernel"
    assert any("rows from" in "".join(o.get("text", "")) for cell in code_cells(notebook)
               for o in cell["outputs"]), "the sweep's summary line is missing"
    assert seconds < QUICK_SECONDS, f"{path.name} took {seconds:.0f} s in quick mode (limit {QUICK_SECONDS} s)"
