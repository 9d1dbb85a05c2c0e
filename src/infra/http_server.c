/*
 * http_server.c — the HTTP port on civetweb.
 *
 * civetweb gives us one thread per connection and one catch-all request
 * handler; routing, parameters, body limits, the error shape and the headers
 * every response carries are ours.  A `struct http_req` lives on the
 * handler's stack; everything it owns is released when the handler returns.
 * Streams use chunked transfer encoding, so keep-alive stays correct.
 */
#include "http.h"

#include <cjson/cJSON.h>
#include <civetweb.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define MAX_SEGS 16
#define MAX_PARAMS 8
#define MAX_EXTRA 24

struct route {
    char *method;
    char *pattern;
    char *segs[MAX_SEGS];
    int nsegs;
    int rest; /* last segment is {*name}: matches the remainder */
    http_fn fn;
    void *ctx;
    struct route *next;
};

struct http_server {
    char name[32];
    char listen[128];
    int threads;
    int timeout_ms;
    size_t body_limit;
    struct mg_context *ctx;
    struct route *routes, *routes_tail;
    atomic_bool stopping;
    atomic_bool stopped;
    int port;
    struct metrics *metrics;
    struct metric *m_dur;
    http_middleware_fn mw[HTTP_MAX_MIDDLEWARE];
    void *mw_ctx[HTTP_MAX_MIDDLEWARE];
    int nmw;
};

struct http_req {
    struct http_server *srv;
    struct mg_connection *conn;
    const struct mg_request_info *ri;
    char request_id[65];
    const char *pnames[MAX_PARAMS];
    char *pvalues[MAX_PARAMS];
    int nparams;
    char *extra_names[MAX_EXTRA];
    char *extra_values[MAX_EXTRA];
    int nextra;
    char *body;
    size_t body_len;
    int body_read; /* 0 not yet, 1 read, <0 error */
    int status;
    int responded;
    int streaming;
};

static const char *const security_headers[][2] = {
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "strict-origin-when-cross-origin"},
    {"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"},
};

static void route_free(struct route *r)
{
    for (int i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
    free(r->method);
    free(r->pattern);
    free(r);
}

int http_server_new(const struct http_server_opts *opts, struct http_server **out)
{
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    snprintf(srv->name, sizeof(srv->name), "%s", opts->name ? opts->name : "http");
    snprintf(srv->listen, sizeof(srv->listen), "%s", opts->listen);
    srv->threads = opts->threads > 0 ? opts->threads : 16;
    srv->timeout_ms = opts->request_timeout_ms > 0 ? opts->request_timeout_ms : 30000;
    srv->body_limit = opts->body_limit ? opts->body_limit : 10 * 1024 * 1024;
    srv->metrics = opts->metrics;
    if (srv->metrics) {
        char labels[64];
        snprintf(labels, sizeof(labels), "server=\"%s\"", srv->name);
        srv->m_dur =
            metrics_get(srv->metrics, METRIC_HISTOGRAM, "execd_http_request_duration_seconds",
                        "HTTP request handling time", labels);
    }
    *out = srv;
    return 0;
}

int http_route(struct http_server *srv, const char *method, const char *pattern, http_fn fn,
               void *ctx)
{
    if (!pattern || pattern[0] != '/')
        return -EINVAL;
    struct route *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->method = strdup(method);
    r->pattern = strdup(pattern);
    r->fn = fn;
    r->ctx = ctx;
    if (!r->method || !r->pattern)
        goto fail;
    const char *p = pattern;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (r->nsegs == MAX_SEGS || r->rest)
            goto fail;
        r->segs[r->nsegs] = strndup(p, n);
        if (!r->segs[r->nsegs])
            goto fail;
        if (n > 3 && p[0] == '{' && p[1] == '*' && p[n - 1] == '}')
            r->rest = 1;
        r->nsegs++;
        p += n;
    }
    if (srv->routes_tail)
        srv->routes_tail->next = r;
    else
        srv->routes = r;
    srv->routes_tail = r;
    return 0;
fail:
    route_free(r);
    return -EINVAL;
}

int http_use(struct http_server *srv, http_middleware_fn fn, void *ctx)
{
    if (srv->nmw == HTTP_MAX_MIDDLEWARE)
        return -ENOSPC;
    srv->mw[srv->nmw] = fn;
    srv->mw_ctx[srv->nmw] = ctx;
    srv->nmw++;
    return 0;
}

