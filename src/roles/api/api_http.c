/*
 * api_http.c — the api's middlewares on the main HTTP server: CORS and the
 * per-client-IP rate limiter (api.md, Conventions).
 *
 * They run before routing on every request, whichever role owns the route,
 * so X-RateLimit-* is on every response: a counted path consumes a slot of
 * its rule, an exempt or unmatched path reports the state of the rule that
 * names it (or of the last, catch-all rule) without consuming one.  The
 * counters are in this process's memory (see ratelimit.h); with several api
 * replicas each enforces its own share.  Client IP: the peer, or what a
 * trusted proxy (EXECD_TRUSTED_PROXIES) says in X-Forwarded-For/X-Real-IP.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define RL_MAX_KEYS 100000

static const char cors_allow_headers[] =
    "Content-Type, Authorization, X-CSRF-Token, Idempotency-Key, X-Request-Id, Last-Event-ID";
static const char cors_expose_headers[] =
    "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After";

int api_http_setup(struct api *api, char *err, size_t errlen)
{
    const struct config *cfg = api->cfg;
    int rc =
        rl_rules_parse(cfg->rate_limit_rules, cfg->rate_limit_exempt, &api->rules, err, errlen);
    if (rc)
        return rc;
    rc = rl_trust_parse(cfg->trusted_proxies, &api->trust, err, errlen);
    if (rc)
        return rc;
    api->rl = rl_table_new(RL_MAX_KEYS);
    if (!api->rl)
        return -ENOMEM;
    pthread_mutex_init(&api->rl_lock, NULL);

    char *copy = strdup(cfg->cors_origins);
    if (!copy)
        return -ENOMEM;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        size_t n = strlen(tok);
        while (n && tok[n - 1] == '/')
            tok[--n] = '\0';
        if (!n)
            continue;
        if (api->ncors == API_MAX_CORS ||
            (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0)) {
            snprintf(err, errlen,
                     "EXECD_CORS_ORIGINS: '%s' is not an http(s) origin (at most %d origins)", tok,
                     API_MAX_CORS);
            free(copy);
            return -EINVAL;
        }
        api->cors[api->ncors] = strdup(tok);
        if (!api->cors[api->ncors]) {
            free(copy);
            return -ENOMEM;
        }
        api->ncors++;
    }
    free(copy);
    return 0;
}

void api_http_release(struct api *api)
{
    if (api->rl) {
        rl_table_free(api->rl);
        api->rl = NULL;
        pthread_mutex_destroy(&api->rl_lock);
    }
    for (int i = 0; i < api->ncors; i++)
        free(api->cors[i]);
    api->ncors = 0;
}

int api_cors_middleware(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    const char *origin = http_header(req, "Origin");
    bool preflight = strcmp(http_method(req), "OPTIONS") == 0 && origin &&
                     http_header(req, "Access-Control-Request-Method");
    if (!origin)
        return 0;
    bool allowed = false;
    for (int i = 0; i < api->ncors && !allowed; i++)
        allowed = strcmp(api->cors[i], origin) == 0;
    if (allowed) {
        http_add_header(req, "Access-Control-Allow-Origin", origin);
        http_add_header(req, "Access-Control-Allow-Credentials", "true");
        http_add_header(req, "Vary", "Origin");
    }
    if (!preflight) {
        if (allowed)
            http_add_header(req, "Access-Control-Expose-Headers", cors_expose_headers);
        return 0;
    }
    if (!allowed) {
        http_respond_error(req, 400, "InvalidState", "Disallowed CORS origin");
        return 1;
    }
    http_add_header(req, "Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
    http_add_header(req, "Access-Control-Allow-Headers", cors_allow_headers);
    http_add_header(req, "Access-Control-Max-Age", "600");
    http_respond(req, 204, NULL, "", 0);
    return 1;
}

int api_ratelimit_middleware(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    if (!api->cfg->rate_limit_enabled || api->rules.n == 0)
        return 0;
    const char *path = http_path(req);
    if (!path)
        path = "/";
    bool exempt = false;
    int idx = rl_rules_match(&api->rules, path, &exempt);
    bool count = idx >= 0 && !exempt && strcmp(http_method(req), "OPTIONS") != 0;
    if (idx < 0)
        idx = api->rules.n - 1;
    char ip[64];
    api_client_ip(api, req, ip, sizeof(ip));
    char key[96];
    snprintf(key, sizeof(key), "%d|%s", idx, ip);

    struct rl_result res;
    int64_t mono = now_mono_ms(), wall = now_wall_ms();
    pthread_mutex_lock(&api->rl_lock);
    int rc = rl_table_hit(api->rl, key, api->rules.rule[idx].limit, api->rules.window_ms, mono,
                          count, &res);
    pthread_mutex_unlock(&api->rl_lock);
    if (rc) {
        /* Out of memory: fail open rather than refuse service. */
        log_warn(API_ROLE, "rate limiter cannot record a request", "err=%d", rc);
        return 0;
    }
    int64_t reset_wall_ms = wall + (res.reset_ms - mono);
    char v[32];
    snprintf(v, sizeof(v), "%d", res.limit);
    http_add_header(req, "X-RateLimit-Limit", v);
    snprintf(v, sizeof(v), "%d", res.remaining);
    http_add_header(req, "X-RateLimit-Remaining", v);
    snprintf(v, sizeof(v), "%lld", (long long)((reset_wall_ms + 999) / 1000));
    http_add_header(req, "X-RateLimit-Reset", v);
    if (res.allowed || !count)
        return 0; /* exempt and unmatched paths are reported, never refused */

    if (api->m_throttled)
        metric_add(api->m_throttled, 1);
    snprintf(v, sizeof(v), "%d", res.retry_after_s);
    http_add_header(req, "Retry-After", v);
    char ts[TS_LEN];
    ts_format_us(reset_wall_ms * 1000, ts);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "detail", "Rate limit exceeded");
    cJSON_AddNumberToObject(o, "retry_after", res.retry_after_s);
    cJSON_AddStringToObject(o, "reset_at", ts);
    cJSON_AddStringToObject(o, "type", "Throttled");
    http_respond_json(req, 429, o);
    cJSON_Delete(o);
    log_info(API_ROLE, "rate limit exceeded", "client=%s rule=\"%s\" limit=%d retry_after=%d", ip,
             api->rules.rule[idx].pattern, res.limit, res.retry_after_s);
    return 1;
}
