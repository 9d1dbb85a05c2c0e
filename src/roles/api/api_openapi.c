/*
 * api_openapi.c — GET /api/v1/openapi.json, an OpenAPI 3.0 document built
 * at request time from the HTTP server's route table (http_routes_each), so
 * it lists exactly the routes that exist — this role's, other roles' and
 * the core's.  Routes this role registered carry their metadata (summary,
 * auth, request/response schema); others get a generic summary.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "host.h"

static cJSON *ref(const char *name)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "#/components/schemas/%s", name);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "$ref", buf);
    return o;
}

static cJSON *json_content(cJSON *schema)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToObject(cJSON_AddObjectToObject(c, "application/json"), "schema", schema);
    return c;
}

static void add_response(cJSON *responses, const char *code, const char *desc, const char *schema)
{
    cJSON *r = cJSON_AddObjectToObject(responses, code);
    cJSON_AddStringToObject(r, "description", desc);
    if (schema)
        cJSON_AddItemToObject(r, "content", json_content(ref(schema)));
}

/* "/api/v1/x/{*rest}" → "/api/v1/x/{rest}", collecting parameter names. */
static void openapi_path(const char *pattern, char *out, size_t len, cJSON *params)
{
    size_t o = 0;
    for (const char *p = pattern; *p && o + 1 < len; p++) {
        if (*p == '{') {
            const char *end = strchr(p, '}');
            if (end) {
                const char *name = p + 1 + (p[1] == '*');
                size_t n = (size_t)(end - name);
                if (o + n + 3 < len) {
                    out[o++] = '{';
                    memcpy(out + o, name, n);
                    o += n;
                    out[o++] = '}';
                    cJSON *prm = cJSON_CreateObject();
                    char pname[64];
                    snprintf(pname, sizeof(pname), "%.*s", (int)n, name);
                    cJSON_AddStringToObject(prm, "name", pname);
                    cJSON_AddStringToObject(prm, "in", "path");
                    cJSON_AddBoolToObject(prm, "required", 1);
                    cJSON_AddStringToObject(cJSON_AddObjectToObject(prm, "schema"), "type",
                                            "string");
                    cJSON_AddItemToArray(params, prm);
                }
                p = end;
                continue;
            }
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

static void default_tag(const char *pattern, char *out, size_t len)
{
    const char *p = pattern;
    if (strncmp(p, "/api/v1/", 8) == 0)
        p += 8;
    else
        p++;
    size_t n = strcspn(p, "/{");
    if (n == 0)
        snprintf(out, len, "operations");
    else
        snprintf(out, len, "%.*s", (int)n, p);
}

struct walk {
    const struct api *api;
    cJSON *paths;
};

static void lower(const char *in, char *out, size_t len)
{
    size_t i = 0;
    for (; in[i] && i + 1 < len; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] - 'A' + 'a' : in[i]);
    out[i] = '\0';
}

/* Metadata of the core's own routes (main.c registers them without any). */
static const struct api_route core_docs[] = {
    {"GET", "/api/v1/health/live", NULL, "Liveness: the process answers", "health", "public", NULL,
     NULL},
    {"GET", "/api/v1/health/ready", NULL,
     "Readiness: Kafka, MongoDB and each role's checks (503 naming the failing one)", "health",
     "public", NULL, NULL},
    {"GET", "/metrics", NULL, "Prometheus text exposition", "operations", "public", NULL, NULL},
};

static void add_operation(void *arg, const char *method, const char *pattern)
{
    struct walk *w = arg;
    const struct api_route *doc = api_route_doc(w->api, method, pattern);
    for (size_t i = 0; !doc && i < sizeof(core_docs) / sizeof(core_docs[0]); i++)
        if (strcmp(core_docs[i].method, method) == 0 && strcmp(core_docs[i].pattern, pattern) == 0)
            doc = &core_docs[i];
    char path[512], m[16], tag[64], opid[600];
    cJSON *params = cJSON_CreateArray();
    openapi_path(pattern, path, sizeof(path), params);
    lower(method, m, sizeof(m));
    cJSON *item = cJSON_GetObjectItemCaseSensitive(w->paths, path);
    if (!item)
        item = cJSON_AddObjectToObject(w->paths, path);
    if (cJSON_GetObjectItemCaseSensitive(item, m)) {
        cJSON_Delete(params);
        return;
    }
    cJSON *op = cJSON_AddObjectToObject(item, m);
    if (doc && doc->tag)
        snprintf(tag, sizeof(tag), "%s", doc->tag);
    else
        default_tag(pattern, tag, sizeof(tag));
    char summary[600];
    if (doc && doc->summary)
        snprintf(summary, sizeof(summary), "%s", doc->summary);
    else
        snprintf(summary, sizeof(summary), "%s %s", method, path);
    cJSON_AddStringToObject(op, "summary", summary);
    size_t o = 0;
    o += (size_t)snprintf(opid, sizeof(opid), "%s", m);
    for (const char *p = path; *p && o + 1 < sizeof(opid); p++)
        opid[o++] = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_';
    opid[o] = '\0';
    cJSON_AddStringToObject(op, "operationId", opid);
    cJSON *tags = cJSON_AddArrayToObject(op, "tags");
    cJSON_AddItemToArray(tags, cJSON_CreateString(tag));
    if (cJSON_GetArraySize(params) > 0)
        cJSON_AddItemToObject(op, "parameters", params);
    else
        cJSON_Delete(params);
    const char *auth = doc && doc->auth ? doc->auth : NULL;
    if (auth)
        cJSON_AddStringToObject(op, "x-execd-auth", auth);
    if (auth && strcmp(auth, "public") != 0) {
        cJSON *sec = cJSON_AddArrayToObject(op, "security");
        cJSON *b = cJSON_CreateObject();
        cJSON_AddArrayToObject(b, "bearerAuth");
        cJSON_AddItemToArray(sec, b);
        cJSON *c = cJSON_CreateObject();
        cJSON_AddArrayToObject(c, "cookieAuth");
        cJSON_AddItemToArray(sec, c);
    }
    if (doc && doc->request) {
        cJSON *rb = cJSON_AddObjectToObject(op, "requestBody");
        /* A cancel may come without a body. */
        cJSON_AddBoolToObject(rb, "required", strcmp(doc->request, "CancelRequest") != 0);
        cJSON *content = json_content(ref(doc->request));
        if (strcmp(doc->request, "LoginRequest") == 0)
            cJSON_AddItemToObject(
                cJSON_AddObjectToObject(content, "application/x-www-form-urlencoded"), "schema",
                ref(doc->request));
        cJSON_AddItemToObject(rb, "content", content);
    }
    cJSON *responses = cJSON_AddObjectToObject(op, "responses");
    add_response(responses, "200", "Success", doc ? doc->response : NULL);
    if (doc && doc->request)
        add_response(responses, "422", "Validation error", "ValidationError");
    if (auth && strcmp(auth, "public") != 0)
        add_response(responses, "401", "Not authenticated", "Error");
    if (auth && (strcmp(auth, "admin") == 0 || strcmp(auth, "owner/admin") == 0))
        add_response(responses, "403", "Forbidden", "Error");
    if (doc && strchr(pattern, '{'))
        add_response(responses, "404", "Not found", "Error");
    add_response(responses, "429", "Rate limit exceeded", "RateLimited");
}

static cJSON *prop(cJSON *props, const char *name, const char *type)
{
    cJSON *p = cJSON_AddObjectToObject(props, name);
    cJSON_AddStringToObject(p, "type", type);
    return p;
}

static cJSON *schema_obj(cJSON *schemas, const char *name, const char *const *required, size_t nreq)
{
    cJSON *s = cJSON_AddObjectToObject(schemas, name);
    cJSON_AddStringToObject(s, "type", "object");
    if (nreq) {
        cJSON *r = cJSON_AddArrayToObject(s, "required");
        for (size_t i = 0; i < nreq; i++)
            cJSON_AddItemToArray(r, cJSON_CreateString(required[i]));
    }
    return cJSON_AddObjectToObject(s, "properties");
}

static cJSON *nullable(cJSON *p)
{
    cJSON_AddBoolToObject(p, "nullable", 1);
    return p;
}

/* The executions API (api_executions.c). */
static void add_execution_schemas(cJSON *schemas)
{
    static const char *const ex_req[] = {"script"};
    cJSON *p = schema_obj(schemas, "ExecuteRequest", ex_req, 1);
    cJSON_AddNumberToObject(prop(p, "script", "string"), "maxLength", 50000);
    cJSON_AddStringToObject(prop(p, "lang", "string"), "default", "python");
    cJSON_AddStringToObject(prop(p, "lang_version", "string"), "default", "3.11");
    static const char *const ex_resp[] = {"execution_id", "status"};
    p = schema_obj(schemas, "ExecuteResponse", ex_resp, 2);
    prop(p, "execution_id", "string");
    prop(p, "status", "string");
    static const char *const ru[] = {"execution_time_wall_seconds", "cpu_time_jiffies",
                                     "clk_tck_hertz", "peak_memory_kb"};
    p = schema_obj(schemas, "ResourceUsage", ru, 4);
    nullable(prop(p, ru[0], "number"));
    for (size_t i = 1; i < 4; i++)
        nullable(prop(p, ru[i], "integer"));
    static const char *const res[] = {"execution_id", "status",       "stdout",         "stderr",
                                      "lang",         "lang_version", "resource_usage", "exit_code",
                                      "error_type",   "priority"};
    p = schema_obj(schemas, "ExecutionResult", res, 10);
    prop(p, "execution_id", "string");
    cJSON *st = prop(p, "status", "string");
    cJSON *en = cJSON_AddArrayToObject(st, "enum");
    static const char *const states[] = {"queued", "scheduled", "running",  "completed",
                                         "failed", "timeout",   "cancelled"};
    for (size_t i = 0; i < 7; i++)
        cJSON_AddItemToArray(en, cJSON_CreateString(states[i]));
    nullable(prop(p, "stdout", "string"));
    nullable(prop(p, "stderr", "string"));
    prop(p, "lang", "string");
    prop(p, "lang_version", "string");
    cJSON *u = cJSON_AddObjectToObject(p, "resource_usage");
    cJSON *all = cJSON_AddArrayToObject(u, "allOf");
    cJSON_AddItemToArray(all, ref("ResourceUsage"));
    nullable(u);
    nullable(prop(p, "exit_code", "integer"));
    nullable(prop(p, "error_type", "string"));
    nullable(prop(p, "priority", "integer"));
    static const char *const el[] = {"executions", "total", "limit", "skip", "has_more"};
    p = schema_obj(schemas, "ExecutionList", el, 5);
    cJSON_AddItemToObject(prop(p, "executions", "array"), "items", ref("ExecutionResult"));
    prop(p, "total", "integer");
    prop(p, "limit", "integer");
    prop(p, "skip", "integer");
    prop(p, "has_more", "boolean");
    static const char *const ev[] = {"event_id",     "event_type",     "event_version", "timestamp",
                                     "aggregate_id", "correlation_id", "causation_id",  "metadata"};
    p = schema_obj(schemas, "Event", ev, 8);
    for (size_t i = 0; i < 8; i++)
        prop(p, ev[i], i == 2 ? "integer" : i == 7 ? "object" : "string");
    cJSON *list = cJSON_AddObjectToObject(schemas, "EventList");
    cJSON_AddStringToObject(list, "type", "array");
    cJSON_AddItemToObject(list, "items", ref("Event"));
    p = schema_obj(schemas, "CancelRequest", NULL, 0);
    cJSON_AddNumberToObject(prop(p, "reason", "string"), "maxLength", 1000);
    static const char *const cr[] = {"execution_id", "status", "message", "event_id"};
    p = schema_obj(schemas, "CancelResponse", cr, 4);
    prop(p, "execution_id", "string");
    en = cJSON_AddArrayToObject(prop(p, "status", "string"), "enum");
    cJSON_AddItemToArray(en, cJSON_CreateString("cancellation_requested"));
    cJSON_AddItemToArray(en, cJSON_CreateString("already_cancelled"));
    prop(p, "message", "string");
    nullable(prop(p, "event_id", "string"));
    static const char *const del[] = {"message", "execution_id"};
    p = schema_obj(schemas, "DeleteExecutionResponse", del, 2);
    prop(p, "message", "string");
    prop(p, "execution_id", "string");
    static const char *const exs[] = {"scripts"};
    p = schema_obj(schemas, "ExampleScripts", exs, 1);
    cJSON_AddStringToObject(
        cJSON_AddObjectToObject(prop(p, "scripts", "object"), "additionalProperties"), "type",
        "string");
    static const char *const kl[] = {"cpu_limit",      "memory_limit",      "cpu_request",
                                     "memory_request", "execution_timeout", "supported_runtimes"};
    p = schema_obj(schemas, "K8sLimits", kl, 6);
    for (size_t i = 0; i < 4; i++)
        prop(p, kl[i], "string");
    prop(p, "execution_timeout", "integer");
    cJSON *rt =
        cJSON_AddObjectToObject(prop(p, "supported_runtimes", "object"), "additionalProperties");
    cJSON_AddStringToObject(rt, "type", "object");
    cJSON *rtp = cJSON_AddObjectToObject(rt, "properties");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(prop(rtp, "versions", "array"), "items"),
                            "type", "string");
    prop(rtp, "file_ext", "string");
}

static void add_schemas(cJSON *components)
{
    cJSON *schemas = cJSON_AddObjectToObject(components, "schemas");
    static const char *const reg_req[] = {"username", "email", "password"};
    cJSON *p = schema_obj(schemas, "RegisterRequest", reg_req, 3);
    cJSON_AddNumberToObject(prop(p, "username", "string"), "maxLength", 64);
    cJSON_AddStringToObject(prop(p, "email", "string"), "format", "email");
    cJSON_AddNumberToObject(prop(p, "password", "string"), "minLength", 8);
    cJSON_AddStringToObject(prop(p, "role", "string"), "description", "ignored");
    static const char *const login_req[] = {"username", "password"};
    p = schema_obj(schemas, "LoginRequest", login_req, 2);
    prop(p, "username", "string");
    prop(p, "password", "string");
    static const char *const lr[] = {"message",    "username",     "role",
                                     "csrf_token", "access_token", "token_type"};
    p = schema_obj(schemas, "LoginResponse", lr, 6);
    for (size_t i = 0; i < 6; i++)
        prop(p, lr[i], "string");
    static const char *const ur[] = {"user_id",
                                     "username",
                                     "email",
                                     "role",
                                     "is_active",
                                     "is_superuser",
                                     "created_at",
                                     "updated_at",
                                     "bypass_rate_limit",
                                     "global_multiplier",
                                     "has_custom_limits"};
    p = schema_obj(schemas, "UserResponse", ur, 11);
    for (size_t i = 0; i < 4; i++)
        prop(p, ur[i], "string");
    prop(p, "is_active", "boolean");
    prop(p, "is_superuser", "boolean");
    cJSON_AddStringToObject(prop(p, "created_at", "string"), "format", "date-time");
    cJSON_AddStringToObject(prop(p, "updated_at", "string"), "format", "date-time");
    prop(p, "bypass_rate_limit", "boolean");
    prop(p, "global_multiplier", "number");
    prop(p, "has_custom_limits", "boolean");
    static const char *const ul[] = {"users", "total", "offset", "limit"};
    p = schema_obj(schemas, "UserList", ul, 4);
    cJSON_AddItemToObject(prop(p, "users", "array"), "items", ref("UserResponse"));
    prop(p, "total", "integer");
    prop(p, "offset", "integer");
    prop(p, "limit", "integer");
    static const char *const msg[] = {"message"};
    p = schema_obj(schemas, "Message", msg, 1);
    prop(p, "message", "string");
    static const char *const err[] = {"detail"};
    p = schema_obj(schemas, "Error", err, 1);
    prop(p, "detail", "string");
    prop(p, "type", "string");
    p = schema_obj(schemas, "ValidationError", err, 1);
    cJSON *items = cJSON_AddObjectToObject(prop(p, "detail", "array"), "items");
    cJSON_AddStringToObject(items, "type", "object");
    cJSON *ip = cJSON_AddObjectToObject(items, "properties");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(prop(ip, "loc", "array"), "items"), "type",
                            "string");
    prop(ip, "msg", "string");
    prop(ip, "type", "string");
    static const char *const rl[] = {"detail", "retry_after", "reset_at"};
    p = schema_obj(schemas, "RateLimited", rl, 3);
    prop(p, "detail", "string");
    prop(p, "retry_after", "integer");
    cJSON_AddStringToObject(prop(p, "reset_at", "string"), "format", "date-time");
    add_execution_schemas(schemas);
    p = schema_obj(schemas, "OpenAPI", NULL, 0);
    prop(p, "openapi", "string");

    cJSON *sec = cJSON_AddObjectToObject(components, "securitySchemes");
    cJSON *b = cJSON_AddObjectToObject(sec, "bearerAuth");
    cJSON_AddStringToObject(b, "type", "http");
    cJSON_AddStringToObject(b, "scheme", "bearer");
    cJSON_AddStringToObject(b, "bearerFormat", "JWT");
    cJSON *c = cJSON_AddObjectToObject(sec, "cookieAuth");
    cJSON_AddStringToObject(c, "type", "apiKey");
    cJSON_AddStringToObject(c, "in", "cookie");
    cJSON_AddStringToObject(c, "name", "access_token");
}