void http_routes_each(const struct http_server *srv,
                      void (*fn)(void *arg, const char *method, const char *pattern), void *arg)
{
    for (const struct route *r = srv->routes; r; r = r->next)
        fn(arg, r->method, r->pattern);
}

/* Splits path into segments in buf; returns the count or -1 when too many. */
static int split_path(const char *path, char *buf, size_t buflen, char *segs[], int max)
{
    snprintf(buf, buflen, "%s", path);
    int n = 0;
    char *p = buf;
    while (*p) {
        while (*p == '/')
            *p++ = '\0';
        if (!*p)
            break;
        if (n == max)
            return -1;
        segs[n++] = p;
        while (*p && *p != '/')
            p++;
    }
    return n;
}

/* 1 when r matches the path segments (filling params), else 0. */
static int route_match(const struct route *r, char *segs[], int nsegs, const char *path,
                       struct http_req *req)
{
    if (r->rest ? nsegs < r->nsegs : nsegs != r->nsegs)
        return 0;
    int np = 0;
    const char *names[MAX_PARAMS];
    const char *vals[MAX_PARAMS];
    for (int i = 0; i < r->nsegs; i++) {
        const char *s = r->segs[i];
        size_t n = strlen(s);
        if (r->rest && i == r->nsegs - 1) {
            if (np == MAX_PARAMS)
                return 0;
            names[np] = s;
            /* The remainder starts at segment i in the original path. */
            const char *q = path;
            for (int k = 0; k <= i; k++) {
                while (*q == '/')
                    q++;
                if (k < i)
                    while (*q && *q != '/')
                        q++;
            }
            vals[np++] = q;
            continue;
        }
        if (s[0] == '{' && s[n - 1] == '}') {
            if (np == MAX_PARAMS)
                return 0;
            names[np] = s;
            vals[np++] = segs[i];
        } else if (strcmp(s, segs[i]) != 0) {
            return 0;
        }
    }
    if (!req)
        return 1;
    for (int i = 0; i < np; i++) {
        req->pnames[i] = names[i];
        req->pvalues[i] = strdup(vals[i]);
    }
    req->nparams = np;
    return 1;
}

static int valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!isalnum((unsigned char)s[n]) && s[n] != '-' && s[n] != '_' && s[n] != '.')
            return 0;
    return n > 0 && n <= 64;
}

static void send_headers(struct http_req *req, int status, const char *ctype, long long len,
                         int chunked)
{
    struct mg_connection *conn = req->conn;
    mg_response_header_start(conn, status);
    if (ctype)
        mg_response_header_add(conn, "Content-Type", ctype, -1);
    if (len >= 0) {
        char n[32];
        snprintf(n, sizeof(n), "%lld", len);
        mg_response_header_add(conn, "Content-Length", n, -1);
    }
    if (chunked)
        mg_response_header_add(conn, "Transfer-Encoding", "chunked", -1);
    for (size_t i = 0; i < sizeof(security_headers) / sizeof(security_headers[0]); i++)
        mg_response_header_add(conn, security_headers[i][0], security_headers[i][1], -1);
    if (http_is_tls(req))
        mg_response_header_add(conn, "Strict-Transport-Security",
                               "max-age=31536000; includeSubDomains", -1);
    mg_response_header_add(conn, "X-Request-Id", req->request_id, -1);
    for (int i = 0; i < req->nextra; i++)
        mg_response_header_add(conn, req->extra_names[i], req->extra_values[i], -1);
    mg_response_header_send(conn);
    req->status = status;
    req->responded = 1;
}

int http_respond(struct http_req *req, int status, const char *content_type, const void *body,
                 size_t len)
{
    if (req->responded)
        return -EALREADY;
    send_headers(req, status, content_type, (long long)len, 0);
    if (len && strcmp(req->ri->request_method, "HEAD") != 0 && mg_write(req->conn, body, len) <= 0)
        return -EPIPE;
    return 0;
}

int http_respond_json(struct http_req *req, int status, const cJSON *json)
{
    char *s = cJSON_PrintUnformatted(json);
    if (!s)
        return http_respond_error(req, 500, "Infrastructure", "out of memory");
    int rc = http_respond(req, status, "application/json", s, strlen(s));
    cJSON_free(s);
    return rc;
}

int http_respond_error(struct http_req *req, int status, const char *type, const char *detail)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "detail", detail);
    cJSON_AddStringToObject(o, "type", type);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc;
    if (s) {
        rc = http_respond(req, status, "application/json", s, strlen(s));
        cJSON_free(s);
    } else {
        static const char oom[] = "{\"detail\":\"out of memory\",\"type\":\"Infrastructure\"}";
        rc = http_respond(req, 500, "application/json", oom, sizeof(oom) - 1);
    }
    return rc;
}

