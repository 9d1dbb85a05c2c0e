/*
 * api_validate.c — request bodies: JSON objects checked against a field
 * list, form bodies, query integers.
 *
 * Every validation failure is one shape, 422 with FastAPI's list form:
 *   {"detail":[{"loc":["body","email"],"msg":"Field required","type":"missing"}, ...]}
 * types: json_invalid, model_type (body not an object), missing,
 * string_type / int_type / bool_type / float_type / dict_type / list_type,
 * string_too_short, string_too_long, extra_forbidden, value_error.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "json.h"

static void add_error(cJSON *list, const char *where, const char *field, const char *msg,
                      const char *type)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *loc = cJSON_AddArrayToObject(e, "loc");
    cJSON_AddItemToArray(loc, cJSON_CreateString(where));
    if (field)
        cJSON_AddItemToArray(loc, cJSON_CreateString(field));
    cJSON_AddStringToObject(e, "msg", msg);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddItemToArray(list, e);
}

static int respond_list(struct http_req *req, cJSON *list)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "detail", list);
    cJSON_AddStringToObject(o, "type", "Validation");
    http_respond_json(req, 422, o);
    cJSON_Delete(o);
    return -EINVAL;
}

int api_respond_invalid(struct http_req *req, const char *where, const char *field, const char *msg,
                        const char *type)
{
    cJSON *list = cJSON_CreateArray();
    add_error(list, where, field, msg, type);
    return respond_list(req, list);
}

int api_read_json(struct http_req *req, cJSON **out)
{
    const char *body;
    size_t len;
    int rc = http_body(req, 0, &body, &len);
    if (rc) {
        if (!http_responded(req))
            http_respond_error(req, rc == -EIO ? 400 : 500, "InvalidState",
                               "cannot read request body");
        return rc;
    }
    if (len == 0)
        return api_respond_invalid(req, "body", NULL, "Field required: a JSON object", "missing");
    cJSON *json = NULL;
    size_t err_at = 0;
    rc = json_parse_bounded(body, len, JSON_MAX_DEPTH, &json, &err_at);
    if (rc == -E2BIG)
        return api_respond_invalid(req, "body", NULL, "JSON nested too deeply", "json_invalid");
    if (rc) {
        char msg[96];
        snprintf(msg, sizeof(msg), "JSON decode error near byte %zu", err_at);
        return api_respond_invalid(req, "body", NULL, msg, "json_invalid");
    }
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        return api_respond_invalid(req, "body", NULL, "Input should be a JSON object",
                                   "model_type");
    }
    *out = json;
    return 0;
}

static const char *type_error(enum api_ftype t, const char **msg)
{
    switch (t) {
    case AF_STR:
        *msg = "Input should be a valid string";
        return "string_type";
    case AF_INT:
        *msg = "Input should be a valid integer";
        return "int_type";
    case AF_NUM:
        *msg = "Input should be a valid number";
        return "float_type";
    case AF_BOOL:
        *msg = "Input should be a valid boolean";
        return "bool_type";
    case AF_OBJ:
        *msg = "Input should be a valid dictionary";
        return "dict_type";
    case AF_ARR:
        *msg = "Input should be a valid list";
        return "list_type";
    case AF_ANY:
        break;
    }
    *msg = "Invalid value";
    return "value_error";
}

static int type_ok(const cJSON *v, enum api_ftype t)
{
    switch (t) {
    case AF_STR:
        return cJSON_IsString(v);
    case AF_INT:
        return cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble;
    case AF_NUM:
        return cJSON_IsNumber(v);
    case AF_BOOL:
        return cJSON_IsBool(v);
    case AF_OBJ:
        return cJSON_IsObject(v);
    case AF_ARR:
        return cJSON_IsArray(v);
    case AF_ANY:
        return 1;
    }
    return 0;
}

/* Number of UTF-8 code points (bytes that do not continue a sequence). */
static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

