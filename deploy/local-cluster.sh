#!/usr/bin/env bash
# Starts, stops or shows a local ringkv cluster of separate processes on
# loopback ports, with all data and logs under one directory.
#
#   deploy/local-cluster.sh start [N]   start N nodes (default 3) as one cluster
#   deploy/local-cluster.sh add [K]     start K more nodes (default 1) that join
#                                       the running cluster (cluster.auto_join)
#   deploy/local-cluster.sh stop [I]    stop node I, or every node this script started
#   deploy/local-cluster.sh status      show which nodes run
#
# Node i (1-based) serves clients on 127.0.0.1:$((RINGKV_BASE_PORT + i - 1))
# (default base 7379), the other nodes on its peer port
# 127.0.0.1:$((RINGKV_PEER_BASE_PORT + i - 1)) (default base 7479; seeds name
# peer ports), and metrics on 127.0.0.1:$((RINGKV_METRICS_BASE_PORT + i - 1))
# (default 9379). Data and logs live in $RINGKV_CLUSTER_DIR
# (default ./.cluster). The nodes seed each other and form the cluster
# together (cluster.bootstrap_expect = N). Running `start` again leaves
# running nodes alone; data survives stop/start.
#
# Secured (docs/security.md): RINGKV_SECURE=1 on the first `start` makes
# certificates (`ringkv-server cert`) and a root token in
# $RINGKV_CLUSTER_DIR/certs; from then on every node of that directory
# serves TLS to clients, mutual TLS to its peers and needs tokens, and the
# script prints the RINGKV_CACERT and RINGKV_TOKEN settings the CLI needs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="${RINGKV_CLUSTER_DIR:-$ROOT/.cluster}"
BASE_PORT="${RINGKV_BASE_PORT:-7379}"
PEER_BASE_PORT="${RINGKV_PEER_BASE_PORT:-7479}"
METRICS_BASE_PORT="${RINGKV_METRICS_BASE_PORT:-9379}"
BIN="${RINGKV_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/ringkv/target}/release}"
READY_SECONDS=30

CERTS="$CLUSTER_DIR/certs"

node_dir() { echo "$CLUSTER_DIR/node$1"; }

secured() { [ -f "$CERTS/root.token" ]; }

# make_certs NAMES: certificates for the nodes (comma separated), and on
# first use the CAs, a client certificate and a root token.
make_certs() {
    mkdir -p "$CERTS"
    "$BIN/ringkv-server" cert --dir "$CERTS" --node "$1" --client admin >/dev/null
    if [ ! -f "$CERTS/root.token" ]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$CERTS/root.token")
    fi
}

# The CLI's TLS and token flags for a secured cluster.
cli_security() {
    if secured; then
        echo "--cacert $CERTS/ca.crt --token $(cat "$CERTS/root.token")"
    fi
}

running_pid() {
    local pidfile
    pidfile="$(node_dir "$1")/pid"
    [ -f "$pidfile" ] || return 1
    local pid
    pid="$(cat "$pidfile")"
    # Only a process that is still our ringkv-server counts.
    if kill -0 "$pid" 2>/dev/null && grep -q ringkv-server "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
        return 0
    fi
    return 1
}

# launch I SEEDS [ARGS...]: starts node I unless it runs already.
launch() {
    local i="$1" seeds="$2"
    shift 2
    local dir port pport mport
    dir="$(node_dir "$i")"
    port=$((BASE_PORT + i - 1))
    pport=$((PEER_BASE_PORT + i - 1))
    mport=$((METRICS_BASE_PORT + i - 1))
    mkdir -p "$dir"
    if pid="$(running_pid "$i")"; then
        echo "node$i already running (pid $pid) on 127.0.0.1:$port"
        return 0
    fi
    local security=()
    if secured; then
        security=(
            "RINGKV__TLS__CERT=$CERTS/node$i.crt" "RINGKV__TLS__KEY=$CERTS/node$i.key"
            "RINGKV__TLS__PEER_CA=$CERTS/peer-ca.crt"
            "RINGKV__TLS__PEER_CERT=$CERTS/node$i-peer.crt"
            "RINGKV__TLS__PEER_KEY=$CERTS/node$i-peer.key"
            "RINGKV__AUTH__ENABLED=true" "RINGKV__AUTH__ROOT_TOKEN_FILE=$CERTS/root.token"
        )
    fi
    nohup env "${security[@]}" "$BIN/ringkv-server" \
        --name "node$i" \
        --listen "127.0.0.1:$port" \
        --peer-listen "127.0.0.1:$pport" \
        --metrics-listen "127.0.0.1:$mport" \
        --data-dir "$dir/data" \
        --seeds "$seeds" \
        "$@" \
        >"$dir/stdout.log" 2>"$dir/server.log" </dev/null &
    echo $! >"$dir/pid"
    echo "node$i started (pid $!) on 127.0.0.1:$port, metrics 127.0.0.1:$mport, log $dir/server.log"
}

