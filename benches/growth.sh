#!/usr/bin/env bash
# Cost growth of one ringkv node: throughput, latency, bytes on disk and
# resident memory as the value size grows and as the key count grows.
#
#   values  for each size in VALUE_SIZES (default 100 1024 16384 65536 B),
#           a fresh node: load VALUE_KEYS keys (default 20000), restart the
#           node (a clean stop flushes the memtables) and measure its data
#           directory, then run YCSB C and YCSB A.
#   keys    one node, KEY_VALUE-byte values (default 100), the key count
#           grown through KEY_STEPS (default 1M 2M 5M 10M 20M): each step
#           inserts only the new keys (ringkv-bench --insert-from), then the
#           node restarts, its data directory is measured, and YCSB C and A
#           run over every key loaded so far.
#
# Measured phases: CLIENTS clients (default 32), closed loop, uniform keys,
# WARMUP (default 2s) then DURATION (default 15s). Loads: LOAD_CLIENTS
# clients (default 64), each load bounded by MAX_LOAD (default 60m). The
# node runs with storage.sync = periodic and its other defaults; while a
# phase runs its VmRSS is sampled once a second.
#
# Usage: benches/growth.sh [values|keys|all]      (default: all)
#   env: VALUE_SIZES VALUE_KEYS KEY_STEPS KEY_VALUE CLIENTS LOAD_CLIENTS
#        WARMUP DURATION MAX_LOAD SEED
#        RESULTS     directory for the raw JSON and the tables
#                    (default ./growth-results/<UTC time>)
#        SKIP_BUILD=1  use the binaries already built in $CARGO_TARGET_DIR
# The node listens on free 127.0.0.1 ports in 10000-19999, keeps its data in
# a temporary directory, and is stopped by its PID on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"

PART="${1:-all}"
case "$PART" in
    values | keys | all) ;;
    *) echo "usage: $0 [values|keys|all]" >&2; exit 2 ;;
esac

VALUE_SIZES="${VALUE_SIZES:-100 1024 16384 65536}"
VALUE_KEYS="${VALUE_KEYS:-20000}"
KEY_STEPS="${KEY_STEPS:-1000000 2000000 5000000 10000000 20000000}"
KEY_VALUE="${KEY_VALUE:-100}"
CLIENTS="${CLIENTS:-32}"
LOAD_CLIENTS="${LOAD_CLIENTS:-64}"
WARMUP="${WARMUP:-2s}"
DURATION="${DURATION:-15s}"
MAX_LOAD="${MAX_LOAD:-60m}"
SEED="${SEED:-42}"
RESULTS="${RESULTS:-$PWD/growth-results/$(date -u +%Y%m%dT%H%M%SZ)}"
# Bounds on waiting for the node: to answer after a start, to exit after
# SIGTERM (it drains requests, stops workers and flushes its memtables).
READY_SECONDS=120
STOP_SECONDS=300
# The bench's key prefix is "ringkv-bench/" and the index has 10 digits.
KEY_BYTES=23

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    ringkv_install_deps
    ringkv_build -q -p ringkv-server -p ringkv-benches
fi
BIN="$RINGKV_BIN"
for bin in ringkv-server ringkv-bench; do
    [ -x "$BIN/$bin" ] || { echo "$bin not built in $BIN" >&2; exit 1; }
done

mkdir -p "$RESULTS"
WORK="$(mktemp -d)"
NODE_PID=""
SAMPLER_PID=""

cleanup() {
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
    fi
    if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
        kill -TERM "$NODE_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$NODE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NODE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# free_ports N: N distinct loopback ports in 10000-19999 that are free now.
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
want, found = int(sys.argv[1]), []
for _ in range(1000):
    if len(found) == want:
        break
    port = random.randrange(10000, 20000)
    if port in found:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    found.append(port)
if len(found) < want:
    sys.exit("no free loopback ports in 10000-19999")
print(*found)
EOF
}

utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }
load_1m() { cut -d' ' -f1 /proc/loadavg; }

