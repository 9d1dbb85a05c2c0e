/*
 * store_mongo.c — the store port (store.h) over mongo-c-driver 1.23.
 *
 * One mongoc_client_pool_t per process; every call pops a client, does one
 * unit of work and pushes it back.  Documents travel as cJSON: out through
 * cJSON_PrintUnformatted + bson_new_from_json, back through
 * bson_as_relaxed_extended_json + cJSON_Parse, with relaxed ISO dates
 * rewritten to {"$date":{"$numberLong":"ms"}} so callers see one date form.
 *
 * Portability (INFRA.md, FerretDB 1.24 ∩ MongoDB): indexes are made with a
 * hand-built createIndexes command (key, name, unique only), no TTL indexes
 * (the expiry reaper below deletes {field: {$lt: now}} periodically), no
 * sessions or transactions, errors matched by code (11000 = duplicate key).
 *
 * Library errors are translated to negative errno here and logged once with
 * the driver's message.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <mongoc/mongoc.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define LOG_ROLE "mongo"
#define REAPER_MAX 32
#define NAME_MAX_LEN 128

struct reaper_entry {
    char coll[NAME_MAX_LEN];
    char field[NAME_MAX_LEN];
};

struct store {
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char db[NAME_MAX_LEN];
    int64_t reaper_interval_ms;

    pthread_mutex_t lock; /* guards the reaper fields */
    pthread_cond_t wake;
    struct reaper_entry reap[REAPER_MAX];
    size_t nreap;
    pthread_t reaper;
    bool reaper_running;
    bool reaper_stop;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Copies a driver message for a double-quoted log value (quotes → '). */
static const char *quoted(const char *msg, char *buf, size_t len)
{
    size_t i = 0;
    for (; msg && msg[i] && i + 1 < len; i++)
        buf[i] = msg[i] == '"' ? '\'' : msg[i];
    buf[i] = '\0';
    return buf;
}

/* The driver's own log lines go through log.h (warnings and worse). */
static void driver_log(mongoc_log_level_t level, const char *domain, const char *message,
                       void *data)
{
    char buf[512];
    (void)data;
    if (level <= MONGOC_LOG_LEVEL_ERROR)
        log_error(LOG_ROLE, "mongo driver error", "domain=%s err=\"%s\"", domain,
                  quoted(message, buf, sizeof(buf)));
    else if (level == MONGOC_LOG_LEVEL_WARNING)
        log_warn(LOG_ROLE, "mongo driver warning", "domain=%s err=\"%s\"", domain,
                 quoted(message, buf, sizeof(buf)));
}

static void driver_init(void)
{
    mongoc_log_set_handler(driver_log, NULL);
    mongoc_init();
}

/* ---- errors ----------------------------------------------------------- */

static int errno_of(const bson_error_t *error)
{
    if (error->code == 11000 || error->code == 11001)
        return -EEXIST;
    switch (error->domain) {
    case MONGOC_ERROR_BSON:
    case MONGOC_ERROR_BSON_INVALID:
        return -EINVAL;
    case MONGOC_ERROR_COMMAND:
        return error->code == MONGOC_ERROR_COMMAND_INVALID_ARG ? -EINVAL : -EIO;
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_STREAM:
        return -EIO;
    case MONGOC_ERROR_SERVER:
    case MONGOC_ERROR_WRITE_CONCERN:
        /* BadValue, FailedToParse, TypeMismatch, InvalidLength, DollarPrefixed... */
        if (error->code == 2 || error->code == 9 || error->code == 14 || error->code == 16 ||
            error->code == 52 || error->code == 57)
            return -EINVAL;
        return -EIO;
    default:
        return -EIO;
    }
}

/* Translates and logs once; duplicate keys are the caller's business. */
static int fail(const char *op, const char *coll, const bson_error_t *error)
{
    char msg[sizeof(error->message)];
    int rc = errno_of(error);
    if (rc != -EEXIST)
        log_error(LOG_ROLE, "mongo operation failed", "op=%s coll=%s code=%" PRIu32 " err=\"%s\"",
                  op, coll ? coll : "-", error->code, quoted(error->message, msg, sizeof(msg)));
    return rc;
}

/* ---- cJSON <-> BSON ---------------------------------------------------- */

/* NULL and logs on a document libbson refuses. */
static bson_t *to_bson(const cJSON *json, const char *op, const char *coll)
{
    if (json == NULL)
        return bson_new();
    char *text = cJSON_PrintUnformatted(json);
    if (text == NULL)
        return NULL;
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)text, -1, &error);
    if (doc == NULL)
        log_error(LOG_ROLE, "cannot convert document to bson", "op=%s coll=%s err=\"%s\"", op,
                  coll ? coll : "-", error.message);
    free(text);
    return doc;
}

