"""Copy MathJax and the Jupyter widget manager from node_modules into web/.

The book serves these itself, so that its pages render math and widgets with
no network. They come from the exact npm packages pinned in package.json and
package-lock.json (installed by `npm ci` in scripts/setup.sh); nothing
third-party is committed. Sphinx copies web/ into the site's _static/ folder
(`html_static_path` in _config.yml).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "node_modules"
TARGET = ROOT / "web"

# (source under node_modules, destination under web/)
ASSETS = [
    # MathJax finds its fonts relative to its own script: keep output/chtml/fonts beside it.
    ("mathjax/es5/tex-mml-chtml.js", "mathjax/tex-mml-chtml.js"),
    ("mathjax/es5/output/chtml/fonts", "mathjax/output/chtml/fonts"),
    ("requirejs/require.js", "require.js"),
    ("@jupyter-widgets/html-manager/dist", "html-manager"),
]


def main() -> int:
    missing = [source for source, _ in ASSETS if not (MODULES / source).exists()]
    if missing:
        print(f"error: {', '.join(missing)} not found under {MODULES}; run `npm ci` first", file=sys.stderr)
        return 1
    staging = TARGET.with_name(TARGET.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for source, destination in ASSETS:
        source_path, destination_path = MODULES / source, staging / destination
        destination_path.parent.mkdir(parents=True, exist_ok=True)
        if source_path.is_dir():
            shutil.copytree(source_path, destination_path, ignore=shutil.ignore_patterns("*.map"))
        else:
            shutil.copy2(source_path, destination_path)
    # Swap in the complete folder at once, so a failed copy never leaves half of it.
    shutil.rmtree(TARGET, ignore_errors=True)
    staging.rename(TARGET)
    print(f"web assets ready in {TARGET.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
