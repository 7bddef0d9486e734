"""Merge the runs of results files written elsewhere (``--output runs/out/...``) into ``results/``.

    .venv/bin/python scripts/merge_results.py runs/out/gradient-a.json runs/out/protonets-a.json

Each file goes into the results file of the script that wrote it (its
``script`` field names it; the script's ``Script(...)`` names its results
file), run by run: a run already there is replaced, the others are kept.
A script whose results carry a summary over runs (seeds, held-out domains)
defines ``summarize(results)``; the summary is then recomputed over every
merged run, not copied from the last file. Smoke-test files and runs that do
not follow the results schema are refused.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_scale_common import ROOT, save, schema_problems  # noqa: E402


def results_file(script: str, folder: Path) -> Path:
    """``folder/<name>.json`` for ``scripts/full_scale_X.py``, the name read from the script's ``Script(...)``."""
    source = (ROOT / script).read_text()
    # Script(__file__, __doc__, "x.json", ...) or Script(file=__file__, doc=__doc__, results="x.json", ...)
    name = re.search(r'Script\((?:__file__, __doc__, |[^)]*?\bresults=)"([^"]+)"', source, flags=re.DOTALL)
    if name is None:
        raise SystemExit(f"{script} declares no results file")
    return folder / name.group(1)


def summarizer(script: str):
    """The ``summarize(results)`` function of ``scripts/X.py``, or None when it has none."""
    spec = importlib.util.spec_from_file_location(f"merged_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return getattr(module, "summarize", None)


def main(argv=None, folder: Path = ROOT / "results") -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        raise SystemExit(__doc__)
    for path in paths:
        incoming = json.loads(path.read_text())
        if incoming.get("smoke"):
            raise SystemExit(f"{path} was written by --smoke: its numbers mean nothing")
        for name, run in incoming["runs"].items():
            problems = schema_problems(run)
            if problems:
                raise SystemExit(f"{path}: run {name!r} does not follow the results schema: {'; '.join(problems)}")
        target = results_file(incoming["script"], folder)
        merged = json.loads(target.read_text()) if target.is_file() else {"runs": {}}
        merged.update({k: v for k, v in incoming.items() if k != "runs"})
        merged["runs"].update(incoming["runs"])
        if (summarize := summarizer(incoming["script"])) is not None:
            merged["summary"] = summarize(merged)
        save(merged, target)
        print(f"{path}: {', '.join(incoming['runs'])} -> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
