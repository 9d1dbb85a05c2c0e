/*
 * node_api.c — the Kubernetes REST subset the node serves.
 *
 *   /api/v1/namespaces/{ns}/configmaps[/{name}]             POST GET DELETE
 *   /api/v1/namespaces/{ns}/pods                             POST GET(list|watch)
 * DELETE(collection) /api/v1/namespaces/{ns}/pods/{name}[/status]             GET DELETE
 *   /api/v1/namespaces/{ns}/pods/{name}/log                  GET (container, limitBytes, tailLines)
 *   /api/v1/pods                                             GET(list|watch) across namespaces
 *   /apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies[/{name}]  POST GET DELETE
 *   /api/v1/health/live, /api/v1/health/ready, /version, /healthz, /readyz, /livez
 *
 * Errors are Status objects with the apiserver's reasons and messages
 * (NotFound, AlreadyExists, Invalid with causes, BadRequest, Unauthorized,
 * Expired).  With EXECD_NODE_TOKEN set every API call needs
 * "Authorization: Bearer <token>"; health and /version stay open.
 */
#include "node.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "runtimes.h"
#include "util.h"

#define BODY_LIMIT (3u << 20)
#define WATCH_DEFAULT_S 1800
#define WATCH_MAX_S 3600
#define LOG_READ_MAX (64LL << 20)

static const char *const resource_names[] = {"pods", "configmaps", "networkpolicies"};
static const char *const kind_names[] = {"Pod", "ConfigMap", "NetworkPolicy"};

static int64_t start_mono;

/* ------------------------------------------------------------------ status */

static void send_status(struct http_req *req, int code, const char *reason, const char *message,
                        cJSON *details)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "kind", "Status");
    cJSON_AddStringToObject(s, "apiVersion", "v1");
    cJSON_AddObjectToObject(s, "metadata");
    cJSON_AddStringToObject(s, "status", "Failure");
    cJSON_AddStringToObject(s, "message", message);
    cJSON_AddStringToObject(s, "reason", reason);
    if (details)
        cJSON_AddItemToObject(s, "details", details);
    cJSON_AddNumberToObject(s, "code", code);
    http_respond_json(req, code, s);
    cJSON_Delete(s);
}

static cJSON *details_for(enum kind kind, const char *name)
{
    cJSON *d = cJSON_CreateObject();
    if (name)
        cJSON_AddStringToObject(d, "name", name);
    if (kind == KIND_NETWORKPOLICY)
        cJSON_AddStringToObject(d, "group", "networking.k8s.io");
    cJSON_AddStringToObject(d, "kind", resource_names[kind]);
    return d;
}

static void not_found(struct http_req *req, enum kind kind, const char *name)
{
    char msg[400];
    bfmt(msg, sizeof(msg), "%s%s \"%s\" not found", resource_names[kind],
         kind == KIND_NETWORKPOLICY ? ".networking.k8s.io" : "", name);
    send_status(req, 404, "NotFound", msg, details_for(kind, name));
}

static void bad_request(struct http_req *req, const char *msg)
{
    send_status(req, 400, "BadRequest", msg, NULL);
}

static bool authorized(struct node_api *api, struct http_req *req)
{
    const char *token = api->cfg->node_token;
    if (!token || !token[0])
        return true;
    const char *h = http_header(req, "Authorization");
    bool ok = false;
    if (h && strncmp(h, "Bearer ", 7) == 0) {
        const char *got = h + 7;
        size_t a = strlen(got), b = strlen(token);
        unsigned char diff = (unsigned char)(a != b);
        for (size_t i = 0; i < b; i++)
            diff |= (unsigned char)(got[i < a ? i : 0] ^ token[i]);
        ok = diff == 0;
    }
    if (!ok)
        send_status(req, 401, "Unauthorized", "Unauthorized", NULL);
    return ok;
}

static bool ns_ok(struct http_req *req, const char *ns)
{
    if (ns && dns1123_label(ns))
        return true;
    char msg[200];
    bfmt(msg, sizeof(msg), "invalid namespace \"%.64s\": a lowercase RFC 1123 label is required",
         ns ? ns : "");
    bad_request(req, msg);
    return false;
}

