"""The documentation: every public name has an API entry, the site builds with no warning,
nothing points outside the repository, and the README stays a front door.

The API check builds the site (notebooks not executed: ``XPO_SIM_DOCS_EXECUTE=false``) and
reads the object inventory mkdocstrings writes (``objects.inv``): a name in
``xpo_sim.__all__`` or in a public submodule's ``__all__`` with no entry there fails, as
rlax's build does. It needs the ``docs`` extra (``pip install -e ".[docs]"``); without it
those tests skip, and CI installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import xpo_sim

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 12_000  # bytes


def _untracked_sources() -> set[Path]:
    """The package's .py files that git does not track (someone's work in progress in this
    checkout; none in a fresh clone, so CI checks every module). Empty outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", "xpo_sim"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {(ROOT / line).resolve() for line in out.splitlines() if line.endswith(".py")}


def public_modules() -> list[str]:
    """xpo_sim and every submodule none of whose name parts starts with an underscore (a
    module whose file git does not track yet is left out)."""
    names = ["xpo_sim"]
    untracked = _untracked_sources()
    for info in pkgutil.walk_packages(xpo_sim.__path__, "xpo_sim.", onerror=lambda name: None):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and Path(spec.origin).resolve() in untracked:
            continue
        names.append(info.name)
    return sorted(names)


def read_inventory(path: Path) -> set[str]:
    """The object names of a Sphinx-format inventory (``objects.inv``, version 2)."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):  # four plain-text header lines, then the zlib-compressed body
        header_end = data.index(b"\n", header_end) + 1
    assert data.startswith(b"# Sphinx inventory version 2"), data[:40]
    body = zlib.decompress(data[header_end:]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


def _documented(module, name: str, inventory: set[str]) -> bool:
    """Whether ``module.name`` has an entry: under that path, where its object is defined, or
    under any other public module that exports the very same object."""
    if f"{module.__name__}.{name}" in inventory:
        return True
    obj = getattr(module, name)
    if isinstance(obj, type(sys)):
        return obj.__name__ in inventory
    qualname, home = getattr(obj, "__qualname__", None), getattr(obj, "__module__", None)
    if qualname and home and f"{home}.{qualname}" in inventory:
        return True
    for entry in inventory:
        prefix, _, last = entry.rpartition(".")
        if last == name and prefix in sys.modules and getattr(sys.modules[prefix], name, None) is obj:
            return True
    return False


def missing_entries(inventory: set[str], modules: list[str]) -> list[str]:
    """``module.name`` for every name of each module's ``__all__`` that has no entry."""
    missing = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        if module_name != "xpo_sim" and module_name not in inventory:
            missing.append(f"{module_name} (the module itself)")
        for name in getattr(module, "__all__", []):
            if not _documented(module, name, inventory):
                missing.append(f"{module_name}.{name}")
    return missing


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install -e ".[docs]"')
    pytest.importorskip("mkdocstrings")
    site = tmp_path_factory.mktemp("site")
    env = dict(os.environ, XPO_SIM_DOCS_EXECUTE="false", NO_MKDOCS_2_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return site


def test_the_site_builds_with_no_warning(built_site):
    for page in ("index.html", "theory.html", "api/index.html", "api/loop.html",
                 "notebooks/regret_plots.html", "notebooks/function_approximation.html"):
        assert (built_site / page).is_file(), page
    assert (built_site / "assets/katex/katex.min.js").is_file()


def test_every_public_name_has_an_api_entry(built_site):
    inventory = read_inventory(built_site / "objects.inv")
    modules = public_modules()
    if importlib.util.find_spec("torch") is None:  # the torch extra: documented, not importable here
        modules = [m for m in modules if not m.startswith("xpo_sim.torch")]
    assert {"xpo_sim.loop", "xpo_sim.envs", "xpo_sim.sweep"} <= set(modules)
    missing = missing_entries(inventory, modules)
    assert not missing, ("public names with no API entry (add `::: xpo_sim.MODULE` to docs/api/MODULE.md "
                         f"and the page to mkdocs.yml's nav): {missing}")


def test_the_check_notices_a_missing_entry(built_site):
    inventory = read_inventory(built_site / "objects.inv")
    assert not missing_entries(inventory, ["xpo_sim.soft"])
    # the page's entry and the aliases mkdocstrings records for it (xpo_sim.solve_soft, ...)
    without = {entry for entry in inventory if entry.rpartition(".")[2] != "solve_soft"}
    assert missing_entries(without, ["xpo_sim.soft"]) == ["xpo_sim.soft.solve_soft"]
    assert missing_entries(without, ["xpo_sim"]) == ["xpo_sim.solve_soft"]


def test_formulas_and_notebook_pages_need_no_network(built_site):
    network = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    pages = list(built_site.rglob("*.html"))
    assert len(pages) > 20
    offenders = [str(p.relative_to(built_site)) for p in pages if network.search(p.read_text(encoding="utf-8"))]
    assert not offenders, offenders
    theory = (built_site / "theory.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in theory and "katex.min.js" in theory


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the ignored folders
        skip = {".git", ".venv", "site", "results", "build", "dist"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_nothing_points_outside_the_repository():
    notes = "DESIGN" + ".md"  # spelled in two parts so that this file does not match itself
    shared = "../" + "shared"
    hits = []
    for path in _tracked_files():
        if path.suffix in {".png", ".woff2"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        for needle in (notes, shared):
            if needle in text:
                hits.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not hits, hits


def test_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= README_LIMIT, f"README.md is {len(text.encode())} bytes"
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert first_block == ['python -m pip install -e . && python experiments/coverage_sweep.py',
                           'python -m pip install -e ".[dev,dist]" && python -m pytest']
    links = re.findall(r"\]\(((?:docs|figures|notebooks)/[^)#\s]+)", text)
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if not (ROOT / link).is_file()]
    assert not broken, broken
