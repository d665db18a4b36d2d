#!/usr/bin/env bash
# The crate layering, checked from outside Rust (test.sh runs this).
#
#   ringkv-common   ringkv-core  <-  ringkv-storage, ringkv-peer
#                                <-  ringkv-node  <-  ringkv-server (gRPC edge)
#
# Below the edge (common, core, storage, peer, node) no source names a gRPC
# (node/tests/layering.rs, which spells the names it looks for, aside)
# or protobuf type and no dependency, direct or not, is tonic, prost or the
# proto crate. The server crate and the client speak gRPC; so do the test
# kit and the benchmarks, which drive servers over the wire as clients do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

below=(common core storage peer node)
crates=(ringkv-common ringkv-core ringkv-storage ringkv-peer ringkv-node)

found=$(grep -rnE '\b(tonic|prost)::|\bpb::|\bringkv_proto\b' --include='*.rs' --exclude=layering.rs "${below[@]}" \
    | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
if [[ -n "$found" ]]; then
    echo "gRPC or protobuf below the edge:" >&2
    echo "$found" >&2
    exit 1
fi

for crate in "${crates[@]}"; do
    tree=$(cargo tree --locked -p "$crate" -e normal --prefix none)
    deps=$(grep -E '^(tonic|tonic-[a-z-]+|prost|prost-[a-z-]+|ringkv-proto|ringkv-server|ringkv-client) ' <<<"$tree" || true)
    if [[ -n "$deps" ]]; then
        echo "$crate depends on the edge:" >&2
        echo "$deps" | sort -u >&2
        exit 1
    fi
done

# What the ringkv crates depend on, one line each: the graph docs/architecture.md draws.
for crate in "${crates[@]}" ringkv-server ringkv-client; do
    tree=$(cargo tree --locked -p "$crate" -e normal --depth 1 --prefix none)
    uses=$(awk 'NR > 1 && $1 ~ /^ringkv-/ { print $1 }' <<<"$tree" | sort -u | tr '\n' ' ')
    echo "layers: $crate -> ${uses:-(nothing of ringkv)}"
done
