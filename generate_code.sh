#!/usr/bin/env bash
# Generate the gRPC/protobuf stubs in loopchain/protos from proto/*.proto.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p loopchain/protos
"$PY" -m grpc_tools.protoc -Iloopchain/protos=proto \
  --python_out=. --pyi_out=. --grpc_python_out=. proto/*.proto
echo "generated stubs in loopchain/protos"
