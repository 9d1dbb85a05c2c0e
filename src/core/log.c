/*
 * log.c — one line per event, one write(2) per line.
 *
 * The kv part is formatted first, then either copied as logfmt or split into
 * key=value tokens (double quotes group a value) and emitted as JSON.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util.h"

static atomic_int min_level = LOG_INFO;
static atomic_int json_format = 0;
static _Thread_local char request_id[64];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_setup(const char *level, const char *format)
{
    int lvl = -1;
    for (int i = 0; i < 4; i++)
        if (level && strcasecmp(level, level_names[i]) == 0)
            lvl = i;
    if (level && strcasecmp(level, "warning") == 0)
        lvl = LOG_WARN;
    if (lvl < 0)
        return -EINVAL;
    int json;
    if (!format || strcasecmp(format, "logfmt") == 0 || strcasecmp(format, "text") == 0)
        json = 0;
    else if (strcasecmp(format, "json") == 0)
        json = 1;
    else
        return -EINVAL;
    atomic_store(&min_level, lvl);
    atomic_store(&json_format, json);
    return 0;
}

int log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&min_level);
}

void log_set_request_id(const char *id)
{
    snprintf(request_id, sizeof(request_id), "%s", id ? id : "");
}

static void json_str(struct strbuf *sb, const char *s, size_t n)
{
    sb_puts(sb, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_append(sb, e, 2);
        } else if (c == '\n') {
            sb_puts(sb, "\\n");
        } else if (c < 0x20) {
            sb_printf(sb, "\\u%04x", c);
        } else {
            sb_append(sb, (const char *)&s[i], 1);
        }
    }
    sb_puts(sb, "\"");
}

static int needs_quotes(const char *s)
{
    return *s == '\0' || strpbrk(s, " =\"\t\n") != NULL;
}

/* Splits "k=v k2=\"a b\"" into JSON members. */
static void kv_to_json(struct strbuf *sb, const char *kv)
{
    const char *p = kv;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        size_t klen = (size_t)(p - k);
        sb_puts(sb, ",");
        json_str(sb, k, klen);
        sb_puts(sb, ":");
        if (*p != '=') {
            sb_puts(sb, "true");
            continue;
        }
        p++;
        if (*p == '"') {
            p++;
            struct strbuf v = {0};
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                sb_append(&v, p, 1);
                p++;
            }
            if (*p == '"')
                p++;
            json_str(sb, v.s ? v.s : "", v.len);
            sb_release(&v);
        } else {
            const char *v = p;
            while (*p && *p != ' ')
                p++;
            json_str(sb, v, (size_t)(p - v));
        }
    }
}

static void logfmt_value(struct strbuf *sb, const char *s)
{
    if (!needs_quotes(s)) {
        sb_puts(sb, s);
        return;
    }
    sb_puts(sb, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_puts(sb, "\\");
        if (*s == '\n')
            sb_puts(sb, "\\n");
        else
            sb_append(sb, s, 1);
    }
    sb_puts(sb, "\"");
}

void log_emit(enum log_level level, const char *role, const char *msg, const char *kv, ...)
{
    if (!log_enabled(level))
        return;
    int saved = errno;
    char ts[TS_LEN], thread[17];
    ts_format_us(now_wall_us(), ts);
    thread_name_get(thread, sizeof(thread));
    struct strbuf kvs = {0};
    if (kv && *kv) {
        va_list ap;
        va_start(ap, kv);
        sb_vprintf(&kvs, kv, ap);
        va_end(ap);
    }
    struct strbuf sb = {0};
    const char *lvl = level_names[level >= LOG_DEBUG && level <= LOG_ERROR ? level : LOG_INFO];
    if (atomic_load(&json_format)) {
        sb_printf(&sb, "{\"ts\":\"%s\",\"level\":\"%s\",\"role\":", ts, lvl);
        json_str(&sb, role ? role : "main", strlen(role ? role : "main"));
        sb_puts(&sb, ",\"thread\":");
        json_str(&sb, thread, strlen(thread));
        sb_puts(&sb, ",\"msg\":");
        json_str(&sb, msg, strlen(msg));
        if (request_id[0]) {
            sb_puts(&sb, ",\"request_id\":");
            json_str(&sb, request_id, strlen(request_id));
        }
        if (kvs.s)
            kv_to_json(&sb, kvs.s);
        sb_puts(&sb, "}\n");
    } else {
        sb_printf(&sb, "ts=%s level=%s role=%s thread=", ts, lvl, role ? role : "main");
        logfmt_value(&sb, thread[0] ? thread : "-");
        sb_puts(&sb, " msg=");
        logfmt_value(&sb, msg);
        if (request_id[0])
            sb_printf(&sb, " request_id=%s", request_id);
        if (kvs.s && kvs.s[0]) {
            sb_puts(&sb, " ");
            sb_puts(&sb, kvs.s);
        }
        sb_puts(&sb, "\n");
    }
    if (sb.s) {
        ssize_t w = write(STDERR_FILENO, sb.s, sb.len);
        (void)w;
    }
    sb_release(&sb);
    sb_release(&kvs);
    errno = saved;
}
