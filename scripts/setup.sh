#!/usr/bin/env bash
# Set up everything the book and the tests need, in this folder, idempotently:
#   .venv/         Python packages at the exact versions of constraints.txt
#   node_modules/  MathJax and the widget manager at the versions of package-lock.json
#   web/           those assets, copied where the book build serves them from
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"error: metabook needs Python >= 3.10, this is {sys.version.split()[0]}; set PYTHON=python3.11 (or newer)")
PY

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
# torch goes first, by its exact pin: a bare range would make pip pick the newest
# CUDA build. The project itself only asks for torch>=2.3, so an existing torch stays.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing torch (pinned in constraints.txt)"
    .venv/bin/python -m pip install --quiet -c constraints.txt torch
fi
echo "setup: installing metabook with the book and test extras"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[book,test]"

if ! command -v npm >/dev/null; then
    echo "error: npm is needed to install MathJax and the widget manager (e.g. apt-get install nodejs npm)" >&2
    exit 1
fi
echo "setup: installing web assets (npm ci)"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
.venv/bin/python scripts/install_web_assets.py