# start_node: starts the node on $DATA and waits until it answers a get.
start_node() {
    "$BIN/ringkv-server" --name growth --listen "127.0.0.1:$PORT" \
        --metrics-listen "127.0.0.1:$MPORT" --data-dir "$DATA" --sync periodic \
        >>"$NODE_LOG" 2>&1 </dev/null &
    NODE_PID=$!
    local deadline=$((SECONDS + READY_SECONDS))
    # One successful get (a miss counts) means the node serves.
    until "$BIN/ringkv-bench" --endpoints "127.0.0.1:$PORT" --workload c --keys 1 \
        --warmup 0s --duration 1s --max-ops 1 --concurrency 1 --timeout 1s \
        --output json >/dev/null 2>&1; do
        if ! kill -0 "$NODE_PID" 2>/dev/null; then
            echo "the node exited; its log:" >&2
            tail -20 "$NODE_LOG" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "the node did not answer within ${READY_SECONDS}s" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# stop_node: SIGTERM, then waits for the clean exit (which flushes storage).
stop_node() {
    kill -TERM "$NODE_PID"
    local deadline=$((SECONDS + STOP_SECONDS))
    while kill -0 "$NODE_PID" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "the node did not stop within ${STOP_SECONDS}s; killing it" >&2
            kill -KILL "$NODE_PID" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    local status=0
    wait "$NODE_PID" || status=$?
    NODE_PID=""
    [ "$status" -eq 0 ] || { echo "the node exited with status $status" >&2; tail -20 "$NODE_LOG" >&2; exit 1; }
}

# sample_rss FILE: appends "VmRSS VmHWM" (KiB) of the node once a second
# until killed, the node exits, or MAX_LOAD plus a margin has passed.
sample_rss() {
    local end=$((SECONDS + 4000))
    while [ "$SECONDS" -lt "$end" ] && [ -r "/proc/$NODE_PID/status" ]; do
        awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r, h }' \
            "/proc/$NODE_PID/status" >>"$1" 2>/dev/null || break
        sleep 1
    done
}

# phase PART LABEL NAME BENCH-ARGS...: one ringkv-bench run against the
# node with the node's RSS sampled; appends a row to rows.jsonl.
phase() {
    local part="$1" label="$2" name="$3"
    shift 3
    local base="$RESULTS/$part-$label-$name"
    local started load_start rc=0
    started="$(utc)"
    load_start="$(load_1m)"
    : >"$base.rss"
    sample_rss "$base.rss" &
    SAMPLER_PID=$!
    echo "$(utc) $part $label $name: ringkv-bench $*" >&2
    "$BIN/ringkv-bench" --endpoints "127.0.0.1:$PORT" --seed "$SEED" --output json "$@" \
        >"$base.json" 2>"$base.stderr" || rc=$?
    local status
    status="$(awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r, h }' "/proc/$NODE_PID/status")"
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    echo "$status" >>"$base.rss"
    python3 - "$RESULTS/rows.jsonl" "$part" "$label" "$name" "$base" "$rc" "$started" "$(utc)" \
        "$load_start" "$(load_1m)" <<'EOF'
import json, sys
out, part, label, name, base, rc, started, ended, la0, la1 = sys.argv[1:]
with open(out, "a") as f:
    f.write(json.dumps({"kind": "phase", "part": part, "label": label, "phase": name,
                        "report": base + ".json", "rss": base + ".rss", "exit": int(rc),
                        "utc_start": started, "utc_end": ended,
                        "load_1m_start": float(la0), "load_1m_end": float(la1)}) + "\n")
EOF
    [ "$rc" -le 1 ] || { echo "ringkv-bench failed:" >&2; cat "$base.stderr" >&2; exit 1; }
    python3 - "$base.json" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))
lat = lambda op: (r[op]["latency_us"] or {})
parts = [f"{r['ops_per_sec']:.0f} ops/s, {r['errors']} errors, {r['cut_off']} cut off"]
for op in ("reads", "writes", "inserts"):
    if r[op]["ops"]:
        parts.append(f"{op} p50 {lat(op)['p50'] / 1000:.2f} ms p99 {lat(op)['p99'] / 1000:.2f} ms")
print("  " + "; ".join(parts))
EOF
}

