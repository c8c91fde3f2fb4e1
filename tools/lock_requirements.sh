#!/usr/bin/env bash
# Re-lock the pinned requirements with hashes after editing requirements.in or requirements-dev.in:
#   requirements.txt      the runtime (what the Docker image installs)
#   requirements-dev.txt  the runtime plus tests, linters and the tools' extras (what setup.sh installs)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools==7.6.2
compile=("$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links)
"${compile[@]}" --output-file requirements.txt requirements.in
"${compile[@]}" --output-file requirements-dev.txt requirements.in requirements-dev.in
