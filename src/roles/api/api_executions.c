/*
 * api_executions.c — the executions API (reference/api.md "Executions"):
 * submit, result, list, events, cancel, retry, admin delete, example
 * scripts, limits, and the old aliases.
 *
 * Submit validates the body (script ≤ 50 000 characters, lang and
 * lang_version known to the runtimes table, else 422), claims the optional
 * Idempotency-Key (api_idempotency.c: a repeat returns the first response,
 * in flight → 409), inserts the `executions` document with the api's fields
 * of include/execution.h (status "queued", status_rank 0) plus
 * timeout_seconds and the result fields as null, and publishes
 * execution_requested (runtime image and command from the runtimes table,
 * pod resources from EXECD_POD_*) to execution_events.  The api only
 * inserts: after the insert the projection is the only writer of the
 * document.  Timestamps the projection sets with $min (queued_at …) are not
 * inserted, since a null would win every $min.
 *
 * A publish failure answers 503 and deletes nothing: the document stays
 * "queued" without a request event (no other role will ever see it), the
 * idempotency claim is released so the client can retry the same key, and
 * the retry creates a new execution.  Deleting the document instead could
 * race a publish that did reach the broker after a delivery timeout.
 *
 * Reads: the result comes from the read model (`executions`), overlaid with
 * the results role's exactly-once record (`execution_results`) while the
 * projection lags behind it; events come from the event store (`events`,
 * written by the store role) without its store-only fields.  Cancel and
 * retry decide on the read model's status; cancel publishes
 * execution_cancel_requested and lets the saga stop the run.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bus.h"
#include "config.h"
#include "events.h"
#include "execution.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "runtimes.h"
#include "store.h"
#include "util.h"

#define EXECUTIONS "executions"
#define EXECUTION_RESULTS "execution_results"
#define EVENTS "events"
#define SCRIPT_MAX_CHARS 50000
#define DEFAULT_PRIORITY 5
#define EVENT_TYPES_MAX 64

static const struct store_index execution_indexes[] = {
    {.name = "execution_id_unique", .keys = "{\"execution_id\":1}", .unique = true},
    {.name = "user_id_created_at", .keys = "{\"user_id\":1,\"created_at\":-1}"},
};

static const struct api_field execute_fields[] = {
    {.name = "script", .type = AF_STR, .required = true, .max_len = SCRIPT_MAX_CHARS},
    {.name = "lang", .type = AF_STR, .min_len = 1, .max_len = 32},
    {.name = "lang_version", .type = AF_STR, .min_len = 1, .max_len = 32},
};

static const struct api_field cancel_fields[] = {
    {.name = "reason", .type = AF_STR, .max_len = 1000},
};

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Whether s is well-formed UTF-8 (no overlongs, surrogates or code points
 * past U+10FFFF): BSON stores nothing else. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80             ? 0
                : (c & 0xe0) == 0xc0 ? 1
                : (c & 0xf0) == 0xe0 ? 2
                : (c & 0xf8) == 0xf0 ? 3
                                     : -1;
        if (n < 0)
            return false;
        unsigned cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* 422 unless every string field of obj named in names is valid UTF-8. */
static int require_utf8(struct http_req *req, const char *where, const cJSON *obj,
                        const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = str_of(obj, names[i]);
        if (v && !utf8_valid(v))
            return api_respond_invalid(req, where, names[i], "Input should be valid UTF-8",
                                       "string_unicode");
    }
    return 0;
}

static void add_str(cJSON *out, const char *name, const char *value)
{
    if (value)
        cJSON_AddStringToObject(out, name, value);
    else
        cJSON_AddNullToObject(out, name);
}

static void add_date(cJSON *out, const char *name, const cJSON *doc)
{
    int64_t ms;
    if (store_date_ms(cJSON_GetObjectItemCaseSensitive(doc, name), &ms) == 0) {
        char ts[TS_LEN];
        ts_format_us(ms * 1000, ts);
        cJSON_AddStringToObject(out, name, ts);
    } else {
        cJSON_AddNullToObject(out, name);
    }
}

/* A number, possibly stored as {"$numberLong": "…"} by the store. */
static bool number_of(const cJSON *v, double *out)
{
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return true;
    }
    const cJSON *nl = cJSON_IsObject(v) ? v->child : NULL;
    if (nl && nl->string && cJSON_IsString(nl) &&
        (strcmp(nl->string, "$numberLong") == 0 || strcmp(nl->string, "$numberDouble") == 0 ||
         strcmp(nl->string, "$numberInt") == 0)) {
        char *end = NULL;
        double d = strtod(nl->valuestring, &end);
        if (end != nl->valuestring && *end == '\0') {
            *out = d;
            return true;
        }
    }
    return false;
}