/* Rewrites {"$date": "<iso>"} to {"$date": {"$numberLong": "<ms>"}} in place. */
static void normalize_dates(cJSON *node)
{
    for (cJSON *it = node ? node->child : NULL; it; it = it->next) {
        if (cJSON_IsObject(it)) {
            cJSON *d = cJSON_GetObjectItemCaseSensitive(it, "$date");
            if (d && it->child == d && d->next == NULL && cJSON_IsString(d)) {
                int64_t us;
                if (ts_parse_us(d->valuestring, &us) == 0) {
                    char buf[32];
                    int64_t ms = us >= 0 ? us / 1000 : -((-us + 999) / 1000);
                    snprintf(buf, sizeof(buf), "%" PRId64, ms);
                    cJSON *nl = cJSON_CreateObject();
                    if (nl && cJSON_AddStringToObject(nl, "$numberLong", buf))
                        cJSON_ReplaceItemInObjectCaseSensitive(it, "$date", nl);
                    else
                        cJSON_Delete(nl);
                }
                continue;
            }
        }
        if (cJSON_IsObject(it) || cJSON_IsArray(it))
            normalize_dates(it);
    }
}

static cJSON *to_json(const bson_t *doc)
{
    size_t len;
    char *text = bson_as_relaxed_extended_json(doc, &len);
    if (text == NULL)
        return NULL;
    cJSON *json = cJSON_ParseWithLength(text, len);
    bson_free(text);
    if (json)
        normalize_dates(json);
    return json;
}

