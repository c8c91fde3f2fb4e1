#!/usr/bin/env bash
# Idempotent environment set-up: .venv with a pinned, hashed lock, this project installed editable
# (its entry points on .venv/bin, its packages importable with no sys.path edits), then the stubs.
#   ./setup.sh            requirements-dev.txt: the runtime plus tests, linters and the tools' extras
#   ./setup.sh --runtime  requirements.txt only (what the Docker image installs)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON_BIN=${PYTHON_BIN:-python3}
lock=requirements-dev.txt
if [ "${1:-}" = "--runtime" ]; then
  lock=requirements.txt
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON_BIN" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip==26.3
  .venv/bin/python -m pip install --quiet --require-hashes -r "$lock"
  # The packages of this checkout (loopchain, tools, score) become importable from any directory.
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
PYTHON=.venv/bin/python ./generate_code.sh >/dev/null
# Bytecode of this checkout, made now: where Python does not write .pyc files itself
# (PYTHONDONTWRITEBYTECODE) every process would compile each module it imports at every start,
# which costs seconds of CPU across a local network's 13 processes and ~1 MB of heap in each. A
# module that does not compile (being edited) is told, and fails where it is imported.
.venv/bin/python -m compileall -q -j 0 loopchain tools score >/dev/null \
  || echo "setup.sh: some modules did not compile: .venv/bin/python -m compileall -q loopchain tools score" >&2
echo "setup done: .venv ready ($lock), stubs generated"
