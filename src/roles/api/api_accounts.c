/*
 * api_accounts.c — register, login, me, logout; the users collection, the
 * bootstrap admin and the login lockout.
 *
 * users: {_id = user_id, user_id, username, email, hashed_password, role,
 * is_active, is_superuser, created_at, updated_at, bypass_rate_limit,
 * global_multiplier, has_custom_limits}; unique indexes on username, email
 * and user_id make "taken" a duplicate-key error, race-free across replicas.
 * hashed_password never leaves this file: responses are built field by
 * field (api_user_response) and nothing logs a body.
 *
 * Lockout (login_attempts, one document per username, known or not, so the
 * answer does not tell which usernames exist): each failure is one
 * conditional findAndModify ($inc failures while not expired); reaching
 * EXECD_LOGIN_MAX_ATTEMPTS sets locked_until = now + EXECD_LOGIN_LOCKOUT_MINUTES,
 * and while locked every login answers 423 before any password is checked.
 * A success deletes the document; expired documents are ignored and then
 * removed by the store's reaper (expires_at).  An unknown username is
 * checked against a dummy bcrypt hash of the same cost, so it costs the same
 * time as a known one.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bus.h"
#include "config.h"
#include "events.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"

static const struct store_index user_indexes[] = {
    {.name = "username_unique", .keys = "{\"username\":1}", .unique = true},
    {.name = "email_unique", .keys = "{\"email\":1}", .unique = true},
    {.name = "user_id_unique", .keys = "{\"user_id\":1}", .unique = true},
    {.name = "role_1", .keys = "{\"role\":1}"},
};

static const struct api_field register_fields[] = {
    {.name = "username", .type = AF_STR, .required = true, .min_len = 1, .max_len = 64},
    {.name = "email", .type = AF_STR, .required = true, .min_len = 3, .max_len = 254},
    {.name = "password", .type = AF_STR, .required = true, .min_len = 8, .max_len = 1024},
    {.name = "role", .type = AF_ANY, .ignored = true},
};

static const struct api_field login_fields[] = {
    {.name = "username", .type = AF_STR, .required = true, .min_len = 1, .max_len = 128},
    {.name = "password", .type = AF_STR, .required = true, .min_len = 1, .max_len = 1024},
    /* OAuth2 password-grant form fields, accepted and unused */
    {.name = "grant_type", .type = AF_ANY, .ignored = true},
    {.name = "scope", .type = AF_ANY, .ignored = true},
    {.name = "client_id", .type = AF_ANY, .ignored = true},
    {.name = "client_secret", .type = AF_ANY, .ignored = true},
};

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
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

static void add_bool(cJSON *out, const char *name, const cJSON *doc, bool def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    cJSON_AddBoolToObject(out, name, cJSON_IsBool(v) ? cJSON_IsTrue(v) : def);
}

cJSON *api_user_response(const cJSON *doc)
{
    cJSON *o = cJSON_CreateObject();
    static const char *const strs[] = {"user_id", "username", "email", "role"};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        const char *s = str_of(doc, strs[i]);
        if (s)
            cJSON_AddStringToObject(o, strs[i], s);
        else
            cJSON_AddNullToObject(o, strs[i]);
    }
    add_bool(o, "is_active", doc, true);
    add_bool(o, "is_superuser", doc, false);
    add_date(o, "created_at", doc);
    add_date(o, "updated_at", doc);
    add_bool(o, "bypass_rate_limit", doc, false);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "global_multiplier");
    cJSON_AddNumberToObject(o, "global_multiplier", cJSON_IsNumber(m) ? m->valuedouble : 1.0);
    add_bool(o, "has_custom_limits", doc, false);
    return o;
}

void api_publish_user_event(struct api *api, struct http_req *req, int type, const char *user_id,
                            const char *username, const char *reason)
{
    if (!api->host->bus)
        return;
    enum event_type t = (enum event_type)type;
    struct event *ev = event_new(t, user_id ? user_id : username);
    if (!ev)
        return;
    char ip[64];
    api_client_ip(api, req, ip, sizeof(ip));
    const char *ua = http_header(req, "User-Agent");
    ev->meta.user_id = xstrdup(user_id);
    ev->meta.ip = xstrdup(ip);
    if (ua)
        ev->meta.user_agent = strndup(ua, 256);
    if (t == EV_auth_failed) {
        event_set_str(ev, "username", username);
        event_set_str(ev, "reason", reason);
    } else {
        event_set_str(ev, "user_id", user_id);
        if (username)
            event_set_str(ev, "username", username);
    }
    int rc = bus_publish_event(api->host->bus, ev);
    if (rc)
        log_error(API_ROLE, "cannot publish user event", "event_type=%s err=%d", event_type_name(t),
                  rc);
    event_free(ev);
}

