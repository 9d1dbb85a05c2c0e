/*
 * monitor_output.c — reading back the entrypoint protocol (see the worker's
 * worker_entrypoint.c): the framed log
 *     --execd-stdout-begin <n>--\n <n bytes> \n--execd-stderr-begin <m>--\n
 *     <m bytes> \n--execd-end--\n
 * and the JSON termination message.  Lengths, not markers, delimit the
 * streams, so output that prints marker-like lines cannot confuse the split.
 */
#include "monitor.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define OUT_BEGIN "--execd-stdout-begin "
#define ERR_BEGIN "\n--execd-stderr-begin "

void monitor_parse_message(const char *msg, struct run_info *info)
{
    memset(info, 0, sizeof(*info));
    cJSON *m = msg ? cJSON_Parse(msg) : NULL;
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(m, "exit_code");
    if (cJSON_IsNumber(ec)) {
        info->valid = true;
        info->exit_code = ec->valueint;
        const cJSON *v;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(m, "wall_seconds")))
            info->wall_seconds = v->valuedouble;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(m, "cpu_jiffies")))
            info->cpu_jiffies = (long long)v->valuedouble;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(m, "clk_tck")))
            info->clk_tck = (long long)v->valuedouble;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(m, "peak_memory_kb")))
            info->peak_memory_kb = (long long)v->valuedouble;
        info->stdout_truncated =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "stdout_truncated"));
        info->stderr_truncated =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "stderr_truncated"));
        info->timed_out = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "timed_out"));
        if (info->clk_tck <= 0)
            info->clk_tck = 100;
    }
    cJSON_Delete(m);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned min;
    unsigned cp;
    if (c < 0x80)
        return c ? 1 : 0;
    if ((c & 0xe0) == 0xc0) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

char *monitor_utf8(const char *data, size_t len)
{
    struct strbuf sb = {0};
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0, start = 0;
    int rc = sb_append(&sb, "", 0);
    while (rc == 0 && i < len) {
        size_t n = utf8_seq(p + i, len - i);
        if (n) {
            i += n;
            continue;
        }
        rc = sb_append(&sb, data + start, i - start);
        if (rc == 0)
            rc = sb_append(&sb, "\xef\xbf\xbd", 3);
        i++;
        start = i;
    }
    if (rc == 0)
        rc = sb_append(&sb, data + start, i - start);
    if (rc) {
        sb_release(&sb);
        return NULL;
    }
    return sb_steal(&sb);
}

/* Parses "<digits>--\n" at *p; advances past it. */
static bool frame_len(const char **p, const char *end, size_t *n)
{
    const char *q = *p;
    size_t v = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9' && digits < 12) {
        v = v * 10 + (size_t)(*q - '0');
        q++, digits++;
    }
    if (!digits || end - q < 3 || memcmp(q, "--\n", 3) != 0)
        return false;
    *p = q + 3;
    *n = v;
    return true;
}

static const char *find(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

bool monitor_split_log(const char *log, size_t len, char **out, char **err)
{
    *out = *err = NULL;
    const char *end = log + len;
    const char *p = NULL;
    /* The first frame header at the start of a line. */
    size_t hl = strlen(OUT_BEGIN);
    if (len >= hl && memcmp(log, OUT_BEGIN, hl) == 0) {
        p = log + hl;
    } else {
        const char *q = find(log, len, "\n" OUT_BEGIN);
        if (q)
            p = q + 1 + hl;
    }
    size_t n = 0, m = 0;
    bool ok = p && frame_len(&p, end, &n);
    const char *o = p;
    size_t olen = 0, elen = 0;
    const char *e = NULL;
    if (ok) {
        olen = (size_t)(end - o) < n ? (size_t)(end - o) : n;
        const char *q = o + olen;
        if ((size_t)(end - q) >= strlen(ERR_BEGIN) &&
            memcmp(q, ERR_BEGIN, strlen(ERR_BEGIN)) == 0) {
            q += strlen(ERR_BEGIN);
            if (frame_len(&q, end, &m)) {
                e = q;
                elen = (size_t)(end - e) < m ? (size_t)(end - e) : m;
            }
        }
    }
    *out = monitor_utf8(ok ? o : "", olen);
    *err = monitor_utf8(e ? e : "", elen);
    return ok;
}
