/*
 * util.c — clocks, ids, thread names and the string buffer.
 *
 * uuid_v4 and trace ids read the kernel's random pool through getrandom-like
 * /dev/urandom reads kept open once; nothing here does third-party I/O.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
int64_t now_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t now_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void ts_format_us(int64_t wall_us, char out[TS_LEN])
{
    time_t secs = (time_t)(wall_us / 1000000);
    long frac = (long)(wall_us % 1000000);
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* strftime keeps the compiler's truncation analysis quiet. */
    size_t n = strftime(out, TS_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, TS_LEN - n, ".%06ldZ", frac % 1000000);
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (**p < '0' || **p > '9')
            return -EINVAL;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int ts_parse_us(const char *s, int64_t *out_us)
{
    int y, mo, d, h, mi, sec;
    const char *p = s;
    if (!s || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return -EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    int64_t us = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 6) {
                us = us * 10 + (*p - '0');
            }
            n++;
            p++;
        }
        if (n == 0)
            return -EINVAL;
        for (; n < 6; n++)
            us *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om))
            return -EINVAL;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    *out_us = secs * 1000000 + us;
    return 0;
}

static pthread_once_t rnd_once = PTHREAD_ONCE_INIT;
static int rnd_fd = -1;

static void rnd_open(void)
{
    rnd_fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
}

static void rnd_bytes(unsigned char *buf, size_t n)
{
    pthread_once(&rnd_once, rnd_open);
    size_t got = 0;
    while (rnd_fd >= 0 && got < n) {
        ssize_t r = read(rnd_fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    /* /dev/urandom cannot fail on Linux once open; keep a fallback anyway. */
    for (; got < n; got++)
        buf[got] = (unsigned char)(rand() & 0xff); /* NOLINT(cert-msc30-c,cert-msc50-cpp) */
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits16[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits16[in[i] >> 4];
        out[2 * i + 1] = digits16[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void uuid_v4(char out[UUID_LEN])
{
    unsigned char b[16];
    char h[33];
    rnd_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    hex(b, 16, h);
    snprintf(out, UUID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

void trace_id_new(char out[33])
{
    unsigned char b[16];
    rnd_bytes(b, sizeof(b));
    hex(b, 16, out);
}

void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void thread_name_set(const char *name)
{
    char buf[16];
    snprintf(buf, sizeof(buf), "%s", name);
    prctl(PR_SET_NAME, buf, 0, 0, 0);
}

void thread_name_get(char *out, size_t len)
{
    char buf[17] = {0};
    if (prctl(PR_GET_NAME, buf, 0, 0, 0) != 0)
        buf[0] = '\0';
    snprintf(out, len, "%s", buf);
}

static int sb_grow(struct strbuf *sb, size_t need)
{
    if (sb->len + need + 1 <= sb->cap)
        return 0;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < sb->len + need + 1)
        cap *= 2;
    char *s = realloc(sb->s, cap);
    if (!s)
        return -ENOMEM;
    sb->s = s;
    sb->cap = cap;
    return 0;
}

int sb_append(struct strbuf *sb, const char *data, size_t len)
{
    if (sb_grow(sb, len))
        return -ENOMEM;
    if (len)
        memcpy(sb->s + sb->len, data, len);
    sb->len += len;
    sb->s[sb->len] = '\0';
    return 0;
}

int sb_puts(struct strbuf *sb, const char *str)
{
    return sb_append(sb, str, strlen(str));
}

int sb_vprintf(struct strbuf *sb, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    if (sb_grow(sb, (size_t)n))
        return -ENOMEM;
    vsnprintf(sb->s + sb->len, (size_t)n + 1, fmt, ap);
    sb->len += (size_t)n;
    return 0;
}

int sb_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sb_vprintf(sb, fmt, ap);
    va_end(ap);
    return rc;
}

char *sb_steal(struct strbuf *sb)
{
    char *s = sb->s;
    if (!s)
        s = calloc(1, 1);
    sb->s = NULL;
    sb->len = sb->cap = 0;
    return s;
}

void sb_release(struct strbuf *sb)
{
    free(sb->s);
    sb->s = NULL;
    sb->len = sb->cap = 0;
}

char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}
