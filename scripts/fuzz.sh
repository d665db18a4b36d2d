#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads bytes from the
# network or from disk (cargo-fuzz, libFuzzer; the targets are in fuzz/,
# what each asserts is in docs/reliability.md, "Fuzzing").
#
#   scripts/fuzz.sh smoke                  build every target, run each for
#                                          FUZZ_SMOKE_SECONDS (20 s); fail on
#                                          any crash
#   scripts/fuzz.sh run SECONDS [TARGET...]  run each target (default: all)
#                                          for SECONDS, one at a time, and
#                                          print CPU time and executions as
#                                          a Markdown table
#   scripts/fuzz.sh seeds                  rewrite the seed corpora in
#                                          fuzz/corpus/ from the encoders
#   scripts/fuzz.sh list                   the targets
#
# Needs only a stable toolchain: cargo-fuzz is installed when missing, and
# RUSTC_BOOTSTRAP=1 lets stable rustc take the sanitizer-coverage flags.
# The code forbids `unsafe`, so the targets are built without a sanitizer
# (`--sanitizer none`, several times faster), with debug assertions and
# overflow checks on. They build into their own target directory beside
# the main one (RocksDB is compiled once more there, the first time), and
# the fuzzer grows its corpus in a scratch directory, never in the clone.
# The fuzzer runs under `nice -n 19` (FUZZ_NICE), one target at a time:
# it must not slow builds and tests on the same machine. Safe to run
# repeatedly: the scratch corpora persist and keep growing.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

FUZZ_DIR="$RINGKV_ROOT/fuzz"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$(dirname "$CARGO_TARGET_DIR")/fuzz-target}"
FUZZ_WORK="${FUZZ_WORK:-$(dirname "$CARGO_TARGET_DIR")/fuzz-work}"
FUZZ_NICE="${FUZZ_NICE:-19}"
FUZZ_SMOKE_SECONDS="${FUZZ_SMOKE_SECONDS:-20}"
# Inputs longer than this are not generated: every format's interesting
# structure fits well within it, and shorter inputs run faster.
FUZZ_MAX_LEN="${FUZZ_MAX_LEN:-4096}"
CARGO_FUZZ_VERSION="0.13"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_TARGET_DIR/$HOST/release"

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

targets() {
    local f
    for f in "$FUZZ_DIR"/fuzz_targets/*.rs; do
        basename "$f" .rs
    done
}

install_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
        cargo install cargo-fuzz --locked --version "~$CARGO_FUZZ_VERSION"
    fi
}

# Every target and the seed generator, with the flags every run uses (any
# other flags would rebuild everything).
build() {
    ringkv_install_deps
    install_cargo_fuzz
    (cd "$RINGKV_ROOT" && RUSTC_BOOTSTRAP=1 cargo fuzz build \
        --sanitizer none --debug-assertions --target-dir "$FUZZ_TARGET_DIR")
}

# Runs one target for $2 seconds; appends a table row to $ROWS and the
# target to $FAILED if it crashed.
run_one() {
    local target="$1" seconds="$2"
    local bin="$BIN_DIR/$target"
    local corpus="$FUZZ_WORK/corpus/$target"
    # One directory per run, so a later run never hides an earlier crash.
    local artifacts="$FUZZ_WORK/artifacts/$target-$(date +%Y%m%d-%H%M%S)"
    local log="$FUZZ_WORK/logs/$target.log"
    [ -x "$bin" ] || { echo "fuzz: no target $target (scripts/fuzz.sh list)" >&2; exit 2; }
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    # The committed seeds (and past crashes) start every run; the corpus
    # the fuzzer grows stays here, outside the clone.
    cp -n "$FUZZ_DIR/corpus/$target"/* "$corpus"/ 2>/dev/null || true
    local timing="$FUZZ_WORK/logs/$target.time" rc=0
    # `time` reports the fuzzer's own CPU time (user + system), which is
    # what the results table records: under `nice` on a busy machine the
    # wall time says little.
    {
        TIMEFORMAT='%U %S'
        time nice -n "$FUZZ_NICE" "$bin" "$corpus" \
            -max_total_time="$seconds" -max_len="$FUZZ_MAX_LEN" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
    } 2>"$timing"
    local seconds_cpu execs result
    seconds_cpu="$(awk '{ printf "%.0f", $1 + $2 }' "$timing")"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [ "$rc" -eq 0 ] && ! ls "$artifacts"/* >/dev/null 2>&1; then
        result="ok"
        rmdir "$artifacts"
    else
        result="CRASH"
        FAILED+=("$target")
        echo "fuzz: $target failed (exit $rc); log $log" >&2
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 >&2 || true
        local a
        for a in "$artifacts"/*; do
            [ -e "$a" ] || continue
            echo "fuzz: artifact $a ($(wc -c <"$a") bytes):" >&2
            od -An -tx1 "$a" | head -n 8 >&2
            echo "      reproduce: $bin $a" >&2
        done
    fi
    ROWS+=("| $target | $seconds_cpu | ${execs:-?} | $result |")
    echo "fuzz: $target: ${seconds_cpu} CPU s, ${execs:-?} executions, $result" >&2
}

report() {
    echo "| target | CPU seconds | executions | result |"
    echo "| --- | ---: | ---: | --- |"
    printf '%s\n' "${ROWS[@]}"
    if ((${#FAILED[@]})); then
        echo "fuzz: crashes in ${FAILED[*]} (artifacts under $FUZZ_WORK/artifacts)" >&2
        exit 1
    fi
}

ROWS=()
FAILED=()
case "${1:-}" in
    smoke)
        build
        for t in $(targets); do
            run_one "$t" "$FUZZ_SMOKE_SECONDS"
        done
        report
        ;;
    run)
        seconds="${2:-}"
        [[ "$seconds" =~ ^[0-9]+$ ]] || usage
        shift 2
        build
        selected=("$@")
        ((${#selected[@]})) || mapfile -t selected < <(targets)
        for t in "${selected[@]}"; do
            run_one "$t" "$seconds"
        done
        report
        ;;
    seeds)
        build
        "$BIN_DIR/seed_corpus" "$FUZZ_DIR/corpus"
        ;;
    list)
        targets
        ;;
    *)
        usage
        ;;
esac
