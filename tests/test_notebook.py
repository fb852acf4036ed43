"""The regret-plots notebook runs in quick mode, and its .ipynb is in sync with the .py."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "regret_plots"


def percent_cells(text: str) -> list[str]:
    """Code cells of a jupytext percent file (the header and markdown cells dropped)."""
    cells = []
    for chunk in text.split("# %%")[1:]:
        header, _, body = chunk.partition("\n")
        if "[markdown]" not in header:
            cells.append(body.strip())
    return cells


def test_ipynb_is_paired_with_the_py_file():
    notebook = json.loads(NOTEBOOK.with_suffix(".ipynb").read_text())
    code = ["".join(c["source"]).strip() for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code == percent_cells(NOTEBOOK.with_suffix(".py").read_text())


def test_notebook_runs_in_quick_mode(tmp_path):
    env = dict(os.environ, XPO_SIM_QUICK="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(NOTEBOOK.with_suffix(".py"))], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows from" in result.stdout