int http_status_for_errno(int err)
{
    switch (err) {
    case -ENOENT:
        return 404;
    case -EINVAL:
        return 422;
    case -EEXIST:
        return 409;
    case -EACCES:
        return 403;
    case -EPERM:
        return 401;
    case -E2BIG:
        return 413;
    case -EAGAIN:
        return 429;
    case -EBUSY:
        return 423;
    case -ENOTSUP:
        return 400;
    case -ETIMEDOUT:
    case -EIO:
    case -ESHUTDOWN:
        return 503;
    default:
        return 500;
    }
}

bool http_responded(const struct http_req *req)
{
    return req->responded != 0;
}
int http_status(const struct http_req *req)
{
    return req->status;
}

int http_stream_begin(struct http_req *req, int status, const char *content_type)
{
    if (req->responded)
        return -EALREADY;
    send_headers(req, status, content_type, -1, 1);
    req->streaming = 1;
    return 0;
}

int http_stream_write(struct http_req *req, const void *data, size_t len)
{
    if (!req->streaming)
        return -EINVAL;
    if (len == 0)
        return 0;
    if (mg_send_chunk(req->conn, data, (unsigned)len) <= 0)
        return -EPIPE;
    return 0;
}

const char *http_method(const struct http_req *req)
{
    return req->ri->request_method;
}
const char *http_path(const struct http_req *req)
{
    return req->ri->local_uri;
}
const char *http_request_id(const struct http_req *req)
{
    return req->request_id;
}
const char *http_remote_addr(const struct http_req *req)
{
    return req->ri->remote_addr;
}
bool http_is_tls(const struct http_req *req)
{
    return req->ri->is_ssl != 0;
}
struct http_server *http_req_server(const struct http_req *req)
{
    return req->srv;
}

const char *http_param(const struct http_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++) {
        const char *p = req->pnames[i];
        size_t n = strlen(p);
        /* pnames are "{id}" or "{*rest}" */
        const char *inner = p + 1 + (p[1] == '*');
        size_t ilen = n - 2 - (p[1] == '*');
        if (strlen(name) == ilen && strncmp(inner, name, ilen) == 0)
            return req->pvalues[i];
    }
    return NULL;
}

int http_query(const struct http_req *req, const char *name, int nth, char *out, size_t len)
{
    const char *q = req->ri->query_string;
    if (!q)
        return -ENOENT;
    int n = mg_get_var2(q, strlen(q), name, out, len, (size_t)nth);
    if (n == -1)
        return -ENOENT;
    if (n < 0)
        return -E2BIG;
    return 0;
}

const char *http_header(const struct http_req *req, const char *name)
{
    return mg_get_header(req->conn, name);
}

int http_cookie(const struct http_req *req, const char *name, char *out, size_t len)
{
    const char *c = mg_get_header(req->conn, "Cookie");
    if (!c)
        return -ENOENT;
    int n = mg_get_cookie(c, name, out, len);
    if (n == -1)
        return -ENOENT;
    if (n < 0)
        return -E2BIG;
    return 0;
}

void http_add_header(struct http_req *req, const char *name, const char *value)
{
    if (req->nextra == MAX_EXTRA)
        return;
    req->extra_names[req->nextra] = strdup(name);
    req->extra_values[req->nextra] = strdup(value);
    if (!req->extra_names[req->nextra] || !req->extra_values[req->nextra]) {
        free(req->extra_names[req->nextra]);
        free(req->extra_values[req->nextra]);
        return;
    }
    req->nextra++;
}

static int too_large(struct http_req *req, size_t limit)
{
    char detail[96];
    mg_disable_connection_keep_alive(req->conn);
    snprintf(detail, sizeof(detail), "Request too large. Maximum size is %.1fMB",
             (double)limit / (1024.0 * 1024.0));
    http_respond_error(req, 413, "Validation", detail);
    req->body_read = -E2BIG;
    return -E2BIG;
}

