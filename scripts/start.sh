#!/usr/bin/env bash
# Builds ringkv, starts a local 3-node cluster (deploy/local-cluster.sh) and
# shows a put through one node and a get through another. Leaves the
# cluster running; stop it with deploy/local-cluster.sh stop. Safe to run
# again.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ringkv_install_deps
echo "== building (the first build compiles RocksDB: about 25 minutes on 2 cores)"
ringkv_build
ringkv_link_binaries
"$RINGKV_ROOT/deploy/local-cluster.sh" start 3

ringkv="$RINGKV_BIN/ringkv"
echo
echo "\$ ringkv --endpoints 127.0.0.1:7379 put greeting 'hello from ringkv' -w all"
"$ringkv" --endpoints 127.0.0.1:7379 put greeting 'hello from ringkv' -w all
echo "\$ ringkv --endpoints 127.0.0.1:7381 get greeting"
"$ringkv" --endpoints 127.0.0.1:7381 get greeting
echo "\$ ringkv cluster status"
"$ringkv" cluster status
echo
echo "The cluster keeps running on 127.0.0.1:7379-7381. Try:"
echo "  $ringkv get greeting --output json"
echo "  $ringkv cluster layout | head"
echo "  $ringkv --endpoints 127.0.0.1:7380 local-get greeting"
echo "  deploy/local-cluster.sh add && $ringkv cluster transfers   # a 4th node joins"
echo "Stop it with: deploy/local-cluster.sh stop"