static int64_t reply_int(const bson_t *reply, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

/* ---- lifecycle -------------------------------------------------------- */

int store_new(const struct config *cfg, struct store **out)
{
    bson_error_t error;
    struct store *store;

    pthread_once(&init_once, driver_init);
    store = calloc(1, sizeof(*store));
    if (store == NULL)
        return -ENOMEM;
    store->reaper_interval_ms = cfg->reaper_interval_ms;
    pthread_mutex_init(&store->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&store->wake, &attr);
    pthread_condattr_destroy(&attr);

    store->uri = mongoc_uri_new_with_error(cfg->mongo_uri, &error);
    if (store->uri == NULL) {
        log_error(LOG_ROLE, "invalid mongo uri", "err=\"%s\"", error.message);
        store_free(store);
        return -EINVAL;
    }
    int32_t timeout = (int32_t)cfg->mongo_timeout_ms;
    if (!mongoc_uri_has_option(store->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(store->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, timeout);
    if (!mongoc_uri_has_option(store->uri, MONGOC_URI_SOCKETTIMEOUTMS))
        mongoc_uri_set_option_as_int32(store->uri, MONGOC_URI_SOCKETTIMEOUTMS, timeout);
    if (!mongoc_uri_has_option(store->uri, MONGOC_URI_CONNECTTIMEOUTMS))
        mongoc_uri_set_option_as_int32(store->uri, MONGOC_URI_CONNECTTIMEOUTMS, timeout);
    const char *db = mongoc_uri_get_database(store->uri);
    snprintf(store->db, sizeof(store->db), "%s", db && *db ? db : "execd");

    store->pool = mongoc_client_pool_new(store->uri);
    if (store->pool == NULL) {
        log_error(LOG_ROLE, "cannot create mongo client pool", "db=%s", store->db);
        store_free(store);
        return -EINVAL;
    }
    mongoc_client_pool_set_error_api(store->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(store->pool, cfg->service_name);
    mongoc_client_pool_max_size(store->pool, (uint32_t)cfg->mongo_pool_size);
    *out = store;
    return 0;
}

static void reaper_stop(struct store *store)
{
    pthread_mutex_lock(&store->lock);
    bool running = store->reaper_running;
    store->reaper_stop = true;
    pthread_cond_broadcast(&store->wake);
    pthread_mutex_unlock(&store->lock);
    if (running)
        pthread_join(store->reaper, NULL);
    store->reaper_running = false;
}

void store_free(struct store *store)
{
    if (store == NULL)
        return;
    reaper_stop(store);
    if (store->pool)
        mongoc_client_pool_destroy(store->pool);
    if (store->uri)
        mongoc_uri_destroy(store->uri);
    pthread_cond_destroy(&store->wake);
    pthread_mutex_destroy(&store->lock);
    free(store);
}

/* ---- operations ------------------------------------------------------- */

static mongoc_client_t *pop(struct store *store)
{
    return mongoc_client_pool_pop(store->pool);
}

static void push(struct store *store, mongoc_client_t *client)
{
    mongoc_client_pool_push(store->pool, client);
}

int store_ping(struct store *store)
{
    bson_error_t error;
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    mongoc_client_t *client = pop(store);
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, NULL, &error);
    push(store, client);
    bson_destroy(cmd);
    return ok ? 0 : fail("ping", NULL, &error);
}

/* One createIndexes command per index: FerretDB 1.24 drops the connection
 * (server panic) when one command lists two or more indexes that all exist. */
static int create_index(struct store *store, const char *coll, const struct store_index *idx)
{
    bson_error_t error;
    bson_t cmd = BSON_INITIALIZER, arr, spec;
    int rc = 0;

    bson_t *keys = bson_new_from_json((const uint8_t *)idx->keys, -1, &error);
    if (keys == NULL) {
        log_error(LOG_ROLE, "invalid index keys", "coll=%s index=%s err=\"%s\"", coll, idx->name,
                  error.message);
        return -EINVAL;
    }
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &spec);
    BSON_APPEND_DOCUMENT(&spec, "key", keys);
    BSON_APPEND_UTF8(&spec, "name", idx->name);
    if (idx->unique)
        BSON_APPEND_BOOL(&spec, "unique", true);
    bson_append_document_end(&arr, &spec);
    bson_append_array_end(&cmd, &arr);

    mongoc_client_t *client = pop(store);
    if (!mongoc_client_command_simple(client, store->db, &cmd, NULL, NULL, &error))
        rc = fail("createIndexes", coll, &error);
    push(store, client);
    bson_destroy(&cmd);
    bson_destroy(keys);
    return rc;
}

int store_create_indexes(struct store *store, const char *coll, const struct store_index *idx,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = create_index(store, coll, &idx[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int store_insert_one(struct store *store, const char *coll, const cJSON *doc)
{
    bson_error_t error;
    bson_t *b = to_bson(doc, "insert", coll);
    if (b == NULL)
        return -EINVAL;
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    int rc =
        mongoc_collection_insert_one(c, b, NULL, NULL, &error) ? 0 : fail("insert", coll, &error);
    mongoc_collection_destroy(c);
    push(store, client);
    bson_destroy(b);
    return rc;
}

/* Counts writeErrors of reply: all duplicates → *dups, else the first other code. */
static int write_errors(const bson_t *reply, size_t *dups, int32_t *other, char *msg, size_t len)
{
    bson_iter_t it, arr;
    *dups = 0;
    *other = 0;
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return 0;
    while (bson_iter_next(&arr)) {
        bson_iter_t e;
        int32_t code = 0;
        if (BSON_ITER_HOLDS_DOCUMENT(&arr) && bson_iter_recurse(&arr, &e)) {
            while (bson_iter_next(&e)) {
                if (strcmp(bson_iter_key(&e), "code") == 0 && BSON_ITER_HOLDS_NUMBER(&e))
                    code = (int32_t)bson_iter_as_int64(&e);
                else if (strcmp(bson_iter_key(&e), "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&e) &&
                         *other == 0)
                    snprintf(msg, len, "%s", bson_iter_utf8(&e, NULL));
            }
        }
        if (code == 11000 || code == 11001)
            (*dups)++;
        else if (*other == 0)
            *other = code ? code : -1;
    }
    return 1;
}

int store_insert_many(struct store *store, const char *coll, const cJSON *const *docs, size_t n,
                      size_t *inserted, size_t *duplicates)
{
    bson_error_t error;
    bson_t reply;
    int rc = 0;
    size_t built = 0;

    if (n == 0) {
        if (inserted)
            *inserted = 0;
        if (duplicates)
            *duplicates = 0;
        return 0;
    }
    const bson_t **bdocs = calloc(n, sizeof(*bdocs));
    if (bdocs == NULL)
        return -ENOMEM;
    for (; built < n; built++) {
        if ((bdocs[built] = to_bson(docs[built], "insert_many", coll)) == NULL) {
            rc = -EINVAL;
            goto free_docs;
        }
    }
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    bool ok = mongoc_collection_insert_many(c, bdocs, n, opts, &reply, &error);
    size_t dups = 0;
    int64_t count = reply_int(&reply, "insertedCount");
    if (!ok) {
        int32_t other;
        char msg[256] = "";
        int has = write_errors(&reply, &dups, &other, msg, sizeof(msg));
        if (!has || other != 0) {
            if (has && other != 0)
                log_error(LOG_ROLE, "mongo operation failed",
                          "op=insert_many coll=%s code=%" PRId32 " err=\"%s\"", coll, other, msg);
            rc = has && other != 0 ? -EIO : fail("insert_many", coll, &error);
            if (rc == -EEXIST) {
                /* A duplicate reported without writeErrors: count it as one. */
                rc = 0;
                dups = n - (size_t)count;
            }
        }
    }
    bson_destroy(&reply);
    mongoc_collection_destroy(c);
    push(store, client);
    bson_destroy(opts);
    if (rc == 0) {
        if (inserted)
            *inserted = (size_t)count;
        if (duplicates)
            *duplicates = dups;
    }
free_docs:
    for (size_t i = 0; i < built; i++)
        bson_destroy((bson_t *)(uintptr_t)bdocs[i]);
    free(bdocs);
    return rc;
}

/* Find options from the caller's cJSON: sort, projection, skip, limit. */
static int find_opts(const cJSON *opts, bool one, bson_t **out, const char *coll)
{
    bson_t *b = bson_new();
    const char *keys[] = {"sort", "projection"};
    for (size_t i = 0; opts && i < 2; i++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(opts, keys[i]);
        if (item == NULL)
            continue;
        bson_t *sub = to_bson(item, "find", coll);
        if (sub == NULL) {
            bson_destroy(b);
            return -EINVAL;
        }
        BSON_APPEND_DOCUMENT(b, keys[i], sub);
        bson_destroy(sub);
    }
    const cJSON *skip = opts ? cJSON_GetObjectItemCaseSensitive(opts, "skip") : NULL;
    if (skip && cJSON_IsNumber(skip) && skip->valuedouble > 0)
        BSON_APPEND_INT64(b, "skip", (int64_t)skip->valuedouble);
    const cJSON *limit = opts ? cJSON_GetObjectItemCaseSensitive(opts, "limit") : NULL;
    if (one) {
        BSON_APPEND_INT64(b, "limit", 1);
        BSON_APPEND_BOOL(b, "singleBatch", true);
    } else if (limit && cJSON_IsNumber(limit) && limit->valuedouble > 0) {
        BSON_APPEND_INT64(b, "limit", (int64_t)limit->valuedouble);
    }
    *out = b;
    return 0;
}

static int find(struct store *store, const char *coll, const cJSON *filter, const cJSON *opts,
                bool one, cJSON **out)
{
    bson_error_t error;
    const bson_t *doc;
    bson_t *bopts = NULL;
    int rc;

    bson_t *bfilter = to_bson(filter, "find", coll);
    if (bfilter == NULL)
        return -EINVAL;
    if ((rc = find_opts(opts, one, &bopts, coll)) != 0)
        goto free_filter;
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL) {
        rc = -ENOMEM;
        goto free_opts;
    }
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(c, bfilter, bopts, NULL);
    while (mongoc_cursor_next(cursor, &doc)) {
        cJSON *json = to_json(doc);
        if (json == NULL || !cJSON_AddItemToArray(arr, json)) {
            cJSON_Delete(json);
            rc = -ENOMEM;
            break;
        }
        if (one)
            break;
    }
    if (rc == 0 && mongoc_cursor_error(cursor, &error))
        rc = fail("find", coll, &error);
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(c);
    push(store, client);
    if (rc != 0) {
        cJSON_Delete(arr);
    } else if (one) {
        cJSON *first = cJSON_DetachItemFromArray(arr, 0);
        cJSON_Delete(arr);
        if (first == NULL)
            rc = -ENOENT;
        else
            *out = first;
    } else {
        *out = arr;
    }
free_opts:
    bson_destroy(bopts);
free_filter:
    bson_destroy(bfilter);
    return rc;
}

int store_find_one(struct store *store, const char *coll, const cJSON *filter, const cJSON *opts,
                   cJSON **out)
{
    return find(store, coll, filter, opts, true, out);
}

int store_find(struct store *store, const char *coll, const cJSON *filter, const cJSON *opts,
               cJSON **out)
{
    return find(store, coll, filter, opts, false, out);
}

int store_count(struct store *store, const char *coll, const cJSON *filter, int64_t *out)
{
    bson_error_t error;
    bson_t *bfilter = to_bson(filter, "count", coll);
    if (bfilter == NULL)
        return -EINVAL;
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    int64_t n = mongoc_collection_count_documents(c, bfilter, NULL, NULL, NULL, &error);
    int rc = n < 0 ? fail("count", coll, &error) : 0;
    mongoc_collection_destroy(c);
    push(store, client);
    bson_destroy(bfilter);
    if (rc == 0)
        *out = n;
    return rc;
}

static int update(struct store *store, const char *coll, const cJSON *filter, const cJSON *upd,
                  bool upsert, bool many, int64_t *matched)
{
    bson_error_t error;
    bson_t reply;
    int rc = 0;
    bson_t *bfilter = to_bson(filter, "update", coll);
    bson_t *bupd = to_bson(upd, "update", coll);
    bson_t *opts = BCON_NEW("upsert", BCON_BOOL(upsert));
    if (bfilter == NULL || bupd == NULL) {
        rc = -EINVAL;
        goto free_docs;
    }
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    bool ok = many ? mongoc_collection_update_many(c, bfilter, bupd, opts, &reply, &error)
                   : mongoc_collection_update_one(c, bfilter, bupd, opts, &reply, &error);
    if (!ok)
        rc = fail(many ? "update_many" : "update_one", coll, &error);
    else if (matched)
        *matched = reply_int(&reply, "matchedCount") + reply_int(&reply, "upsertedCount");
    bson_destroy(&reply);
    mongoc_collection_destroy(c);
    push(store, client);
free_docs:
    bson_destroy(opts);
    if (bupd)
        bson_destroy(bupd);
    if (bfilter)
        bson_destroy(bfilter);
    return rc;
}

int store_update_one(struct store *store, const char *coll, const cJSON *filter, const cJSON *upd,
                     bool upsert, int64_t *matched)
{
    return update(store, coll, filter, upd, upsert, false, matched);
}

int store_update_many(struct store *store, const char *coll, const cJSON *filter, const cJSON *upd,
                      int64_t *matched)
{
    return update(store, coll, filter, upd, false, true, matched);
}

int store_delete_many(struct store *store, const char *coll, const cJSON *filter, int64_t *deleted)
{
    bson_error_t error;
    bson_t reply;
    bson_t *bfilter = to_bson(filter, "delete", coll);
    if (bfilter == NULL)
        return -EINVAL;
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    int rc = 0;
    if (!mongoc_collection_delete_many(c, bfilter, NULL, &reply, &error))
        rc = fail("delete_many", coll, &error);
    else if (deleted)
        *deleted = reply_int(&reply, "deletedCount");
    bson_destroy(&reply);
    mongoc_collection_destroy(c);
    push(store, client);
    bson_destroy(bfilter);
    return rc;
}

int store_find_and_modify(struct store *store, const char *coll, const cJSON *filter,
                          const cJSON *upd, const cJSON *sort, bool upsert, bool return_new,
                          cJSON **out)
{
    bson_error_t error;
    bson_t reply;
    int rc = 0;
    bson_t *bfilter = to_bson(filter, "find_and_modify", coll);
    bson_t *bupd = upd ? to_bson(upd, "find_and_modify", coll) : NULL;
    bson_t *bsort = sort ? to_bson(sort, "find_and_modify", coll) : NULL;
    mongoc_find_and_modify_opts_t *opts = mongoc_find_and_modify_opts_new();
    if (bfilter == NULL || (upd && bupd == NULL) || (sort && bsort == NULL)) {
        rc = -EINVAL;
        goto free_docs;
    }
    int flags = MONGOC_FIND_AND_MODIFY_NONE;
    if (bupd)
        mongoc_find_and_modify_opts_set_update(opts, bupd);
    else
        flags |= MONGOC_FIND_AND_MODIFY_REMOVE;
    if (bsort)
        mongoc_find_and_modify_opts_set_sort(opts, bsort);
    if (upsert)
        flags |= MONGOC_FIND_AND_MODIFY_UPSERT;
    if (return_new)
        flags |= MONGOC_FIND_AND_MODIFY_RETURN_NEW;
    mongoc_find_and_modify_opts_set_flags(opts, (mongoc_find_and_modify_flags_t)flags);

    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    if (!mongoc_collection_find_and_modify_with_opts(c, bfilter, opts, &reply, &error)) {
        rc = fail("find_and_modify", coll, &error);
    } else {
        bson_iter_t it;
        bool has_value = bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it);
        bson_iter_t le;
        bool upserted = bson_iter_init_find(&le, &reply, "lastErrorObject") &&
                        BSON_ITER_HOLDS_DOCUMENT(&le) && bson_iter_recurse(&le, &le) &&
                        bson_iter_find(&le, "upserted");
        if (has_value) {
            if (out) {
                uint32_t len;
                const uint8_t *data;
                bson_t value;
                bson_iter_document(&it, &len, &data);
                if (bson_init_static(&value, data, len)) {
                    *out = to_json(&value);
                    if (*out == NULL)
                        rc = -ENOMEM;
                }
            }
        } else if (upserted) {
            if (out)
                *out = NULL;
        } else {
            rc = -ENOENT;
        }
    }
    bson_destroy(&reply);
    mongoc_collection_destroy(c);
    push(store, client);
free_docs:
    mongoc_find_and_modify_opts_destroy(opts);
    if (bsort)
        bson_destroy(bsort);
    if (bupd)
        bson_destroy(bupd);
    if (bfilter)
        bson_destroy(bfilter);
    return rc;
}

int store_drop(struct store *store, const char *coll)
{
    bson_error_t error;
    mongoc_client_t *client = pop(store);
    mongoc_collection_t *c = mongoc_client_get_collection(client, store->db, coll);
    int rc = 0;
    if (!mongoc_collection_drop(c, &error) && error.code != 26 /* NamespaceNotFound */)
        rc = fail("drop", coll, &error);
    mongoc_collection_destroy(c);
    push(store, client);
    return rc;
}

/* ---- dates ------------------------------------------------------------ */

cJSON *store_date(int64_t wall_ms)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64, wall_ms);
    cJSON *d = cJSON_CreateObject();
    cJSON *nl = cJSON_CreateObject();
    if (d == NULL || nl == NULL || !cJSON_AddStringToObject(nl, "$numberLong", buf) ||
        !cJSON_AddItemToObject(d, "$date", nl)) {
        cJSON_Delete(nl);
        cJSON_Delete(d);
        return NULL;
    }
    return d;
}

int store_date_ms(const cJSON *node, int64_t *out)
{
    const cJSON *d = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, "$date") : NULL;
    if (d == NULL)
        return -EINVAL;
    if (cJSON_IsNumber(d)) {
        *out = (int64_t)d->valuedouble;
        return 0;
    }
    if (cJSON_IsString(d)) {
        int64_t us;
        if (ts_parse_us(d->valuestring, &us) != 0)
            return -EINVAL;
        *out = us / 1000;
        return 0;
    }
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(d, "$numberLong");
    if (!cJSON_IsString(nl))
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(nl->valuestring, &end, 10);
    if (errno != 0 || end == nl->valuestring || *end != '\0')
        return -EINVAL;
    *out = (int64_t)v;
    return 0;
}

/* ---- expiry reaper ---------------------------------------------------- */

int store_reaper_add(struct store *store, const char *coll, const char *field)
{
    if (strlen(coll) >= NAME_MAX_LEN || strlen(field) >= NAME_MAX_LEN - 8)
        return -EINVAL;
    char keys[NAME_MAX_LEN + 16], name[NAME_MAX_LEN + 16];
    snprintf(keys, sizeof(keys), "{\"%s\":1}", field);
    snprintf(name, sizeof(name), "%s_1", field);
    struct store_index idx = {.name = name, .keys = keys, .unique = false};
    int rc = store_create_indexes(store, coll, &idx, 1);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&store->lock);
    for (size_t i = 0; i < store->nreap; i++) {
        if (strcmp(store->reap[i].coll, coll) == 0 && strcmp(store->reap[i].field, field) == 0)
            goto unlock;
    }
    if (store->nreap == REAPER_MAX) {
        rc = -ENOSPC;
        goto unlock;
    }
    snprintf(store->reap[store->nreap].coll, NAME_MAX_LEN, "%s", coll);
    snprintf(store->reap[store->nreap].field, NAME_MAX_LEN, "%s", field);
    store->nreap++;
unlock:
    pthread_mutex_unlock(&store->lock);
    return rc;
}

