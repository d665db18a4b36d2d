#!/usr/bin/env bash
# Partition transfer throughput, and what a transfer costs the foreground,
# measured in one run on one local cluster:
#
#   1. start 3 nodes (N=3, QUORUM), load KEYS keys of VALUE bytes;
#   2. "quiet": YCSB A at a fixed open-loop rate (RATE ops/s) for
#      PHASE_SECONDS;
#   3. "transfer": the same workload again, and 3 s into it a 4th node
#      joins (auto_join) and receives its partitions at transfer.max_rate
#      = MAX_RATE MB/s (0 = unlimited);
#   4. print the transfer's MB/s (bytes the new node received, from its
#      ringkv_transfer_bytes_total, over the time from commit to the
#      retirement of the old replicas) and p50/p99 of reads and writes of
#      both phases.
#
# Usage: benches/rebalance.sh   (env: KEYS VALUE RATE PHASE_SECONDS MAX_RATE JOIN_AFTER)
# Everything runs on 127.0.0.1 ports from BASE_PORT (default 27379); the
# script stops the nodes it started, by PID, on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
ringkv_install_deps
(cd "$RINGKV_ROOT" && cargo build --release --locked --bins -q)

KEYS="${KEYS:-100000}"
VALUE="${VALUE:-1000}"
RATE="${RATE:-500}"
SECONDS_PER_PHASE="${PHASE_SECONDS:-20}"
MAX_RATE="${MAX_RATE:-0}"
BASE_PORT="${BASE_PORT:-27379}"
BIN="$RINGKV_BIN"
WORK="$(mktemp -d)"
export RINGKV_CLUSTER_DIR="$WORK/cluster" RINGKV_BASE_PORT="$BASE_PORT"
export RINGKV_METRICS_BASE_PORT=$((BASE_PORT + 2000))
export RINGKV__TRANSFER__MAX_RATE="$MAX_RATE"
CLUSTER="$RINGKV_ROOT/deploy/local-cluster.sh"
ENDPOINTS="127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
NEW="127.0.0.1:$((BASE_PORT + 3))"

cleanup() {
    "$CLUSTER" stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$CLUSTER" start 3 >/dev/null
echo "loading $KEYS keys of $VALUE bytes into 3 nodes" >&2
"$BIN/ringkv-bench" --endpoints "$ENDPOINTS" --workload load --keys "$KEYS" \
    --value-size "$VALUE" --concurrency 32 --duration 30m --output json >"$WORK/load.json"

bench() {
    "$BIN/ringkv-bench" --endpoints "$ENDPOINTS" --workload a --keys "$KEYS" \
        --value-size "$VALUE" --concurrency 64 --target-rate "$RATE" \
        --duration "${SECONDS_PER_PHASE}s" --warmup 1s --output json >"$1"
}

echo "quiet phase: YCSB A at $RATE ops/s for ${SECONDS_PER_PHASE}s" >&2
bench "$WORK/quiet.json"

echo "transfer phase: the same, and a 4th node joins 3 s in" >&2
bench "$WORK/transfer.json" &
BENCH_PID=$!
sleep "${JOIN_AFTER:-3}"
"$CLUSTER" add >/dev/null
# Follow the change: when it is committed, when it settles, what arrived.
committed="" settled="" version=0
deadline=$((SECONDS + 1800))
while [ -z "$settled" ] && [ "$SECONDS" -lt "$deadline" ]; do
    layout="$("$BIN/ringkv" --endpoints "$NEW" --output json cluster layout 2>/dev/null || true)"
    now="$(date +%s.%N)"
    read -r v prev < <(python3 -c 'import json,sys
try:
    l = json.loads(sys.argv[1]); print(l.get("version", 0), l.get("previous_version", 0))
except Exception:
    print(0, 0)' "$layout")
    if [ -z "$committed" ] && [ "$v" -gt 1 ]; then committed="$now"; version="$v"; fi
    if [ -n "$committed" ] && [ "$v" -gt "$version" ] && [ "$prev" -eq 0 ]; then settled="$now"; fi
    sleep 0.2
done
wait "$BENCH_PID"
[ -n "$settled" ] || { echo "the change did not settle" >&2; exit 1; }

python3 - "$WORK" "$committed" "$settled" "$KEYS" "$VALUE" "$RATE" "$MAX_RATE" \
    "http://127.0.0.1:$((RINGKV_METRICS_BASE_PORT + 3))/metrics" <<'EOF'
import json, sys, urllib.request
work, committed, settled = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
keys, value, rate, max_rate, metrics = sys.argv[4:9]
quiet = json.load(open(f"{work}/quiet.json"))
during = json.load(open(f"{work}/transfer.json"))
counters = {}
for line in urllib.request.urlopen(metrics, timeout=10).read().decode().splitlines():
    if line.startswith("ringkv_transfer_"):
        name, value_ = line.split()
        counters[name] = float(value_)
total = counters.get("ringkv_transfer_bytes_total", 0)
keys_moved = int(counters.get("ringkv_transfer_keys_total", 0))
wall = settled - committed
print(f"keys {keys} x {value} B, YCSB A at {rate} ops/s, transfer.max_rate {max_rate} MB/s (0 = unlimited)")
print(f"transfer: {keys_moved} keys, {total / 1e6:.1f} MB to the new node, {total / 1e6 / wall:.1f} MB/s from commit to retirement ({wall:.1f} s)")
def row(name, r):
    out = [name, f"{r['ops_per_sec']:.0f}"]
    for op in ("reads", "writes"):
        lat = r[op]["latency_us"] or {}
        out += [f"{lat.get('p50', 0) / 1000:.2f}", f"{lat.get('p99', 0) / 1000:.2f}"]
    kinds = {}
    for op in ("reads", "writes"):
        for k, n in r[op]["errors_by_kind"].items():
            kinds[k] = kinds.get(k, 0) + n
    out.append(", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "0")
    return out
rows = [["phase", "ops/s", "read p50 ms", "read p99 ms", "write p50 ms", "write p99 ms", "errors"],
        row("quiet", quiet), row("during transfer", during)]
for r in rows:
    print("| " + " | ".join(r) + " |")
qp = (quiet["reads"]["latency_us"] or {}).get("p99", 0)
dp = (during["reads"]["latency_us"] or {}).get("p99", 0)
if qp:
    print(f"read p99 during transfer / quiet: {dp / qp:.2f}x")
EOF