int http_body(struct http_req *req, size_t limit, const char **body, size_t *len)
{
    if (!limit || limit > req->srv->body_limit)
        limit = req->srv->body_limit;
    if (req->body_read < 0)
        return req->body_read;
    if (req->body_read == 0) {
        long long cl = req->ri->content_length;
        if (cl > (long long)limit)
            return too_large(req, limit);
        size_t cap = cl > 0 ? (size_t)cl + 1 : 4096;
        struct strbuf sb = {0};
        char buf[16384];
        if (sb_append(&sb, "", 0))
            return -ENOMEM;
        (void)cap;
        for (;;) {
            int n = mg_read(req->conn, buf, sizeof(buf));
            if (n < 0) {
                sb_release(&sb);
                req->body_read = -EIO;
                mg_disable_connection_keep_alive(req->conn);
                return -EIO;
            }
            if (n == 0)
                break;
            if (sb.len + (size_t)n > limit) {
                sb_release(&sb);
                return too_large(req, limit);
            }
            if (sb_append(&sb, buf, (size_t)n)) {
                sb_release(&sb);
                return -ENOMEM;
            }
        }
        req->body = sb.s;
        req->body_len = sb.len;
        req->body_read = 1;
    }
    *body = req->body;
    *len = req->body_len;
    return 0;
}

int http_body_json(struct http_req *req, size_t limit, cJSON **out)
{
    const char *body;
    size_t len;
    int rc = http_body(req, limit, &body, &len);
    if (rc == -EIO)
        return rc;
    if (rc) {
        if (!req->responded)
            http_respond_error(req, 500, "Infrastructure", "cannot read request body");
        return rc;
    }
    cJSON *json = NULL;
    size_t err_at = 0;
    rc = len ? json_parse_bounded(body, len, JSON_MAX_DEPTH, &json, &err_at) : -ENODATA;
    if (rc) {
        char detail[128];
        if (rc == -ENODATA)
            snprintf(detail, sizeof(detail), "request body is empty; a JSON object is required");
        else if (rc == -E2BIG)
            snprintf(detail, sizeof(detail), "JSON body nested deeper than %d levels",
                     JSON_MAX_DEPTH);
        else
            snprintf(detail, sizeof(detail), "malformed JSON body near byte %zu", err_at);
        http_respond_error(req, 422, "Validation", detail);
        return -EINVAL;
    }
    *out = json;
    return 0;
}

static void req_release(struct http_req *req)
{
    for (int i = 0; i < req->nparams; i++)
        free(req->pvalues[i]);
    for (int i = 0; i < req->nextra; i++) {
        free(req->extra_names[i]);
        free(req->extra_values[i]);
    }
    free(req->body);
}

static int run_middleware(struct http_server *srv, struct http_req *req)
{
    for (int i = 0; i < srv->nmw; i++)
        if (srv->mw[i](req, srv->mw_ctx[i]) != 0) {
            if (!req->responded)
                http_respond_error(req, 500, "Infrastructure", "middleware sent no response");
            return 1;
        }
    return 0;
}

static int dispatch(struct mg_connection *conn, void *cbdata)
{
    struct http_server *srv = cbdata;
    int64_t t0 = now_mono_ms();
    struct http_req req = {.srv = srv, .conn = conn, .ri = mg_get_request_info(conn)};
    const char *rid = mg_get_header(conn, "X-Request-Id");
    if (rid && valid_request_id(rid))
        snprintf(req.request_id, sizeof(req.request_id), "%s", rid);
    else
        uuid_v4(req.request_id);
    log_set_request_id(req.request_id);

    const char *path = req.ri->local_uri ? req.ri->local_uri : "/";
    const char *method = req.ri->request_method ? req.ri->request_method : "GET";
    char buf[2048];
    char *segs[MAX_SEGS + 1];
    int nsegs = split_path(path, buf, sizeof(buf), segs, MAX_SEGS);

    if (atomic_load(&srv->stopping)) {
        mg_disable_connection_keep_alive(conn);
        http_respond_error(&req, 503, "Infrastructure", "server is shutting down");
    } else if (run_middleware(srv, &req)) {
        /* answered by a middleware */
    } else if (nsegs < 0 || strlen(path) >= sizeof(buf)) {
        http_respond_error(&req, 404, "NotFound", "Not Found");
    } else {
        const struct route *hit = NULL;
        int path_known = 0;
        for (const struct route *r = srv->routes; r && !hit; r = r->next) {
            if (!route_match(r, segs, nsegs, path, NULL))
                continue;
            path_known = 1;
            if (strcmp(r->method, method) == 0 ||
                (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0))
                hit = r;
        }
        if (hit) {
            route_match(hit, segs, nsegs, path, &req);
            hit->fn(&req, hit->ctx);
            if (!req.responded)
                http_respond_error(&req, 500, "Infrastructure", "handler sent no response");
        } else if (path_known) {
            http_respond_error(&req, 405, "InvalidState", "Method Not Allowed");
        } else {
            http_respond_error(&req, 404, "NotFound", "Not Found");
        }
    }
    if (req.streaming)
        mg_send_chunk(conn, "", 0);
    int64_t dt = now_mono_ms() - t0;
    if (srv->m_dur)
        metric_observe(srv->m_dur, (double)dt / 1000.0);
    if (srv->metrics) {
        char labels[96];
        snprintf(labels, sizeof(labels), "server=\"%s\",code=\"%d\"", srv->name, req.status);
        metric_add(metrics_get(srv->metrics, METRIC_COUNTER, "execd_http_requests_total",
                               "HTTP requests by status", labels),
                   1);
    }
    log_debug(srv->name, "http request", "method=%s path=\"%s\" status=%d ms=%lld remote=%s",
              method, path, req.status, (long long)dt,
              req.ri->remote_addr[0] ? req.ri->remote_addr : "-");
    log_set_request_id(NULL);
    req_release(&req);
    return req.status ? req.status : 1;
}

