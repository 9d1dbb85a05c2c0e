/*
 * node_spec.c — validation of submitted objects, selectors and quantities.
 *
 * Validation follows the apiserver's rules for the fields this node acts on
 * and reports every problem at once as Status causes
 * ({reason: FieldValueRequired|FieldValueInvalid|FieldValueNotSupported|
 * FieldValueForbidden|FieldValueDuplicate|FieldValueTooLong, message, field}).
 * Fields the node does not act on are kept as sent.  Defaults the apiserver
 * would fill in (restartPolicy, terminationMessagePath, …) are written into
 * the object so clients read back what the node runs.
 */
#include "node.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CONFIGMAP_MAX_BYTES (1 << 20)

/* ----------------------------------------------------------------- helpers */

void cause_add(cJSON *causes, const char *reason, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *c = cJSON_CreateObject();
    if (!c)
        return;
    cJSON_AddStringToObject(c, "reason", reason);
    cJSON_AddStringToObject(c, "message", msg);
    cJSON_AddStringToObject(c, "field", field);
    cJSON_AddItemToArray(causes, c);
}

static bool label_chars(const char *s, size_t n, bool upper, bool underscore_dot)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                  (upper && ch >= 'A' && ch <= 'Z') || (underscore_dot && (ch == '_' || ch == '.'));
        if (!ok)
            return false;
    }
    return true;
}

static bool alnum_edge(char ch, bool upper)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           (upper && ch >= 'A' && ch <= 'Z');
}

bool dns1123_label(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= 63 && label_chars(s, n, false, false) && alnum_edge(s[0], false) &&
           alnum_edge(s[n - 1], false);
}

bool dns1123_subdomain(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 253)
        return false;
    const char *p = s;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || !label_chars(p, l, false, false) || !alnum_edge(p[0], false) ||
            !alnum_edge(p[l - 1], false))
            return false;
        p += l;
        if (*p == '.') {
            p++;
            if (!*p)
                return false;
        }
    }
    return true;
}

/* Label value / the name part of a label key: ≤63, [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])? */
static bool label_name(const char *s, bool allow_empty)
{
    size_t n = strlen(s);
    if (n == 0)
        return allow_empty;
    return n <= 63 && label_chars(s, n, true, true) && alnum_edge(s[0], true) &&
           alnum_edge(s[n - 1], true);
}

static bool label_key(const char *s)
{
    const char *slash = strchr(s, '/');
    if (!slash)
        return label_name(s, false);
    char prefix[256];
    size_t pl = (size_t)(slash - s);
    if (pl == 0 || pl > 253)
        return false;
    memcpy(prefix, s, pl);
    prefix[pl] = '\0';
    return dns1123_subdomain(prefix) && label_name(slash + 1, false);
}

static bool is_int(const cJSON *v, int64_t min, int64_t max)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    return d == floor(d) && d >= (double)min && d <= (double)max;
}

static const char *str_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool abs_path_ok(const char *p)
{
    if (!p || p[0] != '/' || strlen(p) > 1024)
        return false;
    for (const char *s = p; (s = strstr(s, "..")) != NULL; s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == '\0'))
            return false;
    return true;
}

static bool rel_path_ok(const char *p)
{
    if (!p || !p[0] || p[0] == '/' || strlen(p) > 253)
        return false;
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", p);
    char *save = NULL;
    for (char *t = strtok_r(tmp, "/", &save); t; t = strtok_r(NULL, "/", &save))
        if (strcmp(t, "..") == 0)
            return false;
    return true;
}

/* ---------------------------------------------------------------- quantity */

