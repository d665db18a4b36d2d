#!/usr/bin/env bash
# Builds the container image ringkv:VERSION (and ringkv:latest) from the
# release binaries, with no registry: the image starts FROM scratch and
# holds the stripped server and CLI, exactly the shared libraries they
# link (read from ldd), CA certificates, a passwd entry for the non-root
# user 10001 and the data directory /var/lib/ringkv. No shell, no package
# manager. Safe to run repeatedly; prints the image's name and size.
#
#   deploy/docker/build.sh            build the binaries if needed, then the image
#   RINGKV_IMAGE=name deploy/docker/build.sh   another repository name
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/env.sh"
ringkv_install_deps
ringkv_install_docker_deps
cd "$RINGKV_ROOT"

echo "== release binaries" >&2
ringkv_build >&2

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
IMAGE="${RINGKV_IMAGE:-ringkv}"
CONTEXT="$CARGO_TARGET_DIR/docker-context"
ROOTFS="$CONTEXT/rootfs"
rm -rf "$CONTEXT"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp" "$CONTEXT/data"
chmod 1777 "$ROOTFS/tmp"

# The binaries, stripped: their debug line tables and RocksDB's symbols
# are most of the release build's size.
for bin in ringkv-server ringkv; do
    strip --strip-all -o "$ROOTFS/usr/local/bin/$bin" "$RINGKV_BIN/$bin"
done

# Every shared library either binary loads, at the path the dynamic
# linker looks for it, the loader itself included.
libs() {
    ldd "$1" | awk '
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// { print $1 }'
}
for lib in $( (libs "$ROOTFS/usr/local/bin/ringkv-server"; libs "$ROOTFS/usr/local/bin/ringkv") | sort -u); do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
done

# CA certificates, for a client of a TLS endpoint signed by a public CA.
if [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then
    echo "ringkv: installing ca-certificates" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null
fi
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"

printf 'root:x:0:0:root:/:/nonexistent\nringkv:x:10001:10001:ringkv:/var/lib/ringkv:/nonexistent\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nringkv:x:10001:\n' >"$ROOTFS/etc/group"
# glibc reads /etc/hosts (the container's own) before DNS for node names.
printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"

cp deploy/docker/Dockerfile "$CONTEXT/Dockerfile"
echo "== image $IMAGE:$VERSION" >&2
# The classic builder: it needs no BuildKit frontend image from a registry.
DOCKER_BUILDKIT=0 docker build --quiet \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -t "$IMAGE:$VERSION" -t "$IMAGE:latest" "$CONTEXT" >&2
SIZE="$(docker image inspect -f '{{.Size}}' "$IMAGE:$VERSION")"
awk -v s="$SIZE" -v i="$IMAGE:$VERSION" 'BEGIN { printf "%s %.1f MB\n", i, s / 1e6 }'
