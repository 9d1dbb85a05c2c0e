/*
 * monitor.h — private interfaces between the files of the monitor role.
 *
 *   monitor.c         the struct role, list + watch, shards, pod transitions
 *   monitor_output.c  the entrypoint protocol: framed log, termination message
 */
#ifndef EXECD_MONITOR_H
#define EXECD_MONITOR_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;

#define MONITOR_ROLE "monitor"

/* What the entrypoint reported (termination message). */
struct run_info {
    bool valid; /* the message was the entrypoint's JSON */
    int exit_code;
    double wall_seconds;
    long long cpu_jiffies, clk_tck, peak_memory_kb;
    bool stdout_truncated, stderr_truncated, timed_out;
};

/* Parses a termination message; info->valid false when it is not ours. */
void monitor_parse_message(const char *msg, struct run_info *info);

/* Splits the framed log into stdout and stderr, valid UTF-8 without NULs
 * (invalid bytes become U+FFFD); both owned by the caller.  Returns false
 * when the log carries no frame (both set to ""). */
bool monitor_split_log(const char *log, size_t len, char **out, char **err);

/* A valid-UTF-8, NUL-free copy of data (caller frees); NULL on ENOMEM. */
char *monitor_utf8(const char *data, size_t len);

#endif
