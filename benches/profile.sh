#!/usr/bin/env bash
# Instructions per request of ringkv's put and get paths, counted by
# valgrind's callgrind (stable on a shared machine, unlike time):
#
#   1. start NODES ringkv-server processes under callgrind (N = min(3,
#      NODES), R = W = QUORUM), on 127.0.0.1 ports from BASE_PORT;
#   2. warm up (connections, caches), then zero every node's counters;
#   3. OPS puts of new keys (the load workload), dump every node;
#   4. OPS gets of those keys (workload C), dump every node;
#   5. print, per phase, instructions per request summed over all nodes:
#      the whole processes, and the inclusive cost of chosen functions.
#
# Usage: benches/profile.sh   (env: NODES OPS CONCURRENCY SERVER BENCH OUT)
#   SERVER  the ringkv-server binary to profile (default: this build's);
#           comparing two builds means two runs with different SERVER
#   BENCH   the ringkv-bench binary that sends the requests; when both
#           SERVER and BENCH are given, nothing is built
#   OUT     where the callgrind files stay (default: a new temp dir), for
#           callgrind_annotate --inclusive=yes OUT/<phase>.node<I>.out
#        benches/profile.sh report DIR   (the table again, from an OUT dir)
# The script stops the nodes it started, by PID, on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
ringkv_install_deps
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null

NODES="${NODES:-3}"
OPS="${OPS:-2000}"
CONCURRENCY="${CONCURRENCY:-8}"
BASE_PORT="${BASE_PORT:-15400}"
SERVER_GIVEN="${SERVER:-}" BENCH_GIVEN="${BENCH:-}"
SERVER="${SERVER:-$RINGKV_BIN/ringkv-server}"
BENCH="${BENCH:-$RINGKV_BIN/ringkv-bench}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
# Under callgrind a node runs ~50× slower: keep peers from being judged
# down and writes from going to fallbacks while it does.
export RINGKV__GOSSIP__PHI_THRESHOLD=30
export RINGKV__HANDOFF__REPLICA_TIMEOUT_MS=30000
export RINGKV__LIMITS__REQUEST_TIMEOUT_MS=60000

measure() {
    if [ -z "${SERVER_GIVEN:-}" ] || [ -z "${BENCH_GIVEN:-}" ]; then
        (cd "$RINGKV_ROOT" && cargo build --release --locked -p ringkv-server -p ringkv-benches --bins -q)
    fi
    PIDS=()
    cleanup() {
        for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
    }
    trap cleanup EXIT

    # Per node three ports: client, peer (what seeds name), metrics.
    seeds="" endpoints=""
    for i in $(seq 1 "$NODES"); do
        endpoints="${endpoints:+$endpoints,}127.0.0.1:$((BASE_PORT + 3 * i))"
        seeds="${seeds:+$seeds,}127.0.0.1:$((BASE_PORT + 3 * i + 1))"
    done
    for i in $(seq 1 "$NODES"); do
        valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.node$i.out" \
            "$SERVER" --name "node$i" --listen "127.0.0.1:$((BASE_PORT + 3 * i))" \
            --peer-listen "127.0.0.1:$((BASE_PORT + 3 * i + 1))" \
            --metrics-listen "127.0.0.1:$((BASE_PORT + 3 * i + 2))" \
            --data-dir "$OUT/data$i" --seeds "$seeds" --bootstrap-expect "$NODES" \
            --log-level warn >"$OUT/node$i.log" 2>&1 &
        PIDS+=("$!")
    done

    bench() {
        "$BENCH" --endpoints "$endpoints" --timeout 60s --warmup 0 \
            --concurrency "$CONCURRENCY" --seed 42 --output json "$@"
    }

    echo "waiting for $NODES nodes under callgrind (up to 5 min)..." >&2
    deadline=$((SECONDS + 300))
    until bench --smoke --key-prefix ready/ >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "cluster not ready; logs in $OUT" >&2; exit 1; }
        sleep 2
    done
    bench --workload a --keys 500 --max-ops 500 --key-prefix warm/ >/dev/null

    control() { # control ACTION: zero (-z) or dump (-d NAME) every node
        for pid in "${PIDS[@]}"; do callgrind_control "$@" "$pid" >/dev/null; done
    }

    run_phase() { # run_phase NAME ARGS...: measure ARGS between zero and dump
        local name="$1"
        shift
        control -z
        # --max-ops ends the phase; the long duration only bounds it.
    bench "$@" --keys "$OPS" --max-ops "$OPS" --duration 600s --key-prefix profile/ \
        >"$OUT/$name.json"
        control -d "$name"
        for i in $(seq 1 "$NODES"); do
            # callgrind_control -d writes <file>.<dump number>; keep it by name.
            local dump
            dump="$(ls -t "$OUT"/cg.node"$i".out.* | head -1)"
            mv "$dump" "$OUT/$name.node$i.out"
        done
        grep -o '"errors": *[0-9]*' "$OUT/$name.json" | head -1 | sed "s/^/$name: /" >&2
    # Batch calls received and the operations they carried, all nodes so
    # far (absent from servers without batching).
    for i in $(seq 1 "$NODES"); do
        curl -s "127.0.0.1:$((BASE_PORT + 3 * i + 2))/metrics" || true
    done | awk -v phase="$name" '
        /^ringkv_internal_batches_total/ { b += $2 }
        /^ringkv_internal_batch_items_total/ { n += $2 }
        END { if (b > 0) printf "%s: %d batch calls so far, %.2f operations each\n", phase, b, n / b }' >&2
    }
    run_phase put --workload load
    run_phase get --workload c
}

