/*
 * saga_http.c — the saga read endpoints and saga cancel (api.md "Sagas").
 *
 *   GET  /api/v1/sagas/{saga_id}                   owner/A
 *   GET  /api/v1/sagas/execution/{execution_id}    owner/A
 *   GET  /api/v1/sagas/?state&execution_id&limit&skip
 *        {sagas, total, skip, limit, has_more}; a user sees their own, an
 *        admin every saga
 *   POST /api/v1/sagas/{saga_id}/cancel            owner/A
 *        publishes execution_cancel_requested {execution_id, reason, by},
 *        exactly as POST /api/v1/executions/{id}/cancel does; the consumer
 *        side of the role then compensates.  {success, message, saga_id};
 *        400 when the saga can no longer be cancelled.
 *
 * Roles never include each other's headers, so the session is checked here
 * with auth.h: Bearer or the access_token cookie, JWT HS256 with
 * EXECD_SECRET_KEY, then the users document (active, role).  Cookie
 * sessions must pass the CSRF rule of api.md on the POST (the api role's
 * middleware applies it too when both run in one process; the check is the
 * same, so it is idempotent).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "auth.h"
#include "bus.h"
#include "config.h"
#include "events.h"
#include "execution.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "saga.h"
#include "saga_role.h"
#include "store.h"
#include "util.h"

#define TOKEN_MAX 4096
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define QUERY_MAX 256

struct caller {
    char user_id[128];
    bool admin;
    bool bearer;
};

static int bearer_token(struct http_req *req, char *out, size_t len)
{
    const char *h = http_header(req, "Authorization");
    if (!h)
        return -ENOENT;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return -ENOENT;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    if (n == 0 || n >= len)
        return -ENOENT;
    memcpy(out, h, n);
    out[n] = '\0';
    return 0;
}

/* Authenticates the caller; on failure the 401/403/503 has been sent. */
static int authenticate(struct saga_role *sr, struct http_req *req, bool csrf, struct caller *out)
{
    char token[TOKEN_MAX];
    bool bearer = bearer_token(req, token, sizeof(token)) == 0;
    struct jwt_claims claims;
    if ((!bearer && http_cookie(req, "access_token", token, sizeof(token)) != 0) ||
        jwt_verify(sr->host->cfg->secret_key, token, now_wall_ms() / 1000, &claims) != 0) {
        http_add_header(req, "WWW-Authenticate", "Bearer");
        http_respond_error(req, 401, "Unauthorized", "Not authenticated");
        return -EPERM;
    }
    if (csrf && !bearer) {
        char cookie[AUTH_CSRF_LEN + 64];
        const char *hdr = http_header(req, "X-CSRF-Token");
        bool ok = hdr && http_cookie(req, "csrf_token", cookie, sizeof(cookie)) == 0 &&
                  auth_str_equal(hdr, cookie) &&
                  csrf_token_verify(sr->host->cfg->secret_key, hdr, token);
        if (!ok) {
            http_respond_error(req, 403, "Forbidden", "CSRF validation failed");
            return -EACCES;
        }
    }
    cJSON *filter = exec_json("{\"username\":%S}", claims.sub);
    cJSON *doc = NULL;
    int rc = filter ? store_find_one(sr->host->store, SAGA_USERS, filter, NULL, &doc) : -ENOMEM;
    cJSON_Delete(filter);
    if (rc && rc != -ENOENT) {
        cJSON_Delete(doc);
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
        return -EIO;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "user_id");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(doc, "role");
    const cJSON *active = cJSON_GetObjectItemCaseSensitive(doc, "is_active");
    if (rc || !cJSON_IsString(id) || !cJSON_IsString(role) || cJSON_IsFalse(active)) {
        cJSON_Delete(doc);
        http_add_header(req, "WWW-Authenticate", "Bearer");
        http_respond_error(req, 401, "Unauthorized", "Not authenticated");
        return -EPERM;
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->user_id, sizeof(out->user_id), "%s", id->valuestring);
    out->admin = strcmp(role->valuestring, "admin") == 0;
    out->bearer = bearer;
    cJSON_Delete(doc);
    return 0;
}

static bool may_see(const struct caller *c, const cJSON *doc)
{
    if (c->admin)
        return true;
    const cJSON *owner = cJSON_GetObjectItemCaseSensitive(doc, "user_id");
    return cJSON_IsString(owner) && c->user_id[0] && strcmp(owner->valuestring, c->user_id) == 0;
}

static void add_date(cJSON *o, const char *name, const cJSON *doc)
{
    int64_t ms = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (v && !cJSON_IsNull(v) && store_date_ms(v, &ms) == 0) {
        char ts[TS_LEN];
        ts_format_us(ms * 1000, ts);
        cJSON_AddStringToObject(o, name, ts);
    } else {
        cJSON_AddNullToObject(o, name);
    }
}