/* A users document for a new account; caller owns. */
static cJSON *user_doc(const char *username, const char *email, const char *hash, const char *role)
{
    char id[UUID_LEN];
    uuid_v4(id);
    int64_t now = now_wall_ms();
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "_id", id);
    cJSON_AddStringToObject(doc, "user_id", id);
    cJSON_AddStringToObject(doc, "username", username);
    cJSON_AddStringToObject(doc, "email", email);
    cJSON_AddStringToObject(doc, "hashed_password", hash);
    cJSON_AddStringToObject(doc, "role", role);
    cJSON_AddBoolToObject(doc, "is_active", true);
    cJSON_AddBoolToObject(doc, "is_superuser", strcmp(role, "admin") == 0);
    cJSON_AddItemToObject(doc, "created_at", store_date(now));
    cJSON_AddItemToObject(doc, "updated_at", store_date(now));
    cJSON_AddBoolToObject(doc, "bypass_rate_limit", false);
    cJSON_AddNumberToObject(doc, "global_multiplier", 1.0);
    cJSON_AddBoolToObject(doc, "has_custom_limits", false);
    return doc;
}

static bool valid_username(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.-@+", *s))
            return false;
    return true;
}

/* local@domain.tld, printable ASCII, no spaces; lowercased into out. */
static bool valid_email(const char *s, char *out, size_t len)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@') || strlen(s) >= len)
        return false;
    const char *dot = strrchr(at + 1, '.');
    if (!dot || dot == at + 1 || dot[1] == '\0')
        return false;
    size_t i = 0;
    for (; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || strchr("()<>,;:\\\"[]", c))
            return false;
        out[i] = (char)tolower(c);
    }
    out[i] = '\0';
    return true;
}

static int find_user(struct api *api, const char *field, const char *value, cJSON **out)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, field, value);
    int rc = store_find_one(api->host->store, API_USERS, filter, NULL, out);
    cJSON_Delete(filter);
    return rc;
}

static void on_register(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    cJSON *body = NULL;
    if (api_read_json(req, &body) != 0)
        return;
    if (api_validate(req, body, register_fields,
                     sizeof(register_fields) / sizeof(register_fields[0])) != 0)
        goto out;
    const char *username = str_of(body, "username");
    const char *password = str_of(body, "password");
    char email[256];
    if (!valid_username(username)) {
        api_respond_invalid(req, "body", "username",
                            "Username may contain letters, digits and _ . - @ + only",
                            "value_error");
        goto out;
    }
    if (!valid_email(str_of(body, "email"), email, sizeof(email))) {
        api_respond_invalid(req, "body", "email", "value is not a valid email address",
                            "value_error");
        goto out;
    }
    char hash[AUTH_HASH_MAX];
    int rc = api_password_hash(api, password, hash, sizeof(hash));
    if (rc) {
        http_respond_error(req, 503, "Infrastructure",
                           rc == -EAGAIN ? "server busy, retry" : "cannot hash password");
        goto out;
    }
    cJSON *doc = user_doc(username, email, hash, "user");
    explicit_bzero(hash, sizeof(hash));
    rc = store_insert_one(api->host->store, API_USERS, doc);
    if (rc == -EEXIST) {
        cJSON *other = NULL;
        bool by_name = find_user(api, "username", username, &other) == 0;
        cJSON_Delete(other);
        http_respond_error(req, 409, "Conflict",
                           by_name ? "Username already registered" : "Email already registered");
    } else if (rc) {
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
    } else {
        const char *id = str_of(doc, "user_id");
        log_info(API_ROLE, "user registered", "user_id=%s username=\"%s\"", id, username);
        api_publish_user_event(api, req, EV_user_registered, id, username, NULL);
        cJSON *resp = api_user_response(doc);
        http_respond_json(req, 200, resp);
        cJSON_Delete(resp);
    }
    cJSON_Delete(doc);
out:
    cJSON_Delete(body);
}

/* ---- lockout ---- */

