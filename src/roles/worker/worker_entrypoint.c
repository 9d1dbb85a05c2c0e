/*
 * worker_entrypoint.c — the entrypoint script shipped in every execution's
 * ConfigMap (key entrypoint.sh), run as `/bin/sh /scripts/entrypoint.sh CMD…`.
 *
 * The protocol the monitor reads back (DESIGN §7):
 *  - the program runs in its own session (setsid when the image has it) with
 *    stdout and stderr in separate files under $TMPDIR or /tmp (the emptyDir);
 *  - at EXECD_TIMEOUT_SECONDS a watchdog kills its process group and leaves a
 *    marker, so a timeout still reports the output produced so far (the pod's
 *    activeDeadlineSeconds, a little later, is only the backstop);
 *  - wall time from date +%s%N, cpu from the `times` builtin (children's
 *    user + system, converted to jiffies at USER_HZ 100), peak memory from
 *    the larger of VmHWM sampled in /proc/<pid>/status (2, 4, 8, 16, 32 ms,
 *    then every 50 ms) and the container cgroup's memory.peak /
 *    memory.max_usage_in_bytes when /sys/fs/cgroup is visible;
 *  - the log is exactly:
 *        --execd-stdout-begin <n>--\n <n bytes> \n--execd-stderr-begin <m>--\n
 *        <m bytes> \n--execd-end--\n
 *    with n, m capped at EXECD_OUTPUT_LIMIT_BYTES;
 *  - the termination message (terminationMessagePath) is one JSON object:
 *    {exit_code, wall_seconds, cpu_jiffies, clk_tck, peak_memory_kb,
 *     stdout_truncated, stderr_truncated, timed_out};
 *  - the script exits with the program's status (128+signal when killed), so
 *    the pod phase and the OOMKilled reason stay meaningful.
 * The program can tamper with its own files under /tmp; that only changes
 * what it reports about itself.
 */
#include "worker.h"