static void add_copy(cJSON *o, const char *name, const cJSON *doc, bool array)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (v && !cJSON_IsNull(v))
        cJSON_AddItemToObject(o, name, cJSON_Duplicate(v, 1));
    else if (array)
        cJSON_AddItemToObject(o, name, cJSON_CreateArray());
    else
        cJSON_AddNullToObject(o, name);
}

/* The API view of a saga document (api.md); caller deletes. */
static cJSON *saga_view(const cJSON *doc)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_copy(o, "saga_id", doc, false);
    add_copy(o, "saga_name", doc, false);
    add_copy(o, "execution_id", doc, false);
    add_copy(o, "state", doc, false);
    add_copy(o, "current_step", doc, false);
    add_copy(o, "completed_steps", doc, true);
    add_copy(o, "compensated_steps", doc, true);
    add_copy(o, "error_message", doc, false);
    add_date(o, "created_at", doc);
    add_date(o, "updated_at", doc);
    add_date(o, "completed_at", doc);
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(doc, "retry_count");
    cJSON_AddNumberToObject(o, "retry_count", cJSON_IsNumber(rc) ? rc->valuedouble : 0);
    return o;
}

/* Finds one saga by filter and checks access; on failure answered. */
static int find_visible(struct saga_role *sr, struct http_req *req, const struct caller *c,
                        cJSON *filter, cJSON **out)
{
    cJSON *doc = NULL;
    int rc = filter ? store_find_one(sr->host->store, SAGA_COLL, filter, NULL, &doc) : -ENOMEM;
    cJSON_Delete(filter);
    if (rc == -ENOENT) {
        http_respond_error(req, 404, "NotFound", "Saga not found");
        return rc;
    }
    if (rc) {
        http_respond_error(req, 503, "Infrastructure", "saga store unavailable");
        return rc;
    }
    if (!may_see(c, doc)) {
        cJSON_Delete(doc);
        http_respond_error(req, 403, "Forbidden", "Access denied");
        return -EACCES;
    }
    *out = doc;
    return 0;
}

static void respond_saga(struct http_req *req, const cJSON *doc)
{
    cJSON *view = saga_view(doc);
    if (view)
        http_respond_json(req, 200, view);
    else
        http_respond_error(req, 500, "Infrastructure", "out of memory");
    cJSON_Delete(view);
}

static void on_get(struct http_req *req, void *ctx)
{
    struct saga_role *sr = ctx;
    struct caller c;
    cJSON *doc = NULL;
    if (authenticate(sr, req, false, &c) != 0 ||
        find_visible(sr, req, &c, exec_json("{\"_id\":%S}", http_param(req, "saga_id")), &doc))
        return;
    respond_saga(req, doc);
    cJSON_Delete(doc);
}

static void on_get_by_execution(struct http_req *req, void *ctx)
{
    struct saga_role *sr = ctx;
    struct caller c;
    cJSON *doc = NULL;
    if (authenticate(sr, req, false, &c) != 0 ||
        find_visible(sr, req, &c,
                     exec_json("{\"execution_id\":%S}", http_param(req, "execution_id")), &doc))
        return;
    respond_saga(req, doc);
    cJSON_Delete(doc);
}

static void validation_error(struct http_req *req, const char *field, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "detail");
    cJSON *e = cJSON_CreateObject();
    cJSON *loc = cJSON_AddArrayToObject(e, "loc");
    cJSON_AddItemToArray(loc, cJSON_CreateString("query"));
    cJSON_AddItemToArray(loc, cJSON_CreateString(field));
    cJSON_AddStringToObject(e, "msg", msg);
    cJSON_AddStringToObject(e, "type", "value_error");
    cJSON_AddItemToArray(arr, e);
    http_respond_json(req, 422, o);
    cJSON_Delete(o);
}

