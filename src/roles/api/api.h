/*
 * api.h — private to the api role: its state and the helpers every API
 * route reuses (authentication, owner-or-admin, validation, idempotency,
 * route registration with OpenAPI metadata).
 *
 * Response conventions: the helpers named api_require_* answer the request
 * themselves (401/403/422/503) and return a negative errno; a handler that
 * gets non-zero just returns.
 */
#ifndef EXECD_API_H
#define EXECD_API_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "http.h"
#include "ratelimit.h"

struct cJSON;
struct host;
struct config;
struct pool;
struct metric;

#define API_ROLE "api"
#define API_USERS "users"
#define API_LOGIN_ATTEMPTS "login_attempts"
#define API_IDEMPOTENCY "idempotency_keys"
#define API_MAX_ROUTES 128
#define API_MAX_CORS 32

/* A route this role serves, with the metadata the OpenAPI document uses. */
struct api_route {
    const char *method;
    const char *pattern;
    http_fn fn;
    const char *summary;
    const char *tag;
    const char *auth;     /* "public", "user", "admin", "owner/admin" */
    const char *request;  /* components/schemas name of the body, or NULL */
    const char *response; /* components/schemas name of the 2xx body, or NULL */
};

struct api {
    struct host *host;
    const struct config *cfg;
    struct pool *pool; /* bcrypt work */
    char dummy_hash[AUTH_HASH_MAX];
    struct rl_rules rules;
    struct rl_trust trust;
    struct rl_table *rl;
    pthread_mutex_t rl_lock;
    char *cors[API_MAX_CORS];
    int ncors;
    const struct api_route *routes[API_MAX_ROUTES];
    int nroutes;
    atomic_bool stopping;
    struct metric *m_logins;
    struct metric *m_login_failures;
    struct metric *m_throttled;
    struct metric *m_submitted;      /* executions queued and published */
    struct metric *m_submit_seconds; /* receipt → execution_requested acknowledged */
};

/* The authenticated caller. */
struct api_user {
    char user_id[64];
    char username[AUTH_SUB_MAX];
    char role[16];
    bool is_active;
    bool bearer;       /* authenticated by the Authorization header */
    struct cJSON *doc; /* the users document; owned, api_user_release frees */
};
void api_user_release(struct api_user *user);
bool api_user_is_admin(const struct api_user *user);

/* ---- api.c ---- */
int api_routes_add(struct api *api, const struct api_route *routes, size_t n);
/* Metadata of a route registered by this role, or NULL. */
const struct api_route *api_route_doc(const struct api *api, const char *method,
                                      const char *pattern);

/* ---- api_auth.c ---- */
/* 0 with *out filled, -EPERM when the request carries no valid session
 * (nothing is sent), -EIO on a store failure. */
int api_authenticate(struct api *api, struct http_req *req, struct api_user *out);
/* Answers 401 (or 503) unless authenticated. */
int api_require_user(struct api *api, struct http_req *req, struct api_user *out);
/* Answers 401/403 unless an authenticated admin. */
int api_require_admin(struct api *api, struct http_req *req, struct api_user *out);
bool api_owner_or_admin(const struct api_user *user, const char *owner_user_id);
/* Answers 403 {"detail":"Not enough permissions"} unless owner or admin. */
int api_require_owner_or_admin(struct http_req *req, const struct api_user *user,
                               const char *owner_user_id);
/* The client address after trusted-proxy handling. */
void api_client_ip(struct api *api, struct http_req *req, char *out, size_t len);
/* bcrypt on the api pool (the calling thread waits): -EAGAIN when the pool
 * is full, -EACCES on a mismatch. */
int api_password_hash(struct api *api, const char *password, char *out, size_t len);
int api_password_check(struct api *api, const char *password, const char *hash);
/* Sets the access_token and csrf_token cookies for username/role and adds
 * csrf_token, access_token and token_type to body. */
int api_session_issue(struct api *api, struct http_req *req, const char *username, const char *role,
                      struct cJSON *body);