int api_validate(struct http_req *req, const cJSON *obj, const struct api_field *fields, size_t n)
{
    cJSON *list = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        const struct api_field *f = &fields[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->name);
        if (f->ignored)
            continue;
        if (!v || cJSON_IsNull(v)) {
            if (f->required)
                add_error(list, "body", f->name, "Field required", "missing");
            continue;
        }
        if (!type_ok(v, f->type)) {
            const char *msg;
            const char *type = type_error(f->type, &msg);
            add_error(list, "body", f->name, msg, type);
            continue;
        }
        char msg[96];
        if (f->type == AF_STR && (f->min_len || f->max_len)) {
            size_t len = utf8_len(v->valuestring);
            if (f->min_len && len < (size_t)f->min_len) {
                snprintf(msg, sizeof(msg), "String should have at least %d characters", f->min_len);
                add_error(list, "body", f->name, msg, "string_too_short");
            } else if (f->max_len && len > (size_t)f->max_len) {
                snprintf(msg, sizeof(msg), "String should have at most %d characters", f->max_len);
                add_error(list, "body", f->name, msg, "string_too_long");
            }
        } else if (f->type == AF_INT && (f->min_len || f->max_len)) {
            if (v->valuedouble < f->min_len || v->valuedouble > f->max_len) {
                snprintf(msg, sizeof(msg), "Input should be between %d and %d", f->min_len,
                         f->max_len);
                add_error(list, "body", f->name, msg, "value_error");
            }
        }
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        int known = 0;
        for (size_t i = 0; i < n && !known; i++)
            known = it->string && strcmp(it->string, fields[i].name) == 0;
        if (!known)
            add_error(list, "body", it->string ? it->string : "", "Extra inputs are not permitted",
                      "extra_forbidden");
    }
    if (cJSON_GetArraySize(list) == 0) {
        cJSON_Delete(list);
        return 0;
    }
    return respond_list(req, list);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..len) ('+' is a space) into a malloc'd string; NULL on a bad
 * escape, an embedded NUL or ENOMEM. */
static char *form_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int h = i + 2 < len ? hexval(s[i + 1]) : -1;
            int l = h >= 0 ? hexval(s[i + 2]) : -1;
            if (h < 0 || l < 0)
                goto bad;
            c = (char)(h << 4 | l);
            i += 2;
        }
        if (c == '\0')
            goto bad;
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

int api_parse_form(const char *body, size_t len, cJSON **out)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && body[j] != '&')
            j++;
        if (j > i) {
            size_t eq = i;
            while (eq < j && body[eq] != '=')
                eq++;
            char *k = form_decode(body + i, eq - i);
            char *v = form_decode(body + (eq < j ? eq + 1 : j), eq < j ? j - eq - 1 : 0);
            if (!k || !v) {
                free(k);
                free(v);
                cJSON_Delete(o);
                return -EINVAL;
            }
            cJSON_DeleteItemFromObjectCaseSensitive(o, k);
            cJSON_AddStringToObject(o, k, v);
            free(k);
            free(v);
        }
        i = j + 1;
    }
    *out = o;
    return 0;
}

int api_query_int(struct http_req *req, const char *name, long def, long min, long max, long *out)
{
    char buf[32];
    int rc = http_query(req, name, 0, buf, sizeof(buf));
    if (rc == -ENOENT || (rc == 0 && buf[0] == '\0')) {
        *out = def;
        return 0;
    }
    char *end = NULL;
    long v = rc == 0 ? strtol(buf, &end, 10) : 0;
    if (rc != 0 || end == buf || *end != '\0') {
        api_respond_invalid(req, "query", name, "Input should be a valid integer", "int_parsing");
        return -EINVAL;
    }
    if (v < min || v > max) {
        char msg[96];
        snprintf(msg, sizeof(msg), "Input should be between %ld and %ld", min, max);
        api_respond_invalid(req, "query", name, msg, "value_error");
        return -EINVAL;
    }
    *out = v;
    return 0;
}