int quantity_parse(const char *s, int64_t scale, int64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    const char *p = s;
    if (*p == '+')
        p++;
    const char *num = p;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (p == num || (p == num + 1 && *num == '.'))
        return -EINVAL;
    char buf[64];
    size_t nl = (size_t)(p - num);
    if (nl >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, num, nl);
    buf[nl] = '\0';
    long double v = strtold(buf, NULL);
    long double mult = 1;
    const char *suf = p;
    if ((*suf == 'e' || *suf == 'E') && suf[1] &&
        (isdigit((unsigned char)suf[1]) ||
         ((suf[1] == '-' || suf[1] == '+') && isdigit((unsigned char)suf[2])))) {
        char *end;
        long e = strtol(suf + 1, &end, 10);
        if (*end || e > 18 || e < -18)
            return -EINVAL;
        mult = powl(10, (long double)e);
    } else if (strcmp(suf, "") == 0) {
        mult = 1;
    } else if (strcmp(suf, "m") == 0) {
        mult = 0.001L;
    } else {
        static const struct {
            const char *s;
            long double m;
        } sufs[] = {{"Ki", 1024.0L},
                    {"Mi", 1048576.0L},
                    {"Gi", 1073741824.0L},
                    {"Ti", 1099511627776.0L},
                    {"Pi", 1125899906842624.0L},
                    {"Ei", 1152921504606846976.0L},
                    {"k", 1e3L},
                    {"M", 1e6L},
                    {"G", 1e9L},
                    {"T", 1e12L},
                    {"P", 1e15L},
                    {"E", 1e18L}};
        bool hit = false;
        for (size_t i = 0; i < sizeof(sufs) / sizeof(sufs[0]); i++)
            if (strcmp(suf, sufs[i].s) == 0) {
                mult = sufs[i].m;
                hit = true;
            }
        if (!hit)
            return -EINVAL;
    }
    long double r = ceill(v * mult * (long double)scale - 1e-9L);
    if (r < 0 || r > 9.2e18L)
        return -EINVAL;
    *out = (int64_t)r;
    return 0;
}

/* ---------------------------------------------------------------- selector */

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t i = 0;
    while (isspace((unsigned char)s[i]))
        i++;
    if (i)
        memmove(s, s + i, n - i + 1);
}

static int parse_req(char *t, struct sel_req *r, bool fields, char *err, size_t errlen)
{
    trim(t);
    memset(r, 0, sizeof(*r));
    if (!*t) {
        snprintf(err, errlen, "empty requirement");
        return -EINVAL;
    }
    char *op = NULL;
    char *key = t, *val = NULL;
    if ((op = strstr(t, "!=")) != NULL) {
        r->op = SEL_NE;
        *op = '\0';
        val = op + 2;
    } else if ((op = strstr(t, "==")) != NULL) {
        r->op = SEL_EQ;
        *op = '\0';
        val = op + 2;
    } else if ((op = strchr(t, '=')) != NULL) {
        r->op = SEL_EQ;
        *op = '\0';
        val = op + 1;
    } else if (!fields && t[0] == '!') {
        r->op = SEL_NOT_EXISTS;
        key = t + 1;
    } else if (!fields && (strstr(t, " in ") || strstr(t, " notin ") || strstr(t, " in(") ||
                           strstr(t, " notin("))) {
        char *sp = strchr(t, ' ');
        *sp = '\0';
        char *rest = sp + 1;
        while (*rest == ' ')
            rest++;
        if (strncmp(rest, "notin", 5) == 0) {
            r->op = SEL_NOTIN;
            rest += 5;
        } else {
            r->op = SEL_IN;
            rest += 2;
        }
        while (*rest == ' ')
            rest++;
        size_t rl = strlen(rest);
        if (rest[0] != '(' || rl < 2 || rest[rl - 1] != ')') {
            snprintf(err, errlen, "expected a parenthesised value list in '%s'", t);
            return -EINVAL;
        }
        rest[rl - 1] = '\0';
        rest++;
        char *save = NULL;
        for (char *v = strtok_r(rest, ",", &save); v; v = strtok_r(NULL, ",", &save)) {
            trim(v);
            if (r->nvalues == SEL_MAX_VALUES || strlen(v) >= sizeof(r->values[0]) ||
                !label_name(v, true)) {
                snprintf(err, errlen, "invalid value '%s'", v);
                return -EINVAL;
            }
            snprintf(r->values[r->nvalues++], sizeof(r->values[0]), "%s", v);
        }
    } else if (!fields) {
        r->op = SEL_EXISTS;
    } else {
        snprintf(err, errlen, "invalid field selector requirement '%s'", t);
        return -EINVAL;
    }
    trim(key);
    if (strlen(key) >= sizeof(r->key) || (!fields && !label_key(key)) || !*key) {
        snprintf(err, errlen, "invalid label key \"%s\"", key);
        return -EINVAL;
    }
    snprintf(r->key, sizeof(r->key), "%s", key);
    if (val) {
        trim(val);
        if (strlen(val) >= sizeof(r->values[0]) || (!fields && !label_name(val, true))) {
            snprintf(err, errlen, "invalid label value \"%s\"", val);
            return -EINVAL;
        }
        snprintf(r->values[0], sizeof(r->values[0]), "%s", val);
        r->nvalues = 1;
    }
    return 0;
}