void api_session_clear(struct http_req *req);
/* The CSRF middleware (http_use). */
int api_csrf_middleware(struct http_req *req, void *ctx);

/* ---- api_http.c: CORS and rate limit middlewares ---- */
int api_cors_middleware(struct http_req *req, void *ctx);
int api_ratelimit_middleware(struct http_req *req, void *ctx);
int api_http_setup(struct api *api, char *err, size_t errlen);
void api_http_release(struct api *api);

/* ---- api_validate.c ---- */
enum api_ftype { AF_STR, AF_INT, AF_NUM, AF_BOOL, AF_OBJ, AF_ARR, AF_ANY };
struct api_field {
    const char *name;
    enum api_ftype type;
    bool required;
    int min_len; /* strings: characters; ints: value */
    int max_len;
    bool ignored; /* accepted and dropped (e.g. a register body's role) */
};
/* Reads the body as a JSON object; answers 413/422 on failure. */
int api_read_json(struct http_req *req, struct cJSON **out);
/* Checks obj against fields (missing, wrong type, bounds, unknown fields);
 * answers 422 with every error and returns -EINVAL on failure. */
int api_validate(struct http_req *req, const struct cJSON *obj, const struct api_field *fields,
                 size_t n);
/* 422 {"detail":[{"loc":[where, field],"msg":msg,"type":type}]}. */
int api_respond_invalid(struct http_req *req, const char *where, const char *field, const char *msg,
                        const char *type);
/* Parses an application/x-www-form-urlencoded body into a JSON object of
 * strings (the last value of a repeated key wins); -EINVAL on bad escapes. */
int api_parse_form(const char *body, size_t len, struct cJSON **out);
/* Integer query parameter with bounds; answers 422 on a bad value. */
int api_query_int(struct http_req *req, const char *name, long def, long min, long max, long *out);

/* ---- api_accounts.c ---- */
int api_accounts_init(struct api *api);
/* UserResponse of a users document; caller owns. */
struct cJSON *api_user_response(const struct cJSON *doc);
/* Publishes a user_events event (failures are logged). */
void api_publish_user_event(struct api *api, struct http_req *req, int type, const char *user_id,
                            const char *username, const char *reason);

/* ---- api_admin.c ---- */
int api_admin_init(struct api *api);

/* ---- api_executions.c: submit, results, events, cancel, retry, limits ---- */
int api_executions_init(struct api *api);

/* ---- api_openapi.c ---- */
int api_openapi_init(struct api *api);
/* The document of every route on srv; caller owns. */
struct cJSON *api_openapi_document(const struct api *api, const struct http_server *srv);

/* ---- api_idempotency.c ---- */
enum api_idem_state { API_IDEM_NEW, API_IDEM_IN_FLIGHT, API_IDEM_DONE };
#define API_IDEM_TTL_MS (24LL * 3600 * 1000)
#define API_IDEM_KEY_MAX 255
int api_idempotency_init(struct api *api);
/* Claims (user_id, key): API_IDEM_NEW (the caller must complete or abort),
 * API_IDEM_IN_FLIGHT (answer 409), API_IDEM_DONE (*status and *body hold the
 * first response; *body malloc'd, caller frees).  -EINVAL for a bad key. */
int api_idem_begin(struct api *api, const char *user_id, const char *key,
                   enum api_idem_state *state, int *status, char **body);
int api_idem_complete(struct api *api, const char *user_id, const char *key, int status,
                      const char *body);
/* Forgets a claim whose request failed, so the client may retry it. */
int api_idem_abort(struct api *api, const char *user_id, const char *key);
/* The pure decision on an existing idempotency document at now_ms. */
enum api_idem_state api_idem_classify(const struct cJSON *doc, int64_t now_ms, int *status,
                                      const char **body);
/* _id of the document for (user_id, key) into out; -EINVAL for a bad key. */
int api_idem_id(const char *user_id, const char *key, char *out, size_t len);

#endif
