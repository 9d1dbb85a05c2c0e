/*
 * schema_registry.c — the embedded schema registry (schema_registry.h).
 *
 * Start-up flow: one createIndexes (unique subject+version), one find of the
 * whole `schemas` collection, then per catalog type either reuse the latest
 * version's id (identical schema text), or check compatibility against the
 * latest version's field summary and insert the next version with a fresh
 * global id from the `counters` document.  A duplicate key on insert means
 * another process registered the same version first: re-read and retry.
 */
#include "schema_registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "events.h"
#include "store.h"
#include "util.h"

#define SCHEMAS "schemas"
#define COUNTERS "counters"
#define RACE_ATTEMPTS 8

static const char *const type_names[] = {"string",  "integer", "number",
                                         "boolean", "object",  "array"};

static double num(const cJSON *obj, const char *key, double def)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return item && cJSON_IsNumber(item) ? item->valuedouble : def;
}

static const char *str(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return item && cJSON_IsString(item) ? item->valuestring : NULL;
}

/* The latest (highest version) document of subject in docs, or NULL. */
static const cJSON *latest_in(const cJSON *docs, const char *subject)
{
    const cJSON *best = NULL;
    for (const cJSON *doc = docs ? docs->child : NULL; doc; doc = doc->next) {
        const char *s = str(doc, "subject");
        if (s && strcmp(s, subject) == 0 &&
            (!best || num(doc, "version", 0) > num(best, "version", 0)))
            best = doc;
    }
    return best;
}

static cJSON *fields_summary(enum event_type type)
{
    size_t n;
    const struct field_spec *fs = event_fields(type, &n);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *f = cJSON_CreateObject();
        if (f == NULL || !cJSON_AddStringToObject(f, "name", fs[i].name) ||
            !cJSON_AddStringToObject(f, "type", type_names[fs[i].type]) ||
            !cJSON_AddBoolToObject(f, "required", fs[i].required) ||
            !cJSON_AddItemToArray(arr, f)) {
            cJSON_Delete(f);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static const cJSON *find_field(const cJSON *fields, const char *name)
{
    for (const cJSON *f = fields->child; f; f = f->next) {
        const char *n = str(f, "name");
        if (n && strcmp(n, name) == 0)
            return f;
    }
    return NULL;
}

/* 0 when ours (the catalog's type) may follow the registered version latest. */
static int compatible(enum event_type type, const cJSON *latest, char *err, size_t errlen)
{
    const char *name = event_type_name(type);
    int version = (int)num(latest, "version", 0);
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(latest, "fields");
    if (old == NULL || !cJSON_IsArray(old)) {
        snprintf(err, errlen,
                 "incompatible schema for '%s': registered version %d has no field "
                 "list",
                 name, version);
        return -EINVAL;
    }
    size_t n;
    const struct field_spec *fs = event_fields(type, &n);
    for (const cJSON *f = old->child; f; f = f->next) {
        const char *fname = str(f, "name");
        const char *ftype = str(f, "type");
        if (fname == NULL || ftype == NULL) {
            snprintf(err, errlen,
                     "incompatible schema for '%s': registered version %d has a "
                     "malformed field entry",
                     name, version);
            return -EINVAL;
        }
        const struct field_spec *ours = NULL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(fs[i].name, fname) == 0)
                ours = &fs[i];
        if (ours == NULL) {
            snprintf(err, errlen,
                     "incompatible schema for '%s': field '%s' of registered version "
                     "%d is missing (fields may not be removed)",
                     name, fname, version);
            return -EINVAL;
        }
        if (strcmp(type_names[ours->type], ftype) != 0) {
            snprintf(err, errlen, "incompatible schema for '%s': field '%s' changed type %s -> %s",
                     name, fname, ftype, type_names[ours->type]);
            return -EINVAL;
        }
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(f, "required");
        if (ours->required && !cJSON_IsTrue(req)) {
            snprintf(err, errlen,
                     "incompatible schema for '%s': optional field '%s' became "
                     "required",
                     name, fname);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (fs[i].required && find_field(old, fs[i].name) == NULL) {
            snprintf(err, errlen,
                     "incompatible schema for '%s': required field '%s' added "
                     "(new fields must be optional)",
                     name, fs[i].name);
            return -EINVAL;
        }
    }
    return 0;
}

static int next_id(struct store *store, int *out)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON *upd = cJSON_CreateObject();
    cJSON *inc = cJSON_AddObjectToObject(upd, "$inc");
    cJSON *doc = NULL;
    int rc = -ENOMEM;
    if (!filter || !inc || !cJSON_AddStringToObject(filter, "_id", "schema_id") ||
        !cJSON_AddNumberToObject(inc, "seq", 1))
        goto done;
    rc = store_find_and_modify(store, COUNTERS, filter, upd, NULL, true, true, &doc);
    if (rc != 0)
        goto done;
    double seq = num(doc, "seq", 0);
    if (seq < 1) {
        rc = -EIO;
        goto done;
    }
    *out = (int)seq;
done:
    cJSON_Delete(doc);
    cJSON_Delete(upd);
    cJSON_Delete(filter);
    return rc;
}

/* Re-reads the latest document of subject; *out NULL when none. */
static int reread(struct store *store, const char *subject, cJSON **out)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON *opts = cJSON_CreateObject();
    cJSON *sort = cJSON_AddObjectToObject(opts, "sort");
    int rc = -ENOMEM;
    *out = NULL;
    if (filter && sort && cJSON_AddStringToObject(filter, "subject", subject) &&
        cJSON_AddNumberToObject(sort, "version", -1)) {
        rc = store_find_one(store, SCHEMAS, filter, opts, out);
        if (rc == -ENOENT)
            rc = 0;
    }
    cJSON_Delete(opts);
    cJSON_Delete(filter);
    return rc;
}

