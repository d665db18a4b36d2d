#!/usr/bin/env bash
# The cost of security, measured honestly on a shared machine: runs
# `ringkv-bench compare --only single,cluster,secure --reps REPS` (default 3),
# each repetition measuring one node and three nodes plaintext and secured
# (TLS to clients, mutual TLS between nodes, a token on every request),
# in a random order, and prints per repetition and as median [min-max] over
# them the ratios secured / plaintext of throughput and of server CPU per
# operation. Ratios are taken within one repetition, minutes apart, so the
# machine's drift between repetitions cancels out. Extra arguments go to
# `compare`.
#
#   benches/secure.sh                 # 3 runs, 5 s per row
#   REPS=5 benches/secure.sh --duration 10s
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringkv/target}"
BIN="$CARGO_TARGET_DIR/release"
REPS="${REPS:-3}"
OUT="$(mktemp -d)"
echo "== $REPS repetitions, each in its own random order ($(date -u +%H:%M:%S) UTC)" >&2
"$BIN/ringkv-bench" compare --only single,cluster,secure --reps "$REPS" --output json \
    --server-bin "$BIN/ringkv-server" "$@" >"$OUT/compare.json"
python3 - "$OUT/compare.json" <<'PY'
import json, statistics, sys
report = json.load(open(sys.argv[1]))
pairs = [("ringkv 1 node", "ringkv 1 node, TLS+mTLS+token"),
         ("ringkv 3 nodes", "ringkv 3 nodes, TLS+mTLS+token")]
ratios = {}
print("| rep | system | op | plain ops/s | secured ops/s | ops/s ratio | plain server CPU µs/op | secured server CPU µs/op | CPU ratio |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for run in report["runs"]:
    for i, rep in enumerate(run["reps"], 1):
        rows = {(r["system"], r["op"]): r for r in rep if r.get("target_rate") is None}
        for plain, secure in pairs:
            for op in ("put", "get"):
                p, s = rows.get((plain, op)), rows.get((secure, op))
                if not p or not s or not p["ops_per_sec"] or not s["ops_per_sec"]:
                    continue
                t = s["ops_per_sec"] / p["ops_per_sec"]
                c = s["server_cpu_us_per_op"] / p["server_cpu_us_per_op"]
                ratios.setdefault((plain, op), []).append((t, c))
                print(f"| {i} | {plain} | {op} | {p['ops_per_sec']:.0f} | {s['ops_per_sec']:.0f} | {t:.2f} "
                      f"| {p['server_cpu_us_per_op']:.1f} | {s['server_cpu_us_per_op']:.1f} | {c:.2f} |")
print()
print("| system | op | secured ÷ plain ops/s, median [range] | secured ÷ plain server CPU per op, median [range] |")
print("|---|---|---|---|")
for (plain, op), vals in ratios.items():
    t = [v[0] for v in vals]; c = [v[1] for v in vals]
    print(f"| {plain} | {op} | {statistics.median(t):.2f} [{min(t):.2f}–{max(t):.2f}] "
          f"| {statistics.median(c):.2f} [{min(c):.2f}–{max(c):.2f}] |")
PY
echo "(the JSON report is in $OUT/compare.json)" >&2
