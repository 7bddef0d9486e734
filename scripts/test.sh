#!/usr/bin/env bash
# Set up, build the book, then run every test: the unit tests, nbval over every
# chapter (re-executed and compared with its committed outputs) and the
# headless-browser test of the built pages. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-book.sh

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test: installing headless Chromium for the browser test"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "test: no Chromium found (apt-get install chromium); the browser test will be skipped" >&2
    fi
fi

export METABOOK_DEVICE=cpu
# One CPU thread per notebook kernel everywhere (see scripts/execute_notebooks.py).
export OMP_NUM_THREADS=1
mkdir -p _build
status=0
.venv/bin/python -m pytest -n 2 --dist loadfile -p no:cacheprovider \
    --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
    --junitxml=_build/test-results.xml "$@" || status=$?
# pytest exits 5 when it collected nothing; the report below also fails then.
.venv/bin/python scripts/test_report.py _build/test-results.xml || status=$((status == 0 ? 1 : status))
exit "$status"
