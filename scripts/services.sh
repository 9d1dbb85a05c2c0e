#!/usr/bin/env bash
# Local infrastructure for execd: single-node KRaft Kafka and FerretDB (MongoDB wire, SQLite).
#
#   scripts/services.sh up        start what is not running, wait until both answer
#   scripts/services.sh down      SIGTERM, SIGKILL after 15 s
#   scripts/services.sh restart   down + up
#   scripts/services.sh status    print state; exit 1 if any service is not up
#   scripts/services.sh logs [-f] [-n N]   last N (40) lines of both logs; -f follows
#
# State lives under $DEV_VAR_DIR (default <repo>/var):
#   kafka.pid  ferretdb.pid
#   kafka/server.properties  kafka/data/  kafka/logs/{server.log,kafka.out,...}
#   ferretdb/data/  ferretdb/state/  ferretdb/ferretdb.log
# Ports: DEV_KAFKA_PORT (9092), DEV_KAFKA_CONTROLLER_PORT (port+1), DEV_MONGO_PORT (27017).
# Wait limit for `up`: DEV_SERVICES_TIMEOUT seconds (60).
# Tools come from scripts/setup.sh ($DEV_CACHE, default <repo>/.cache).
set -euo pipefail

DEV_SCRIPT=services
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT="${DEV_SERVICES_TIMEOUT:-60}"
STOP_GRACE=15
# Fixed cluster id (22-char base64url of "execd-kafka-0001"): formatting is reproducible and
# --ignore-formatted keeps existing data.
KAFKA_CLUSTER_ID="ZXhlY2Qta2Fma2EtMDAwMQ"

KAFKA_DIR="$DEV_VAR_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_LOG="$KAFKA_LOGS/server.log"
KAFKA_OUT="$KAFKA_LOGS/kafka.out"
KAFKA_PID="$DEV_VAR_DIR/kafka.pid"
KAFKA_LOG4J="$DEV_ROOT/config/kafka/log4j.properties"
KAFKA_TEMPLATE="$DEV_ROOT/config/kafka/server.properties.in"
KAFKA_JVM_OPTS=(-Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

FDB_DIR="$DEV_VAR_DIR/ferretdb"
FDB_DATA="$FDB_DIR/data"
FDB_STATE="$FDB_DIR/state"
FDB_LOG="$FDB_DIR/ferretdb.log"
FDB_PID="$DEV_VAR_DIR/ferretdb.pid"

# ---------------------------------------------------------------- process helpers

# pid_of PIDFILE: print the pid recorded in PIDFILE (nothing if absent/garbage).
pid_of() {
    local p=""
    if [ -f "$1" ]; then read -r p <"$1" 2>/dev/null || true; fi
    case "$p" in ''|*[!0-9]*) return 1 ;; esac
    printf '%s\n' "$p"
}

# alive PIDFILE NEEDLE: the recorded process exists and its command line contains NEEDLE
# (guards against a recycled pid).
alive() {
    local pid cmd
    pid="$(pid_of "$1")" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    case "$cmd" in *"$2"*) return 0 ;; *) return 1 ;; esac
}

kafka_alive() { alive "$KAFKA_PID" "kafka.Kafka $KAFKA_PROPS"; }
fdb_alive()   { alive "$FDB_PID" "--state-dir=$FDB_STATE"; }

# spawn PIDFILE LOGFILE CMD...: start CMD detached from the caller: new session (setsid, no
# controlling terminal, no SIGHUP), stdin from /dev/null, stdout/stderr appended to LOGFILE and
# every other inherited fd closed (so make/CI pipes are not held open). The child writes its
# own pid (bash execs CMD, so the pid is CMD's) into PIDFILE.
spawn() {
    local pidfile="$1" logfile="$2"; shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016
    nohup setsid bash -c '
        for fd in /proc/$$/fd/*; do
            fd="${fd##*/}"
            if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0"
        exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
    local _
    for _ in $(seq 1 50); do
        [ -s "$pidfile" ] && return 0
        sleep 0.1
    done
    die "could not start $1 (no pid file $pidfile)"
}

# stop_signal NAME PIDFILE ALIVEFN: send SIGTERM if running; SIGNALLED=1 if it was, else 0.
SIGNALLED=0
stop_signal() {
    local name="$1" pidfile="$2" alivefn="$3" pid
    SIGNALLED=0
    if "$alivefn"; then
        pid="$(pid_of "$pidfile")"
        log "$name: stopping (pid $pid, SIGTERM)"
        kill -TERM "$pid" 2>/dev/null || true
        SIGNALLED=1
    fi
}

