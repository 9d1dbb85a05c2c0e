/*
 * api_auth.c — who is calling: sessions (JWT cookie or Bearer), CSRF for
 * cookie sessions, roles, owner-or-admin, and bcrypt on a bounded pool.
 *
 * A request is authenticated by `Authorization: Bearer <jwt>` or, failing
 * that, the `access_token` cookie.  The JWT (HS256, EXECD_SECRET_KEY) names
 * the username in `sub`; the users document is then read so a deactivated
 * user or a changed role takes effect at once.  Cookie sessions also get a
 * `csrf_token` cookie (readable by the page's script) bound to the access
 * token by an HMAC; state-changing /api/ requests on a cookie session must
 * echo it in X-CSRF-Token.  Bearer requests are immune to CSRF (a browser
 * never adds the header by itself), so they skip the check.
 *
 * bcrypt costs ~0.25 s of CPU at cost 12: every hash and check runs on the
 * api pool (EXECD_API_THREADS), so logins cannot take every core; a full
 * queue answers 503.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "pool.h"
#include "store.h"
#include "util.h"

#define TOKEN_MAX 4096

void api_user_release(struct api_user *user)
{
    if (!user)
        return;
    cJSON_Delete(user->doc);
    user->doc = NULL;
}

bool api_user_is_admin(const struct api_user *user)
{
    return strcmp(user->role, "admin") == 0;
}

/* The Bearer token of the Authorization header into out: 0 or -ENOENT. */
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

int api_authenticate(struct api *api, struct http_req *req, struct api_user *out)
{
    char token[TOKEN_MAX];
    bool bearer = bearer_token(req, token, sizeof(token)) == 0;
    if (!bearer && http_cookie(req, "access_token", token, sizeof(token)) != 0)
        return -EPERM;
    struct jwt_claims claims;
    if (jwt_verify(api->cfg->secret_key, token, now_wall_ms() / 1000, &claims) != 0)
        return -EPERM;
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "username", claims.sub);
    cJSON *doc = NULL;
    int rc = store_find_one(api->host->store, API_USERS, filter, NULL, &doc);
    cJSON_Delete(filter);
    if (rc == -ENOENT)
        return -EPERM;
    if (rc)
        return -EIO;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "user_id");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(doc, "role");
    const cJSON *active = cJSON_GetObjectItemCaseSensitive(doc, "is_active");
    if (!cJSON_IsString(id) || !cJSON_IsString(role) || cJSON_IsFalse(active)) {
        cJSON_Delete(doc);
        return -EPERM;
    }
    struct api_user u = {.is_active = true, .bearer = bearer, .doc = doc};
    snprintf(u.user_id, sizeof(u.user_id), "%s", id->valuestring);
    snprintf(u.username, sizeof(u.username), "%s", claims.sub);
    snprintf(u.role, sizeof(u.role), "%s", role->valuestring);
    *out = u;
    return 0;
}

int api_require_user(struct api *api, struct http_req *req, struct api_user *out)
{
    int rc = api_authenticate(api, req, out);
    if (rc == -EIO) {
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
        return rc;
    }
    if (rc) {
        http_add_header(req, "WWW-Authenticate", "Bearer");
        http_respond_error(req, 401, "Unauthorized", "Not authenticated");
    }
    return rc;
}

int api_require_admin(struct api *api, struct http_req *req, struct api_user *out)
{
    int rc = api_require_user(api, req, out);
    if (rc)
        return rc;
    if (!api_user_is_admin(out)) {
        api_user_release(out);
        http_respond_error(req, 403, "Forbidden", "Admin access required");
        return -EACCES;
    }
    return 0;
}

bool api_owner_or_admin(const struct api_user *user, const char *owner_user_id)
{
    if (api_user_is_admin(user))
        return true;
    return owner_user_id && user->user_id[0] && strcmp(user->user_id, owner_user_id) == 0;
}

int api_require_owner_or_admin(struct http_req *req, const struct api_user *user,
                               const char *owner_user_id)
{
    if (api_owner_or_admin(user, owner_user_id))
        return 0;
    http_respond_error(req, 403, "Forbidden", "Not enough permissions");
    return -EACCES;
}

void api_client_ip(struct api *api, struct http_req *req, char *out, size_t len)
{
    rl_client_ip(&api->trust, http_remote_addr(req), http_header(req, "X-Forwarded-For"),
                 http_header(req, "X-Real-IP"), out, len);
}

/* ---- bcrypt on the pool ---- */