static int civet_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    log_warn("http", "civetweb", "detail=\"%s\"", message);
    return 1;
}

int http_server_start(struct http_server *srv)
{
    char threads[16], timeout[16];
    snprintf(threads, sizeof(threads), "%d", srv->threads);
    snprintf(timeout, sizeof(timeout), "%d", srv->timeout_ms);
    const char *options[] = {
        "listening_ports", srv->listen, "num_threads", threads, "request_timeout_ms", timeout,
        "enable_keep_alive", "yes", "keep_alive_timeout_ms", "15000", "tcp_nodelay", "1",
        "listen_backlog", "512", "enable_auth_domain_check", "no",
        /* CORS preflights are answered by a middleware
         * (the api role's), never by civetweb with "*". */
        "access_control_allow_origin", "", "access_control_allow_methods", "", NULL};
    struct mg_callbacks cb = {.log_message = civet_log};
    struct mg_init_data init = {
        .callbacks = &cb, .user_data = srv, .configuration_options = options};
    char errtxt[256] = "";
    struct mg_error_data err = {.text = errtxt, .text_buffer_size = sizeof(errtxt)};
    srv->ctx = mg_start2(&init, &err);
    if (!srv->ctx) {
        log_error(srv->name, "cannot start http server", "listen=%s err=\"%s\"", srv->listen,
                  errtxt);
        return -EADDRINUSE;
    }
    mg_set_request_handler(srv->ctx, "/", dispatch, srv);
    struct mg_server_port ports[4];
    int n = mg_get_server_ports(srv->ctx, 4, ports);
    srv->port = n > 0 ? ports[0].port : 0;
    log_info(srv->name, "http server listening", "listen=%s port=%d threads=%d", srv->listen,
             srv->port, srv->threads);
    return 0;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_stop(struct http_server *srv)
{
    if (srv)
        atomic_store(&srv->stopping, true);
}

bool http_server_stopping(const struct http_server *srv)
{
    return atomic_load(&srv->stopping);
}

static void *wake_master(void *arg)
{
    struct http_server *srv = arg;
    thread_name_set("http-waker");
    const char *colon = strrchr(srv->listen, ':');
    size_t hlen = colon ? (size_t)(colon - srv->listen) : 0;
    char host[64] = "127.0.0.1";
    if (hlen > 0 && hlen < sizeof(host) && strncmp(srv->listen, "0.0.0.0", hlen) != 0)
        snprintf(host, sizeof(host), "%.*s", (int)hlen, srv->listen);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv->port)};
    if (srv->port <= 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return NULL;
    while (!atomic_load(&srv->stopped)) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
                close(fd);
                break; /* nothing listens any more: the master is gone */
            }
            close(fd);
        }
        sleep_ms(20);
    }
    return NULL;
}

void http_server_free(struct http_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, true);
    if (srv->ctx) {
        /* civetweb's master thread notices the stop only when its poll
         * returns; a waker connecting to our own port makes that immediate. */
        pthread_t waker;
        int have_waker = pthread_create(&waker, NULL, wake_master, srv) == 0;
        mg_stop(srv->ctx);
        atomic_store(&srv->stopped, true);
        if (have_waker)
            pthread_join(waker, NULL);
    }
    for (struct route *r = srv->routes, *n; r; r = n) {
        n = r->next;
        route_free(r);
    }
    free(srv);
}