# Functions reported (inclusive: with everything they call), as regular
# expressions over callgrind's names; for each, the largest matching entry
# (callgrind lists a function once per source file its inlined code comes
# from, nested inside each other, so entries must not be added up).
FUNCTIONS=(
    '<hyper::proto::h2::server::H2Stream<.*> as .*Future>::poll'
    '^h2::proto::connection::Connection<.*>::poll'
    '<ringkv_proto::v1::kv_server::KvServer<.*> as .*Service<.*>>::call'
    '<ringkv_proto::v1::internal_server::InternalServer<.*> as .*Service<.*>>::call'
    'ringkv_storage::rocks::RocksEngine as .*Engine>::write'
    '^malloc$'
    '^free$'
)

ops_of() { # requests that succeeded in a phase, from its ringkv-bench report
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(max(1, r["ops"] - r["errors"]))' "$1"
}

total_of() { # total instructions in a callgrind file
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}'
}

inclusive_of() { # largest inclusive count of a function matching $2 in file $1
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        awk -v re="$2" '
            /^ *[0-9,]+ \(/ {
                n = $1; gsub(",", "", n)
                name = $0; sub(/^[^)]*\) +/, "", name); sub(/^[^:]*:/, "", name); sub(/ \[.*$/, "", name)
                if (name ~ re && n + 0 > best) best = n + 0
            }
            END { print best + 0 }'
}

if [ "${1:-}" = report ]; then
    OUT="${2:?usage: benches/profile.sh report DIR}"
else
    measure
fi

printf '\nInstructions per request, summed over %s node(s); %s + %s requests (put + get), %s clients\n' \
    "$NODES" "$(ops_of "$OUT/put.json")" "$(ops_of "$OUT/get.json")" "$CONCURRENCY"
printf '%-80s %10s %10s\n' "" put get
for fn in "whole processes" "${FUNCTIONS[@]}"; do
    row=()
    for phase in put get; do
        sum=0
        for i in $(seq 1 "$NODES"); do
            if [ "$fn" = "whole processes" ]; then
                n="$(total_of "$OUT/$phase.node$i.out")"
            else
                n="$(inclusive_of "$OUT/$phase.node$i.out" "$fn")"
            fi
            sum=$((sum + ${n:-0}))
        done
        row+=("$((sum / $(ops_of "$OUT/$phase.json")))")
    done
    printf '%-80s %10s %10s\n' "$fn" "${row[@]}"
done
printf '\ncallgrind files: %s\n' "$OUT"
