#!/usr/bin/env bash
# Runs every ringkv check: formatting, lints, unit and property tests,
# storage suites, integration tests on real server processes, and the
# benchmarks in smoke mode. Safe to run repeatedly.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ringkv_install_deps
ringkv_install_verify_deps
ringkv_install_docker_deps
cd "$RINGKV_ROOT"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== layers (no gRPC below the server crate)"
./scripts/check-layers.sh

echo "== cargo clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

echo "== build binaries"
ringkv_build

echo "== container image (deploy/docker/build.sh; the compose tests run it)"
./deploy/docker/build.sh

echo "== Python environment (grpcio, grpcio-reflection, kubernetes-validate)"
RINGKV_PYTHON="$("$RINGKV_ROOT/scripts/python-env.sh")"
export RINGKV_PYTHON

echo "== Kubernetes manifests (offline schema validation)"
./scripts/check-manifests.sh

echo "== tests"
cargo test --release --locked --workspace --all-targets

echo "== fuzz smoke"
./scripts/fuzz.sh smoke