int64_t store_reaper_run(struct store *store)
{
    struct reaper_entry entries[REAPER_MAX];
    pthread_mutex_lock(&store->lock);
    size_t n = store->nreap;
    memcpy(entries, store->reap, n * sizeof(entries[0]));
    pthread_mutex_unlock(&store->lock);

    int64_t total = 0;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *filter = cJSON_CreateObject();
        cJSON *cond = cJSON_AddObjectToObject(filter, entries[i].field);
        cJSON *now = store_date(now_wall_ms());
        if (filter == NULL || cond == NULL || now == NULL ||
            !cJSON_AddItemToObject(cond, "$lt", now)) {
            cJSON_Delete(now);
            cJSON_Delete(filter);
            return -ENOMEM;
        }
        int64_t deleted = 0;
        if (store_delete_many(store, entries[i].coll, filter, &deleted) == 0) {
            total += deleted;
            if (deleted > 0)
                log_debug(LOG_ROLE, "reaped expired documents", "coll=%s field=%s n=%" PRId64,
                          entries[i].coll, entries[i].field, deleted);
        } else {
            failed = 1;
        }
        cJSON_Delete(filter);
    }
    return failed && total == 0 ? -EIO : total;
}

static void *reaper_main(void *arg)
{
    struct store *store = arg;
    thread_name_set("store-reaper");
    pthread_mutex_lock(&store->lock);
    while (!store->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (store->reaper_interval_ms % 1000) * 1000000;
        ts.tv_sec += (time_t)(store->reaper_interval_ms / 1000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        while (!store->reaper_stop &&
               pthread_cond_timedwait(&store->wake, &store->lock, &ts) != ETIMEDOUT)
            ;
        if (store->reaper_stop)
            break;
        pthread_mutex_unlock(&store->lock);
        store_reaper_run(store);
        pthread_mutex_lock(&store->lock);
    }
    pthread_mutex_unlock(&store->lock);
    return NULL;
}

int store_reaper_start(struct store *store)
{
    int rc = 0;
    pthread_mutex_lock(&store->lock);
    if (!store->reaper_running) {
        store->reaper_stop = false;
        int err = pthread_create(&store->reaper, NULL, reaper_main, store);
        if (err != 0)
            rc = -err;
        else
            store->reaper_running = true;
    }
    pthread_mutex_unlock(&store->lock);
    return rc;
}

const char *store_strerror(int rc)
{
    switch (rc) {
    case -EIO:
        return "mongodb i/o error";
    case -ETIMEDOUT:
        return "mongodb timed out";
    case -EINVAL:
        return "invalid document";
    case -EEXIST:
        return "duplicate key";
    case -ENOENT:
        return "no matching document";
    case -ENOMEM:
        return "out of memory";
    default:
        return "mongodb error";
    }
}
