/*
 * api_idempotency.c — Idempotency-Key for POST routes (api.md: a repeat of
 * the same user + key within 24 h returns the first response; while the
 * first is in flight → 409).
 *
 * idempotency_keys: {_id: "<user_id>:<key>", user_id, key, status
 * "in_flight"|"done", response_status, response_body, created_at,
 * expires_at}.  The claim is one insert (the unique _id decides the race
 * across replicas); a claim older than API_IDEM_INFLIGHT_MS whose request
 * never completed is taken over with a conditional update on its
 * created_at, so a crashed request does not block its key for a day.
 * Expired documents are deleted by the store's reaper.
 *
 * Used by: the execute route (issue of the executions API); no route of
 * the accounts API is naturally idempotency-keyed, so until then this is
 * exercised by the unit test of api_idem_classify/api_idem_id.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "host.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define API_IDEM_INFLIGHT_MS (5LL * 60 * 1000)

int api_idem_id(const char *user_id, const char *key, char *out, size_t len)
{
    size_t n = key ? strlen(key) : 0;
    if (!user_id || !user_id[0] || n == 0 || n > API_IDEM_KEY_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return -EINVAL;
    int w = snprintf(out, len, "%s:%s", user_id, key);
    return w < 0 || (size_t)w >= len ? -E2BIG : 0;
}

enum api_idem_state api_idem_classify(const cJSON *doc, int64_t now_ms, int *status,
                                      const char **body)
{
    int64_t expires = 0, created = 0;
    if (store_date_ms(cJSON_GetObjectItemCaseSensitive(doc, "expires_at"), &expires) != 0 ||
        expires <= now_ms)
        return API_IDEM_NEW;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "status");
    if (cJSON_IsString(st) && strcmp(st->valuestring, "done") == 0) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(doc, "response_status");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(doc, "response_body");
        if (status)
            *status = cJSON_IsNumber(code) ? code->valueint : 200;
        if (body)
            *body = cJSON_IsString(b) ? b->valuestring : "";
        return API_IDEM_DONE;
    }
    if (store_date_ms(cJSON_GetObjectItemCaseSensitive(doc, "created_at"), &created) != 0 ||
        created + API_IDEM_INFLIGHT_MS <= now_ms)
        return API_IDEM_NEW;
    return API_IDEM_IN_FLIGHT;
}

int api_idempotency_init(struct api *api)
{
    return store_reaper_add(api->host->store, API_IDEMPOTENCY, "expires_at");
}

static cJSON *claim_fields(cJSON *obj, const char *user_id, const char *key, int64_t now)
{
    cJSON_AddStringToObject(obj, "user_id", user_id);
    cJSON_AddStringToObject(obj, "key", key);
    cJSON_AddStringToObject(obj, "status", "in_flight");
    cJSON_AddItemToObject(obj, "created_at", store_date(now));
    cJSON_AddItemToObject(obj, "expires_at", store_date(now + API_IDEM_TTL_MS));
    return obj;
}

int api_idem_begin(struct api *api, const char *user_id, const char *key,
                   enum api_idem_state *state, int *status, char **body)
{
    char id[512];
    int rc = api_idem_id(user_id, key, id, sizeof(id));
    if (rc)
        return rc;
    struct store *store = api->host->store;
    int64_t now = now_wall_ms();
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "_id", id);
    claim_fields(doc, user_id, key, now);
    rc = store_insert_one(store, API_IDEMPOTENCY, doc);
    cJSON_Delete(doc);
    if (rc == 0) {
        *state = API_IDEM_NEW;
        return 0;
    }
    if (rc != -EEXIST)
        return rc;

    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", id);
    cJSON *found = NULL;
    rc = store_find_one(store, API_IDEMPOTENCY, filter, NULL, &found);
    cJSON_Delete(filter);
    if (rc == -ENOENT) {
        /* Reaped or aborted between our insert and find: the caller retries. */
        *state = API_IDEM_IN_FLIGHT;
        return 0;
    }
    if (rc)
        return rc;
    const char *b = NULL;
    int code = 0;
    enum api_idem_state st = api_idem_classify(found, now, &code, &b);
    if (st == API_IDEM_DONE) {
        char *copy = strdup(b ? b : "");
        if (!copy) {
            cJSON_Delete(found);
            return -ENOMEM;
        }
        *status = code;
        *body = copy;
    } else if (st == API_IDEM_NEW) {
        /* Stale claim: take it over only if nobody else did meanwhile. */
        filter = cJSON_CreateObject();
        cJSON_AddStringToObject(filter, "_id", id);
        const cJSON *created = cJSON_GetObjectItemCaseSensitive(found, "created_at");
        if (created)
            cJSON_AddItemToObject(filter, "created_at", cJSON_Duplicate(created, 1));
        cJSON *update = cJSON_CreateObject();
        claim_fields(cJSON_AddObjectToObject(update, "$set"), user_id, key, now);
        cJSON_AddStringToObject(cJSON_AddObjectToObject(update, "$unset"), "response_body", "");
        int64_t matched = 0;
        rc = store_update_one(store, API_IDEMPOTENCY, filter, update, false, &matched);
        cJSON_Delete(filter);
        cJSON_Delete(update);
        if (rc && rc != -ENOENT) {
            cJSON_Delete(found);
            return rc;
        }
        st = rc == 0 && matched == 1 ? API_IDEM_NEW : API_IDEM_IN_FLIGHT;
    }
    cJSON_Delete(found);
    *state = st;
    return 0;
}

int api_idem_complete(struct api *api, const char *user_id, const char *key, int status,
                      const char *body)
{
    char id[512];
    int rc = api_idem_id(user_id, key, id, sizeof(id));
    if (rc)
        return rc;
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", id);
    cJSON_AddStringToObject(filter, "status", "in_flight");
    cJSON *update = cJSON_CreateObject();
    cJSON *set = cJSON_AddObjectToObject(update, "$set");
    cJSON_AddStringToObject(set, "status", "done");
    cJSON_AddNumberToObject(set, "response_status", status);
    cJSON_AddStringToObject(set, "response_body", body ? body : "");
    cJSON_AddItemToObject(set, "completed_at", store_date(now_wall_ms()));
    rc = store_update_one(api->host->store, API_IDEMPOTENCY, filter, update, false, NULL);
    cJSON_Delete(filter);
    cJSON_Delete(update);
    if (rc)
        log_warn(API_ROLE, "cannot complete idempotency key", "id=\"%s\" err=%d", id, rc);
    return rc;
}

int api_idem_abort(struct api *api, const char *user_id, const char *key)
{
    char id[512];
    int rc = api_idem_id(user_id, key, id, sizeof(id));
    if (rc)
        return rc;
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", id);
    cJSON_AddStringToObject(filter, "status", "in_flight");
    rc = store_delete_many(api->host->store, API_IDEMPOTENCY, filter, NULL);
    cJSON_Delete(filter);
    return rc;
}