static void add_number(cJSON *out, const char *name, const cJSON *doc)
{
    double d;
    if (number_of(cJSON_GetObjectItemCaseSensitive(doc, name), &d))
        cJSON_AddNumberToObject(out, name, d);
    else
        cJSON_AddNullToObject(out, name);
}

static void add_usage(cJSON *out, const cJSON *doc)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(doc, "resource_usage");
    if (!cJSON_IsObject(u)) {
        cJSON_AddNullToObject(out, "resource_usage");
        return;
    }
    static const char *const keys[] = {"execution_time_wall_seconds", "cpu_time_jiffies",
                                       "clk_tck_hertz", "peak_memory_kb"};
    cJSON *o = cJSON_AddObjectToObject(out, "resource_usage");
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        add_number(o, keys[i], u);
}

/* The result shape of api.md; res (may be NULL) is the results role's
 * record, which wins while the read model has not reached a terminal state. */
static cJSON *result_json(const cJSON *doc, const cJSON *res)
{
    double rank = 0;
    bool terminal = number_of(cJSON_GetObjectItemCaseSensitive(doc, "status_rank"), &rank) &&
                    rank >= EXEC_RANK_TERMINAL;
    const cJSON *src = res && !terminal && str_of(res, "status") ? res : doc;
    cJSON *o = cJSON_CreateObject();
    add_str(o, "execution_id", str_of(doc, "execution_id"));
    add_str(o, "status", str_of(src, "status"));
    add_str(o, "stdout", str_of(src, "stdout"));
    add_str(o, "stderr", str_of(src, "stderr"));
    add_str(o, "lang", str_of(doc, "lang"));
    add_str(o, "lang_version", str_of(doc, "lang_version"));
    add_usage(o, src);
    add_number(o, "exit_code", src);
    add_str(o, "error_type", str_of(src, "error_type"));
    add_number(o, "priority", doc);
    return o;
}

static int respond_not_found(struct http_req *req)
{
    http_respond_error(req, 404, "NotFound", "Execution not found");
    return -ENOENT;
}

static int respond_store_down(struct http_req *req)
{
    http_respond_error(req, 503, "Infrastructure", "execution store unavailable");
    return -EIO;
}

/* The executions document of the path's execution_id, answering 404/503,
 * and 403 unless user owns it or is an admin (check_owner).  *out owned by
 * the caller. */
static int load_execution(struct api *api, struct http_req *req, const struct api_user *user,
                          bool check_owner, cJSON **out)
{
    const char *id = http_param(req, "execution_id");
    if (!id || !id[0] || strlen(id) > 128 || !utf8_valid(id))
        return respond_not_found(req);
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "execution_id", id);
    cJSON *doc = NULL;
    int rc = store_find_one(api->host->store, EXECUTIONS, filter, NULL, &doc);
    cJSON_Delete(filter);
    if (rc == -ENOENT || rc == -EINVAL)
        return respond_not_found(req);
    if (rc) {
        log_warn(API_ROLE, "cannot read an execution", "execution_id=\"%s\" err=%d", id, rc);
        return respond_store_down(req);
    }
    if (check_owner && api_require_owner_or_admin(req, user, str_of(doc, "user_id")) != 0) {
        cJSON_Delete(doc);
        return -EACCES;
    }
    *out = doc;
    return 0;
}

static int doc_status(const cJSON *doc)
{
    const char *s = str_of(doc, "status");
    return s ? execution_status_lookup(s) : -1;
}

/* The results role's record of doc's execution while the read model is not
 * yet terminal (the projection lags), else NULL; caller deletes. */
static cJSON *load_overlay(struct api *api, const cJSON *doc)
{
    int st = doc_status(doc);
    if (st >= 0 && execution_status_terminal((enum execution_status)st))
        return NULL;
    cJSON *res = NULL;
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", str_of(doc, "execution_id"));
    if (store_find_one(api->host->store, EXECUTION_RESULTS, filter, NULL, &res) != 0)
        res = NULL;
    cJSON_Delete(filter);
    return res;
}

/* The status a client sees: the read model's, or the result's when it is
 * already recorded and the read model lags. */
