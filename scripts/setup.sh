#!/usr/bin/env bash
# Install everything execd's build, tests and local services need. Idempotent: every step is
# skipped when its output is already there, so a warm run takes well under 5 s.
#
#   scripts/setup.sh              all steps
#   scripts/setup.sh apt kafka    only some of: apt kafka ferretdb venv
#
# Outputs (under $DEV_CACHE, default <repo>/.cache):
#   kafka-3.9.1/lib/*.jar   Kafka broker jars (kafka -> kafka-3.9.1 symlink; 3.9.0 on fallback)
#   bin/ferretdb            FerretDB v1.24.2 (SQLite backend, MongoDB wire protocol)
#   venv/                   Python venv with pytest and pymongo
#   logs/                   logs of the Maven / Go / pip steps
set -euo pipefail

DEV_SCRIPT=setup
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(
    build-essential pkg-config
    librdkafka-dev libmongoc-dev libbson-dev libcivetweb-dev libcjson-dev
    libcurl4-openssl-dev uuid-dev libcrypt-dev libssl-dev libseccomp-dev libcmocka-dev
    bubblewrap kcat python3-venv curl
    clang-format clang-tidy cppcheck
)
PY_PACKAGES=(pytest pytest-timeout pymongo)

STEP_LOG_DIR="$DEV_CACHE/logs"

# run_logged NAME CMD...: run CMD with output to $STEP_LOG_DIR/NAME.log; on failure show its tail.
run_logged() {
    local name="$1"; shift
    local logf="$STEP_LOG_DIR/$name.log"
    if ! "$@" >"$logf" 2>&1; then
        warn "'$*' failed; last lines of $logf:"
        tail -n 30 "$logf" >&2 || true
        return 1
    fi
}

step_apt() {
    local missing=() p st
    for p in "${APT_PACKAGES[@]}"; do
        st="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        [ "$st" = installed ] || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "apt: all ${#APT_PACKAGES[@]} packages present"
        return 0
    fi
    log "apt: installing ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "apt: not root and no sudo; install: ${missing[*]}"
        sudo=(sudo)
    fi
    local aptopts=(-o DPkg::Lock::Timeout=300 -y -q --no-install-recommends)
    run_logged apt-update "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=300 -q update \
        || die "apt: 'apt-get update' failed (see $STEP_LOG_DIR/apt-update.log)"
    run_logged apt-install "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${aptopts[@]}" install "${missing[@]}" \
        || die "apt: installing ${missing[*]} failed (see $STEP_LOG_DIR/apt-install.log)"
    log "apt: done"
}

# fetch_kafka VERSION: copy the runtime jars of kafka_2.13:VERSION into $DEV_CACHE/kafka-VERSION/lib.
fetch_kafka() {
    local v="$1"
    local dir="$DEV_CACHE/kafka-$v" tmp="$DEV_CACHE/kafka-$v.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp/pom"
    cp "$DEV_ROOT/scripts/kafka-pom.xml" "$tmp/pom/pom.xml"
    log "kafka: fetching Kafka $v jars from Maven Central (first time ~1 min, cached in ~/.m2)"
    if ! run_logged "mvn-kafka-$v" mvn -B -q -f "$tmp/pom/pom.xml" -Dkafka.version="$v" \
            org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp/lib"; then
        rm -rf "$tmp"
        return 1
    fi
    if ! compgen -G "$tmp/lib/kafka_2.13-$v.jar" >/dev/null \
        || ! compgen -G "$tmp/lib/reload4j-*.jar" >/dev/null \
        || ! compgen -G "$tmp/lib/kafka-clients-$v.jar" >/dev/null; then
        warn "kafka: Maven succeeded but expected jars are missing in $tmp/lib"
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$tmp/pom" "$dir"
    mv "$tmp" "$dir"
    touch "$dir/.complete"
    ln -sfn "kafka-$v" "$KAFKA_HOME_LINK"
    log "kafka: $(find "$dir/lib" -name '*.jar' | wc -l) jars in $dir/lib"
}

step_kafka() {
    if [ -f "$KAFKA_HOME_LINK/.complete" ]; then
        log "kafka: jars present ($(readlink "$KAFKA_HOME_LINK"))"
        return 0
    fi
    # A complete download from an earlier run whose symlink got lost.
    local v
    for v in "$KAFKA_VERSION_PRIMARY" "$KAFKA_VERSION_FALLBACK"; do
        if [ -f "$DEV_CACHE/kafka-$v/.complete" ]; then
            ln -sfn "kafka-$v" "$KAFKA_HOME_LINK"
            log "kafka: jars present (kafka-$v)"
            return 0
        fi
    done
    command -v mvn >/dev/null 2>&1 || die "kafka: mvn (Maven) not found on PATH"
    find_java >/dev/null || die "kafka: java not found (need OpenJDK >= 11)"
    if fetch_kafka "$KAFKA_VERSION_PRIMARY"; then
        return 0
    fi
    warn "kafka: $KAFKA_VERSION_PRIMARY failed to resolve, falling back to $KAFKA_VERSION_FALLBACK"
    fetch_kafka "$KAFKA_VERSION_FALLBACK" \
        || die "kafka: could not fetch Kafka $KAFKA_VERSION_PRIMARY or $KAFKA_VERSION_FALLBACK jars (see $STEP_LOG_DIR/mvn-kafka-*.log)"
}

step_ferretdb() {
    local marker="$DEV_CACHE/bin/.ferretdb-$FERRETDB_VERSION"
    if [ -x "$FERRETDB_BIN" ] && [ -f "$marker" ]; then
        log "ferretdb: $FERRETDB_VERSION present ($FERRETDB_BIN)"
        return 0
    fi
    local go
    go="$(find_go)" || die "ferretdb: go not found (PATH or /usr/local/go/bin)"
    export GOTOOLCHAIN=local CGO_ENABLED=0

    log "ferretdb: downloading github.com/FerretDB/FerretDB@$FERRETDB_VERSION"
    local json moddir
    # Run outside any module so that no go.mod/go.work of the caller is picked up.
    json="$(cd / && GOWORK=off "$go" mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        2>"$STEP_LOG_DIR/ferretdb-download.log")" || {
        cat "$STEP_LOG_DIR/ferretdb-download.log" >&2
        printf '%s\n' "$json" >&2
        die "ferretdb: go mod download failed"
    }
    moddir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}[[:space:]]*$/\1/p')"
    if [ -z "$moddir" ] || [ ! -d "$moddir" ]; then die "ferretdb: no module Dir in: $json"; fi

    # The module cache is read-only and lacks build/version/version.txt (upstream issue 2982):
    # build from a writable copy with that file written.
    local src="$DEV_CACHE/src/ferretdb-$FERRETDB_VERSION"
    rm -rf "$src"
    mkdir -p "$src" "$DEV_CACHE/bin"
    cp -R "$moddir/." "$src/"
    chmod -R u+w "$src"
    printf '%s\n' "$FERRETDB_VERSION" >"$src/build/version/version.txt"

    log "ferretdb: building (2-5 min; log: $STEP_LOG_DIR/ferretdb-build.log)"
    local t0=$SECONDS
    rm -f "$FERRETDB_BIN.tmp"
    (cd "$src" && run_logged ferretdb-build "$go" build -buildvcs=false -trimpath \
        -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) \
        || die "ferretdb: go build failed (check GOTOOLCHAIN=local, module copy writable, version.txt)"
    "$FERRETDB_BIN.tmp" --version >"$STEP_LOG_DIR/ferretdb-version.log" 2>&1 \
        || { cat "$STEP_LOG_DIR/ferretdb-version.log" >&2; die "ferretdb: built binary does not run"; }
    mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
    rm -rf "$src"
    rmdir "$DEV_CACHE/src" 2>/dev/null || true
    touch "$marker"
    log "ferretdb: built $FERRETDB_BIN in $((SECONDS - t0)) s"
}