# disk PART LABEL WHEN: bytes under the data directory, by kind of file.
disk() {
    python3 - "$RESULTS/rows.jsonl" "$1" "$2" "$3" "$DATA" <<'EOF'
import json, os, subprocess, sys
out, part, label, when, data = sys.argv[1:]
sizes = {"sst": 0, "wal": 0, "other": 0}
for root, _, files in os.walk(data):
    for f in files:
        size = os.lstat(os.path.join(root, f)).st_size
        kind = "sst" if f.endswith(".sst") else "wal" if f.endswith(".log") else "other"
        sizes[kind] += size
du = int(subprocess.run(["du", "-sb", data], capture_output=True, text=True, check=True).stdout.split()[0])
# Whether the data can sit in the OS page cache: reads past the block cache
# are served from it rather than the disk while it can.
meminfo = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")}
with open(out, "a") as f:
    f.write(json.dumps({"kind": "disk", "part": part, "label": label, "when": when,
                        "du_sb": du, **sizes, "page_cache_kb": meminfo["Cached"],
                        "mem_available_kb": meminfo["MemAvailable"]}) + "\n")
print(f"  data dir {when}: {du / 1e6:.1f} MB (sst {sizes['sst'] / 1e6:.1f}, "
      f"wal {sizes['wal'] / 1e6:.1f}, other {sizes['other'] / 1e6:.1f})", file=sys.stderr)
EOF
}

# measure PART LABEL KEYS VALUE: data dir live, then after a clean restart;
# then YCSB C and A over KEYS keys.
measure() {
    local part="$1" label="$2" keys="$3" value="$4"
    disk "$part" "$label" live
    stop_node
    disk "$part" "$label" flushed
    start_node
    for w in c a; do
        phase "$part" "$label" "$w" --workload "$w" --keys "$keys" --value-size "$value" \
            --concurrency "$CLIENTS" --warmup "$WARMUP" --duration "$DURATION"
    done
}

PORTS="$(free_ports 2)"
read -r PORT MPORT <<<"$PORTS"
NODE_LOG="$RESULTS/node.log"
DIRTY=false
[ -z "$(git -C "$RINGKV_ROOT" status --porcelain --untracked-files=no)" ] || DIRTY=true
python3 - "$RESULTS/info.json" "$(git -C "$RINGKV_ROOT" rev-parse HEAD)" "$DIRTY" "$(utc)" \
    "$PART" "$VALUE_SIZES" "$VALUE_KEYS" "$KEY_STEPS" "$KEY_VALUE" "$KEY_BYTES" "$CLIENTS" \
    "$LOAD_CLIENTS" "$WARMUP" "$DURATION" "$SEED" "127.0.0.1:$PORT" <<'EOF'
import json, os, sys
(out, commit, dirty, started, part, value_sizes, value_keys, key_steps, key_value, key_bytes,
 clients, load_clients, warmup, duration, seed, listen) = sys.argv[1:]
json.dump({"commit": commit, "dirty": dirty == "true", "utc_start": started, "part": part,
           "nproc": os.cpu_count(), "value_sizes": [int(v) for v in value_sizes.split()],
           "value_keys": int(value_keys), "key_steps": [int(k) for k in key_steps.split()],
           "key_value": int(key_value), "key_bytes": int(key_bytes), "clients": int(clients),
           "load_clients": int(load_clients), "warmup": warmup, "duration": duration,
           "seed": int(seed), "sync": "periodic", "listen": listen},
          open(out, "w"), indent=1)
EOF
echo "results in $RESULTS; node on 127.0.0.1:$PORT, log $NODE_LOG" >&2

if [ "$PART" = values ] || [ "$PART" = all ]; then
    for size in $VALUE_SIZES; do
        DATA="$WORK/values-$size"
        start_node
        phase values "$size" load --workload load --keys "$VALUE_KEYS" --value-size "$size" \
            --concurrency "$LOAD_CLIENTS" --duration "$MAX_LOAD"
        measure values "$size" "$VALUE_KEYS" "$size"
        stop_node
        rm -rf "$DATA"
    done
fi

if [ "$PART" = keys ] || [ "$PART" = all ]; then
    DATA="$WORK/keys"
    start_node
    loaded=0
    for keys in $KEY_STEPS; do
        [ "$keys" -gt "$loaded" ] || { echo "KEY_STEPS must increase" >&2; exit 2; }
        phase keys "$keys" load --workload load --keys "$keys" --insert-from "$loaded" \
            --value-size "$KEY_VALUE" --concurrency "$LOAD_CLIENTS" --duration "$MAX_LOAD"
        measure keys "$keys" "$keys" "$KEY_VALUE"
        loaded="$keys"
    done
    stop_node
fi

python3 "$(dirname "${BASH_SOURCE[0]}")/growth_tables.py" "$RESULTS" | tee "$RESULTS/tables.md"