static int effective_status(struct api *api, const cJSON *doc)
{
    cJSON *res = load_overlay(api, doc);
    int st = res && str_of(res, "status") ? execution_status_lookup(str_of(res, "status")) : -1;
    cJSON_Delete(res);
    return st >= 0 ? st : doc_status(doc);
}

/* ---- submit ---- */

static cJSON *runtime_command(const struct runtime *rt, const struct runtime_version *ver)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateString(ver->names[0] ? ver->names[0] : ver->cmd));
    for (size_t i = 0; i < sizeof(rt->run_args) / sizeof(rt->run_args[0]) && rt->run_args[i]; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(rt->run_args[i]));
    cJSON_AddItemToArray(a, cJSON_CreateString(rt->file_name));
    return a;
}

static void event_stamp(struct api *api, struct http_req *req, struct event *ev,
                        const char *user_id)
{
    char ip[64];
    api_client_ip(api, req, ip, sizeof(ip));
    const char *ua = http_header(req, "User-Agent");
    ev->meta.user_id = xstrdup(user_id);
    ev->meta.ip = xstrdup(ip);
    if (ua)
        ev->meta.user_agent = strndup(ua, 256);
}

/* Inserts the queued execution and publishes execution_requested.  0 with
 * id filled, else the HTTP status to answer (503). */
static int submit(struct api *api, struct http_req *req, int64_t t0, const char *user_id,
                  const char *script, const struct runtime *rt, const struct runtime_version *ver,
                  char id[UUID_LEN])
{
    const struct config *cfg = api->cfg;
    uuid_v4(id);
    int64_t now = now_wall_ms();
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "_id", id);
    cJSON_AddStringToObject(doc, "execution_id", id);
    cJSON_AddStringToObject(doc, "user_id", user_id);
    cJSON_AddStringToObject(doc, "script", script);
    cJSON_AddStringToObject(doc, "lang", rt->lang);
    cJSON_AddStringToObject(doc, "lang_version", ver->version);
    cJSON_AddStringToObject(doc, "status", execution_status_name(EXEC_QUEUED));
    cJSON_AddNumberToObject(doc, "status_rank", execution_status_rank(EXEC_QUEUED));
    cJSON_AddNumberToObject(doc, "priority", DEFAULT_PRIORITY);
    cJSON_AddItemToObject(doc, "created_at", store_date(now));
    cJSON_AddItemToObject(doc, "updated_at", store_date(now));
    cJSON_AddNumberToObject(doc, "timeout_seconds", (double)cfg->execution_timeout_seconds);
    static const char *const nulls[] = {"stdout", "stderr", "exit_code", "resource_usage",
                                        "error_type"};
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        cJSON_AddNullToObject(doc, nulls[i]);
    int rc = store_insert_one(api->host->store, EXECUTIONS, doc);
    cJSON_Delete(doc);
    if (rc) {
        log_error(API_ROLE, "cannot insert an execution", "execution_id=%s err=%d", id, rc);
        return 503;
    }

    struct event *ev = event_new(EV_execution_requested, id);
    if (!ev)
        return 503;
    event_stamp(api, req, ev, user_id);
    rc = event_set_str(ev, "execution_id", id) || event_set_str(ev, "script", script) ||
         event_set_str(ev, "lang", rt->lang) || event_set_str(ev, "lang_version", ver->version) ||
         event_set_str(ev, "runtime_image", ver->image) ||
         event_set_json(ev, "runtime_command", runtime_command(rt, ver)) ||
         event_set_int(ev, "timeout_seconds", cfg->execution_timeout_seconds) ||
         event_set_str(ev, "cpu_request", cfg->pod_cpu_request) ||
         event_set_str(ev, "cpu_limit", cfg->pod_cpu_limit) ||
         event_set_str(ev, "memory_request", cfg->pod_memory_request) ||
         event_set_str(ev, "memory_limit", cfg->pod_memory_limit) ||
         event_set_int(ev, "priority", DEFAULT_PRIORITY);
    if (rc == 0)
        rc = bus_publish_event(api->host->bus, ev);
    if (rc) {
        log_error(API_ROLE, "cannot publish execution_requested; the execution stays queued",
                  "execution_id=%s event_id=%s err=%d", id, ev->event_id, rc);
        event_free(ev);
        return 503;
    }
    if (api->m_submitted)
        metric_add(api->m_submitted, 1);
    if (api->m_submit_seconds)
        metric_observe(api->m_submit_seconds, (double)(now_mono_ms() - t0) / 1000.0);
    log_info(API_ROLE, "execution requested", "execution_id=%s event_id=%s user_id=%s lang=%s:%s",
             id, ev->event_id, user_id, rt->lang, ver->version);
    event_free(ev);
    return 0;
}