static int insert_version(struct store *store, enum event_type type, int version, const char *text,
                          int *id)
{
    int rc = next_id(store, id);
    if (rc != 0)
        return rc;
    cJSON *doc = cJSON_CreateObject();
    cJSON *fields = fields_summary(type);
    cJSON *created = store_date(now_wall_ms());
    if (!doc || !fields || !created ||
        !cJSON_AddStringToObject(doc, "subject", event_type_name(type)) ||
        !cJSON_AddNumberToObject(doc, "version", version) ||
        !cJSON_AddNumberToObject(doc, "schema_id", *id) ||
        !cJSON_AddNumberToObject(doc, "event_version", event_type_version(type)) ||
        !cJSON_AddStringToObject(doc, "schema", text) ||
        !cJSON_AddItemToObject(doc, "fields", fields)) {
        cJSON_Delete(fields);
        cJSON_Delete(created);
        cJSON_Delete(doc);
        return -ENOMEM;
    }
    if (!cJSON_AddItemToObject(doc, "created_at", created)) {
        cJSON_Delete(created);
        cJSON_Delete(doc);
        return -ENOMEM;
    }
    rc = store_insert_one(store, SCHEMAS, doc);
    cJSON_Delete(doc);
    return rc;
}

static int sync_type(struct store *store, enum event_type type, const cJSON *all, char *err,
                     size_t errlen)
{
    const char *name = event_type_name(type);
    cJSON *fresh = NULL;
    char *text = NULL;
    int rc;

    cJSON *schema = event_schema(type);
    if (schema == NULL || (text = cJSON_PrintUnformatted(schema)) == NULL) {
        cJSON_Delete(schema);
        snprintf(err, errlen, "out of memory rendering the schema of '%s'", name);
        return -ENOMEM;
    }
    cJSON_Delete(schema);

    const cJSON *latest = latest_in(all, name);
    for (int attempt = 0; attempt < RACE_ATTEMPTS; attempt++) {
        const char *have = latest ? str(latest, "schema") : NULL;
        if (have && strcmp(have, text) == 0) {
            event_set_schema_id(type, (int)num(latest, "schema_id", 0));
            rc = 0;
            goto done;
        }
        if (latest && (rc = compatible(type, latest, err, errlen)) != 0)
            goto done;
        int version = latest ? (int)num(latest, "version", 0) + 1 : 1;
        int id = 0;
        rc = insert_version(store, type, version, text, &id);
        if (rc == 0) {
            event_set_schema_id(type, id);
            goto done;
        }
        if (rc != -EEXIST) {
            snprintf(err, errlen, "cannot register the schema of '%s': %s", name,
                     store_strerror(rc));
            goto done;
        }
        /* Another process registered this version first. */
        cJSON_Delete(fresh);
        if ((rc = reread(store, name, &fresh)) != 0) {
            snprintf(err, errlen, "cannot read the schemas of '%s': %s", name, store_strerror(rc));
            goto done;
        }
        latest = fresh;
    }
    snprintf(err, errlen, "cannot register the schema of '%s': version raced %d times", name,
             RACE_ATTEMPTS);
    rc = -EAGAIN;
done:
    cJSON_Delete(fresh);
    free(text);
    return rc;
}

int schema_registry_sync(struct store *store, char *err, size_t errlen)
{
    static const struct store_index idx[] = {
        {.name = "subject_version", .keys = "{\"subject\":1,\"version\":1}", .unique = true},
    };
    cJSON *all = NULL;
    int rc = store_create_indexes(store, SCHEMAS, idx, 1);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the index of '%s': %s", SCHEMAS, store_strerror(rc));
        return rc;
    }
    rc = store_find(store, SCHEMAS, NULL, NULL, &all);
    if (rc != 0) {
        snprintf(err, errlen, "cannot read '%s': %s", SCHEMAS, store_strerror(rc));
        return rc;
    }
    for (int t = 0; t < EVENT_TYPE_COUNT && rc == 0; t++)
        rc = sync_type(store, (enum event_type)t, all, err, errlen);
    cJSON_Delete(all);
    return rc;
}
