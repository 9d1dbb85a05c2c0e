/*
 * store.h — the MongoDB port (mongo-c-driver), documents as cJSON.
 *
 * Documents and filters are cJSON trees in MongoDB relaxed extended JSON:
 * dates are {"$date": {"$numberLong": "<ms>"}} (store_date builds one).
 * The portability rules of INFRA.md hold for every caller: one document per
 * state change, no TTL indexes (expires_at + the reaper), createIndexes with
 * key/name/unique only, no transactions.  Errors: 0, -ENOENT (nothing
 * matched), -EEXIST (duplicate key, code 11000), -EIO (server or network),
 * -EINVAL (bad document).  A client is popped from the pool per call.
 */
#ifndef EXECD_STORE_H
#define EXECD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct cJSON;
struct store;

int store_new(const struct config *cfg, struct store **out);
void store_free(struct store *store); /* stops the reaper; NULL-safe */

int store_ping(struct store *store);
/* A short, thread-safe description of a negative errno from the store. */
const char *store_strerror(int rc);

struct store_index {
    const char *name;
    const char *keys; /* JSON, e.g. "{\"event_id\":1}" */
    bool unique;
};
int store_create_indexes(struct store *store, const char *coll, const struct store_index *idx,
                         size_t n);

int store_insert_one(struct store *store, const char *coll, const struct cJSON *doc);
/* Unordered insert; duplicate keys are counted, not errors. */
int store_insert_many(struct store *store, const char *coll, const struct cJSON *const *docs,
                      size_t n, size_t *inserted, size_t *duplicates);
/* opts may hold "sort", "projection", "skip", "limit".  *out owned by caller. */
int store_find_one(struct store *store, const char *coll, const struct cJSON *filter,
                   const struct cJSON *opts, struct cJSON **out);
/* *out is a cJSON array owned by the caller. */
int store_find(struct store *store, const char *coll, const struct cJSON *filter,
               const struct cJSON *opts, struct cJSON **out);
int store_count(struct store *store, const char *coll, const struct cJSON *filter, int64_t *out);
int store_update_one(struct store *store, const char *coll, const struct cJSON *filter,
                     const struct cJSON *update, bool upsert, int64_t *matched);
int store_update_many(struct store *store, const char *coll, const struct cJSON *filter,
                      const struct cJSON *update, int64_t *matched);
int store_delete_many(struct store *store, const char *coll, const struct cJSON *filter,
                      int64_t *deleted);
/* findAndModify; *out (may be NULL) gets the new or old document. */
int store_find_and_modify(struct store *store, const char *coll, const struct cJSON *filter,
                          const struct cJSON *update, const struct cJSON *sort, bool upsert,
                          bool return_new, struct cJSON **out);
int store_drop(struct store *store, const char *coll);

/* {"$date":{"$numberLong":"ms"}}; caller owns the node. */
struct cJSON *store_date(int64_t wall_ms);
/* Reads a date node written by store_date or returned by a find; -EINVAL. */
int store_date_ms(const struct cJSON *node, int64_t *out);

/* Registers coll for the expiry reaper: documents whose `field` date is past
 * are deleted every EXECD_REAPER_INTERVAL_MS (an index on field is made). */
int store_reaper_add(struct store *store, const char *coll, const char *field);
/* Starts the reaper thread (idempotent). */
int store_reaper_start(struct store *store);
/* One reaper pass now; returns the number deleted or -EIO. */
int64_t store_reaper_run(struct store *store);

#endif