step_venv() {
    local marker="$VENV_DIR/.execd-packages" want
    want="${PY_PACKAGES[*]}"
    if [ -x "$VENV_DIR/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
        log "venv: present ($VENV_DIR: $want)"
        return 0
    fi
    local py="${DEV_PYTHON:-}"
    if [ -z "$py" ]; then
        if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py="$(command -v python3 || true)"; fi
    fi
    [ -n "$py" ] || die "venv: python3 not found"
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        log "venv: creating $VENV_DIR with $py"
        run_logged venv-create "$py" -m venv "$VENV_DIR" \
            || die "venv: '$py -m venv' failed (is python3-venv installed?)"
    fi
    log "venv: pip install $want"
    run_logged venv-pip "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check \
        "${PY_PACKAGES[@]}" || die "venv: pip install failed"
    "$VENV_DIR/bin/python" -c 'import pytest, pytest_timeout, pymongo' \
        || die "venv: pytest/pymongo not importable after install"
    printf '%s\n' "$want" >"$marker"
    log "venv: done"
}

main() {
    local steps=("$@") s
    [ "${#steps[@]}" -gt 0 ] || steps=(apt kafka ferretdb venv)
    for s in "${steps[@]}"; do
        case "$s" in
            apt|kafka|ferretdb|venv) ;;
            *) die "unknown step '$s' (steps: apt kafka ferretdb venv)" ;;
        esac
    done
    mkdir -p "$DEV_CACHE" "$STEP_LOG_DIR"

    # Serialise concurrent runs (e.g. parallel make targets) on the same cache.
    exec 9>"$DEV_CACHE/.setup.lock"
    if ! flock -n 9; then
        log "another setup.sh is running on $DEV_CACHE; waiting"
        flock 9
    fi

    local t0=$SECONDS
    for s in "${steps[@]}"; do
        "step_$s"
    done
    log "ok (${steps[*]}) in $((SECONDS - t0)) s"
}

main "$@"
