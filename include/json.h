/*
 * json.h — bounded JSON parsing shared by every request and message reader.
 *
 * cJSON parses recursively and civetweb's connection threads have small
 * stacks, so nesting is checked before parsing; only whitespace may follow
 * the value.
 */
#ifndef EXECD_JSON_H
#define EXECD_JSON_H

#include <stddef.h>

struct cJSON;

#define JSON_MAX_DEPTH 64

/* 0 and *out (caller frees) on success; -E2BIG when nested deeper than
 * max_depth; -EINVAL when malformed, with the byte offset in *err_at. */
int json_parse_bounded(const char *s, size_t len, int max_depth, struct cJSON **out,
                       size_t *err_at);

#endif
