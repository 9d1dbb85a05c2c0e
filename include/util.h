/*
 * util.h — small helpers with no third-party I/O: clocks, ids, strings.
 */
#ifndef EXECD_UTIL_H
#define EXECD_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC / CLOCK_REALTIME. */
int64_t now_mono_ms(void);
int64_t now_wall_ms(void);
int64_t now_wall_us(void);
/* RFC 3339 UTC with microseconds: "2026-12-04T02:00:00.123456Z" (28 chars + NUL). */
#define TS_LEN 32
void ts_format_us(int64_t wall_us, char out[TS_LEN]);
/* Parses RFC 3339 ("…Z" or "+00:00", fraction optional); -EINVAL on error. */
int ts_parse_us(const char *s, int64_t *out_us);

/* Random UUID v4, lowercase, 36 chars + NUL. */
#define UUID_LEN 37
void uuid_v4(char out[UUID_LEN]);
/* W3C trace id: 32 lowercase hex chars + NUL. */
void trace_id_new(char out[33]);

/* Sleeps for ms (EINTR-safe). */
void sleep_ms(int64_t ms);
/* Names the calling thread (truncated to 15 chars). */
void thread_name_set(const char *name);
void thread_name_get(char *out, size_t len);

/* Growable string buffer; s is always NUL-terminated once non-NULL. */
struct strbuf {
    char *s;
    size_t len, cap;
};
int sb_append(struct strbuf *sb, const char *data, size_t len);
int sb_puts(struct strbuf *sb, const char *str);
int sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sb_vprintf(struct strbuf *sb, const char *fmt, va_list ap);
/* Hands the buffer to the caller (free()); sb is reset. */
char *sb_steal(struct strbuf *sb);
void sb_release(struct strbuf *sb);

/* strdup that returns NULL for NULL. */
char *xstrdup(const char *s);

#endif
