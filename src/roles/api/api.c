/*
 * api.c — the `api` role: accounts and the API's front door (DESIGN §12,
 * reference/api.md).
 *
 * init validates the secret and the rate-limit/CORS/proxy settings, creates
 * the users indexes and the bootstrap admin, registers this role's routes
 * (each with its OpenAPI metadata, see struct api_route) and installs three
 * middlewares on the main HTTP server, in order: CORS (answers preflights),
 * the rate limiter (X-RateLimit-* on every response, 429), CSRF (cookie
 * sessions).  The role has no threads of its own but the bcrypt pool;
 * handlers run on the HTTP server's connection threads.
 *
 * Files: api_auth.c (sessions, CSRF, roles, bcrypt), api_accounts.c
 * (register/login/me/logout, lockout, admin bootstrap), api_admin.c (admin
 * users), api_http.c (CORS, rate limit), api_validate.c (422s),
 * api_idempotency.c (Idempotency-Key), api_executions.c (submit, results,
 * events, cancel, retry, example scripts, limits), api_openapi.c (the
 * document).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "pool.h"

static const char dev_secret[] = "execd-dev-secret-key-change-me-0123456789";

int api_routes_add(struct api *api, const struct api_route *routes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (api->nroutes == API_MAX_ROUTES)
            return -ENOSPC;
        int rc =
            http_route(api->host->http, routes[i].method, routes[i].pattern, routes[i].fn, api);
        if (rc) {
            log_error(API_ROLE, "cannot register route", "method=%s pattern=\"%s\" err=%d",
                      routes[i].method, routes[i].pattern, rc);
            return rc;
        }
        api->routes[api->nroutes++] = &routes[i];
    }
    return 0;
}

const struct api_route *api_route_doc(const struct api *api, const char *method,
                                      const char *pattern)
{
    for (int i = 0; i < api->nroutes; i++)
        if (strcmp(api->routes[i]->method, method) == 0 &&
            strcmp(api->routes[i]->pattern, pattern) == 0)
            return api->routes[i];
    return NULL;
}

static void api_destroy(void *state)
{
    struct api *api = state;
    if (!api)
        return;
    pool_free(api->pool);
    api_http_release(api);
    explicit_bzero(api->dummy_hash, sizeof(api->dummy_hash));
    free(api);
}

static int api_init(struct host *host, void **state)
{
    const struct config *cfg = host->cfg;
    if (!host->http || !host->store) {
        log_error(API_ROLE, "the api role needs the HTTP server and the store", "http=%s store=%s",
                  host->http ? "yes" : "no", host->store ? "yes" : "no");
        return -EINVAL;
    }
    if (strlen(cfg->secret_key) < 32) {
        log_error(API_ROLE, "EXECD_SECRET_KEY must be at least 32 bytes", "length=%zu",
                  strlen(cfg->secret_key));
        fprintf(stderr, "execd: EXECD_SECRET_KEY must be at least 32 bytes (has %zu)\n",
                strlen(cfg->secret_key));
        return -EINVAL;
    }
    if (strcmp(cfg->secret_key, dev_secret) == 0)
        log_warn(API_ROLE,
                 "EXECD_SECRET_KEY is the public development default; set a secret "
                 "of at least 32 random bytes before exposing this server",
                 "%s", "");
    struct api *api = calloc(1, sizeof(*api));
    if (!api)
        return -ENOMEM;
    api->host = host;
    api->cfg = cfg;
    char err[512] = "";
    int rc = api_http_setup(api, err, sizeof(err));
    if (rc) {
        log_error(API_ROLE, "invalid api configuration", "err=\"%s\"", err);
        fprintf(stderr, "execd: configuration error: %s\n", err);
        goto fail;
    }
    int threads = (int)cfg->api_threads;
    api->pool = pool_new("api", threads, (size_t)threads * 64);
    if (!api->pool) {
        rc = -ENOMEM;
        goto fail;
    }
    if (host->metrics) {
        api->m_logins = metrics_get(host->metrics, METRIC_COUNTER, "execd_api_logins_total",
                                    "Successful logins", "");
        api->m_login_failures = metrics_get(host->metrics, METRIC_COUNTER,
                                            "execd_api_login_failures_total", "Failed logins", "");
        api->m_throttled =
            metrics_get(host->metrics, METRIC_COUNTER, "execd_api_rate_limited_total",
                        "Requests refused by the rate limiter", "");
    }
    if ((rc = api_accounts_init(api)) || (rc = api_admin_init(api)) ||
        (rc = api_openapi_init(api)) || (rc = api_idempotency_init(api)) ||
        (rc = api_executions_init(api)))
        goto fail;
    if ((rc = http_use(host->http, api_cors_middleware, api)) ||
        (rc = http_use(host->http, api_ratelimit_middleware, api)) ||
        (rc = http_use(host->http, api_csrf_middleware, api)))
        goto fail;
    log_info(API_ROLE, "api ready",
             "routes=%d rate_limit=%s rules=%d cors_origins=%d bcrypt_cost=%lld "
             "session_minutes=%lld",
             api->nroutes, cfg->rate_limit_enabled ? "on" : "off", api->rules.n, api->ncors,
             (long long)cfg->bcrypt_cost, (long long)cfg->session_timeout_minutes);
    *state = api;
    return 0;
fail:
    api_destroy(api);
    return rc;
}

static int api_start(void *state)
{
    (void)state;
    return 0;
}

static void api_stop(void *state)
{
    struct api *api = state;
    if (api)
        atomic_store(&api->stopping, true);
}

static int api_join(void *state, int64_t deadline_ms)
{
    (void)state;
    (void)deadline_ms;
    return 0;
}

static int api_health(void *state, cJSON *out)
{
    struct api *api = state;
    cJSON *c = cJSON_AddObjectToObject(out, "api");
    cJSON_AddStringToObject(c, "status", "ok");
    cJSON_AddNumberToObject(c, "routes", api->nroutes);
    cJSON_AddBoolToObject(c, "rate_limit", api->cfg->rate_limit_enabled);
    return 0;
}

const struct role role_api = {
    .name = "api",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE | ROLE_NEEDS_HTTP,
    .init = api_init,
    .start = api_start,
    .stop = api_stop,
    .join = api_join,
    .destroy = api_destroy,
    .health = api_health,
};
