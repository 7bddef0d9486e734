#!/usr/bin/env bash
# Set up, then build the book: every chapter is executed in quick mode on the CPU,
# and the HTML goes to _build/html (open _build/html/index.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export METABOOK_DEVICE=cpu
# One CPU thread per notebook kernel everywhere (see scripts/execute_notebooks.py).
export OMP_NUM_THREADS=1
.venv/bin/jupyter-book build . -W -n --keep-going
echo "book built: $(pwd)/_build/html/index.html"