cJSON *api_openapi_document(const struct api *api, const struct http_server *srv)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "openapi", "3.0.3");
    cJSON *info = cJSON_AddObjectToObject(doc, "info");
    cJSON_AddStringToObject(info, "title", "execd API");
    cJSON_AddStringToObject(info, "version", EXECD_VERSION);
    cJSON_AddStringToObject(info, "description",
                            "Compatible with the Integr8sCode v1 API, plus Bearer tokens. Cookie "
                            "sessions send X-CSRF-Token on state-changing requests.");
    struct walk w = {.api = api, .paths = cJSON_AddObjectToObject(doc, "paths")};
    http_routes_each(srv, add_operation, &w);
    add_schemas(cJSON_AddObjectToObject(doc, "components"));
    return doc;
}

static void on_openapi(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    cJSON *doc = api_openapi_document(api, http_req_server(req));
    if (!doc) {
        http_respond_error(req, 500, "Infrastructure", "out of memory");
        return;
    }
    http_respond_json(req, 200, doc);
    cJSON_Delete(doc);
}

static const struct api_route openapi_routes[] = {
    {"GET", "/api/v1/openapi.json", on_openapi, "This OpenAPI 3 document", "operations", "public",
     NULL, "OpenAPI"},
};

int api_openapi_init(struct api *api)
{
    return api_routes_add(api, openapi_routes, 1);
}