static int parse_sel(const char *text, struct selector *sel, bool fields, char *err, size_t errlen)
{
    memset(sel, 0, sizeof(*sel));
    if (!text)
        return 0;
    size_t n = strlen(text);
    if (n > 4096) {
        snprintf(err, errlen, "selector too long");
        return -EINVAL;
    }
    char *buf = strdup(text);
    if (!buf)
        return -ENOMEM;
    int depth = 0, rc = 0;
    char *start = buf;
    for (char *p = buf;; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')')
            depth--;
        if ((*p == ',' && depth == 0) || *p == '\0') {
            bool end = *p == '\0';
            *p = '\0';
            char tmp[512];
            snprintf(tmp, sizeof(tmp), "%s", start);
            trim(tmp);
            if (tmp[0]) {
                if (sel->n == SEL_MAX_REQS) {
                    snprintf(err, errlen, "too many requirements");
                    rc = -EINVAL;
                    break;
                }
                rc = parse_req(start, &sel->reqs[sel->n], fields, err, errlen);
                if (rc)
                    break;
                sel->n++;
            }
            if (end)
                break;
            start = p + 1;
        }
    }
    free(buf);
    return rc;
}

int selector_parse(const char *text, struct selector *sel, char *err, size_t errlen)
{
    return parse_sel(text, sel, false, err, errlen);
}

int field_selector_parse(const char *text, struct selector *sel, char *err, size_t errlen)
{
    int rc = parse_sel(text, sel, true, err, errlen);
    if (rc)
        return rc;
    static const char *const known[] = {"metadata.name", "metadata.namespace", "status.phase",
                                        "spec.nodeName", "spec.restartPolicy"};
    for (int i = 0; i < sel->n; i++) {
        bool ok = false;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(sel->reqs[i].key, known[k]) == 0)
                ok = true;
        if (!ok) {
            snprintf(err, errlen, "field label not supported: %s", sel->reqs[i].key);
            return -EINVAL;
        }
    }
    return 0;
}

static bool req_match(const struct sel_req *r, const char *v)
{
    switch (r->op) {
    case SEL_EXISTS:
        return v != NULL;
    case SEL_NOT_EXISTS:
        return v == NULL;
    case SEL_EQ:
        return v && strcmp(v, r->values[0]) == 0;
    case SEL_NE:
        return !v || strcmp(v, r->values[0]) != 0;
    case SEL_IN:
    case SEL_NOTIN: {
        bool in = false;
        for (int i = 0; v && i < r->nvalues; i++)
            if (strcmp(v, r->values[i]) == 0)
                in = true;
        return r->op == SEL_IN ? in : !in;
    }
    }
    return false;
}

bool selector_match(const struct selector *sel, const cJSON *labels)
{
    if (!sel)
        return true;
    for (int i = 0; i < sel->n; i++)
        if (!req_match(&sel->reqs[i], labels ? str_of(labels, sel->reqs[i].key) : NULL))
            return false;
    return true;
}