# stop_wait NAME PIDFILE ALIVEFN SIGNALLED: wait for exit, SIGKILL after $STOP_GRACE s; remove
# PIDFILE. SIGNALLED=1 when stop_signal found the process running.
stop_wait() {
    local name="$1" pidfile="$2" alivefn="$3" signalled="$4" pid _
    if "$alivefn"; then
        pid="$(pid_of "$pidfile")"
        for _ in $(seq 1 $((STOP_GRACE * 5))); do
            "$alivefn" || break
            sleep 0.2
        done
        if "$alivefn"; then
            warn "$name: still running after ${STOP_GRACE} s, sending SIGKILL to $pid"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 25); do
                "$alivefn" || break
                sleep 0.2
            done
            "$alivefn" && die "$name: pid $pid survived SIGKILL"
        fi
        log "$name: stopped"
    elif [ "$signalled" = 1 ]; then
        log "$name: stopped"
    else
        log "$name: not running"
    fi
    rm -f "$pidfile"
}

# ---------------------------------------------------------------- probes

kafka_metadata_ok() {
    timeout 10 kcat -b "127.0.0.1:$DEV_KAFKA_PORT" -L -m 5 >/dev/null 2>&1
}

kafka_ready() {
    [ -f "$KAFKA_LOG" ] && grep -q 'Kafka Server started' "$KAFKA_LOG" && kafka_metadata_ok
}