static void supported_list(char *out, size_t len, const char *lang)
{
    size_t o = 0;
    out[0] = '\0';
    if (lang) {
        const struct runtime *rt = runtime_find(lang);
        for (const struct runtime_version *v = rt ? rt->versions : NULL; v && v->version; v++) {
            int w = snprintf(out + o, len - o, "%s%s", o ? ", " : "", v->version);
            if (w < 0 || (size_t)w >= len - o)
                break;
            o += (size_t)w;
        }
        return;
    }
    for (const struct runtime *r = runtime_table; r->lang; r++) {
        int w = snprintf(out + o, len - o, "%s%s", o ? ", " : "", r->lang);
        if (w < 0 || (size_t)w >= len - o)
            break;
        o += (size_t)w;
    }
}

/* 422 unless lang/version are in the runtimes table. */
static int check_runtime(struct http_req *req, const char *lang, const char *version,
                         const struct runtime **rt, const struct runtime_version **ver)
{
    char list[256], msg[512];
    *rt = runtime_find(lang);
    if (!*rt) {
        supported_list(list, sizeof(list), NULL);
        snprintf(msg, sizeof(msg), "Language '%.64s' is not supported; supported: %s", lang, list);
        return api_respond_invalid(req, "body", "lang", msg, "value_error");
    }
    *ver = runtime_find_version(lang, version, NULL);
    if (!*ver) {
        supported_list(list, sizeof(list), lang);
        snprintf(msg, sizeof(msg), "Version '%.64s' of %s is not supported; supported: %s", version,
                 lang, list);
        return api_respond_invalid(req, "body", "lang_version", msg, "value_error");
    }
    return 0;
}

/* The 200 body of a submit; caller frees (free()). */
static char *queued_body(const char *id)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "execution_id", id);
    cJSON_AddStringToObject(o, "status", execution_status_name(EXEC_QUEUED));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void respond_queued(struct http_req *req, const char *body)
{
    if (body)
        http_respond(req, 200, "application/json", body, strlen(body));
    else
        http_respond_error(req, 500, "Infrastructure", "out of memory");
}

static void on_execute(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    int64_t t0 = now_mono_ms();
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    cJSON *body = NULL;
    if (api_read_json(req, &body) != 0)
        goto out;
    if (api_validate(req, body, execute_fields,
                     sizeof(execute_fields) / sizeof(execute_fields[0])) != 0)
        goto out;
    static const char *const texts[] = {"script", "lang", "lang_version"};
    if (require_utf8(req, "body", body, texts, 3) != 0)
        goto out;
    const char *script = str_of(body, "script");
    const char *lang = str_of(body, "lang") ? str_of(body, "lang") : "python";
    const char *version = str_of(body, "lang_version") ? str_of(body, "lang_version") : "3.11";
    const struct runtime *rt = NULL;
    const struct runtime_version *ver = NULL;
    if (check_runtime(req, lang, version, &rt, &ver) != 0)
        goto out;

    const char *key = http_header(req, "Idempotency-Key");
    if (key && !key[0])
        key = NULL;
    if (key) {
        enum api_idem_state st;
        int code = 0;
        char *first = NULL;
        int rc = api_idem_begin(api, user.user_id, key, &st, &code, &first);
        if (rc == -EINVAL || rc == -E2BIG) {
            api_respond_invalid(req, "header", "Idempotency-Key",
                                "Idempotency-Key must be 1-255 printable ASCII characters",
                                "value_error");
            goto out;
        }
        if (rc) {
            http_respond_error(req, 503, "Infrastructure", "idempotency store unavailable");
            goto out;
        }
        if (st == API_IDEM_IN_FLIGHT) {
            http_respond_error(req, 409, "Conflict",
                               "A request with this Idempotency-Key is still in progress");
            goto out;
        }
        if (st == API_IDEM_DONE) {
            http_add_header(req, "Idempotent-Replayed", "true");
            http_respond(req, code, "application/json", first, strlen(first));
            free(first);
            goto out;
        }
    }
    char id[UUID_LEN];
    int status = submit(api, req, t0, user.user_id, script, rt, ver, id);
    if (status) {
        if (key)
            api_idem_abort(api, user.user_id, key);
        http_respond_error(req, status, "Infrastructure",
                           "cannot queue the execution: the event bus or store is unavailable");
        goto out;
    }
    /* The key is completed before the answer goes out, so a repeat that
     * races the first response already finds it done. */
    char *first = queued_body(id);
    if (key) {
        if (first)
            api_idem_complete(api, user.user_id, key, 200, first);
        else
            api_idem_abort(api, user.user_id, key);
    }
    respond_queued(req, first);
    free(first);
out:
    cJSON_Delete(body);
    api_user_release(&user);
}

