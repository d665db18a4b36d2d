#!/usr/bin/env bash
# Makes the Python environment the grpcio example and its test use
# (deploy/examples/python): a virtualenv beside the build cache with grpcio
# and grpcio-tools. Safe to run repeatedly; prints the interpreter's path.
set -euo pipefail
VENV="${RINGKV_PYTHON_VENV:-$HOME/.cache/ringkv/venv}"
if ! "$VENV/bin/python" -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
    echo "ringkv: installing grpcio and grpcio-tools into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'grpcio==1.76.*' 'grpcio-tools==1.76.*' >&2
fi
echo "$VENV/bin/python"