/* Integer query parameter in [min, max] (def when absent); answered on error. */
static int query_int(struct http_req *req, const char *name, long long def, long long min,
                     long long max, long long *out)
{
    char buf[32];
    int rc = http_query(req, name, 0, buf, sizeof(buf));
    if (rc == -ENOENT) {
        *out = def;
        return 0;
    }
    char *end = NULL;
    long long v = rc == 0 ? strtoll(buf, &end, 10) : 0;
    if (rc || !buf[0] || *end || v < min || v > max) {
        char msg[96];
        snprintf(msg, sizeof(msg), "must be an integer between %lld and %lld", min, max);
        validation_error(req, name, msg);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static void on_list(struct http_req *req, void *ctx)
{
    struct saga_role *sr = ctx;
    struct caller c;
    if (authenticate(sr, req, false, &c) != 0)
        return;
    long long limit, skip;
    if (query_int(req, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit) ||
        query_int(req, "skip", 0, 0, 1000000000LL, &skip))
        return;
    char state[QUERY_MAX], exec_id[QUERY_MAX];
    int has_state = http_query(req, "state", 0, state, sizeof(state)) == 0 && state[0];
    int has_exec = http_query(req, "execution_id", 0, exec_id, sizeof(exec_id)) == 0 && exec_id[0];
    if (has_state && saga_state_lookup(state) < 0) {
        validation_error(req, "state",
                         "must be one of running, compensating, completed, failed, cancelled");
        return;
    }
    cJSON *filter = cJSON_CreateObject();
    if (has_state)
        cJSON_AddStringToObject(filter, "state", state);
    if (has_exec)
        cJSON_AddStringToObject(filter, "execution_id", exec_id);
    if (!c.admin)
        cJSON_AddStringToObject(filter, "user_id", c.user_id);
    cJSON *opts =
        exec_json("{\"sort\":{\"created_at\":-1,\"_id\":1},\"skip\":%L,\"limit\":%L}", skip, limit);
    cJSON *docs = NULL;
    int64_t total = 0;
    int rc = filter && opts ? store_count(sr->host->store, SAGA_COLL, filter, &total) : -ENOMEM;
    if (rc == 0)
        rc = store_find(sr->host->store, SAGA_COLL, filter, opts, &docs);
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    if (rc) {
        cJSON_Delete(docs);
        http_respond_error(req, 503, "Infrastructure", "saga store unavailable");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "sagas");
    const cJSON *doc;
    int n = 0;
    cJSON_ArrayForEach(doc, docs)
    {
        cJSON_AddItemToArray(arr, saga_view(doc));
        n++;
    }
    cJSON_AddNumberToObject(o, "total", (double)total);
    cJSON_AddNumberToObject(o, "skip", (double)skip);
    cJSON_AddNumberToObject(o, "limit", (double)limit);
    cJSON_AddBoolToObject(o, "has_more", skip + n < total);
    http_respond_json(req, 200, o);
    cJSON_Delete(o);
    cJSON_Delete(docs);
}

static void on_cancel(struct http_req *req, void *ctx)
{
    struct saga_role *sr = ctx;
    struct caller c;
    cJSON *doc = NULL;
    const char *sid = http_param(req, "saga_id");
    if (authenticate(sr, req, true, &c) != 0 ||
        find_visible(sr, req, &c, exec_json("{\"_id\":%S}", sid), &doc))
        return;
    int st = saga_state_lookup(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "state")));
    int step = saga_step_lookup(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "current_step")));
    struct saga s = {.state = st >= 0 ? (enum saga_state)st : SAGA_COMPLETED,
                     .step = step >= 0 ? (enum saga_step)step : SAGA_FINALIZE};
    const char *eid = cJSON_GetStringValue(cJSON_GetObjectItem(doc, "execution_id"));
    if (!saga_cancellable(&s) || !eid) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Saga cannot be cancelled in state '%s' (step '%s')",
                 saga_state_name(s.state), saga_step_name(s.step));
        http_respond_error(req, 400, "InvalidState", msg);
        cJSON_Delete(doc);
        return;
    }
    struct event *ev = event_new(EV_execution_cancel_requested, eid);
    int rc = ev ? 0 : -ENOMEM;
    if (ev) {
        ev->meta.user_id = xstrdup(c.user_id);
        const char *ua = http_header(req, "User-Agent");
        if (ua)
            ev->meta.user_agent = xstrdup(ua);
        rc = event_set_str(ev, "execution_id", eid) ||
             event_set_str(ev, "reason", "cancelled through the saga API") ||
             event_set_str(ev, "by", c.user_id);
        if (rc == 0)
            rc = bus_publish_event(sr->host->bus, ev);
    }
    if (rc) {
        log_error(SAGA_ROLE, "cannot publish execution_cancel_requested", "saga_id=%s err=%d", sid,
                  rc);
        http_respond_error(req, 503, "Infrastructure", "event bus unavailable");
    } else {
        log_info(SAGA_ROLE, "saga cancellation requested", "saga_id=%s execution_id=%s by=%s", sid,
                 eid, c.user_id);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "success", 1);
        cJSON_AddStringToObject(o, "message", "Saga cancellation requested");
        cJSON_AddStringToObject(o, "saga_id", sid);
        http_respond_json(req, 200, o);
        cJSON_Delete(o);
    }
    event_free(ev);
    cJSON_Delete(doc);
}

int saga_http_init(struct saga_role *sr)
{
    static const struct {
        const char *method, *pattern;
        http_fn fn;
    } routes[] = {
        {"GET", "/api/v1/sagas/", on_list},
        {"GET", "/api/v1/sagas/execution/{execution_id}", on_get_by_execution},
        {"GET", "/api/v1/sagas/{saga_id}", on_get},
        {"POST", "/api/v1/sagas/{saga_id}/cancel", on_cancel},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = http_route(sr->host->http, routes[i].method, routes[i].pattern, routes[i].fn, sr);
        if (rc) {
            log_error(SAGA_ROLE, "cannot register route", "method=%s pattern=\"%s\" err=%d",
                      routes[i].method, routes[i].pattern, rc);
            return rc;
        }
    }
    return 0;
}