const char worker_entrypoint[] =
    "# execd entrypoint: runs \"$@\" with stdout and stderr in separate files, caps\n"
    "# them, measures wall/cpu/peak memory, frames the output in the log and\n"
    "# writes a JSON termination message.  POSIX sh; dash, bash and busybox ash.\n"
    "T=${EXECD_TIMEOUT_SECONDS:-10}\n"
    "L=${EXECD_OUTPUT_LIMIT_BYTES:-524288}\n"
    "M=${EXECD_TERMINATION_LOG:-/dev/termination-log}\n"
    "D=${TMPDIR:-/tmp}/.execd-$$\n"
    "umask 077\n"
    "mkdir \"$D\" || exit 125\n"
    "# From here on stdout carries only the frames: the helpers below run with\n"
    "# their output detached (an orphaned sleep must not hold the log pipe open,\n"
    "# and no shell diagnostic may land inside a frame).\n"
    "exec 2>/dev/null\n"
    "now() { date +%s%N 2>/dev/null; }\n"
    "t0=$(now)\n"
    "if command -v setsid >/dev/null 2>&1; then\n"
    "    setsid \"$@\" >\"$D/out\" 2>\"$D/err\" </dev/null &\n"
    "else\n"
    "    \"$@\" >\"$D/out\" 2>\"$D/err\" </dev/null &\n"
    "fi\n"
    "pid=$!\n"
    "(\n"
    "    hwm=0 i=1\n"
    "    while :; do\n"
    "        v=\n"
    "        while read -r k n _; do\n"
    "            [ \"$k\" = VmHWM: ] && v=$n && break\n"
    "        done </proc/$pid/status 2>/dev/null || break\n"
    "        if [ -n \"$v\" ] && [ \"$v\" -gt \"$hwm\" ] 2>/dev/null; then\n"
    "            hwm=$v\n"
    "            echo \"$hwm\" >\"$D/hwm\"\n"
    "        fi\n"
    "        case $i in\n"
    "        1) d=0.002 ;; 2) d=0.004 ;; 3) d=0.008 ;; 4) d=0.016 ;; 5) d=0.032 ;; *) d=0.05 ;;\n"
    "        esac\n"
    "        i=$((i + 1))\n"
    "        sleep $d || break\n"
    "    done\n"
    ") </dev/null >/dev/null 2>&1 &\n"
    "sp=$!\n"
    "(\n"
    "    sleep \"$T\" || exit 0\n"
    "    : >\"$D/timeout\"\n"
    "    kill -KILL -\"$pid\" 2>/dev/null || kill -KILL \"$pid\" 2>/dev/null\n"
    ") </dev/null >/dev/null 2>&1 &\n"
    "wp=$!\n"
    "wait \"$pid\" 2>/dev/null\n"
    "rc=$?\n"
    "t1=$(now)\n"
    "times >\"$D/times\"\n"
    "kill -KILL \"$sp\" \"$wp\" 2>/dev/null\n"
    "wait \"$sp\" \"$wp\" 2>/dev/null\n"
    "to=false\n"
    "[ -e \"$D/timeout\" ] && to=true\n"
    "# cpu: the second line of `times` holds the children's user and system time.\n"
    "jiffies() {\n"
    "    m=${1%%m*}\n"
    "    s=${1#*m}\n"
    "    s=${s%s}\n"
    "    case $m$s in *[!0-9.]* | '') echo 0; return ;; esac\n"
    "    i=${s%%.*}\n"
    "    f=${s#\"$i\"}\n"
    "    f=${f#.}00\n"
    "    f=${f%\"${f#??}\"}\n"
    "    echo $(((m * 60 + ${i:-0}) * 100 + ${f#0}))\n"
    "}\n"
    "cu=0 cs=0\n"
    "{ read -r _ _; read -r cu cs; } <\"$D/times\"\n"
    "cpu=$(($(jiffies \"$cu\") + $(jiffies \"$cs\")))\n"
    "case $t0$t1 in\n"
    "*[!0-9]* | '') wall=0.000001 ;;\n"
    "*) w=$(((t1 - t0) / 1000)); wall=$((w / 1000000)).$(printf %06d $((w % 1000000))) ;;\n"
    "esac\n"
    "hwm=0\n"
    "[ -s \"$D/hwm\" ] && read -r hwm <\"$D/hwm\"\n"
    "for f in ${EXECD_CGROUP_PEAK-/sys/fs/cgroup/memory.peak "
    "/sys/fs/cgroup/memory/memory.max_usage_in_bytes}; do\n"
    "    if [ -r \"$f\" ]; then\n"
    "        read -r b <\"$f\" && [ \"$b\" -gt 0 ] 2>/dev/null && [ $((b / 1024)) -gt \"$hwm\" ] "
    "&& hwm=$((b / 1024))\n"
    "        break\n"
    "    fi\n"
    "done\n"
    "set -- $(wc -c <\"$D/out\") $(wc -c <\"$D/err\")\n"
    "so=$1 se=$2\n"
    "ot=false et=false\n"
    "[ \"$so\" -gt \"$L\" ] && so=$L ot=true\n"
    "[ \"$se\" -gt \"$L\" ] && se=$L et=true\n"
    "printf -- '--execd-stdout-begin %d--\\n' \"$so\"\n"
    "head -c \"$so\" \"$D/out\"\n"
    "printf -- '\\n--execd-stderr-begin %d--\\n' \"$se\"\n"
    "head -c \"$se\" \"$D/err\"\n"
    "printf -- '\\n--execd-end--\\n'\n"
    "printf "
    "'{\"exit_code\":%d,\"wall_seconds\":%s,\"cpu_jiffies\":%d,\"clk_tck\":100,\"peak_memory_kb\":%"
    "d,\"stdout_truncated\":%s,\"stderr_truncated\":%s,\"timed_out\":%s}' \\\n"
    "    \"$rc\" \"$wall\" \"$cpu\" \"$hwm\" \"$ot\" \"$et\" \"$to\" >\"$M\" 2>/dev/null\n"
    "rm -rf \"$D\"\n"
    "exit \"$rc\"\n";