/* ---- reads ---- */

static void on_result(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    cJSON *doc = NULL;
    if (load_execution(api, req, &user, true, &doc) == 0) {
        cJSON *res = load_overlay(api, doc);
        cJSON *o = result_json(doc, res);
        http_respond_json(req, 200, o);
        cJSON_Delete(o);
        cJSON_Delete(res);
        cJSON_Delete(doc);
    }
    api_user_release(&user);
}

/* A query string parameter ≤ len-1 bytes into out ("" when absent); answers
 * 422 when too long. */
static int query_str(struct http_req *req, const char *name, char *out, size_t len)
{
    int rc = http_query(req, name, 0, out, len);
    if (rc == -ENOENT) {
        out[0] = '\0';
        return 0;
    }
    if (rc) {
        char msg[96];
        snprintf(msg, sizeof(msg), "String should have at most %zu characters", len - 1);
        return api_respond_invalid(req, "query", name, msg, "string_too_long");
    }
    if (!utf8_valid(out))
        return api_respond_invalid(req, "query", name, "Input should be valid UTF-8",
                                   "string_unicode");
    return 0;
}

static int query_time(struct http_req *req, const char *name, bool *set, int64_t *ms)
{
    char buf[64];
    *set = false;
    if (query_str(req, name, buf, sizeof(buf)) != 0)
        return -EINVAL;
    if (!buf[0])
        return 0;
    int64_t us;
    if (ts_parse_us(buf, &us) != 0)
        return api_respond_invalid(req, "query", name, "Input should be a valid RFC 3339 datetime",
                                   "datetime_parsing");
    *set = true;
    *ms = us / 1000;
    return 0;
}

static void on_list(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    char status[32], lang[64];
    long limit, skip;
    bool has_start, has_end;
    int64_t start = 0, end = 0;
    if (query_str(req, "status", status, sizeof(status)) ||
        query_str(req, "lang", lang, sizeof(lang)) ||
        query_time(req, "start_time", &has_start, &start) ||
        query_time(req, "end_time", &has_end, &end) ||
        api_query_int(req, "limit", 50, 1, 200, &limit) ||
        api_query_int(req, "skip", 0, 0, 1000000000, &skip))
        goto done;
    if (status[0] && execution_status_lookup(status) < 0) {
        api_respond_invalid(req, "query", "status",
                            "Input should be 'queued', 'scheduled', 'running', 'completed', "
                            "'failed', 'timeout' or 'cancelled'",
                            "enum");
        goto done;
    }
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "user_id", user.user_id);
    if (status[0])
        cJSON_AddStringToObject(filter, "status", status);
    if (lang[0])
        cJSON_AddStringToObject(filter, "lang", lang);
    if (has_start || has_end) {
        cJSON *range = cJSON_AddObjectToObject(filter, "created_at");
        if (has_start)
            cJSON_AddItemToObject(range, "$gte", store_date(start));
        if (has_end)
            cJSON_AddItemToObject(range, "$lte", store_date(end));
    }
    cJSON *opts = cJSON_CreateObject();
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(opts, "sort"), "created_at", -1);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(opts, "projection"), "script", 0);
    if (skip > 0)
        cJSON_AddNumberToObject(opts, "skip", (double)skip);
    cJSON_AddNumberToObject(opts, "limit", (double)limit);
    cJSON *docs = NULL;
    int64_t total = 0;
    int rc = store_find(api->host->store, EXECUTIONS, filter, opts, &docs);
    if (rc == 0)
        rc = store_count(api->host->store, EXECUTIONS, filter, &total);
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    if (rc) {
        cJSON_Delete(docs);
        respond_store_down(req);
        goto done;
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(resp, "executions");
    const cJSON *d;
    long n = 0;
    cJSON_ArrayForEach(d, docs)
    {
        cJSON *item = result_json(d, NULL);
        add_date(item, "created_at", d);
        add_date(item, "updated_at", d);
        cJSON_AddItemToArray(list, item);
        n++;
    }
    cJSON_AddNumberToObject(resp, "total", (double)total);
    cJSON_AddNumberToObject(resp, "limit", (double)limit);
    cJSON_AddNumberToObject(resp, "skip", (double)skip);
    cJSON_AddBoolToObject(resp, "has_more", skip + n < total);
    http_respond_json(req, 200, resp);
    cJSON_Delete(resp);
    cJSON_Delete(docs);
done:
    api_user_release(&user);
}

