"""Summarize a pytest JUnit report: how many tests ran, and which chapters nbval ran.

Exits non-zero when no test passed or when a chapter listed in _toc.yml was
not run by nbval, so a broken collection cannot pass for a green run.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execute_notebooks import ROOT, toc_notebooks  # noqa: E402


def main(report: str) -> int:
    path = Path(report)
    if not path.exists():
        print(f"test report: {report} was not written: pytest did not run", file=sys.stderr)
        return 1
    outcomes: Counter[str] = Counter()
    nbval_cells: Counter[str] = Counter()  # pytest names a notebook's cells "book.chapter.ipynb::Cell N"
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcomes[outcome] += 1
        if case.get("classname", "").endswith(".ipynb"):
            nbval_cells[case.get("classname")] += 1
    print("test report: " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())))
    expected = {p.relative_to(ROOT).as_posix(): p.relative_to(ROOT).as_posix().replace("/", ".") for p in toc_notebooks()}
    ran = {notebook: nbval_cells[classname] for notebook, classname in expected.items()}
    for notebook, cells in sorted(ran.items()):
        print(f"nbval: {notebook}: {cells} cells run and compared")
    missing = sorted(n for n, cells in ran.items() if not cells)
    if outcomes["passed"] == 0:
        print("test report: no test passed", file=sys.stderr)
        return 1
    if missing:
        print(f"test report: nbval did not run {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/test-results.xml"))
