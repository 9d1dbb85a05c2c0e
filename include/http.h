/*
 * http.h — the HTTP port (civetweb).
 *
 * A server owns a route table; patterns are literal segments and {name}
 * parameters ("/api/v1/executions/{id}/result"); a trailing "/{*rest}"
 * matches the remainder.  Unknown route → 404 JSON, known path with another
 * method → 405.  Every response carries the security headers of api.md and
 * X-Request-Id.  Bodies are read only through http_body*, which enforce the
 * server's body limit (413 without reading it all, chunked bodies too).
 * Handlers run on civetweb's connection threads; a streaming handler writes
 * only from its own thread.
 */
#ifndef EXECD_HTTP_H
#define EXECD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct cJSON;
struct metrics;
struct http_server;
struct http_req;

typedef void (*http_fn)(struct http_req *req, void *ctx);

struct http_server_opts {
    const char *name;   /* for logs and thread names */
    const char *listen; /* "host:port" */
    int threads;
    int request_timeout_ms;
    size_t body_limit;
    struct metrics *metrics; /* may be NULL */
};

int http_server_new(const struct http_server_opts *opts, struct http_server **out);
/* Adds a route; call before http_server_start.  -EINVAL on a bad pattern. */
int http_route(struct http_server *srv, const char *method, const char *pattern, http_fn fn,
               void *ctx);
/* Middleware: runs on every request before routing (so also before 404/405
 * answers), in the order added.  Returns 0 to continue, non-zero when it has
 * answered the request itself (routing is then skipped).  Headers it adds
 * with http_add_header go out with whatever response follows.  Call before
 * http_server_start; -ENOSPC past HTTP_MAX_MIDDLEWARE. */
typedef int (*http_middleware_fn)(struct http_req *req, void *ctx);
#define HTTP_MAX_MIDDLEWARE 8
int http_use(struct http_server *srv, http_middleware_fn fn, void *ctx);
int http_server_start(struct http_server *srv);
/* Port actually bound (useful with port 0). */
int http_server_port(const struct http_server *srv);
/* Marks the server stopping: new requests get 503, streams see it. */
void http_server_stop(struct http_server *srv);
bool http_server_stopping(const struct http_server *srv);
/* Joins all connection threads and frees.  NULL-safe. */
void http_server_free(struct http_server *srv);

/* Route table access for generated docs: calls fn for each route. */
void http_routes_each(const struct http_server *srv,
                      void (*fn)(void *arg, const char *method, const char *pattern), void *arg);

/* ---- request ---- */
const char *http_method(const struct http_req *req);
const char *http_path(const struct http_req *req);
const char *http_request_id(const struct http_req *req);
/* Path parameter by name, or NULL. */
const char *http_param(const struct http_req *req, const char *name);
/* Decoded query parameter: 0, -ENOENT, -E2BIG (did not fit). nth selects a
 * repeated parameter (0 = first). */
int http_query(const struct http_req *req, const char *name, int nth, char *out, size_t len);
/* Request header, or NULL. */
const char *http_header(const struct http_req *req, const char *name);
/* Value of cookie name into out: 0, -ENOENT. */
int http_cookie(const struct http_req *req, const char *name, char *out, size_t len);
const char *http_remote_addr(const struct http_req *req);
bool http_is_tls(const struct http_req *req);
struct http_server *http_req_server(const struct http_req *req);

/* Reads the whole body (≤ limit; 0 means the server's limit).  On -E2BIG the
 * 413 has been sent; on -EIO the connection is broken.  *body is owned by the
 * request (freed when the handler returns) and NUL-terminated. */
int http_body(struct http_req *req, size_t limit, const char **body, size_t *len);
/* Reads and parses a JSON body; on failure the error response (413/422) has
 * been sent and a negative errno returned.  *out owned by the caller. */
int http_body_json(struct http_req *req, size_t limit, struct cJSON **out);

/* ---- response ---- */
/* Adds a header to the response about to be sent (copied). */
void http_add_header(struct http_req *req, const char *name, const char *value);
int http_respond(struct http_req *req, int status, const char *content_type, const void *body,
                 size_t len);
int http_respond_json(struct http_req *req, int status, const struct cJSON *json);
/* {"detail": detail, "type": type} */
int http_respond_error(struct http_req *req, int status, const char *type, const char *detail);
/* Status for an errno from a port (-ENOENT 404, -EINVAL 422, -EEXIST 409, …). */
int http_status_for_errno(int err);
bool http_responded(const struct http_req *req);
int http_status(const struct http_req *req);

/* ---- streaming (SSE, watch, chunked) ---- */
/* Sends status and headers (plus those added); the body follows with
 * http_stream_write until the handler returns. */
int http_stream_begin(struct http_req *req, int status, const char *content_type);
/* 0, or -EPIPE when the client is gone. */
int http_stream_write(struct http_req *req, const void *data, size_t len);

#endif