/* The event_types parameters (repeatable; a comma-separated list is
 * accepted too) as an array into *out (NULL when absent); 422 on an unknown
 * type. */
static int event_types_filter(struct http_req *req, cJSON **out)
{
    *out = NULL;
    cJSON *types = NULL;
    for (int i = 0;; i++) {
        char t[1024];
        int rc = http_query(req, "event_types", i, t, sizeof(t));
        if (rc == -ENOENT)
            break;
        if (rc == 0 && i >= EVENT_TYPES_MAX)
            rc = -E2BIG;
        char *save = NULL;
        for (char *tok = rc ? NULL : strtok_r(t, ",", &save); tok && rc == 0;
             tok = strtok_r(NULL, ",", &save)) {
            if (event_type_lookup(tok) < 0) {
                rc = -EINVAL;
                break;
            }
            if (!types)
                types = cJSON_CreateArray();
            cJSON_AddItemToArray(types, cJSON_CreateString(tok));
        }
        if (rc) {
            cJSON_Delete(types);
            return api_respond_invalid(
                req, "query", "event_types",
                rc == -EINVAL ? "Unknown event type" : "Too many or too long event types", "enum");
        }
    }
    *out = types;
    return 0;
}

static void on_events(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    cJSON *doc = NULL;
    long limit;
    if (load_execution(api, req, &user, true, &doc) != 0 ||
        api_query_int(req, "limit", 100, 1, 1000, &limit) != 0)
        goto done;
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "aggregate_id", str_of(doc, "execution_id"));
    cJSON *types = NULL;
    if (event_types_filter(req, &types) != 0) {
        cJSON_Delete(filter);
        goto done;
    }
    if (types)
        cJSON_AddItemToObject(cJSON_AddObjectToObject(filter, "event_type"), "$in", types);
    cJSON *opts = cJSON_CreateObject();
    cJSON *sort = cJSON_AddObjectToObject(opts, "sort");
    cJSON_AddNumberToObject(sort, "timestamp", 1);
    cJSON_AddNumberToObject(sort, "offset", 1);
    cJSON_AddNumberToObject(opts, "limit", (double)limit);
    static const char *const hidden[] = {"_id", "topic", "partition", "offset", "stored_at", "ts"};
    cJSON *proj = cJSON_AddObjectToObject(opts, "projection");
    for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
        cJSON_AddNumberToObject(proj, hidden[i], 0);
    cJSON *events = NULL;
    int rc = store_find(api->host->store, EVENTS, filter, opts, &events);
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    if (rc) {
        respond_store_down(req);
        goto done;
    }
    cJSON *e;
    cJSON_ArrayForEach(e, events)
    {
        for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
            cJSON_DeleteItemFromObjectCaseSensitive(e, hidden[i]);
    }
    http_respond_json(req, 200, events);
    cJSON_Delete(events);
done:
    cJSON_Delete(doc);
    api_user_release(&user);
}

/* ---- cancel, retry, delete ---- */

