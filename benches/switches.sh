#!/usr/bin/env bash
# Server CPU and context switches per request, counted by `perf stat` over
# every thread of every server while a bounded load runs: the cost that
# instruction counts (benches/profile.sh) do not see, thread hand-overs.
#
#   1. start NODES ringkv-server processes (N = min(3, NODES), QUORUM) on
#      127.0.0.1 ports from BASE_PORT;
#   2. warm up, then for each phase (put: new keys; get: workload C on the
#      keys just written) run ringkv-bench for DURATION at CONCURRENCY
#      while `perf stat -e task-clock,context-switches,cpu-migrations`
#      counts the servers;
#   3. print, per phase, requests, server CPU µs per request and context
#      switches per request (all nodes summed).
#
# Usage: benches/switches.sh   (env: NODES DURATION CONCURRENCY SYNC SERVER BENCH OUT)
#   SYNC    storage.sync of the nodes (default periodic)
#   SERVER  the ringkv-server binary (default: this build's); comparing two
#           builds means two runs with different SERVER
# The script stops the nodes it started, by PID, on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
ringkv_install_deps
command -v perf >/dev/null || {
    echo "ringkv: perf is needed (apt-get install linux-perf)" >&2
    exit 1
}

NODES="${NODES:-3}"
DURATION="${DURATION:-10s}"
CONCURRENCY="${CONCURRENCY:-32}"
SYNC="${SYNC:-periodic}"
BASE_PORT="${BASE_PORT:-15600}"
SERVER="${SERVER:-$RINGKV_BIN/ringkv-server}"
BENCH="${BENCH:-$RINGKV_BIN/ringkv-bench}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
[ -x "$SERVER" ] && [ -x "$BENCH" ] ||
    (cd "$RINGKV_ROOT" && cargo build --release --locked -p ringkv-server -p ringkv-benches --bins -q)
export RINGKV__STORAGE__SYNC="$SYNC"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

seeds="" endpoints=""
for i in $(seq 1 "$NODES"); do
    endpoints="${endpoints:+$endpoints,}127.0.0.1:$((BASE_PORT + 3 * i))"
    seeds="${seeds:+$seeds,}127.0.0.1:$((BASE_PORT + 3 * i + 1))"
done
for i in $(seq 1 "$NODES"); do
    "$SERVER" --name "node$i" --listen "127.0.0.1:$((BASE_PORT + 3 * i))" \
        --peer-listen "127.0.0.1:$((BASE_PORT + 3 * i + 1))" \
        --metrics-listen "127.0.0.1:$((BASE_PORT + 3 * i + 2))" \
        --data-dir "$OUT/data$i" --seeds "$seeds" --bootstrap-expect "$NODES" \
        --log-level warn >"$OUT/node$i.log" 2>&1 &
    PIDS+=("$!")
done

bench() {
    "$BENCH" --endpoints "$endpoints" --timeout 10s --seed 42 --output json "$@"
}
deadline=$((SECONDS + 60))
until bench --smoke --key-prefix ready/ >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "cluster not ready; logs in $OUT" >&2; exit 1; }
    sleep 1
done
bench --workload a --keys 2000 --duration 2s --warmup 0 --concurrency "$CONCURRENCY" \
    --key-prefix warm/ >/dev/null

pid_list="$(IFS=,; echo "${PIDS[*]}")"
printf '%s node(s), sync = %s, %s in flight, %s per phase\n' "$NODES" "$SYNC" "$CONCURRENCY" "$DURATION"
printf '%-6s %10s %14s %18s %16s\n' phase requests "CPU µs/req" "switches/req" "migrations/req"
for phase in put get; do
    case "$phase" in
        put) args=(--workload load --keys 5000000) ;;
        get) args=(--workload c --keys 50000) ;;
    esac
    perf stat -x, -e task-clock,context-switches,cpu-migrations -p "$pid_list" -o "$OUT/$phase.perf" -- \
        "$BENCH" --endpoints "$endpoints" --timeout 10s --seed 42 --output json \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 0 \
        --key-prefix sw/ "${args[@]}" >"$OUT/$phase.json"
    python3 - "$OUT/$phase.perf" "$OUT/$phase.json" "$phase" <<'PY'
import json, sys
perf, report, phase = sys.argv[1:]
counts = {}
for line in open(perf):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        counts[f[2]] = float(f[0])
r = json.load(open(report))
ops = max(1, r["ops"] - r["errors"])
print(f"{phase:<6} {ops:>10} {counts['task-clock'] * 1000 / ops:>14.1f} "
      f"{counts['context-switches'] / ops:>18.2f} {counts['cpu-migrations'] / ops:>16.3f}")
PY
done
