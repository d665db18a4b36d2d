#!/usr/bin/env bash
# The long verification campaign, for the record: many seeded runs of every
# workload under every nemesis family on five nodes, each in its own network
# namespace (docs/reliability.md, "Verification"). Needs root.
#
#   scripts/campaign.sh                      # 25 runs of 60 s, seeds 1000..1024
#   RUNS=5 SEED=7 DURATION=30 scripts/campaign.sh
#   scripts/campaign.sh --nemesis network,clock
#
# Replay one run of it:  "$CARGO_TARGET_DIR/release/ringkv-campaign" run --seed S
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ringkv_install_deps
ringkv_install_verify_deps
ringkv_build
exec "$RINGKV_BIN/ringkv-campaign" campaign \
    --runs "${RUNS:-25}" --seed "${SEED:-1000}" --duration "${DURATION:-60}" \
    --out "${OUT:-$HOME/.cache/ringkv/campaign}" "$@"
