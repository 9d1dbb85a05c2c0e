/*
 * execution.c — execution states, ranks, the event → status mapping, error
 * type names and the exec_json template builder.  Pure: no I/O.
 */
#include "execution.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util.h"

static const char *const status_names[EXEC_STATUS_COUNT] = {
    [EXEC_QUEUED] = "queued",       [EXEC_SCHEDULED] = "scheduled", [EXEC_RUNNING] = "running",
    [EXEC_COMPLETED] = "completed", [EXEC_FAILED] = "failed",       [EXEC_TIMEOUT] = "timeout",
    [EXEC_CANCELLED] = "cancelled",
};

static const char *const error_names[EXEC_ERR_COUNT] = {
    [EXEC_ERR_SCRIPT_ERROR] = "script_error",           [EXEC_ERR_TIMEOUT] = "timeout",
    [EXEC_ERR_RESOURCE_LIMIT] = "resource_limit",       [EXEC_ERR_SYSTEM_ERROR] = "system_error",
    [EXEC_ERR_PERMISSION_DENIED] = "permission_denied", [EXEC_ERR_RATE_LIMITED] = "rate_limited",
};

const char *execution_status_name(enum execution_status status)
{
    return (unsigned)status < EXEC_STATUS_COUNT ? status_names[status] : "unknown";
}

int execution_status_lookup(const char *name)
{
    for (int i = 0; name && i < EXEC_STATUS_COUNT; i++)
        if (strcmp(status_names[i], name) == 0)
            return i;
    return -1;
}

int execution_status_rank(enum execution_status status)
{
    switch (status) {
    case EXEC_QUEUED:
        return 0;
    case EXEC_SCHEDULED:
        return 1;
    case EXEC_RUNNING:
        return 2;
    default:
        return EXEC_RANK_TERMINAL;
    }
}

bool execution_status_terminal(enum execution_status status)
{
    return status >= EXEC_COMPLETED && status < EXEC_STATUS_COUNT;
}

const char *execution_status_time_field(enum execution_status status)
{
    switch (status) {
    case EXEC_QUEUED:
        return "queued_at";
    case EXEC_SCHEDULED:
        return "scheduled_at";
    case EXEC_RUNNING:
        return "started_at";
    default:
        return "finished_at";
    }
}

int execution_status_of_event(enum event_type type)
{
    switch (type) {
    case EV_execution_requested:
    case EV_execution_accepted:
    case EV_execution_queued:
        return EXEC_QUEUED;
    case EV_execution_scheduled:
    case EV_pod_created:
    case EV_pod_scheduled:
        return EXEC_SCHEDULED;
    case EV_execution_started:
    case EV_pod_running:
        return EXEC_RUNNING;
    case EV_execution_completed:
        return EXEC_COMPLETED;
    case EV_execution_failed:
        return EXEC_FAILED;
    case EV_execution_timeout:
        return EXEC_TIMEOUT;
    case EV_execution_cancelled:
        return EXEC_CANCELLED;
    default:
        return -1;
    }
}

bool execution_event_terminal(enum event_type type)
{
    int s = execution_status_of_event(type);
    return s >= 0 && execution_status_terminal((enum execution_status)s);
}

int execution_rank_bound(enum execution_status next)
{
    int rank = execution_status_rank(next);
    return execution_status_terminal(next) ? rank - 1 : rank;
}

bool execution_transition_allowed(int cur_rank, enum execution_status next)
{
    if ((unsigned)next >= EXEC_STATUS_COUNT)
        return false;
    return cur_rank < 0 || cur_rank <= execution_rank_bound(next);
}

const char *execution_error_name(enum execution_error err)
{
    return (unsigned)err < EXEC_ERR_COUNT ? error_names[err] : "system_error";
}

int execution_error_lookup(const char *name)
{
    for (int i = 0; name && i < EXEC_ERR_COUNT; i++)
        if (strcmp(error_names[i], name) == 0)
            return i;
    return -1;
}

/* Appends s as a JSON string literal (or null). */
static int append_string(struct strbuf *sb, const char *s)
{
    if (s == NULL)
        return sb_puts(sb, "null");
    cJSON *str = cJSON_CreateString(s);
    char *text = str ? cJSON_PrintUnformatted(str) : NULL;
    cJSON_Delete(str);
    if (text == NULL)
        return -1;
    int rc = sb_puts(sb, text);
    free(text);
    return rc;
}

cJSON *exec_json(const char *fmt, ...)
{
    struct strbuf sb = {0};
    va_list ap;
    int rc = 0;
    va_start(ap, fmt);
    for (const char *p = fmt; *p && rc == 0; p++) {
        if (*p != '%') {
            rc = sb_append(&sb, p, 1);
            continue;
        }
        switch (*++p) {
        case 'S':
            rc = append_string(&sb, va_arg(ap, const char *));
            break;
        case 'L':
            rc = sb_printf(&sb, "%lld", va_arg(ap, long long));
            break;
        case 'F': {
            double d = va_arg(ap, double);
            rc = d == d && d - d == 0 ? sb_printf(&sb, "%.17g", d) : sb_puts(&sb, "null");
            break;
        }
        case 'B':
            rc = sb_puts(&sb, va_arg(ap, int) ? "true" : "false");
            break;
        case 'J': {
            const cJSON *node = va_arg(ap, const cJSON *);
            char *text = node ? cJSON_PrintUnformatted(node) : NULL;
            rc = text ? sb_puts(&sb, text) : sb_puts(&sb, "null");
            free(text);
            break;
        }
        case '%':
            rc = sb_append(&sb, "%", 1);
            break;
        default:
            rc = -1;
            break;
        }
    }
    va_end(ap);
    cJSON *out = rc == 0 && sb.s ? cJSON_Parse(sb.s) : NULL;
    sb_release(&sb);
    return out;
}