bool field_selector_match(const struct selector *sel, const cJSON *obj)
{
    if (!sel)
        return true;
    for (int i = 0; i < sel->n; i++) {
        char path[128];
        snprintf(path, sizeof(path), "%s", sel->reqs[i].key);
        char *dot = strchr(path, '.');
        const char *v = NULL;
        if (dot) {
            *dot = '\0';
            v = str_of(cJSON_GetObjectItemCaseSensitive(obj, path), dot + 1);
        }
        if (!req_match(&sel->reqs[i], v ? v : ""))
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------- metadata */

void validate_metadata(cJSON *obj, bool namespaced, cJSON *causes)
{
    (void)namespaced;
    cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    if (!cJSON_IsObject(md)) {
        cause_add(causes, "FieldValueRequired", "metadata.name",
                  "name or generateName is required");
        return;
    }
    const char *name = str_of(md, "name");
    const char *gen = str_of(md, "generateName");
    if ((!name || !*name) && gen && *gen) {
        static const char alphabet[] = "bcdfghjklmnpqrstvwxz2456789";
        char uuid[UUID_LEN];
        uuid_v4(uuid);
        char full[300];
        size_t gl = strlen(gen);
        if (gl > 58)
            gl = 58;
        memcpy(full, gen, gl);
        for (int i = 0; i < 5; i++)
            full[gl + (size_t)i] = alphabet[(unsigned char)uuid[i * 7 % 36] % 27];
        full[gl + 5] = '\0';
        cJSON_DeleteItemFromObjectCaseSensitive(md, "name");
        cJSON_AddStringToObject(md, "name", full);
        name = str_of(md, "name");
    }
    if (!name || !*name)
        cause_add(causes, "FieldValueRequired", "metadata.name",
                  "name or generateName is required");
    else if (!dns1123_subdomain(name))
        cause_add(causes, "FieldValueInvalid", "metadata.name",
                  "Invalid value: \"%.64s\": a lowercase RFC 1123 subdomain must consist of lower "
                  "case alphanumeric characters, '-' or '.', and must start and end with an "
                  "alphanumeric character",
                  name);
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(md, "labels");
    if (labels && !cJSON_IsNull(labels)) {
        if (!cJSON_IsObject(labels)) {
            cause_add(causes, "FieldValueInvalid", "metadata.labels", "must be an object");
        } else {
            const cJSON *l;
            cJSON_ArrayForEach(l, labels)
            {
                char field[300];
                snprintf(field, sizeof(field), "metadata.labels[%.200s]", l->string);
                if (!label_key(l->string))
                    cause_add(causes, "FieldValueInvalid", field,
                              "Invalid value: \"%.64s\": a valid label key must be a name of "
                              "at most 63 characters with an optional DNS subdomain prefix",
                              l->string);
                else if (!cJSON_IsString(l) || !label_name(l->valuestring, true))
                    cause_add(causes, "FieldValueInvalid", field,
                              "a valid label value must be 63 characters or less, empty or "
                              "alphanumeric with '-', '_' or '.' inside");
            }
        }
    }
    const cJSON *ann = cJSON_GetObjectItemCaseSensitive(md, "annotations");
    if (ann && !cJSON_IsNull(ann)) {
        const cJSON *a;
        if (!cJSON_IsObject(ann))
            cause_add(causes, "FieldValueInvalid", "metadata.annotations", "must be an object");
        else
            cJSON_ArrayForEach(a, ann) if (!cJSON_IsString(a)) cause_add(
                causes, "FieldValueInvalid", "metadata.annotations", "values must be strings");
    }
}

/* ------------------------------------------------------------------- pods */

static void set_default_str(cJSON *obj, const char *key, const char *value)
{
    if (!cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_AddStringToObject(obj, key, value);
}

static void check_strings(const cJSON *arr, const char *field, cJSON *causes)
{
    if (!arr || cJSON_IsNull(arr))
        return;
    if (!cJSON_IsArray(arr)) {
        cause_add(causes, "FieldValueInvalid", field, "must be a list of strings");
        return;
    }
    const cJSON *s;
    int i = 0;
    cJSON_ArrayForEach(s, arr)
    {
        if (!cJSON_IsString(s)) {
            char f[160];
            snprintf(f, sizeof(f), "%s[%d]", field, i);
            cause_add(causes, "FieldValueInvalid", f, "must be a string");
        }
        i++;
    }
}

static void check_security(const cJSON *sc, const char *field, cJSON *causes)
{
    if (!sc || cJSON_IsNull(sc))
        return;
    char f[200];
    if (!cJSON_IsObject(sc)) {
        cause_add(causes, "FieldValueInvalid", field, "must be an object");
        return;
    }
    const char *ids[] = {"runAsUser", "runAsGroup"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sc, ids[i]);
        snprintf(f, sizeof(f), "%s.%s", field, ids[i]);
        if (v && !cJSON_IsNull(v) && !is_int(v, 0, 2147483647))
            cause_add(causes, "FieldValueInvalid", f, "must be between 0 and 2147483647");
    }
    const cJSON *priv = cJSON_GetObjectItemCaseSensitive(sc, "privileged");
    if (cJSON_IsTrue(priv)) {
        snprintf(f, sizeof(f), "%s.privileged", field);
        cause_add(causes, "FieldValueForbidden", f,
                  "Forbidden: privileged containers are not allowed on this node");
    }
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(sc, "capabilities");
    const cJSON *add = caps ? cJSON_GetObjectItemCaseSensitive(caps, "add") : NULL;
    if (cJSON_IsArray(add) && cJSON_GetArraySize(add) > 0) {
        snprintf(f, sizeof(f), "%s.capabilities.add", field);
        cause_add(causes, "FieldValueForbidden", f,
                  "Forbidden: this node drops all capabilities and cannot add any");
    }
}

static void check_resources(const cJSON *res, const char *field, cJSON *causes)
{
    if (!res || cJSON_IsNull(res))
        return;
    const char *parts[] = {"limits", "requests"};
    for (int i = 0; i < 2; i++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(res, parts[i]);
        if (!m || cJSON_IsNull(m))
            continue;
        const cJSON *q;
        cJSON_ArrayForEach(q, m)
        {
            char f[320];
            snprintf(f, sizeof(f), "%.200s.%s[%.40s]", field, parts[i], q->string);
            int64_t v;
            const char *s = cJSON_IsString(q) ? q->valuestring : NULL;
            char num[64];
            if (cJSON_IsNumber(q)) {
                snprintf(num, sizeof(num), "%.17g", q->valuedouble);
                s = num;
            }
            if (!s || quantity_parse(s, strcmp(q->string, "cpu") == 0 ? 1000 : 1, &v) != 0)
                cause_add(causes, "FieldValueInvalid", f,
                          "Invalid value: quantities must match the regular expression "
                          "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'");
            else if (strcmp(q->string, "memory") == 0 && i == 0 && v < (1 << 20))
                cause_add(causes, "FieldValueInvalid", f,
                          "Invalid value: the memory limit must be at least 1Mi on this node");
        }
    }
}

static bool volume_named(const cJSON *volumes, const char *name)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, volumes)
    {
        const char *n = str_of(v, "name");
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

static void check_container(cJSON *c, int idx, const cJSON *volumes, cJSON *causes)
{
    char f[256], base[64];
    snprintf(base, sizeof(base), "spec.containers[%d]", idx);
    if (!cJSON_IsObject(c)) {
        cause_add(causes, "FieldValueInvalid", base, "must be an object");
        return;
    }
    const char *name = str_of(c, "name");
    snprintf(f, sizeof(f), "%s.name", base);
    if (!name || !*name)
        cause_add(causes, "FieldValueRequired", f, "Required value");
    else if (!dns1123_label(name))
        cause_add(causes, "FieldValueInvalid", f,
                  "Invalid value: \"%.64s\": a lowercase RFC 1123 label must consist of lower "
                  "case alphanumeric characters or '-', and must start and end with an "
                  "alphanumeric character",
                  name);
    const char *image = str_of(c, "image");
    snprintf(f, sizeof(f), "%s.image", base);
    if (!image || !*image)
        cause_add(causes, "FieldValueRequired", f, "Required value");
    snprintf(f, sizeof(f), "%s.command", base);
    check_strings(cJSON_GetObjectItemCaseSensitive(c, "command"), f, causes);
    snprintf(f, sizeof(f), "%s.args", base);
    check_strings(cJSON_GetObjectItemCaseSensitive(c, "args"), f, causes);
    const char *wd = str_of(c, "workingDir");
    snprintf(f, sizeof(f), "%s.workingDir", base);
    if (cJSON_GetObjectItemCaseSensitive(c, "workingDir") && (!wd || (*wd && !abs_path_ok(wd))))
        cause_add(causes, "FieldValueInvalid", f, "must be an absolute path");
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(c, "env");
    if (env && !cJSON_IsNull(env)) {
        if (!cJSON_IsArray(env)) {
            snprintf(f, sizeof(f), "%s.env", base);
            cause_add(causes, "FieldValueInvalid", f, "must be a list");
        } else {
            const cJSON *e;
            int i = 0;
            cJSON_ArrayForEach(e, env)
            {
                const char *en = str_of(e, "name");
                snprintf(f, sizeof(f), "%s.env[%d].name", base, i);
                bool ok = en && *en && strlen(en) < 256 && !isdigit((unsigned char)en[0]);
                for (const char *p = en; ok && *p; p++)
                    if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
                        ok = false;
                if (!en || !*en)
                    cause_add(causes, "FieldValueRequired", f, "Required value");
                else if (!ok)
                    cause_add(causes, "FieldValueInvalid", f,
                              "Invalid value: \"%.64s\": a valid environment variable name "
                              "must consist of alphabetic characters, digits, '_', '-', or "
                              "'.', and must not start with a digit",
                              en);
                const cJSON *val = cJSON_GetObjectItemCaseSensitive(e, "value");
                snprintf(f, sizeof(f), "%s.env[%d].value", base, i);
                if (val && !cJSON_IsNull(val) && !cJSON_IsString(val))
                    cause_add(causes, "FieldValueInvalid", f, "must be a string");
                if (cJSON_GetObjectItemCaseSensitive(e, "valueFrom")) {
                    snprintf(f, sizeof(f), "%s.env[%d].valueFrom", base, i);
                    cause_add(causes, "FieldValueNotSupported", f,
                              "Unsupported value: valueFrom is not supported by this node");
                }
                i++;
            }
        }
    }
    const cJSON *mounts = cJSON_GetObjectItemCaseSensitive(c, "volumeMounts");
    if (mounts && !cJSON_IsNull(mounts)) {
        const cJSON *m;
        int i = 0;
        cJSON_ArrayForEach(m, mounts)
        {
            const char *mn = str_of(m, "name");
            const char *mp = str_of(m, "mountPath");
            snprintf(f, sizeof(f), "%s.volumeMounts[%d].name", base, i);
            if (!mn)
                cause_add(causes, "FieldValueRequired", f, "Required value");
            else if (!cJSON_IsArray(volumes) || !volume_named(volumes, mn))
                cause_add(causes, "FieldValueNotFound", f, "Not found: \"%.64s\"", mn);
            snprintf(f, sizeof(f), "%s.volumeMounts[%d].mountPath", base, i);
            if (!mp)
                cause_add(causes, "FieldValueRequired", f, "Required value");
            else if (!abs_path_ok(mp) || strcmp(mp, "/") == 0 || strncmp(mp, "/usr", 4) == 0 ||
                     strcmp(mp, "/proc") == 0 || strncmp(mp, "/proc/", 6) == 0 ||
                     strcmp(mp, "/dev") == 0 || strncmp(mp, "/dev/", 5) == 0)
                cause_add(causes, "FieldValueInvalid", f,
                          "Invalid value: \"%.64s\": must be an absolute path outside /, /usr, "
                          "/proc and /dev",
                          mp);
            if (str_of(m, "subPath")) {
                snprintf(f, sizeof(f), "%s.volumeMounts[%d].subPath", base, i);
                cause_add(causes, "FieldValueNotSupported", f,
                          "Unsupported value: subPath is not supported by this node");
            }
            i++;
        }
    }
    snprintf(f, sizeof(f), "%s.resources", base);
    check_resources(cJSON_GetObjectItemCaseSensitive(c, "resources"), f, causes);
    snprintf(f, sizeof(f), "%s.securityContext", base);
    check_security(cJSON_GetObjectItemCaseSensitive(c, "securityContext"), f, causes);
    set_default_str(c, "terminationMessagePath", "/dev/termination-log");
    set_default_str(c, "terminationMessagePolicy", "File");
    set_default_str(c, "imagePullPolicy", "IfNotPresent");
    const char *tmp = str_of(c, "terminationMessagePath");
    snprintf(f, sizeof(f), "%s.terminationMessagePath", base);
    if (!tmp || !abs_path_ok(tmp) || strncmp(tmp, "/usr/", 5) == 0 ||
        strncmp(tmp, "/proc/", 6) == 0)
        cause_add(causes, "FieldValueInvalid", f, "must be an absolute path");
    const char *pol = str_of(c, "terminationMessagePolicy");
    snprintf(f, sizeof(f), "%s.terminationMessagePolicy", base);
    if (!pol || (strcmp(pol, "File") != 0 && strcmp(pol, "FallbackToLogsOnError") != 0))
        cause_add(causes, "FieldValueNotSupported", f,
                  "Unsupported value: supported values: \"File\", \"FallbackToLogsOnError\"");
}

static void check_volumes(const cJSON *vols, cJSON *causes)
{
    if (!vols || cJSON_IsNull(vols))
        return;
    if (!cJSON_IsArray(vols)) {
        cause_add(causes, "FieldValueInvalid", "spec.volumes", "must be a list");
        return;
    }
    const cJSON *v;
    int i = 0;
    cJSON_ArrayForEach(v, vols)
    {
        char f[160];
        const char *n = str_of(v, "name");
        snprintf(f, sizeof(f), "spec.volumes[%d].name", i);
        if (!n)
            cause_add(causes, "FieldValueRequired", f, "Required value");
        else if (!dns1123_label(n))
            cause_add(causes, "FieldValueInvalid", f,
                      "Invalid value: \"%.64s\": must be a lowercase RFC 1123 label", n);
        else {
            int dup = 0;
            const cJSON *w;
            cJSON_ArrayForEach(w, vols)
            {
                const char *wn = str_of(w, "name");
                if (wn && strcmp(wn, n) == 0)
                    dup++;
            }
            if (dup > 1)
                cause_add(causes, "FieldValueDuplicate", f, "Duplicate value: \"%.64s\"", n);
        }
        const cJSON *cm = cJSON_GetObjectItemCaseSensitive(v, "configMap");
        const cJSON *ed = cJSON_GetObjectItemCaseSensitive(v, "emptyDir");
        int sources = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, v) if (strcmp(s->string, "name") != 0) sources++;
        snprintf(f, sizeof(f), "spec.volumes[%d]", i);
        if (sources != 1 || (!cm && !ed)) {
            cause_add(causes, sources == 0 ? "FieldValueRequired" : "FieldValueNotSupported", f,
                      "exactly one volume source is required; this node supports configMap "
                      "and emptyDir");
        } else if (cm) {
            const char *cn = str_of(cm, "name");
            snprintf(f, sizeof(f), "spec.volumes[%d].configMap.name", i);
            if (!cn || !dns1123_subdomain(cn))
                cause_add(causes, "FieldValueRequired", f, "Required value");
            const cJSON *items = cJSON_GetObjectItemCaseSensitive(cm, "items");
            const cJSON *it;
            int k = 0;
            cJSON_ArrayForEach(it, items)
            {
                snprintf(f, sizeof(f), "spec.volumes[%d].configMap.items[%d]", i, k);
                if (!str_of(it, "key") || !rel_path_ok(str_of(it, "path")))
                    cause_add(causes, "FieldValueInvalid", f,
                              "key and a relative path without '..' are required");
                k++;
            }
            const cJSON *mode = cJSON_GetObjectItemCaseSensitive(cm, "defaultMode");
            snprintf(f, sizeof(f), "spec.volumes[%d].configMap.defaultMode", i);
            if (mode && !is_int(mode, 0, 0777))
                cause_add(causes, "FieldValueInvalid", f,
                          "must be a number between 0 and 0777 (octal), both inclusive");
        } else {
            const cJSON *sl = cJSON_GetObjectItemCaseSensitive(ed, "sizeLimit");
            int64_t bytes;
            snprintf(f, sizeof(f), "spec.volumes[%d].emptyDir.sizeLimit", i);
            if (sl && !cJSON_IsNull(sl) &&
                (!cJSON_IsString(sl) || quantity_parse(sl->valuestring, 1, &bytes) != 0 ||
                 bytes <= 0))
                cause_add(causes, "FieldValueInvalid", f, "must be a positive quantity");
            const char *med = str_of(ed, "medium");
            snprintf(f, sizeof(f), "spec.volumes[%d].emptyDir.medium", i);
            if (med && *med && strcmp(med, "Memory") != 0)
                cause_add(causes, "FieldValueNotSupported", f,
                          "Unsupported value: \"%.32s\": supported values: \"\", \"Memory\"", med);
        }
        i++;
    }
}

void validate_pod(cJSON *pod, cJSON *causes)
{
    validate_metadata(pod, true, causes);
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(pod, "spec");
    if (!cJSON_IsObject(spec)) {
        cause_add(causes, "FieldValueRequired", "spec.containers", "Required value");
        return;
    }
    cJSON *containers = cJSON_GetObjectItemCaseSensitive(spec, "containers");
    const cJSON *volumes = cJSON_GetObjectItemCaseSensitive(spec, "volumes");
    if (!cJSON_IsArray(containers) || cJSON_GetArraySize(containers) == 0) {
        cause_add(causes, "FieldValueRequired", "spec.containers", "Required value");
    } else {
        if (cJSON_GetArraySize(containers) > 1)
            cause_add(causes, "FieldValueNotSupported", "spec.containers",
                      "Unsupported value: this node runs pods with exactly one container");
        cJSON *c;
        int i = 0;
        cJSON_ArrayForEach(c, containers) check_container(c, i++, volumes, causes);
    }
    const cJSON *init = cJSON_GetObjectItemCaseSensitive(spec, "initContainers");
    if (cJSON_IsArray(init) && cJSON_GetArraySize(init) > 0)
        cause_add(causes, "FieldValueNotSupported", "spec.initContainers",
                  "Unsupported value: init containers are not supported by this node");
    check_volumes(volumes, causes);
    set_default_str(spec, "restartPolicy", "Never");
    const char *rp = str_of(spec, "restartPolicy");
    if (!rp || strcmp(rp, "Never") != 0)
        cause_add(causes, "FieldValueNotSupported", "spec.restartPolicy",
                  "Unsupported value: \"%.32s\": supported values: \"Never\"", rp ? rp : "");
    const cJSON *ads = cJSON_GetObjectItemCaseSensitive(spec, "activeDeadlineSeconds");
    if (ads && !cJSON_IsNull(ads) && !is_int(ads, 1, 2147483647))
        cause_add(causes, "FieldValueInvalid", "spec.activeDeadlineSeconds",
                  "must be between 1 and 2147483647, inclusive");
    check_security(cJSON_GetObjectItemCaseSensitive(spec, "securityContext"),
                   "spec.securityContext", causes);
    set_default_str(spec, "dnsPolicy", "ClusterFirst");
    set_default_str(spec, "schedulerName", "default-scheduler");
    if (!cJSON_GetObjectItemCaseSensitive(spec, "terminationGracePeriodSeconds"))
        cJSON_AddNumberToObject(spec, "terminationGracePeriodSeconds", 30);
}

/* -------------------------------------------------------------- configmaps */

static bool cm_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 253 || strcmp(k, ".") == 0 || strcmp(k, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '-' && k[i] != '_' && k[i] != '.')
            return false;
    return true;
}

