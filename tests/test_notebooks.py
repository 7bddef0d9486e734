"""The book's notebooks follow the rules that make nbval a regression test.

`pytest --nbval` re-runs each chapter and compares its outputs with the stored
ones; that only means something if every chapter is listed in the table of
contents, is committed executed, has no errors, and starts with the setup cell
that makes it run on Colab.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def toc_entries() -> set[str]:
    """Every `file:` / `root:` entry of _toc.yml, without extension."""
    entries: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "root") and isinstance(value, str):
                    entries.add(value.removesuffix(".ipynb").removesuffix(".md"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    return entries


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def code_cells(path: Path) -> list[dict]:
    notebook = json.loads(path.read_text())
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks under book/"


def test_toc_entries_exist():
    missing = [e for e in toc_entries() if not any((ROOT / f"{e}{ext}").exists() for ext in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_toc(path):
    entry = path.relative_to(ROOT).with_suffix("").as_posix()
    assert entry in toc_entries(), f"{entry}.ipynb is not listed in _toc.yml: add it, or nbval would not run it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed(path):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells"
    assert any(cell["outputs"] for cell in cells), (
        f"{path.name} has no stored outputs: run `python scripts/execute_notebooks.py {path.relative_to(ROOT)}`"
    )
    unexecuted = [i for i, cell in enumerate(cells) if cell.get("execution_count") is None and source(cell).strip()]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were never executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_error_output(path):
    for i, cell in enumerate(code_cells(path)):
        for output in cell["outputs"]:
            assert output["output_type"] != "error", f"{path.name}: code cell {i} stored an error: {output.get('ename')}"
            text = "".join(output.get("text", []))
            assert not re.search(r"(/root/|/home/|/tmp/)\S+", text), f"{path.name}: code cell {i} prints a local path"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_colab_setup_and_scale_switch(path):
    cells = code_cells(path)
    setup = source(cells[0])
    assert "import metabook_learn" in setup and "except ImportError" in setup, (
        f"{path.name}: the first code cell must be the setup cell of CONTRIBUTING.md"
    )
    assert f'"metabook-learn @ git+{repository_url()}"' in setup, (
        f"{path.name}: the setup cell must install from the repository URL of _config.yml ({repository_url()})"
    )
    assert "torch" not in setup.replace("Colab's own torch", ""), f"{path.name}: the setup cell must leave torch alone"
    switch = source(cells[1])
    assert re.search(r'^SCALE = "quick"', switch, flags=re.MULTILINE), (
        f'{path.name}: the second code cell must hold the switch, committed as SCALE = "quick"'
    )
    assert "metabook_learn.pick_device()" in switch and "metabook_learn.seed_everything(" in switch


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_plots_end_with_show(path):
    for i, cell in enumerate(code_cells(path)):
        text = source(cell)
        draws = re.search(r"\bplt\.(plot|subplots|figure|imshow|scatter|hist|bar)\(", text)
        if draws and "figure_to_png" not in text:
            last = text.strip().splitlines()[-1].strip()
            assert last == "plt.show()" or last.endswith(";"), f"{path.name}: code cell {i} draws but does not end with plt.show()"
