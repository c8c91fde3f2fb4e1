#!/usr/bin/env bash
# Run the default test suite (sets up .venv and the stubs first if needed).
#   ./run_test.sh [pytest args...]     e.g. ./run_test.sh tests/unit -x
# Long soak and benchmark runs are marked "slow": ./run_test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
echo "== lint (ruff) and layer contracts (import-linter)"
.venv/bin/ruff check loopchain tests tools score peer.py radiostation.py rest_proxy.py
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
echo "== type check (mypy)"
.venv/bin/mypy loopchain tools
echo "== tests (pytest)"
exec .venv/bin/python -m pytest "$@"
