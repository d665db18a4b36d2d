#!/usr/bin/env bash
# The cost of security, measured honestly on a shared machine: runs
# `ringkv-bench compare --only single,cluster,secure` REPS times (default 3),
# each run measuring one node and three nodes plaintext and then secured
# (TLS to clients, mutual TLS between nodes, a token on every request),
# and prints per run and as median [min-max] over the runs the ratios
# secured / plaintext of throughput and of server CPU per operation.
# Ratios are taken within one run, minutes apart, so the machine's drift
# between runs cancels out. Extra arguments go to `compare`.
#
#   benches/secure.sh                 # 3 runs, 5 s per row
#   REPS=5 benches/secure.sh --duration 10s
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringkv/target}"
BIN="$CARGO_TARGET_DIR/release"
REPS="${REPS:-3}"
OUT="$(mktemp -d)"
for i in $(seq 1 "$REPS"); do
    echo "== run $i of $REPS ($(date -u +%H:%M:%S) UTC)" >&2
    "$BIN/ringkv-bench" compare --only single,cluster,secure --output json \
        --server-bin "$BIN/ringkv-server" "$@" >"$OUT/run$i.json"
done
python3 - "$OUT" "$REPS" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
pairs = [("ringkv 1 node", "ringkv 1 node, TLS+mTLS+token"),
         ("ringkv 3 nodes", "ringkv 3 nodes, TLS+mTLS+token")]
ratios = {}
print("| run | system | op | plain ops/s | secured ops/s | ops/s ratio | plain server CPU s/1k | secured server CPU s/1k | CPU ratio |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for i in range(1, reps + 1):
    rows = {(r["system"], r["op"]): r for r in json.load(open(f"{out}/run{i}.json"))["rows"]
            if r.get("target_rate") is None}
    for plain, secure in pairs:
        for op in ("put", "get"):
            p, s = rows[(plain, op)], rows[(secure, op)]
            t = s["ops_per_sec"] / p["ops_per_sec"]
            c = s["server_cpu_s_per_1k"] / p["server_cpu_s_per_1k"]
            ratios.setdefault((plain, op), []).append((t, c))
            print(f"| {i} | {plain} | {op} | {p['ops_per_sec']:.0f} | {s['ops_per_sec']:.0f} | {t:.2f} "
                  f"| {p['server_cpu_s_per_1k']:.3f} | {s['server_cpu_s_per_1k']:.3f} | {c:.2f} |")
print()
print("| system | op | secured ÷ plain ops/s, median [range] | secured ÷ plain server CPU per op, median [range] |")
print("|---|---|---|---|")
for (plain, op), vals in ratios.items():
    t = [v[0] for v in vals]; c = [v[1] for v in vals]
    print(f"| {plain} | {op} | {statistics.median(t):.2f} [{min(t):.2f}–{max(t):.2f}] "
          f"| {statistics.median(c):.2f} [{min(c):.2f}–{max(c):.2f}] |")
PY
echo "(JSON of each run in $OUT)" >&2