# wait_ready I: waits until node I answers with a layout.
wait_ready() {
    local i="$1" port=$((BASE_PORT + $1 - 1)) waited=0
    # shellcheck disable=SC2046
    until "$BIN/ringkv" --endpoints "127.0.0.1:$port" $(cli_security) cluster layout >/dev/null 2>&1; do
        if ! running_pid "$i" >/dev/null; then
            echo "node$i exited; its log:" >&2
            tail -20 "$(node_dir "$i")/server.log" >&2
            exit 1
        fi
        waited=$((waited + 1))
        if [ "$waited" -gt $((READY_SECONDS * 10)) ]; then
            echo "node$i not ready after ${READY_SECONDS}s" >&2
            exit 1
        fi
        sleep 0.1
    done
}

start() {
    local n="${1:-3}"
    [ -x "$BIN/ringkv-server" ] || { echo "ringkv-server not built in $BIN" >&2; exit 1; }
    local seeds="" names=""
    for i in $(seq 1 "$n"); do
        seeds="${seeds:+$seeds,}127.0.0.1:$((PEER_BASE_PORT + i - 1))"
        names="${names:+$names,}node$i"
    done
    if [ "${RINGKV_SECURE:-0}" = 1 ] || secured; then
        make_certs "$names"
    fi
    for i in $(seq 1 "$n"); do
        launch "$i" "$seeds" --bootstrap-expect "$n"
    done
    for i in $(seq 1 "$n"); do
        wait_ready "$i"
    done
    if secured; then
        echo "secured: TLS, mutual TLS between nodes, tokens. For the CLI:"
        echo "  export RINGKV_CACERT=$CERTS/ca.crt RINGKV_TOKEN=\$(cat $CERTS/root.token)"
    fi
}

# add [K]: K more nodes, numbered after the highest existing one, seeded
# with node1; they join the running cluster by themselves.
add() {
    local k="${1:-1}" highest=0
    [ -x "$BIN/ringkv-server" ] || { echo "ringkv-server not built in $BIN" >&2; exit 1; }
    for dir in "$CLUSTER_DIR"/node*; do
        [ -d "$dir" ] || continue
        local i="${dir##*node}"
        [ "$i" -gt "$highest" ] && highest="$i"
    done
    [ "$highest" -gt 0 ] || { echo "no cluster to join: run '$0 start' first" >&2; exit 1; }
    for j in $(seq 1 "$k"); do
        if secured; then
            make_certs "node$((highest + j))"
        fi
        launch $((highest + j)) "127.0.0.1:$PEER_BASE_PORT"
    done
    for j in $(seq 1 "$k"); do
        wait_ready $((highest + j))
    done
}

stop() {
    for dir in "$CLUSTER_DIR"/node*; do
        [ -d "$dir" ] || continue
        local i="${dir##*node}"
        [ -n "${1:-}" ] && [ "$i" != "$1" ] && continue
        if pid="$(running_pid "$i")"; then
            kill -TERM "$pid"
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            echo "node$i stopped"
        fi
        rm -f "$dir/pid"
    done
}

status() {
    for dir in "$CLUSTER_DIR"/node*; do
        [ -d "$dir" ] || continue
        local i="${dir##*node}"
        if pid="$(running_pid "$i")"; then
            echo "node$i running (pid $pid) on 127.0.0.1:$((BASE_PORT + i - 1))"
        else
            echo "node$i stopped"
        fi
    done
}

case "${1:-}" in
    start) start "${2:-3}" ;;
    add) add "${2:-1}" ;;
    stop) stop "${2:-}" ;;
    status) status ;;
    *) echo "usage: $0 start [N] | add [K] | stop [I] | status" >&2; exit 2 ;;
esac
