/*
 * json.c — parse JSON with a nesting bound and strict trailing bytes.
 */
#include "json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

static bool depth_ok(const char *s, size_t len, int max_depth)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

int json_parse_bounded(const char *s, size_t len, int max_depth, cJSON **out, size_t *err_at)
{
    *err_at = 0;
    if (!depth_ok(s, len, max_depth))
        return -E2BIG;
    const char *end = NULL;
    cJSON *json = len ? cJSON_ParseWithLengthOpts(s, len, &end, 0) : NULL;
    if (json && end) {
        while (end < s + len && *end && strchr(" \t\r\n", *end))
            end++;
        if (end != s + len) {
            cJSON_Delete(json);
            json = NULL;
        }
    }
    if (!json) {
        *err_at = end && end >= s ? (size_t)(end - s) : 0;
        return -EINVAL;
    }
    *out = json;
    return 0;
}