void validate_configmap(cJSON *cm, cJSON *causes)
{
    validate_metadata(cm, true, causes);
    size_t total = 0;
    const char *parts[] = {"data", "binaryData"};
    for (int i = 0; i < 2; i++) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(cm, parts[i]);
        if (!d || cJSON_IsNull(d))
            continue;
        if (!cJSON_IsObject(d)) {
            cause_add(causes, "FieldValueInvalid", parts[i], "must be an object");
            continue;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, d)
        {
            char f[300];
            snprintf(f, sizeof(f), "%s[%.200s]", parts[i], e->string);
            if (!cm_key_ok(e->string))
                cause_add(causes, "FieldValueInvalid", f,
                          "Invalid value: \"%.64s\": a valid config key must consist of "
                          "alphanumeric characters, '-', '_' or '.'",
                          e->string);
            if (!cJSON_IsString(e))
                cause_add(causes, "FieldValueInvalid", f, "must be a string");
            else
                total += strlen(e->valuestring) + strlen(e->string);
            if (i == 1) {
                const cJSON *other = cJSON_GetObjectItemCaseSensitive(cm, "data");
                if (other && cJSON_GetObjectItemCaseSensitive(other, e->string))
                    cause_add(causes, "FieldValueDuplicate", f, "Duplicate value: \"%.64s\"",
                              e->string);
            }
        }
    }
    if (total > CONFIGMAP_MAX_BYTES)
        cause_add(causes, "FieldValueTooLong", "data", "Too long: must have at most %d bytes",
                  CONFIGMAP_MAX_BYTES);
}

void validate_networkpolicy(cJSON *np, cJSON *causes)
{
    validate_metadata(np, true, causes);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(np, "spec");
    if (!cJSON_IsObject(spec)) {
        cause_add(causes, "FieldValueRequired", "spec", "Required value");
        return;
    }
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(spec, "podSelector");
    if (ps && !cJSON_IsObject(ps))
        cause_add(causes, "FieldValueInvalid", "spec.podSelector", "must be an object");
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(spec, "policyTypes");
    const cJSON *t;
    int i = 0;
    cJSON_ArrayForEach(t, types)
    {
        char f[64];
        snprintf(f, sizeof(f), "spec.policyTypes[%d]", i++);
        if (!cJSON_IsString(t) ||
            (strcmp(t->valuestring, "Ingress") != 0 && strcmp(t->valuestring, "Egress") != 0))
            cause_add(causes, "FieldValueNotSupported", f,
                      "Unsupported value: supported values: \"Ingress\", \"Egress\"");
    }
}
