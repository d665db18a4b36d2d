#!/usr/bin/env bash
# Measures ringkv beside its limits and beside etcd on this machine, and
# prints one table per concurrency (see docs/benchmarks.md):
#
#   (a) the raw tonic unary round trip on loopback: one echo server, and
#       three with the requests spread over them,
#   (b) ringkv's RocksDB engine in process,
#   (c) one ringkv node,
#   (d) three ringkv nodes, N=3, R=W=QUORUM (routed; gets at R=ONE; via
#       one node; storage.sync = always for puts),
#   (e) six ringkv nodes, N=3: routed, then every request through one
#       node (the routing comparison, also at one open-loop rate),
#   (f) one and three ringkv nodes secured: TLS to the clients, mutual TLS
#       between the nodes, a token on every request,
#   (g) three etcd members (Debian's etcd-server, installed if missing):
#       round robin, serializable gets, and leader only,
#
# all with the same key count, value size and concurrency, driven by the
# same load generator (`ringkv-bench compare`), repeated --reps times (5)
# with the systems in a random order in each repetition; the table gives
# the median and range (min-max) of each figure. Every server is started
# on free loopback ports with a temporary data directory and stopped by
# its PID afterwards. Arguments are passed to `ringkv-bench compare`, e.g.
#
#   benches/compare.sh --duration 10s --keys 50000 --output json
#   benches/compare.sh --only echo,cluster,etcd --reps 3
#   benches/compare.sh --sweep 1,8,32,128
#
# Takes about 4 minutes per repetition with the defaults (5 s measured per
# row), so about 20 minutes for 5 repetitions, and that again for each
# concurrency of a sweep; plus the release build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringkv/target}"

if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd (Debian packages etcd-server, etcd-client)" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y etcd-server etcd-client >&2
fi

echo "== building ringkv-server and ringkv-bench (release)" >&2
(cd "$ROOT" && cargo build --release -p ringkv-server -p ringkv-benches --bins >&2)

exec "$CARGO_TARGET_DIR/release/ringkv-bench" compare \
    --server-bin "$CARGO_TARGET_DIR/release/ringkv-server" \
    --etcd-bin "$(command -v etcd)" \
    "$@"