/* Milliseconds until username's lock ends, 0 when not locked, <0 on error. */
static int64_t locked_for(struct api *api, const char *username)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", username);
    cJSON *doc = NULL;
    int rc = store_find_one(api->host->store, API_LOGIN_ATTEMPTS, filter, NULL, &doc);
    cJSON_Delete(filter);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return rc;
    int64_t until = 0, now = now_wall_ms();
    int64_t left = 0;
    if (store_date_ms(cJSON_GetObjectItemCaseSensitive(doc, "locked_until"), &until) == 0 &&
        until > now)
        left = until - now;
    cJSON_Delete(doc);
    return left;
}

/* Counts a failure; returns the failure count, or <0 on error. */
static int record_failure(struct api *api, const char *username)
{
    struct store *store = api->host->store;
    int64_t now = now_wall_ms();
    int64_t lock_ms = api->cfg->login_lockout_minutes * 60000;
    int max = (int)api->cfg->login_max_attempts;

    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", username);
    cJSON_AddItemToObject(cJSON_AddObjectToObject(filter, "expires_at"), "$gt", store_date(now));
    cJSON *update = cJSON_CreateObject();
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(update, "$inc"), "failures", 1);
    cJSON *set = cJSON_AddObjectToObject(update, "$set");
    cJSON_AddItemToObject(set, "updated_at", store_date(now));
    cJSON_AddItemToObject(set, "expires_at", store_date(now + lock_ms));
    cJSON *doc = NULL;
    int rc =
        store_find_and_modify(store, API_LOGIN_ATTEMPTS, filter, update, NULL, false, true, &doc);
    cJSON_Delete(filter);
    cJSON_Delete(update);
    int failures = 1;
    if (rc == 0) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(doc, "failures");
        failures = cJSON_IsNumber(f) ? f->valueint : 1;
        cJSON_Delete(doc);
    } else if (rc == -ENOENT) {
        /* No live document: start a new count (replacing an expired one). */
        filter = cJSON_CreateObject();
        cJSON_AddStringToObject(filter, "_id", username);
        update = cJSON_CreateObject();
        set = cJSON_AddObjectToObject(update, "$set");
        cJSON_AddStringToObject(set, "username", username);
        cJSON_AddNumberToObject(set, "failures", 1);
        cJSON_AddNullToObject(set, "locked_until");
        cJSON_AddItemToObject(set, "updated_at", store_date(now));
        cJSON_AddItemToObject(set, "expires_at", store_date(now + lock_ms));
        rc = store_update_one(store, API_LOGIN_ATTEMPTS, filter, update, true, NULL);
        cJSON_Delete(filter);
        cJSON_Delete(update);
        if (rc)
            return rc;
    } else {
        return rc;
    }
    if (failures >= max) {
        filter = cJSON_CreateObject();
        cJSON_AddStringToObject(filter, "_id", username);
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(filter, "failures"), "$gte", max);
        update = cJSON_CreateObject();
        set = cJSON_AddObjectToObject(update, "$set");
        cJSON_AddItemToObject(set, "locked_until", store_date(now + lock_ms));
        cJSON_AddItemToObject(set, "expires_at", store_date(now + lock_ms));
        rc = store_update_one(store, API_LOGIN_ATTEMPTS, filter, update, false, NULL);
        cJSON_Delete(filter);
        cJSON_Delete(update);
        if (rc && rc != -ENOENT)
            return rc;
        log_warn(API_ROLE, "username locked after failed logins",
                 "username=\"%s\" failures=%d "
                 "minutes=%lld",
                 username, failures, (long long)api->cfg->login_lockout_minutes);
    }
    return failures;
}

static void clear_failures(struct api *api, const char *username)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", username);
    if (store_delete_many(api->host->store, API_LOGIN_ATTEMPTS, filter, NULL) != 0)
        log_warn(API_ROLE, "cannot clear login failures", "username=\"%s\"", username);
    cJSON_Delete(filter);
}

static void respond_locked(struct http_req *req, int64_t left_ms)
{
    char detail[160];
    long minutes = (long)((left_ms + 59999) / 60000);
    snprintf(detail, sizeof(detail),
             "Account locked due to too many failed login attempts. Try again in %ld minute%s.",
             minutes, minutes == 1 ? "" : "s");
    char ra[32];
    snprintf(ra, sizeof(ra), "%lld", (long long)((left_ms + 999) / 1000));
    http_add_header(req, "Retry-After", ra);
    http_respond_error(req, 423, "Locked", detail);
}