# MongoDB `ping` over OP_MSG with only the standard library (no pymongo needed).
# shellcheck disable=SC2016
MONGO_PING_PY='
import socket, struct, sys
port = int(sys.argv[1])
def cstr(s): return s.encode() + b"\0"
body = b"\x10" + cstr("ping") + struct.pack("<i", 1)
db = cstr("admin")
body += b"\x02" + cstr("$db") + struct.pack("<i", len(db)) + db
doc = struct.pack("<i", len(body) + 5) + body + b"\0"
msg = struct.pack("<I", 0) + b"\0" + doc
hdr = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)
s = socket.create_connection(("127.0.0.1", port), timeout=3)
s.settimeout(3)
s.sendall(hdr + msg)
def readn(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise SystemExit("connection closed")
        b += c
    return b
h = readn(16)
(length, _, _, opcode) = struct.unpack("<iiii", h)
rest = readn(length - 16)
okpos = rest.find(b"\x01ok\0")
if opcode != 2013 or okpos < 0 or struct.unpack("<d", rest[okpos + 4:okpos + 12])[0] != 1.0:
    raise SystemExit("ping failed: %r" % rest[:200])
'

python_bin() {
    if [ -x "$VENV_DIR/bin/python" ]; then printf '%s\n' "$VENV_DIR/bin/python"
    elif [ -x /usr/bin/python3 ]; then printf '%s\n' /usr/bin/python3
    else command -v python3
    fi
}

fdb_ready() {
    port_open "$DEV_MONGO_PORT" || return 1
    timeout 10 "$(python_bin)" -c "$MONGO_PING_PY" "$DEV_MONGO_PORT" >/dev/null 2>&1
}

# ---------------------------------------------------------------- kafka

# kafka_start: start Kafka unless it is running; sets KWAIT=1 when `up` must wait for it.
KWAIT=0
kafka_start() {
    KWAIT=0
    if kafka_alive; then
        if port_open "$DEV_KAFKA_PORT"; then
            log "kafka: already running (pid $(pid_of "$KAFKA_PID"), 127.0.0.1:$DEV_KAFKA_PORT)"
            return 0
        fi
        log "kafka: process $(pid_of "$KAFKA_PID") alive but port $DEV_KAFKA_PORT not answering yet; waiting"
        KWAIT=1
        return 0
    fi
    rm -f "$KAFKA_PID"
    if port_open "$DEV_KAFKA_PORT"; then
        die "kafka: 127.0.0.1:$DEV_KAFKA_PORT is in use by another process (not ours: no live pid in $KAFKA_PID); set DEV_KAFKA_PORT"
    fi
    if port_open "$DEV_KAFKA_CONTROLLER_PORT"; then
        die "kafka: controller port 127.0.0.1:$DEV_KAFKA_CONTROLLER_PORT is in use; set DEV_KAFKA_CONTROLLER_PORT"
    fi
    [ -f "$KAFKA_HOME_LINK/.complete" ] || die "kafka: jars missing in $KAFKA_HOME_LINK; run scripts/setup.sh"
    command -v kcat >/dev/null 2>&1 || die "kafka: kcat not installed; run scripts/setup.sh"
    local java
    java="$(find_java)" || die "kafka: java not found"
    local cp="$KAFKA_HOME_LINK/lib/*"

    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    sed -e "s|@KAFKA_PORT@|$DEV_KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$DEV_KAFKA_CONTROLLER_PORT|g" \
        -e "s|@LOG_DIRS@|$KAFKA_DATA|g" \
        "$KAFKA_TEMPLATE" >"$KAFKA_PROPS.tmp"
    mv -f "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"

    # Fresh server.log per start, so the readiness check only sees this run's lines.
    [ -f "$KAFKA_LOG" ] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.prev"
    [ -f "$KAFKA_OUT" ] && mv -f "$KAFKA_OUT" "$KAFKA_OUT.prev"

    if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
        log "kafka: formatting storage $KAFKA_DATA (cluster id $KAFKA_CLUSTER_ID)"
        if ! "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
                -Dlog4j.configuration="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOGS" \
                -cp "$cp" kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" \
                -c "$KAFKA_PROPS" --ignore-formatted \
                </dev/null >"$KAFKA_LOGS/storage-format.log" 2>&1; then
            tail -n 30 "$KAFKA_LOGS/storage-format.log" >&2
            die "kafka: storage format failed"
        fi
    fi

    log "kafka: starting on 127.0.0.1:$DEV_KAFKA_PORT (controller $DEV_KAFKA_CONTROLLER_PORT)"
    spawn "$KAFKA_PID" "$KAFKA_OUT" "$java" "${KAFKA_JVM_OPTS[@]}" \
        -Dlog4j.configuration="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOGS" \
        -cp "$cp" kafka.Kafka "$KAFKA_PROPS"
    KWAIT=1
}

kafka_fail() {
    warn "kafka: $1"
    if [ -f "$KAFKA_LOG" ]; then
        printf -- '--- tail of %s\n' "$KAFKA_LOG" >&2
        tail -n 40 "$KAFKA_LOG" >&2 || true
    fi
    if [ -s "$KAFKA_OUT" ]; then
        printf -- '--- tail of %s\n' "$KAFKA_OUT" >&2
        tail -n 20 "$KAFKA_OUT" >&2 || true
    fi
    return 1
}

# ---------------------------------------------------------------- ferretdb

# fdb_start: start FerretDB unless it is running; sets FWAIT=1 when `up` must wait for it.
FWAIT=0
fdb_start() {
    FWAIT=0
    if fdb_alive; then
        if port_open "$DEV_MONGO_PORT"; then
            log "ferretdb: already running (pid $(pid_of "$FDB_PID"), 127.0.0.1:$DEV_MONGO_PORT)"
            return 0
        fi
        log "ferretdb: process $(pid_of "$FDB_PID") alive but port $DEV_MONGO_PORT not answering yet; waiting"
        FWAIT=1
        return 0
    fi
    rm -f "$FDB_PID"
    if port_open "$DEV_MONGO_PORT"; then
        die "ferretdb: 127.0.0.1:$DEV_MONGO_PORT is in use by another process (not ours: no live pid in $FDB_PID); set DEV_MONGO_PORT"
    fi
    [ -x "$FERRETDB_BIN" ] || die "ferretdb: $FERRETDB_BIN missing; run scripts/setup.sh"
    mkdir -p "$FDB_DATA" "$FDB_STATE"
    [ -f "$FDB_LOG" ] && mv -f "$FDB_LOG" "$FDB_LOG.prev"
    log "ferretdb: starting on 127.0.0.1:$DEV_MONGO_PORT (sqlite in $FDB_DATA)"
    spawn "$FDB_PID" "$FDB_LOG" "$FERRETDB_BIN" \
        --handler=sqlite --sqlite-url="file:$FDB_DATA/" \
        --listen-addr="127.0.0.1:$DEV_MONGO_PORT" --state-dir="$FDB_STATE" \
        --telemetry=disable --debug-addr=- --log-level=warn
    FWAIT=1
}

fdb_fail() {
    warn "ferretdb: $1"
    if [ -f "$FDB_LOG" ]; then
        printf -- '--- tail of %s\n' "$FDB_LOG" >&2
        tail -n 40 "$FDB_LOG" >&2 || true
    fi
    return 1
}

# ---------------------------------------------------------------- commands

with_lock() {
    mkdir -p "$DEV_VAR_DIR"
    exec 9>"$DEV_VAR_DIR/.services.lock"
    if ! flock -n 9; then
        log "another services.sh up/down is running; waiting"
        flock 9
    fi
}

cmd_up() {
    with_lock
    local t0=$SECONDS kwait fwait
    kafka_start
    fdb_start
    kwait=$KWAIT fwait=$FWAIT

    local deadline=$((SECONDS + TIMEOUT)) failed=0
    while [ "$kwait" = 1 ] || [ "$fwait" = 1 ]; do
        if [ "$fwait" = 1 ]; then
            if fdb_ready; then
                log "ferretdb: ready (pid $(pid_of "$FDB_PID"), $((SECONDS - t0)) s)"; fwait=0
            elif ! fdb_alive; then
                fdb_fail "process exited during startup" || true; fwait=0; failed=1
            fi
        fi
        if [ "$kwait" = 1 ]; then
            if kafka_ready; then
                log "kafka: ready (pid $(pid_of "$KAFKA_PID"), $((SECONDS - t0)) s)"; kwait=0
            elif ! kafka_alive; then
                kafka_fail "process exited during startup" || true; kwait=0; failed=1
            fi
        fi
        if [ "$kwait" = 1 ] || [ "$fwait" = 1 ]; then
            if [ "$SECONDS" -ge "$deadline" ]; then
                [ "$kwait" = 1 ] && { kafka_fail "not ready after ${TIMEOUT} s" || true; }
                [ "$fwait" = 1 ] && { fdb_fail "not ready after ${TIMEOUT} s" || true; }
                failed=1; break
            fi
            sleep 0.5
        fi
    done
    [ "$failed" = 0 ] || die "services failed to start (state in $DEV_VAR_DIR; 'scripts/services.sh down' to clean up)"
    log "up: kafka 127.0.0.1:$DEV_KAFKA_PORT, ferretdb mongodb://127.0.0.1:$DEV_MONGO_PORT"
}

cmd_down() {
    with_lock
    local ks fs
    stop_signal kafka "$KAFKA_PID" kafka_alive; ks=$SIGNALLED
    stop_signal ferretdb "$FDB_PID" fdb_alive; fs=$SIGNALLED
    stop_wait ferretdb "$FDB_PID" fdb_alive "$fs"
    stop_wait kafka "$KAFKA_PID" kafka_alive "$ks"
}

# status_one NAME PIDFILE ALIVEFN PORT
status_one() {
    local name="$1" pidfile="$2" alivefn="$3" port="$4"
    if "$alivefn"; then
        if port_open "$port"; then
            printf '%-9s up        pid %s, 127.0.0.1:%s\n' "$name:" "$(pid_of "$pidfile")" "$port"
            return 0
        fi
        printf '%-9s starting  pid %s, 127.0.0.1:%s not answering\n' "$name:" "$(pid_of "$pidfile")" "$port"
        return 1
    fi
    if port_open "$port"; then
        printf '%-9s down      (127.0.0.1:%s is used by a process not started from %s)\n' "$name:" "$port" "$DEV_VAR_DIR"
    else
        printf '%-9s down\n' "$name:"
    fi
    return 1
}

cmd_status() {
    local rc=0
    status_one kafka "$KAFKA_PID" kafka_alive "$DEV_KAFKA_PORT" || rc=1
    status_one ferretdb "$FDB_PID" fdb_alive "$DEV_MONGO_PORT" || rc=1
    return "$rc"
}

cmd_logs() {
    local follow=0 n=40
    while [ $# -gt 0 ]; do
        case "$1" in
            -f|--follow) follow=1 ;;
            -n) shift; n="${1:?-n needs a number}" ;;
            *) die "logs: unknown option '$1' (usage: logs [-f] [-n N])" ;;
        esac
        shift
    done
    local files=() f
    for f in "$KAFKA_LOG" "$FDB_LOG"; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || die "no logs yet under $DEV_VAR_DIR"
    if [ "$follow" = 1 ]; then
        exec tail -n "$n" -F "${files[@]}"
    fi
    tail -n "$n" "${files[@]}"
}

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    restart) cmd_down; cmd_up ;;
    status) cmd_status ;;
    logs) shift; cmd_logs "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
