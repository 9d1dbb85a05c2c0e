# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/setup.sh and scripts/services.sh. Source it, do not run it.
#
# Environment overrides (all optional):
#   DEV_CACHE        downloaded/built tools   (default <repo>/.cache)
#   DEV_VAR_DIR      service state and logs   (default <repo>/var)
#   DEV_KAFKA_PORT   Kafka PLAINTEXT port     (default 9092)
#   DEV_KAFKA_CONTROLLER_PORT  KRaft port     (default DEV_KAFKA_PORT + 1)
#   DEV_MONGO_PORT   FerretDB port            (default 27017)
#   DEV_PYTHON       interpreter for the venv (default /usr/bin/python3)

DEV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export DEV_ROOT

DEV_CACHE="${DEV_CACHE:-$DEV_ROOT/.cache}"
DEV_VAR_DIR="${DEV_VAR_DIR:-$DEV_ROOT/var}"
DEV_KAFKA_PORT="${DEV_KAFKA_PORT:-9092}"
DEV_KAFKA_CONTROLLER_PORT="${DEV_KAFKA_CONTROLLER_PORT:-$((DEV_KAFKA_PORT + 1))}"
DEV_MONGO_PORT="${DEV_MONGO_PORT:-27017}"

KAFKA_VERSION_PRIMARY="3.9.1"
KAFKA_VERSION_FALLBACK="3.9.0"
FERRETDB_VERSION="v1.24.2"

log()  { printf '[%s] %s\n' "${DEV_SCRIPT:-execd}" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "${DEV_SCRIPT:-execd}" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "${DEV_SCRIPT:-execd}" "$*" >&2; exit 1; }

# Make paths absolute (Kafka's log.dirs and FerretDB's sqlite url need that).
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd -P)" "$1" ;;
    esac
}
DEV_CACHE="$(abspath "$DEV_CACHE")"
DEV_VAR_DIR="$(abspath "$DEV_VAR_DIR")"

# Symlink made by setup.sh to the Kafka version that resolved (kafka-3.9.1, or kafka-3.9.0).
KAFKA_HOME_LINK="$DEV_CACHE/kafka"
FERRETDB_BIN="$DEV_CACHE/bin/ferretdb"
VENV_DIR="$DEV_CACHE/venv"

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    # shellcheck disable=SC2016
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [ -x /usr/local/go/bin/go ]; then
        printf '%s\n' /usr/local/go/bin/go
    else
        return 1
    fi
}

find_java() {
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        command -v java
    else
        return 1
    fi
}