/* The login body as a JSON object (form or JSON); answers on failure. */
static int login_body(struct http_req *req, cJSON **out)
{
    const char *ct = http_header(req, "Content-Type");
    if (ct && strstr(ct, "json"))
        return api_read_json(req, out);
    const char *body;
    size_t len;
    int rc = http_body(req, 0, &body, &len);
    if (rc) {
        if (!http_responded(req))
            http_respond_error(req, 400, "InvalidState", "cannot read request body");
        return rc;
    }
    if (ct && !strstr(ct, "application/x-www-form-urlencoded")) {
        return api_respond_invalid(req, "body", NULL,
                                   "Send the credentials as application/x-www-form-urlencoded "
                                   "or application/json",
                                   "model_type");
    }
    if (!ct && len && body[0] == '{')
        return api_read_json(req, out);
    if (api_parse_form(body, len, out) != 0)
        return api_respond_invalid(req, "body", NULL, "Malformed form body", "value_error");
    return 0;
}

static void on_login(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    cJSON *body = NULL;
    if (login_body(req, &body) != 0)
        return;
    cJSON *user = NULL;
    if (api_validate(req, body, login_fields, sizeof(login_fields) / sizeof(login_fields[0])))
        goto out;
    const char *username = str_of(body, "username");
    const char *password = str_of(body, "password");

    int64_t left = locked_for(api, username);
    if (left < 0) {
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
        goto out;
    }
    if (left > 0) {
        api_publish_user_event(api, req, EV_auth_failed, NULL, username, "account_locked");
        respond_locked(req, left);
        goto out;
    }
    int rc = find_user(api, "username", username, &user);
    if (rc && rc != -ENOENT) {
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
        goto out;
    }
    const char *hash = user ? str_of(user, "hashed_password") : NULL;
    int check = api_password_check(api, password, hash ? hash : api->dummy_hash);
    if (check == -EAGAIN) {
        http_respond_error(req, 503, "Infrastructure", "server busy, retry");
        goto out;
    }
    const cJSON *active = cJSON_GetObjectItemCaseSensitive(user, "is_active");
    if (check != 0 || !hash || cJSON_IsFalse(active)) {
        if (api->m_login_failures)
            metric_add(api->m_login_failures, 1);
        int failures = record_failure(api, username);
        log_info(API_ROLE, "login failed", "username=\"%s\" failures=%d", username, failures);
        api_publish_user_event(api, req, EV_auth_failed, NULL, username,
                               user ? "invalid_password" : "unknown_user");
        http_add_header(req, "WWW-Authenticate", "Bearer");
        http_respond_error(req, 401, "Unauthorized", "Incorrect username or password");
        goto out;
    }
    clear_failures(api, username);
    const char *role = str_of(user, "role");
    const char *user_id = str_of(user, "user_id");
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddStringToObject(resp, "message", "Login successful");
    cJSON_AddStringToObject(resp, "username", username);
    cJSON_AddStringToObject(resp, "role", role ? role : "user");
    if (api_session_issue(api, req, username, role ? role : "user", resp) != 0) {
        cJSON_Delete(resp);
        http_respond_error(req, 500, "Infrastructure", "cannot issue a session");
        goto out;
    }
    if (api->m_logins)
        metric_add(api->m_logins, 1);
    log_info(API_ROLE, "user logged in", "user_id=%s username=\"%s\"", user_id ? user_id : "-",
             username);
    api_publish_user_event(api, req, EV_user_logged_in, user_id, username, NULL);
    http_respond_json(req, 200, resp);
    cJSON_Delete(resp);
out:
    cJSON_Delete(user);
    if (body) {
        cJSON *pw = cJSON_GetObjectItemCaseSensitive(body, "password");
        if (cJSON_IsString(pw))
            explicit_bzero(pw->valuestring, strlen(pw->valuestring));
    }
    cJSON_Delete(body);
}

static void on_me(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    cJSON *resp = api_user_response(user.doc);
    http_respond_json(req, 200, resp);
    cJSON_Delete(resp);
    api_user_release(&user);
}

static void on_logout(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user user;
    if (api_require_user(api, req, &user) != 0)
        return;
    api_session_clear(req);
    log_info(API_ROLE, "user logged out", "user_id=%s", user.user_id);
    api_publish_user_event(api, req, EV_user_logged_out, user.user_id, user.username, NULL);
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddStringToObject(resp, "message", "Logout successful");
    http_respond_json(req, 200, resp);
    cJSON_Delete(resp);
    api_user_release(&user);
}