static void respond_raw_json(struct http_req *req, int code, char *json)
{
    if (!json) {
        send_status(req, 500, "InternalError", "out of memory", NULL);
        return;
    }
    http_respond(req, code, "application/json", json, strlen(json));
    free(json);
}

/* ----------------------------------------------------------------- create */

static void handle_create(struct node_api *api, struct http_req *req, enum kind kind)
{
    if (!authorized(api, req))
        return;
    const char *ns = http_param(req, "ns");
    if (!ns_ok(req, ns))
        return;
    const char *body;
    size_t len;
    int rc = http_body(req, BODY_LIMIT, &body, &len);
    if (rc) {
        if (!http_responded(req))
            send_status(req, rc == -E2BIG ? 413 : 400,
                        rc == -E2BIG ? "RequestEntityTooLarge" : "BadRequest",
                        "cannot read the request body", NULL);
        return;
    }
    cJSON *obj = NULL;
    size_t err_at;
    if (len)
        json_parse_bounded(body, len, JSON_MAX_DEPTH, &obj, &err_at);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        bad_request(req, "the object provided is unrecognized: a JSON object is required");
        return;
    }
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(obj, "kind");
    if (cJSON_IsString(k) && strcmp(k->valuestring, kind_names[kind]) != 0) {
        char msg[200];
        bfmt(msg, sizeof(msg), "the kind \"%.64s\" does not match the endpoint (%s)",
             k->valuestring, kind_names[kind]);
        cJSON_Delete(obj);
        bad_request(req, msg);
        return;
    }
    cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const cJSON *bns = cJSON_GetObjectItemCaseSensitive(md, "namespace");
    if (cJSON_IsString(bns) && bns->valuestring[0] && strcmp(bns->valuestring, ns) != 0) {
        cJSON_Delete(obj);
        bad_request(req, "the namespace of the provided object does not match the namespace "
                         "sent on the request");
        return;
    }
    cJSON *causes = cJSON_CreateArray();
    if (kind == KIND_POD)
        validate_pod(obj, causes);
    else if (kind == KIND_CONFIGMAP)
        validate_configmap(obj, causes);
    else
        validate_networkpolicy(obj, causes);
    md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(md, "name");
    const char *name = cJSON_IsString(nm) ? nm->valuestring : "";
    if (cJSON_GetArraySize(causes) > 0) {
        struct strbuf msg = {0};
        int n = cJSON_GetArraySize(causes);
        sb_printf(&msg, "%s \"%s\" is invalid: %s", kind_names[kind], name, n > 1 ? "[" : "");
        const cJSON *c;
        int i = 0;
        cJSON_ArrayForEach(c, causes)
        {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "field");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "message");
            sb_printf(&msg, "%s%s: %s", i++ ? ", " : "", f->valuestring, m->valuestring);
        }
        if (n > 1)
            sb_puts(&msg, "]");
        cJSON *d = details_for(kind, name);
        cJSON_DeleteItemFromObjectCaseSensitive(d, "kind");
        cJSON_AddStringToObject(d, "kind", kind_names[kind]);
        cJSON_AddItemToObject(d, "causes", causes);
        send_status(req, 422, "Invalid", msg.s ? msg.s : "invalid", d);
        sb_release(&msg);
        cJSON_Delete(obj);
        return;
    }
    cJSON_Delete(causes);
    char nbuf[256];
    bfmt(nbuf, sizeof(nbuf), "%s", name);
    char *json = NULL;
    rc = node_store_create(api->st, kind, ns, obj, &json);
    if (rc == -EEXIST) {
        cJSON_Delete(obj);
        char msg[400];
        bfmt(msg, sizeof(msg), "%s%s \"%s\" already exists", resource_names[kind],
             kind == KIND_NETWORKPOLICY ? ".networking.k8s.io" : "", nbuf);
        send_status(req, 409, "AlreadyExists", msg, details_for(kind, nbuf));
        return;
    }
    if (rc) {
        cJSON_Delete(obj);
        send_status(req, 500, "InternalError", "cannot store the object", NULL);
        return;
    }
    log_debug(NODE_ROLE, "object created", "kind=%s name=%s/%s", kind_names[kind], ns, nbuf);
    respond_raw_json(req, 201, json);
}