static void on_cancel(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    cJSON *doc = NULL, *body = NULL;
    const char *reason = NULL;
    const char *raw;
    size_t len;
    int rc = http_body(req, 0, &raw, &len);
    if (rc) {
        if (!http_responded(req))
            http_respond_error(req, 400, "InvalidState", "cannot read request body");
        goto done;
    }
    if (len > 0) {
        if (api_read_json(req, &body) != 0 ||
            api_validate(req, body, cancel_fields,
                         sizeof(cancel_fields) / sizeof(cancel_fields[0])) != 0)
            goto done;
        static const char *const texts[] = {"reason"};
        if (require_utf8(req, "body", body, texts, 1) != 0)
            goto done;
        reason = str_of(body, "reason");
    }
    if (load_execution(api, req, &user, true, &doc) != 0)
        goto done;
    const char *id = str_of(doc, "execution_id");
    int st = effective_status(api, doc);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "execution_id", id);
    if (st == EXEC_CANCELLED) {
        cJSON_AddStringToObject(o, "status", "already_cancelled");
        cJSON_AddStringToObject(o, "message", "Execution is already cancelled");
        cJSON_AddNullToObject(o, "event_id");
        http_respond_json(req, 200, o);
    } else if (st >= 0 && execution_status_terminal((enum execution_status)st)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "Cannot cancel an execution in status '%s'",
                 execution_status_name((enum execution_status)st));
        http_respond_error(req, 400, "InvalidState", msg);
    } else {
        struct event *ev = event_new(EV_execution_cancel_requested, id);
        rc = ev ? 0 : -ENOMEM;
        if (ev) {
            event_stamp(api, req, ev, user.user_id);
            rc = event_set_str(ev, "execution_id", id) ||
                 event_set_str(ev, "reason", reason ? reason : "user requested") ||
                 event_set_str(ev, "by", user.user_id);
            if (rc == 0)
                rc = bus_publish_event(api->host->bus, ev);
        }
        if (rc) {
            log_error(API_ROLE, "cannot publish execution_cancel_requested",
                      "execution_id=%s err=%d", id, rc);
            http_respond_error(req, 503, "Infrastructure", "event bus unavailable");
        } else {
            log_info(API_ROLE, "cancellation requested", "execution_id=%s event_id=%s by=%s", id,
                     ev->event_id, user.user_id);
            cJSON_AddStringToObject(o, "status", "cancellation_requested");
            cJSON_AddStringToObject(o, "message", "Cancellation request submitted");
            cJSON_AddStringToObject(o, "event_id", ev->event_id);
            http_respond_json(req, 200, o);
        }
        event_free(ev);
    }
    cJSON_Delete(o);
done:
    cJSON_Delete(body);
    cJSON_Delete(doc);
    api_user_release(&user);
}

static void on_retry(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    int64_t t0 = now_mono_ms();
    cJSON *doc = NULL;
    if (load_execution(api, req, &user, true, &doc) != 0)
        goto done;
    int st = effective_status(api, doc);
    if (st < 0 || !execution_status_terminal((enum execution_status)st)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "Cannot retry an execution in status '%s'",
                 st < 0 ? "unknown" : execution_status_name((enum execution_status)st));
        http_respond_error(req, 400, "InvalidState", msg);
        goto done;
    }
    const char *script = str_of(doc, "script");
    const struct runtime *rt = NULL;
    const struct runtime_version *ver =
        runtime_find_version(str_of(doc, "lang"), str_of(doc, "lang_version"), &rt);
    if (!script || !ver || !rt) {
        http_respond_error(req, 400, "InvalidState",
                           "The execution's script or runtime is no longer available");
        goto done;
    }
    char id[UUID_LEN];
    int status = submit(api, req, t0, user.user_id, script, rt, ver, id);
    if (status) {
        http_respond_error(req, status, "Infrastructure",
                           "cannot queue the execution: the event bus or store is unavailable");
        goto done;
    }
    log_info(API_ROLE, "execution retried", "execution_id=%s retry_of=%s", id,
             str_of(doc, "execution_id"));
    char *answer = queued_body(id);
    respond_queued(req, answer);
    free(answer);
done:
    cJSON_Delete(doc);
    api_user_release(&user);
}

static void on_delete(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user admin;
    if (api_require_admin(api, req, &admin) != 0)
        return;
    const char *id = http_param(req, "execution_id");
    if (!id || !utf8_valid(id))
        id = "";
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "execution_id", id);
    int64_t deleted = 0;
    int rc = store_delete_many(api->host->store, EXECUTIONS, filter, &deleted);
    cJSON_Delete(filter);
    if (rc && rc != -ENOENT && rc != -EINVAL) {
        respond_store_down(req);
    } else if (deleted == 0) {
        respond_not_found(req);
    } else {
        log_info(API_ROLE, "execution deleted", "execution_id=%s by=%s", id, admin.user_id);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "message", "Execution deleted successfully");
        cJSON_AddStringToObject(o, "execution_id", id);
        http_respond_json(req, 200, o);
        cJSON_Delete(o);
    }
    api_user_release(&admin);
}

/* ---- public ---- */

static void on_examples(struct http_req *req, void *ctx)
{
    (void)ctx;
    cJSON *o = cJSON_CreateObject();
    cJSON *scripts = cJSON_AddObjectToObject(o, "scripts");
    for (const struct runtime *r = runtime_table; r->lang; r++)
        cJSON_AddStringToObject(scripts, r->lang, r->example);
    http_add_header(req, "Cache-Control", "public, max-age=600");
    http_respond_json(req, 200, o);
    cJSON_Delete(o);
}