static const struct api_route account_routes[] = {
    {"POST", "/api/v1/auth/register", on_register, "Register a new user (role is always 'user')",
     "auth", "public", "RegisterRequest", "UserResponse"},
    {"POST", "/api/v1/auth/login", on_login,
     "Log in with a form or JSON body; sets the access_token and csrf_token cookies", "auth",
     "public", "LoginRequest", "LoginResponse"},
    {"GET", "/api/v1/auth/me", on_me, "The current user", "auth", "user", NULL, "UserResponse"},
    {"POST", "/api/v1/auth/logout", on_logout, "End the session and clear its cookies", "auth",
     "user", NULL, "Message"},
};

/* Creates the bootstrap admin when configured and no admin exists. */
static int bootstrap_admin(struct api *api)
{
    const struct config *cfg = api->cfg;
    if (!cfg->admin_username[0])
        return 0;
    if (strlen(cfg->admin_password) < 8) {
        log_error(API_ROLE,
                  "EXECD_ADMIN_PASSWORD must have at least 8 characters when "
                  "EXECD_ADMIN_USERNAME is set",
                  "username=\"%s\"", cfg->admin_username);
        return -EINVAL;
    }
    if (!valid_username(cfg->admin_username)) {
        log_error(API_ROLE, "EXECD_ADMIN_USERNAME may contain letters, digits and _ . - @ + only",
                  "username=\"%s\"", cfg->admin_username);
        return -EINVAL;
    }
    struct store *store = api->host->store;
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "role", "admin");
    int64_t admins = 0;
    int rc = store_count(store, API_USERS, filter, &admins);
    cJSON_Delete(filter);
    if (rc)
        return rc;
    if (admins > 0)
        return 0;
    cJSON *existing = NULL;
    if (find_user(api, "username", cfg->admin_username, &existing) == 0) {
        cJSON_Delete(existing);
        log_warn(API_ROLE, "bootstrap admin not created: the username belongs to a non-admin user",
                 "username=\"%s\"", cfg->admin_username);
        return 0;
    }
    char email[256], given[256];
    if (cfg->admin_email[0])
        snprintf(given, sizeof(given), "%s", cfg->admin_email);
    else
        snprintf(given, sizeof(given), "%s@execd.local", cfg->admin_username);
    if (!valid_email(given, email, sizeof(email))) {
        log_error(API_ROLE, "EXECD_ADMIN_EMAIL is not a valid email address", "email=\"%s\"",
                  given);
        return -EINVAL;
    }
    char hash[AUTH_HASH_MAX];
    rc = auth_password_hash(cfg->admin_password, (int)cfg->bcrypt_cost, hash, sizeof(hash));
    if (rc)
        return rc;
    cJSON *doc = user_doc(cfg->admin_username, email, hash, "admin");
    explicit_bzero(hash, sizeof(hash));
    rc = store_insert_one(store, API_USERS, doc);
    if (rc == 0)
        log_info(API_ROLE, "bootstrap admin created", "username=\"%s\" user_id=%s",
                 cfg->admin_username, str_of(doc, "user_id"));
    cJSON_Delete(doc);
    return rc == -EEXIST ? 0 : rc;
}

int api_accounts_init(struct api *api)
{
    struct store *store = api->host->store;
    int rc = store_create_indexes(store, API_USERS, user_indexes,
                                  sizeof(user_indexes) / sizeof(user_indexes[0]));
    if (rc) {
        log_error(API_ROLE, "cannot create indexes", "collection=%s err=%d", API_USERS, rc);
        return rc;
    }
    rc = store_reaper_add(store, API_LOGIN_ATTEMPTS, "expires_at");
    if (rc)
        return rc;
    rc = auth_password_hash("execd-dummy-password-for-unknown-users", (int)api->cfg->bcrypt_cost,
                            api->dummy_hash, sizeof(api->dummy_hash));
    if (rc) {
        log_error(API_ROLE, "bcrypt through crypt(3) is not available", "err=%d", rc);
        return rc;
    }
    rc = bootstrap_admin(api);
    if (rc)
        return rc;
    return api_routes_add(api, account_routes, sizeof(account_routes) / sizeof(account_routes[0]));
}