/* ------------------------------------------------------------- get/delete */

static void handle_get(struct node_api *api, struct http_req *req, enum kind kind)
{
    if (!authorized(api, req))
        return;
    const char *ns = http_param(req, "ns");
    const char *name = http_param(req, "name");
    if (!ns_ok(req, ns))
        return;
    char *json = NULL;
    if (node_store_get(api->st, kind, ns, name, &json) != 0) {
        not_found(req, kind, name);
        return;
    }
    respond_raw_json(req, 200, json);
}

static void handle_delete(struct node_api *api, struct http_req *req, enum kind kind)
{
    if (!authorized(api, req))
        return;
    const char *ns = http_param(req, "ns");
    const char *name = http_param(req, "name");
    if (!ns_ok(req, ns))
        return;
    const char *body;
    size_t len;
    (void)http_body(req, BODY_LIMIT, &body, &len); /* DeleteOptions: grace is always 0 */
    if (http_responded(req))
        return;
    char *json = NULL;
    if (node_store_delete(api->st, kind, ns, name, &json) != 0) {
        not_found(req, kind, name);
        return;
    }
    if (kind == KIND_POD) {
        respond_raw_json(req, 200, json);
        return;
    }
    cJSON *obj = cJSON_Parse(json);
    free(json);
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "kind", "Status");
    cJSON_AddStringToObject(s, "apiVersion", "v1");
    cJSON_AddObjectToObject(s, "metadata");
    cJSON_AddStringToObject(s, "status", "Success");
    cJSON *d = details_for(kind, name);
    const cJSON *uid =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "uid");
    if (cJSON_IsString(uid))
        cJSON_AddStringToObject(d, "uid", uid->valuestring);
    cJSON_AddItemToObject(s, "details", d);
    http_respond_json(req, 200, s);
    cJSON_Delete(s);
    cJSON_Delete(obj);
}

/* ------------------------------------------------------------- list/watch */

