#!/usr/bin/env bash
# Builds ringkv, starts a local node (deploy/local-cluster.sh) and shows a
# put and a get through the CLI. Leaves the node running; stop it with
# deploy/local-cluster.sh stop. Safe to run again.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ringkv_install_deps
echo "== building (the first build compiles RocksDB: about 25 minutes on 2 cores)"
ringkv_build
"$RINGKV_ROOT/deploy/local-cluster.sh" start 1

ringkv="$RINGKV_BIN/ringkv"
echo
echo "\$ ringkv put greeting 'hello from ringkv'"
"$ringkv" put greeting 'hello from ringkv'
echo "\$ ringkv get greeting"
"$ringkv" get greeting
echo
echo "The node keeps running at 127.0.0.1:7379. Try:"
echo "  $ringkv get greeting --output json"
echo "  $ringkv cluster status"
echo "Stop it with: deploy/local-cluster.sh stop"