static void on_limits(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    const struct config *cfg = api->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "cpu_limit", cfg->pod_cpu_limit);
    cJSON_AddStringToObject(o, "memory_limit", cfg->pod_memory_limit);
    cJSON_AddStringToObject(o, "cpu_request", cfg->pod_cpu_request);
    cJSON_AddStringToObject(o, "memory_request", cfg->pod_memory_request);
    cJSON_AddNumberToObject(o, "execution_timeout", (double)cfg->execution_timeout_seconds);
    cJSON *rts = cJSON_AddObjectToObject(o, "supported_runtimes");
    for (const struct runtime *r = runtime_table; r->lang; r++) {
        cJSON *e = cJSON_AddObjectToObject(rts, r->lang);
        cJSON *v = cJSON_AddArrayToObject(e, "versions");
        for (const struct runtime_version *rv = r->versions; rv->version; rv++)
            cJSON_AddItemToArray(v, cJSON_CreateString(rv->version));
        cJSON_AddStringToObject(e, "file_ext", r->ext);
    }
    http_add_header(req, "Cache-Control", "public, max-age=300");
    http_respond_json(req, 200, o);
    cJSON_Delete(o);
}

static const struct api_route execution_routes[] = {
    {"POST", "/api/v1/execute", on_execute,
     "Submit a script (header Idempotency-Key: a repeat returns the first response, 409 while "
     "in flight)",
     "execution", "user", "ExecuteRequest", "ExecuteResponse"},
    {"GET", "/api/v1/executions/{execution_id}/result", on_result,
     "The execution's status and result", "execution", "owner/admin", NULL, "ExecutionResult"},
    {"GET", "/api/v1/executions/{execution_id}/events", on_events,
     "The execution's events from the event store (event_types repeatable, limit 1-1000)",
     "execution", "owner/admin", NULL, "EventList"},
    {"POST", "/api/v1/executions/{execution_id}/cancel", on_cancel,
     "Request cancellation (400 when already terminal)", "execution", "owner/admin",
     "CancelRequest", "CancelResponse"},
    {"POST", "/api/v1/executions/{execution_id}/retry", on_retry,
     "Run the script again as a new execution (400 while queued/scheduled/running)", "execution",
     "owner/admin", NULL, "ExecuteResponse"},
    {"DELETE", "/api/v1/executions/{execution_id}", on_delete, "Delete an execution record",
     "execution", "admin", NULL, "DeleteExecutionResponse"},
    {"GET", "/api/v1/user/executions", on_list,
     "The caller's executions (status, lang, start_time, end_time, limit 1-200, skip)", "execution",
     "user", NULL, "ExecutionList"},
    {"GET", "/api/v1/example-scripts", on_examples, "An example script per language", "execution",
     "public", NULL, "ExampleScripts"},
    {"GET", "/api/v1/k8s-limits", on_limits, "Pod resource limits and the supported runtimes",
     "execution", "public", NULL, "K8sLimits"},
    {"GET", "/api/v1/result/{execution_id}", on_result,
     "Alias of GET /api/v1/executions/{execution_id}/result", "execution", "owner/admin", NULL,
     "ExecutionResult"},
    {"POST", "/api/v1/{execution_id}/cancel", on_cancel,
     "Alias of POST /api/v1/executions/{execution_id}/cancel", "execution", "owner/admin",
     "CancelRequest", "CancelResponse"},
    {"POST", "/api/v1/{execution_id}/retry", on_retry,
     "Alias of POST /api/v1/executions/{execution_id}/retry", "execution", "owner/admin", NULL,
     "ExecuteResponse"},
};

int api_executions_init(struct api *api)
{
    int rc = store_create_indexes(api->host->store, EXECUTIONS, execution_indexes,
                                  sizeof(execution_indexes) / sizeof(execution_indexes[0]));
    if (rc) {
        log_error(API_ROLE, "cannot create the executions indexes", "err=%d", rc);
        return rc;
    }
    if (!api->host->bus) {
        log_error(API_ROLE, "the executions API needs the event bus", "%s", "");
        return -EINVAL;
    }
    if (api->host->metrics) {
        api->m_submitted =
            metrics_get(api->host->metrics, METRIC_COUNTER, "execd_api_executions_submitted_total",
                        "Executions queued and published as execution_requested", "");
        api->m_submit_seconds = metrics_get(
            api->host->metrics, METRIC_HISTOGRAM, "execd_api_submit_to_requested_seconds",
            "API receipt of a submission to execution_requested acknowledged on execution_events",
            "");
    }
    return api_routes_add(api, execution_routes,
                          sizeof(execution_routes) / sizeof(execution_routes[0]));
}
