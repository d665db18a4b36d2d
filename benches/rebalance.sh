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
#   4. print the transfer's MB/s (bytes the new node received over the time
#      from commit to the retirement of the old replicas) and p50/p99 of
#      reads and writes of both phases.
#
# Usage: benches/rebalance.sh   (env: KEYS VALUE RATE PHASE_SECONDS MAX_RATE)
# Everything runs on 127.0.0.1 ports from BASE_PORT (default 27379); the
# script stops the nodes it started, by PID, on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
ringkv_install_deps
(cd "$RINGKV_ROOT" && cargo build --release --locked --bins -q)

KEYS="${KEYS:-100000}"
VALUE="${VALUE:-1000}"
RATE="${RATE:-2000}"
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
sleep 3
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
    "$BIN/ringkv" --endpoints "$NEW" --output json cluster transfers >"$WORK/transfers.json" 2>/dev/null || true
    sleep 0.2
done
wait "$BENCH_PID"
[ -n "$settled" ] || { echo "the change did not settle" >&2; exit 1; }

python3 - "$WORK" "$committed" "$settled" "$KEYS" "$VALUE" "$RATE" "$MAX_RATE" <<'EOF'
import json, sys
work, committed, settled = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
keys, value, rate, max_rate = sys.argv[4:8]
quiet = json.load(open(f"{work}/quiet.json"))
during = json.load(open(f"{work}/transfer.json"))
transfers = json.load(open(f"{work}/transfers.json"))["transfers"]
mine = [t for t in transfers if t["state"] == "done"]
total = sum(t["bytes"] for t in mine)
wall = settled - committed
print(f"keys {keys} x {value} B, YCSB A at {rate} ops/s, transfer.max_rate {max_rate} MB/s (0 = unlimited)")
print(f"transfer: {len(mine)} partitions, {total / 1e6:.1f} MB, {total / 1e6 / wall:.1f} MB/s from commit to retirement ({wall:.1f} s)")
def row(name, r):
    out = [name, f"{r['ops_per_sec']:.0f}"]
    for op in ("reads", "writes"):
        lat = r[op]["latency_us"] or {}
        out += [f"{lat.get('p50', 0) / 1000:.2f}", f"{lat.get('p99', 0) / 1000:.2f}"]
    out.append(str(r["errors"]))
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
