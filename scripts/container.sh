#!/usr/bin/env bash
# The execd container image, built with podman on this machine (no registry, no Docker engine).
#
#   scripts/container.sh build   deps + base + `podman build` of execd:dev (layer-cached)
#   scripts/container.sh deps    apt-get podman, runc, debootstrap, fuse-overlayfs,
#                                slirp4netns, uidmap (podman's Recommends) when missing
#   scripts/container.sh base    the Debian base images, made once with debootstrap
#   scripts/container.sh size    print the image size in bytes (podman image inspect)
#   scripts/container.sh podman ARGS...   run podman with the flags that work here
#
# What works on these machines (and why every podman call below has these flags):
#   --runtime runc --cgroup-manager=cgroupfs   crun refuses this host's hybrid cgroup v1 layout
#   --ulimit nofile=4096:4096 --ulimit nproc=4096:4096   the default ulimits are refused
#   --network=host                              no bridge/CNI networking here
# There is no registry: the base is `debootstrap --variant=minbase bookworm`, trimmed like the
# official -slim image (no docs, man pages, locales, apt lists) and `podman import`ed as
# docker.io/library/debian:bookworm-slim and :bookworm, so the Containerfile builds unchanged
# with --pull=never. The rootfs tarball is cached in $DEV_CACHE/container/ (built once).
#
# Environment: EXECD_IMAGE (execd:dev), DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail

# shellcheck disable=SC2034
DEV_SCRIPT=container
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE="${EXECD_IMAGE:-execd:dev}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
BASE_DIR="$DEV_CACHE/container"
BASE_TAR="$BASE_DIR/debian-$SUITE-minbase.tar"
BASE_TAGS=(docker.io/library/debian:bookworm-slim docker.io/library/debian:bookworm)
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

need_root() {
    [ "$(id -u)" = 0 ] && return 0
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: $*"
    printf 'sudo\n'
}

step_deps() {
    local missing=() p st
    for p in podman runc debootstrap fuse-overlayfs slirp4netns uidmap; do
        st="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        [ "$st" = installed ] || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "deps: podman, runc, debootstrap, fuse-overlayfs, slirp4netns, uidmap present"
        return 0
    fi
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=("$(need_root "install ${missing[*]}")")
    log "deps: installing ${missing[*]}"
    mkdir -p "$DEV_CACHE/logs"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q update \
        >"$DEV_CACHE/logs/container-apt.log" 2>&1 || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q \
        --no-install-recommends install "${missing[@]}" >>"$DEV_CACHE/logs/container-apt.log" 2>&1 \
        || { tail -n 30 "$DEV_CACHE/logs/container-apt.log" >&2; die "apt-get install failed"; }
}

# The rootfs: minbase, then the same trimming the official -slim images apply.
make_rootfs() {
    local root="$1"
    log "base: debootstrap --variant=minbase $SUITE (1-3 min, once)"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$DEV_CACHE/logs/debootstrap.log" 2>&1 \
        || { tail -n 30 "$DEV_CACHE/logs/debootstrap.log" >&2; die "debootstrap failed"; }
    local sec="${MIRROR%/debian}/debian-security"
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $sec
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # As in debuerreotype's slim variant: never install docs, man pages or translations.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$root/etc/apt/apt.conf.d/docker-no-recommends"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
        "$root"/var/log/apt/* "$root"/tmp/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +
    : >"$root/etc/machine-id"
    printf 'execd-base\n' >"$root/etc/hostname"
}

step_base() {
    local have=1 t
    for t in "${BASE_TAGS[@]}"; do
        "${PODMAN[@]}" image exists "$t" || have=0
    done
    if [ "$have" = 1 ]; then
        log "base: ${BASE_TAGS[*]} present"
        return 0
    fi
    mkdir -p "$BASE_DIR" "$DEV_CACHE/logs"
    if [ ! -s "$BASE_TAR" ]; then
        [ "$(id -u)" = 0 ] || die "base: debootstrap needs root"
        local root="$BASE_DIR/rootfs.tmp"
        rm -rf "$root"
        make_rootfs "$root"
        tar --numeric-owner --xattrs -C "$root" -cf "$BASE_TAR.tmp" .
        mv "$BASE_TAR.tmp" "$BASE_TAR"
        rm -rf "$root"
    fi
    log "base: podman import $BASE_TAR"
    "${PODMAN[@]}" import --change 'CMD ["bash"]' "$BASE_TAR" "${BASE_TAGS[0]}" >/dev/null
    for t in "${BASE_TAGS[@]:1}"; do "${PODMAN[@]}" tag "${BASE_TAGS[0]}" "$t"; done
}

step_build() {
    log "build: podman build -t $IMAGE (layer-cached)"
    "${PODMAN[@]}" build --pull=never --network=host "${ULIMITS[@]}" --layers --format docker \
        -t "$IMAGE" -f "$DEV_ROOT/Containerfile" "$DEV_ROOT"
    log "build: $IMAGE is $(step_size) bytes"
}

step_size() {
    "${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE"
}

cmd="${1:-build}"
[ $# -gt 0 ] && shift
case "$cmd" in
    deps) step_deps ;;
    base) step_deps; step_base ;;
    build) step_deps; step_base; step_build ;;
    size) step_size ;;
    podman) exec "${PODMAN[@]}" "$@" ;;
    *) die "unknown command '$cmd' (build deps base size podman)" ;;
esac