static bool query_bool(struct http_req *req, const char *name)
{
    char v[16];
    return http_query(req, name, 0, v, sizeof(v)) == 0 &&
           (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Parses both selectors; on error the 400 has been sent. */
static bool selectors(struct http_req *req, struct selector *labels, struct selector *fields,
                      bool *has_labels, bool *has_fields)
{
    char text[4200], err[256];
    *has_labels = *has_fields = false;
    int rc = http_query(req, "labelSelector", 0, text, sizeof(text));
    if (rc == -E2BIG) {
        bad_request(req, "labelSelector is too long");
        return false;
    }
    if (rc == 0) {
        if (selector_parse(text, labels, err, sizeof(err)) != 0) {
            char msg[400];
            bfmt(msg, sizeof(msg), "unable to parse requirement: %s", err);
            bad_request(req, msg);
            return false;
        }
        *has_labels = true;
    }
    rc = http_query(req, "fieldSelector", 0, text, sizeof(text));
    if (rc == 0) {
        if (field_selector_parse(text, fields, err, sizeof(err)) != 0) {
            bad_request(req, err);
            return false;
        }
        *has_fields = true;
    } else if (rc == -E2BIG) {
        bad_request(req, "fieldSelector is too long");
        return false;
    }
    return true;
}

static int stream_write(void *arg, const char *data, size_t len)
{
    return http_stream_write(arg, data, len);
}

static void list_or_watch(struct node_api *api, struct http_req *req, enum kind kind,
                          const char *ns, bool del)
{
    struct selector *labels = calloc(2, sizeof(*labels));
    if (!labels) {
        send_status(req, 500, "InternalError", "out of memory", NULL);
        return;
    }
    struct selector *fields = labels + 1;
    bool hl, hf;
    if (!selectors(req, labels, fields, &hl, &hf))
        goto out;
    if (!del && kind == KIND_POD && query_bool(req, "watch")) {
        char v[32];
        struct watch_opts w = {.ns = ns,
                               .labels = hl ? labels : NULL,
                               .fields = hf ? fields : NULL,
                               .bookmarks = query_bool(req, "allowWatchBookmarks"),
                               .srv = api->srv,
                               .write = stream_write,
                               .arg = req};
        if (http_query(req, "resourceVersion", 0, v, sizeof(v)) == 0 && v[0]) {
            char *end;
            long long rv = strtoll(v, &end, 10);
            if (*end || rv < 0) {
                bad_request(req, "invalid resourceVersion: must be a non-negative integer");
                goto out;
            }
            w.has_rv = true;
            w.rv = rv;
        }
        long long timeout = WATCH_DEFAULT_S;
        if (http_query(req, "timeoutSeconds", 0, v, sizeof(v)) == 0 && v[0]) {
            char *end;
            timeout = strtoll(v, &end, 10);
            if (*end || timeout < 0) {
                bad_request(req, "invalid timeoutSeconds");
                goto out;
            }
            if (timeout == 0 || timeout > WATCH_MAX_S)
                timeout = timeout == 0 ? WATCH_DEFAULT_S : WATCH_MAX_S;
        }
        w.end_mono = now_mono_ms() + timeout * 1000;
        http_add_header(req, "Cache-Control", "no-cache, private");
        if (http_stream_begin(req, 200, "application/json") != 0)
            goto out;
        (void)node_store_watch(api->st, &w);
        goto out;
    }
    char *json = NULL;
    if (node_store_list(api->st, kind, ns, hl ? labels : NULL, hf ? fields : NULL, del, &json) !=
        0) {
        send_status(req, 500, "InternalError", "out of memory", NULL);
        goto out;
    }
    respond_raw_json(req, 200, json);
out:
    free(labels);
}

static void handle_list(struct node_api *api, struct http_req *req, enum kind kind, bool del)
{
    if (!authorized(api, req))
        return;
    const char *ns = http_param(req, "ns");
    if (ns && !ns_ok(req, ns))
        return;
    if (del) {
        const char *body;
        size_t len;
        (void)http_body(req, BODY_LIMIT, &body, &len);
        if (http_responded(req))
            return;
    }
    list_or_watch(api, req, kind, ns, del);
}

/* -------------------------------------------------------------------- log */

static void handle_log(struct http_req *req, void *ctx)
{
    struct node_api *api = ctx;
    if (!authorized(api, req))
        return;
    const char *ns = http_param(req, "ns");
    const char *name = http_param(req, "name");
    if (!ns_ok(req, ns))
        return;
    char container[128] = "", v[32];
    if (http_query(req, "container", 0, container, sizeof(container)) == -E2BIG) {
        bad_request(req, "container name too long");
        return;
    }
    if (query_bool(req, "previous")) {
        char msg[300];
        bfmt(msg, sizeof(msg), "previous terminated container in pod \"%s\" not found", name);
        bad_request(req, msg);
        return;
    }
    long long limit = -1, tail = -1;
    if (http_query(req, "limitBytes", 0, v, sizeof(v)) == 0) {
        char *end;
        limit = strtoll(v, &end, 10);
        if (*end || limit < 1) {
            send_status(req, 422, "Invalid", "limitBytes: Invalid value: must be greater than 0",
                        NULL);
            return;
        }
    }
    if (http_query(req, "tailLines", 0, v, sizeof(v)) == 0) {
        char *end;
        tail = strtoll(v, &end, 10);
        if (*end || tail < 0) {
            send_status(req, 422, "Invalid", "tailLines: Invalid value: must be >= 0", NULL);
            return;
        }
    }
    char path[1100], err[300];
    int rc =
        node_store_log_path(api->st, ns, name, container, path, sizeof(path), err, sizeof(err));
    if (rc == -ENOENT) {
        not_found(req, KIND_POD, name);
        return;
    }
    if (rc) {
        bad_request(req, err);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        http_respond(req, 200, "text/plain", "", 0);
        return;
    }
    off_t size = st.st_size > LOG_READ_MAX ? LOG_READ_MAX : st.st_size;
    char *buf = malloc((size_t)size + 1);
    ssize_t n = buf ? pread(fd, buf, (size_t)size, 0) : -1;
    close(fd);
    if (n < 0) {
        free(buf);
        send_status(req, 500, "InternalError", "cannot read the log", NULL);
        return;
    }
    size_t start = 0, end = (size_t)n;
    if (tail >= 0) {
        long long lines = 0;
        size_t i = end;
        if (i > 0 && buf[i - 1] == '\n')
            i--;
        while (i > 0) {
            if (buf[i - 1] == '\n' && ++lines == tail)
                break;
            i--;
        }
        start = tail == 0 ? end : i;
    }
    if (limit >= 0 && (long long)(end - start) > limit)
        end = start + (size_t)limit;
    http_respond(req, 200, "text/plain", buf + start, end - start);
    free(buf);
}

/* ----------------------------------------------------------------- health */

void node_api_health(struct node_api *api, cJSON *out)
{
    const struct sandbox_caps *c = sandbox_caps(api->sb);
    int running = 0, pending = 0, total = 0;
    node_store_counts(api->st, &running, &pending, &total);
    cJSON *n = cJSON_AddObjectToObject(out, "node");
    cJSON_AddStringToObject(n, "status", "ok");
    cJSON *l = cJSON_AddObjectToObject(n, "limits");
    cJSON_AddBoolToObject(l, "user_namespaces", c->userns);
    cJSON_AddBoolToObject(l, "seccomp", c->seccomp);
    cJSON_AddBoolToObject(l, "cgroup_memory", c->cg_memory);
    cJSON_AddBoolToObject(l, "cgroup_pids", c->cg_pids);
    cJSON_AddBoolToObject(l, "cgroup_cpu", c->cg_cpu);
    cJSON_AddNumberToObject(l, "cgroup_version", c->cg_version);
    cJSON_AddBoolToObject(l, "rlimits", true);
    cJSON_AddBoolToObject(l, "network_isolated", c->userns);
    cJSON_AddStringToObject(l, "memory_fallback",
                            c->cg_memory ? "none needed" : "RLIMIT_AS (4x the limit, >= 1 GiB)");
    cJSON_AddStringToObject(l, "pids_fallback",
                            c->cg_pids ? "none needed" : "RLIMIT_NPROC (shared uid 65534)");
    if (c->detail[0])
        cJSON_AddStringToObject(l, "detail", c->detail);
    cJSON_AddNumberToObject(n, "pids_max", (double)api->cfg->node_pids_max);
    cJSON_AddNumberToObject(n, "slots", config_node_slots(api->cfg));
    cJSON_AddNumberToObject(n, "running", running);
    cJSON_AddNumberToObject(n, "pending", pending);
    cJSON_AddNumberToObject(n, "pods", total);
    cJSON_AddNumberToObject(n, "resource_version", (double)node_store_rv(api->st));
    cJSON *imgs = cJSON_AddArrayToObject(n, "images");
    for (const struct runtime *r = runtime_table; r->lang; r++)
        for (const struct runtime_version *v = r->versions; v->version; v++)
            if (sandbox_binary_ok(v->binary))
                cJSON_AddItemToArray(imgs, cJSON_CreateString(v->image));
}

static void handle_ready(struct http_req *req, void *ctx)
{
    struct node_api *api = ctx;
    cJSON *o = cJSON_CreateObject();
    bool stopping = http_server_stopping(api->srv);
    cJSON_AddStringToObject(o, "status", stopping ? "fail" : "ok");
    cJSON *checks = cJSON_AddObjectToObject(o, "checks");
    node_api_health(api, checks);
    http_respond_json(req, stopping ? 503 : 200, o);
    cJSON_Delete(o);
}

static void handle_live(struct http_req *req, void *ctx)
{
    (void)ctx;
    cJSON *o = cJSON_CreateObject();
    char ts[TS_LEN];
    ts_format_us(now_wall_us(), ts);
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "uptime_seconds", (double)(now_mono_ms() - start_mono) / 1000.0);
    cJSON_AddStringToObject(o, "timestamp", ts);
    http_respond_json(req, 200, o);
    cJSON_Delete(o);
}

static void handle_healthz(struct http_req *req, void *ctx)
{
    (void)ctx;
    http_respond(req, 200, "text/plain", "ok", 2);
}

static void handle_version(struct http_req *req, void *ctx)
{
    (void)ctx;
    static const char v[] =
        "{\"major\":\"1\",\"minor\":\"30\",\"gitVersion\":\"v1.30.0-execd-node\","
        "\"platform\":\"linux/amd64\"}";
    http_respond(req, 200, "application/json", v, sizeof(v) - 1);
}

/* ------------------------------------------------------------------ glue */

#define KIND_HANDLERS(suffix, kind)                                                                \
    static void create_##suffix(struct http_req *req, void *ctx)                                   \
    {                                                                                              \
        handle_create(ctx, req, kind);                                                             \
    }                                                                                              \
    static void get_##suffix(struct http_req *req, void *ctx)                                      \
    {                                                                                              \
        handle_get(ctx, req, kind);                                                                \
    }                                                                                              \
    static void delete_##suffix(struct http_req *req, void *ctx)                                   \
    {                                                                                              \
        handle_delete(ctx, req, kind);                                                             \
    }                                                                                              \
    static void list_##suffix(struct http_req *req, void *ctx)                                     \
    {                                                                                              \
        handle_list(ctx, req, kind, false);                                                        \
    }                                                                                              \
    static void delcol_##suffix(struct http_req *req, void *ctx)                                   \
    {                                                                                              \
        handle_list(ctx, req, kind, true);                                                         \
    }

KIND_HANDLERS(pod, KIND_POD)
KIND_HANDLERS(cm, KIND_CONFIGMAP)
KIND_HANDLERS(np, KIND_NETWORKPOLICY)

int node_api_routes(struct node_api *api, struct http_server *srv)
{
    start_mono = now_mono_ms();
    api->srv = srv;
    static const char pods[] = "/api/v1/namespaces/{ns}/pods";
    static const char pod[] = "/api/v1/namespaces/{ns}/pods/{name}";
    static const char cms[] = "/api/v1/namespaces/{ns}/configmaps";
    static const char cm[] = "/api/v1/namespaces/{ns}/configmaps/{name}";
    static const char nps[] = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies";
    static const char np[] = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}";
    struct {
        const char *method, *pattern;
        http_fn fn;
    } routes[] = {
        {"GET", "/api/v1/health/live", handle_live},
        {"GET", "/api/v1/health/ready", handle_ready},
        {"GET", "/healthz", handle_healthz},
        {"GET", "/livez", handle_healthz},
        {"GET", "/readyz", handle_healthz},
        {"GET", "/version", handle_version},
        {"POST", pods, create_pod},
        {"GET", pods, list_pod},
        {"DELETE", pods, delcol_pod},
        {"GET", pod, get_pod},
        {"DELETE", pod, delete_pod},
        {"GET", "/api/v1/namespaces/{ns}/pods/{name}/status", get_pod},
        {"GET", "/api/v1/namespaces/{ns}/pods/{name}/log", handle_log},
        {"GET", "/api/v1/pods", list_pod},
        {"POST", cms, create_cm},
        {"GET", cms, list_cm},
        {"DELETE", cms, delcol_cm},
        {"GET", cm, get_cm},
        {"DELETE", cm, delete_cm},
        {"GET", "/api/v1/configmaps", list_cm},
        {"POST", nps, create_np},
        {"GET", nps, list_np},
        {"DELETE", nps, delcol_np},
        {"GET", np, get_np},
        {"DELETE", np, delete_np},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = http_route(srv, routes[i].method, routes[i].pattern, routes[i].fn, api);
        if (rc)
            return rc;
    }
    return 0;
}
