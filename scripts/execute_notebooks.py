"""Re-execute chapters in place, in quick mode on the CPU, keeping widget state.

    python scripts/execute_notebooks.py              # every notebook in _toc.yml
    python scripts/execute_notebooks.py book/X.ipynb  # only these

Run this after changing `metabook_learn`, then commit the notebooks: `pytest --nbval`
compares a fresh run against exactly these stored outputs.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def toc_notebooks() -> list[Path]:
    """Notebooks listed in _toc.yml, in book order."""
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"^\s*-?\s*(?:file|root):\s*(\S+)\s*$", toc, flags=re.MULTILINE)
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def execute(path: Path, timeout: int) -> float:
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}}, store_widget_state=True,
    )
    start = time.perf_counter()
    client.execute()
    nbformat.write(notebook, path)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all in _toc.yml)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default 1200)")
    args = parser.parse_args()
    # The committed outputs are the CPU's, so that CI (CPU only) reproduces them.
    os.environ["METABOOK_DEVICE"] = "cpu"
    # One CPU thread, as in the book build and the tests (two nbval workers share two
    # cores): the same thread count everywhere keeps floating-point results identical.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    notebooks = [p.resolve() for p in args.notebooks] or toc_notebooks()
    for path in notebooks:
        print(f"executing {path.relative_to(ROOT)} ...", flush=True)
        print(f"  done in {execute(path, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
