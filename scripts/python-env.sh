#!/usr/bin/env bash
# Makes the Python environment the tests use: grpcio and grpcio-tools (the
# grpcio example, deploy/examples/python), grpcio-reflection (discovering
# the API with no .proto) and kubernetes-validate (checking deploy/k8s
# offline against the schemas it carries). A virtualenv beside the build
# cache; safe to run repeatedly; prints the interpreter's path.
set -euo pipefail
VENV="${RINGKV_PYTHON_VENV:-$HOME/.cache/ringkv/venv}"
if ! "$VENV/bin/python" -c 'import grpc, grpc_tools, grpc_reflection, kubernetes_validate' >/dev/null 2>&1; then
    echo "ringkv: installing grpcio, grpcio-tools, grpcio-reflection and kubernetes-validate into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        'grpcio==1.76.*' 'grpcio-tools==1.76.*' 'grpcio-reflection==1.76.*' \
        'kubernetes-validate==1.*' >&2
fi
echo "$VENV/bin/python"