struct pw_job {
    const char *password;
    const char *hash; /* check when set, else hash */
    int cost;
    char out[AUTH_HASH_MAX];
    int rc;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void pw_run(void *arg)
{
    struct pw_job *job = arg;
    int rc = job->hash ? auth_password_check(job->password, job->hash)
                       : auth_password_hash(job->password, job->cost, job->out, sizeof(job->out));
    pthread_mutex_lock(&job->mu);
    job->rc = rc;
    job->done = true;
    pthread_cond_signal(&job->cv);
    pthread_mutex_unlock(&job->mu);
}

static int pw_submit(struct api *api, struct pw_job *job)
{
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    int rc = pool_submit(api->pool, pw_run, job);
    if (rc == 0) {
        pthread_mutex_lock(&job->mu);
        while (!job->done)
            pthread_cond_wait(&job->cv, &job->mu);
        pthread_mutex_unlock(&job->mu);
        rc = job->rc;
    } else if (rc == -ESHUTDOWN) {
        rc = -EAGAIN;
    }
    pthread_cond_destroy(&job->cv);
    pthread_mutex_destroy(&job->mu);
    return rc;
}

int api_password_hash(struct api *api, const char *password, char *out, size_t len)
{
    struct pw_job job = {.password = password, .cost = (int)api->cfg->bcrypt_cost};
    int rc = pw_submit(api, &job);
    if (rc == 0) {
        if (strlen(job.out) + 1 > len)
            rc = -E2BIG;
        else
            memcpy(out, job.out, strlen(job.out) + 1);
    }
    explicit_bzero(job.out, sizeof(job.out));
    return rc;
}

int api_password_check(struct api *api, const char *password, const char *hash)
{
    struct pw_job job = {.password = password, .hash = hash};
    return pw_submit(api, &job);
}

/* ---- sessions ---- */

static void set_cookie(struct http_req *req, const char *name, const char *value, long max_age,
                       bool httponly)
{
    char buf[TOKEN_MAX + 256];
    snprintf(buf, sizeof(buf), "%s=%s; Max-Age=%ld; Path=/; SameSite=Strict%s%s", name, value,
             max_age, httponly ? "; HttpOnly" : "", http_is_tls(req) ? "; Secure" : "");
    http_add_header(req, "Set-Cookie", buf);
}

int api_session_issue(struct api *api, struct http_req *req, const char *username, const char *role,
                      cJSON *body)
{
    int64_t now = now_wall_ms() / 1000;
    long max_age = (long)api->cfg->session_timeout_minutes * 60;
    struct jwt_claims claims = {.iat = now, .exp = now + max_age};
    snprintf(claims.sub, sizeof(claims.sub), "%s", username);
    snprintf(claims.role, sizeof(claims.role), "%s", role);
    int rc = auth_random_hex(claims.jti, 16);
    char *token = NULL;
    if (!rc)
        rc = jwt_encode(api->cfg->secret_key, &claims, &token);
    if (rc)
        return rc;
    char nonce[33];
    char csrf[AUTH_CSRF_LEN + 8];
    rc = auth_random_hex(nonce, 16);
    if (!rc)
        rc = csrf_token_make(api->cfg->secret_key, nonce, token, csrf, sizeof(csrf));
    if (rc) {
        free(token);
        return rc;
    }
    set_cookie(req, "access_token", token, max_age, true);
    set_cookie(req, "csrf_token", csrf, max_age, false);
    cJSON_AddStringToObject(body, "csrf_token", csrf);
    cJSON_AddStringToObject(body, "access_token", token);
    cJSON_AddStringToObject(body, "token_type", "bearer");
    free(token);
    return 0;
}

void api_session_clear(struct http_req *req)
{
    set_cookie(req, "access_token", "", 0, true);
    set_cookie(req, "csrf_token", "", 0, false);
}

/* ---- CSRF ---- */

static bool state_changing(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0 || strcmp(method, "DELETE") == 0;
}

static bool path_is(const char *path, const char *p)
{
    size_t n = strlen(p);
    return strncmp(path, p, n) == 0 && (path[n] == '\0' || (path[n] == '/' && path[n + 1] == '\0'));
}

int api_csrf_middleware(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    const char *path = http_path(req);
    if (!path || strncmp(path, "/api/", 5) != 0 || !state_changing(http_method(req)))
        return 0;
    if (path_is(path, "/api/v1/auth/login") || path_is(path, "/api/v1/auth/register"))
        return 0;
    char token[TOKEN_MAX];
    if (bearer_token(req, token, sizeof(token)) == 0)
        return 0;
    if (http_cookie(req, "access_token", token, sizeof(token)) != 0)
        return 0;
    char cookie[AUTH_CSRF_LEN + 64];
    const char *hdr = http_header(req, "X-CSRF-Token");
    bool ok = hdr && http_cookie(req, "csrf_token", cookie, sizeof(cookie)) == 0 &&
              auth_str_equal(hdr, cookie) && csrf_token_verify(api->cfg->secret_key, hdr, token);
    if (ok)
        return 0;
    log_info(API_ROLE, "csrf validation failed", "method=%s path=\"%s\" header=%s",
             http_method(req), path, hdr ? "present" : "missing");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "detail", "CSRF validation failed");
    cJSON_AddStringToObject(o, "type", "Forbidden");
    http_respond_json(req, 403, o);
    cJSON_Delete(o);
    return 1;
}
