/*
 * log.h — one line per event on stderr, written with one write(2).
 *
 *   logfmt: ts=… level=info role=store thread=store-consumer msg="…" key=value …
 *   json:   {"ts":"…","level":"info","role":"store","thread":"…","msg":"…","key":"value"}
 *
 * `kv` is a printf format producing space-separated key=value pairs; a value
 * containing spaces must be double-quoted by the caller ("err=\"%s\"").
 * Messages are lowercase and say what failed first.
 */
#ifndef EXECD_LOG_H
#define EXECD_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Returns -EINVAL for an unknown level or format name. */
int log_setup(const char *level, const char *format);
int log_enabled(enum log_level level);
void log_emit(enum log_level level, const char *role, const char *msg, const char *kv, ...)
    __attribute__((format(printf, 4, 5)));

#define log_debug(role, msg, ...) log_emit(LOG_DEBUG, role, msg, __VA_ARGS__)
#define log_info(role, msg, ...) log_emit(LOG_INFO, role, msg, __VA_ARGS__)
#define log_warn(role, msg, ...) log_emit(LOG_WARN, role, msg, __VA_ARGS__)
#define log_error(role, msg, ...) log_emit(LOG_ERROR, role, msg, __VA_ARGS__)

/* Request id of the calling thread (set by the HTTP layer), or NULL. */
void log_set_request_id(const char *id);

#endif
