# Shared setup for ringkv's scripts: sourced, not run.
#
# Installs the system packages the build needs when they are missing
# (librocksdb-sys runs bindgen, which loads libclang) and points cargo at a
# target directory outside the clone, so RocksDB's C++ (about 20 minutes on
# two cores) is compiled once per machine and shared by every clone.

set -euo pipefail

RINGKV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RINGKV_ROOT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringkv/target}"
mkdir -p "$CARGO_TARGET_DIR"
# Everything (server, tests, benches) builds with the release profile.
export RINGKV_BIN="$CARGO_TARGET_DIR/release"

# bindgen loads libclang.so itself (libclang-cpp.so, which LLVM's other
# packages bring, is a different library) and needs clang's own headers.
ringkv_have_libclang() {
    # grep reads all of ldconfig's output (no -q): under `set -o pipefail`
    # an early exit would fail the pipeline with SIGPIPE.
    ldconfig -p 2>/dev/null | grep -E 'libclang(-[0-9.]+)?\.so' >/dev/null \
        && ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h >/dev/null 2>&1
}

ringkv_install_deps() {
    local need=()
    ringkv_have_libclang || need+=(libclang-dev)
    command -v cc >/dev/null 2>&1 || need+=(build-essential)
    command -v c++ >/dev/null 2>&1 || need+=(g++)
    if ((${#need[@]})); then
        echo "ringkv: installing ${need[*]} (needed to build RocksDB)" >&2
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "ringkv: cargo not found; install a Rust toolchain (rustup) first" >&2
        exit 1
    fi
}

# The verification harness (verify/) puts each node in its own network
# namespace and cuts links with iptables; it needs root and these tools.
ringkv_install_verify_deps() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "ringkv: the verification runs need root (network namespaces, iptables, tmpfs)" >&2
        exit 1
    fi
    local need=()
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    command -v iptables >/dev/null 2>&1 || need+=(iptables)
    if ((${#need[@]})); then
        echo "ringkv: installing ${need[*]} (needed by the verification runs)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# The container image and the compose tests need the Docker engine (it is
# not installed here: it runs as a system service) and docker-compose.
ringkv_install_docker_deps() {
    if ! docker info >/dev/null 2>&1; then
        echo "ringkv: the Docker engine is not reachable (docker info failed); the container tests need it" >&2
        exit 1
    fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        echo "ringkv: installing docker-compose (needed by the compose tests)" >&2
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-compose >/dev/null
    fi
}

# Puts `ringkv` and `ringkv-server` on the PATH: links in ~/.local/bin,
# and the one line to add that directory when the shell does not have it.
ringkv_link_binaries() {
    local dir="$HOME/.local/bin"
    mkdir -p "$dir"
    for bin in ringkv ringkv-server; do
        ln -sf "$RINGKV_BIN/$bin" "$dir/$bin"
    done
    case ":$PATH:" in
        *":$dir:"*) echo "ringkv and ringkv-server are on your PATH (linked in $dir)" ;;
        *) echo "ringkv and ringkv-server are linked in $dir; put them on your PATH with:"
           echo "  export PATH=\"$dir:\$PATH\"" ;;
    esac
}

ringkv_build() {
    (cd "$RINGKV_ROOT" && cargo build --release --locked --bins "$@")
}
