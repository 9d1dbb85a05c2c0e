/*
 * events.c — the event catalog tables and the envelope codec (DESIGN §3).
 *
 * Everything here is generated from EVENT_CATALOG: the per-type name, topic,
 * version and field specs are static tables, the validator walks the field
 * specs, and event_schema() renders the same specs as JSON Schema.  On the
 * wire an event is one flat JSON object: the envelope keys, a `metadata`
 * object, then the type's own fields.  Decoding is strict about the envelope
 * and the catalog fields, and keeps unknown extra fields (a newer producer
 * may add optional fields before this binary knows them).
 *
 * No I/O and no logging: defects come back as negative errno with a message
 * naming the field.
 */
#include "events.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---- static tables ---------------------------------------------------- */

#define FIELD_ROW(fname, ftype, freq) {#fname, FT_##ftype, freq},
#define FIELD_TABLE(name, topic, version, fields)                                                  \
    static const struct field_spec fields_##name[] = {fields(FIELD_ROW)};
EVENT_CATALOG(FIELD_TABLE)
#undef FIELD_TABLE
#undef FIELD_ROW

struct type_info {
    const char *name;
    enum topic_id topic;
    int version;
    const struct field_spec *fields;
    size_t nfields;
};

#define TYPE_ROW(name, topic, version, fields)                                                     \
    {#name, TOPIC_##topic, version, fields_##name,                                                 \
     sizeof(fields_##name) / sizeof(fields_##name[0])},
static const struct type_info types[EVENT_TYPE_COUNT] = {EVENT_CATALOG(TYPE_ROW)};
#undef TYPE_ROW

static atomic_int schema_ids[EVENT_TYPE_COUNT];

#define SERVICE_MAX 64
static char service_name[SERVICE_MAX] = "execd";
#ifdef EXECD_VERSION
static char service_version[SERVICE_MAX] = EXECD_VERSION;
#else
static char service_version[SERVICE_MAX] = "0.0.0";
#endif

/* Envelope keys: a data field may not use them. */
static const char *const envelope_keys[] = {
    "event_id",     "event_type",     "event_version", "timestamp",
    "aggregate_id", "correlation_id", "causation_id",  "metadata",
};

static const char *const type_names[] = {"string",  "integer", "number",
                                         "boolean", "object",  "array"};

/* ---- lookups ---------------------------------------------------------- */

static int type_ok(enum event_type type)
{
    return (int)type >= 0 && type < EVENT_TYPE_COUNT;
}

const char *event_type_name(enum event_type type)
{
    return type_ok(type) ? types[type].name : NULL;
}

int event_type_lookup(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < EVENT_TYPE_COUNT; i++)
        if (strcmp(types[i].name, name) == 0)
            return i;
    return -1;
}

enum topic_id event_topic(enum event_type type)
{
    return type_ok(type) ? types[type].topic : TOPIC_EXECUTION_EVENTS;
}

int event_type_version(enum event_type type)
{
    return type_ok(type) ? types[type].version : 0;
}

const struct field_spec *event_fields(enum event_type type, size_t *n)
{
    if (!type_ok(type)) {
        if (n)
            *n = 0;
        return NULL;
    }
    if (n)
        *n = types[type].nfields;
    return types[type].fields;
}

void event_set_schema_id(enum event_type type, int id)
{
    if (type_ok(type))
        atomic_store(&schema_ids[type], id);
}

int event_schema_id(enum event_type type)
{
    return type_ok(type) ? atomic_load(&schema_ids[type]) : 0;
}

void event_set_service(const char *service, const char *version)
{
    if (service)
        snprintf(service_name, sizeof(service_name), "%s", service);
    if (version)
        snprintf(service_version, sizeof(service_version), "%s", version);
}

/* ---- lifecycle -------------------------------------------------------- */

struct event *event_new(enum event_type type, const char *aggregate_id)
{
    if (!type_ok(type))
        return NULL;
    struct event *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return NULL;
    ev->type = type;
    ev->version = types[type].version;
    uuid_v4(ev->event_id);
    ts_format_us(now_wall_us(), ev->timestamp);
    trace_id_new(ev->meta.trace_id);
    ev->aggregate_id = strdup(aggregate_id ? aggregate_id : "");
    ev->correlation_id = strdup(ev->event_id);
    ev->meta.service = strdup(service_name);
    ev->meta.service_version = strdup(service_version);
    ev->data = cJSON_CreateObject();
    if (!ev->aggregate_id || !ev->correlation_id || !ev->meta.service ||
        !ev->meta.service_version || !ev->data) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

struct event *event_derive(enum event_type type, const struct event *cause)
{
    if (cause == NULL)
        return NULL;
    struct event *ev = event_new(type, cause->aggregate_id);
    if (ev == NULL)
        return NULL;
    free(ev->correlation_id);
    ev->correlation_id = strdup(cause->correlation_id ? cause->correlation_id : cause->event_id);
    ev->causation_id = strdup(cause->event_id);
    memcpy(ev->meta.trace_id, cause->meta.trace_id, sizeof(ev->meta.trace_id));
    int oom = !ev->correlation_id || !ev->causation_id;
    if (cause->meta.user_id && !(ev->meta.user_id = strdup(cause->meta.user_id)))
        oom = 1;
    if (cause->meta.ip && !(ev->meta.ip = strdup(cause->meta.ip)))
        oom = 1;
    if (cause->meta.user_agent && !(ev->meta.user_agent = strdup(cause->meta.user_agent)))
        oom = 1;
    if (oom) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

void event_free(struct event *ev)
{
    if (ev == NULL)
        return;
    free(ev->aggregate_id);
    free(ev->correlation_id);
    free(ev->causation_id);
    free(ev->meta.service);
    free(ev->meta.service_version);
    free(ev->meta.user_id);
    free(ev->meta.ip);
    free(ev->meta.user_agent);
    cJSON_Delete(ev->data);
    free(ev);
}

/* ---- validation ------------------------------------------------------- */

static int is_integer(const cJSON *item)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double d = item->valuedouble;
    return isfinite(d) && d == floor(d) && fabs(d) <= 9007199254740992.0;
}

static int type_matches(const cJSON *item, enum field_type type)
{
    switch (type) {
    case FT_STR:
        return cJSON_IsString(item);
    case FT_INT:
        return is_integer(item);
    case FT_NUM:
        return cJSON_IsNumber(item) && isfinite(item->valuedouble);
    case FT_BOOL:
        return cJSON_IsBool(item);
    case FT_OBJ:
        return cJSON_IsObject(item);
    case FT_ARR:
        return cJSON_IsArray(item);
    }
    return 0;
}

static const char *json_kind(const cJSON *item)
{
    if (cJSON_IsString(item))
        return "string";
    if (cJSON_IsNumber(item))
        return is_integer(item) ? "integer" : "number";
    if (cJSON_IsBool(item))
        return "boolean";
    if (cJSON_IsNull(item))
        return "null";
    if (cJSON_IsObject(item))
        return "object";
    if (cJSON_IsArray(item))
        return "array";
    return "invalid";
}

static int is_envelope_key(const char *key)
{
    for (size_t i = 0; i < sizeof(envelope_keys) / sizeof(envelope_keys[0]); i++)
        if (strcmp(envelope_keys[i], key) == 0)
            return 1;
    return 0;
}

static int uuid_ok(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

static int trace_ok(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return 0;
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* A key the document store accepts (INFRA.md rule 6). */
static int key_ok(const char *key)
{
    return key[0] != '\0' && key[0] != '$' && strchr(key, '.') == NULL;
}

/* Checks the data object against the type's fields; rc on failure. */
static int check_data(enum event_type type, const cJSON *data, int rc, char *err, size_t errlen)
{
    const struct type_info *ti = &types[type];
    if (!cJSON_IsObject(data)) {
        snprintf(err, errlen, "%s: data is not an object", ti->name);
        return rc;
    }
    for (size_t i = 0; i < ti->nfields; i++) {
        const struct field_spec *fs = &ti->fields[i];
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(data, fs->name);
        if (item == NULL) {
            if (fs->required) {
                snprintf(err, errlen, "%s: missing required field '%s'", ti->name, fs->name);
                return rc;
            }
            continue;
        }
        if (!type_matches(item, fs->type)) {
            snprintf(err, errlen, "%s: field '%s' must be %s, got %s", ti->name, fs->name,
                     type_names[fs->type], json_kind(item));
            return rc;
        }
    }
    for (const cJSON *it = data->child; it; it = it->next) {
        if (it->string == NULL || !key_ok(it->string) || is_envelope_key(it->string)) {
            snprintf(err, errlen, "%s: field name '%s' is not allowed", ti->name,
                     it->string ? it->string : "");
            return rc;
        }
    }
    return 0;
}

int event_validate(const struct event *ev, char *err, size_t errlen)
{
    if (ev == NULL || !type_ok(ev->type)) {
        snprintf(err, errlen, "unknown event type");
        return -EINVAL;
    }
    const char *name = types[ev->type].name;
    if (ev->version < 1 || ev->version > types[ev->type].version) {
        snprintf(err, errlen, "%s: field 'event_version' is %d, known versions are 1..%d", name,
                 ev->version, types[ev->type].version);
        return -EINVAL;
    }
    if (!uuid_ok(ev->event_id)) {
        snprintf(err, errlen, "%s: field 'event_id' is not a uuid", name);
        return -EINVAL;
    }
    int64_t us;
    if (ts_parse_us(ev->timestamp, &us) != 0) {
        snprintf(err, errlen, "%s: field 'timestamp' is not an RFC 3339 time", name);
        return -EINVAL;
    }
    if (ev->aggregate_id == NULL || ev->aggregate_id[0] == '\0') {
        snprintf(err, errlen, "%s: field 'aggregate_id' is empty", name);
        return -EINVAL;
    }
    if (ev->correlation_id == NULL || ev->correlation_id[0] == '\0') {
        snprintf(err, errlen, "%s: field 'correlation_id' is empty", name);
        return -EINVAL;
    }
    if (ev->meta.service == NULL || ev->meta.service_version == NULL) {
        snprintf(err, errlen, "%s: field 'metadata.service' is missing", name);
        return -EINVAL;
    }
    if (!trace_ok(ev->meta.trace_id)) {
        snprintf(err, errlen, "%s: field 'metadata.trace_id' is not 32 hex characters", name);
        return -EINVAL;
    }
    return check_data(ev->type, ev->data, -EINVAL, err, errlen);
}

/* ---- encoding --------------------------------------------------------- */

static int add_str_or_null(cJSON *obj, const char *key, const char *value)
{
    cJSON *item = value ? cJSON_CreateString(value) : cJSON_CreateNull();
    return item && cJSON_AddItemToObject(obj, key, item) ? 0 : (cJSON_Delete(item), -ENOMEM);
}

static int add_str(cJSON *obj, const char *key, const char *value)
{
    return cJSON_AddStringToObject(obj, key, value) ? 0 : -ENOMEM;
}

/* The flat JSON object of ev (not validated); NULL on ENOMEM. */
static cJSON *to_json(const struct event *ev)
{
    cJSON *obj = cJSON_CreateObject();
    cJSON *meta = cJSON_CreateObject();
    if (obj == NULL || meta == NULL)
        goto fail;
    int rc = 0;
    rc |= add_str(obj, "event_id", ev->event_id);
    rc |= add_str(obj, "event_type", types[ev->type].name);
    rc |= cJSON_AddNumberToObject(obj, "event_version", ev->version) ? 0 : -ENOMEM;
    rc |= add_str(obj, "timestamp", ev->timestamp);
    rc |= add_str(obj, "aggregate_id", ev->aggregate_id);
    rc |= add_str(obj, "correlation_id", ev->correlation_id);
    rc |= add_str_or_null(obj, "causation_id", ev->causation_id);
    rc |= add_str(meta, "service", ev->meta.service);
    rc |= add_str(meta, "service_version", ev->meta.service_version);
    rc |= add_str_or_null(meta, "user_id", ev->meta.user_id);
    if (ev->meta.ip)
        rc |= add_str(meta, "ip", ev->meta.ip);
    if (ev->meta.user_agent)
        rc |= add_str(meta, "user_agent", ev->meta.user_agent);
    rc |= add_str(meta, "trace_id", ev->meta.trace_id);
    if (rc != 0)
        goto fail;
    cJSON_AddItemToObject(obj, "metadata", meta);
    meta = NULL;
    for (const cJSON *it = ev->data ? ev->data->child : NULL; it; it = it->next) {
        cJSON *copy = cJSON_Duplicate(it, 1);
        if (copy == NULL || !cJSON_AddItemToObject(obj, it->string, copy)) {
            cJSON_Delete(copy);
            goto fail;
        }
    }
    return obj;
fail:
    cJSON_Delete(meta);
    cJSON_Delete(obj);
    return NULL;
}

int event_encode(const struct event *ev, char **json, char *err, size_t errlen)
{
    int rc = event_validate(ev, err, errlen);
    if (rc != 0)
        return rc;
    cJSON *obj = to_json(ev);
    if (obj == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char *out = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *json = out;
    return 0;
}

/* ---- decoding --------------------------------------------------------- */

/* Duplicates a required non-empty string member; -EBADMSG naming it. */
static int take_str(const cJSON *obj, const char *key, const char *path, char **dst, char *err,
                    size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL) {
        snprintf(err, errlen, "missing envelope field '%s'", path);
        return -EBADMSG;
    }
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
        snprintf(err, errlen, "envelope field '%s' must be a non-empty string, got %s", path,
                 json_kind(item));
        return -EBADMSG;
    }
    if ((*dst = strdup(item->valuestring)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* Duplicates an optional string member (absent or null = NULL). */
static int take_opt_str(const cJSON *obj, const char *key, const char *path, char **dst, char *err,
                        size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsString(item)) {
        snprintf(err, errlen, "envelope field '%s' must be a string, got %s", path,
                 json_kind(item));
        return -EBADMSG;
    }
    if ((*dst = strdup(item->valuestring)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

static int decode_metadata(const cJSON *root, struct event *ev, char *err, size_t errlen)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    if (meta == NULL) {
        snprintf(err, errlen, "missing envelope field 'metadata'");
        return -EBADMSG;
    }
    if (!cJSON_IsObject(meta)) {
        snprintf(err, errlen, "envelope field 'metadata' must be an object, got %s",
                 json_kind(meta));
        return -EBADMSG;
    }
    int rc;
    if ((rc = take_str(meta, "service", "metadata.service", &ev->meta.service, err, errlen)) ||
        (rc = take_str(meta, "service_version", "metadata.service_version",
                       &ev->meta.service_version, err, errlen)) ||
        (rc = take_opt_str(meta, "user_id", "metadata.user_id", &ev->meta.user_id, err, errlen)) ||
        (rc = take_opt_str(meta, "ip", "metadata.ip", &ev->meta.ip, err, errlen)) ||
        (rc = take_opt_str(meta, "user_agent", "metadata.user_agent", &ev->meta.user_agent, err,
                           errlen)))
        return rc;
    const cJSON *trace = cJSON_GetObjectItemCaseSensitive(meta, "trace_id");
    if (trace == NULL) {
        snprintf(err, errlen, "missing envelope field 'metadata.trace_id'");
        return -EBADMSG;
    }
    if (!cJSON_IsString(trace) || !trace_ok(trace->valuestring)) {
        snprintf(err, errlen,
                 "envelope field 'metadata.trace_id' must be 32 lowercase hex "
                 "characters");
        return -EBADMSG;
    }
    memcpy(ev->meta.trace_id, trace->valuestring, 33);
    return 0;
}

static int decode_envelope(cJSON *root, struct event *ev, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, "event_type");
    if (item == NULL) {
        snprintf(err, errlen, "missing envelope field 'event_type'");
        return -EBADMSG;
    }
    if (!cJSON_IsString(item)) {
        snprintf(err, errlen, "envelope field 'event_type' must be a string, got %s",
                 json_kind(item));
        return -EBADMSG;
    }
    int type = event_type_lookup(item->valuestring);
    if (type < 0) {
        snprintf(err, errlen, "unknown event_type '%.64s'", item->valuestring);
        return -EBADMSG;
    }
    ev->type = (enum event_type)type;
    const char *name = types[type].name;

    item = cJSON_GetObjectItemCaseSensitive(root, "event_version");
    if (item == NULL) {
        snprintf(err, errlen, "%s: missing envelope field 'event_version'", name);
        return -EBADMSG;
    }
    if (!is_integer(item) || item->valuedouble < 1) {
        snprintf(err, errlen, "%s: envelope field 'event_version' must be a positive integer",
                 name);
        return -EBADMSG;
    }
    if (item->valuedouble > types[type].version) {
        snprintf(err, errlen, "%s: envelope field 'event_version' %.0f is newer than the known %d",
                 name, item->valuedouble, types[type].version);
        return -EBADMSG;
    }
    ev->version = (int)item->valuedouble;

    item = cJSON_GetObjectItemCaseSensitive(root, "event_id");
    if (item == NULL) {
        snprintf(err, errlen, "%s: missing envelope field 'event_id'", name);
        return -EBADMSG;
    }
    if (!cJSON_IsString(item) || !uuid_ok(item->valuestring)) {
        snprintf(err, errlen, "%s: envelope field 'event_id' is not a uuid", name);
        return -EBADMSG;
    }
    memcpy(ev->event_id, item->valuestring, UUID_LEN);

    item = cJSON_GetObjectItemCaseSensitive(root, "timestamp");
    int64_t us;
    if (item == NULL) {
        snprintf(err, errlen, "%s: missing envelope field 'timestamp'", name);
        return -EBADMSG;
    }
    if (!cJSON_IsString(item) || ts_parse_us(item->valuestring, &us) != 0) {
        snprintf(err, errlen, "%s: envelope field 'timestamp' is not an RFC 3339 time", name);
        return -EBADMSG;
    }
    ts_format_us(us, ev->timestamp);

    int rc;
    char sub[256];
    if ((rc =
             take_str(root, "aggregate_id", "aggregate_id", &ev->aggregate_id, sub, sizeof(sub))) ||
        (rc = take_str(root, "correlation_id", "correlation_id", &ev->correlation_id, sub,
                       sizeof(sub))) ||
        (rc = take_opt_str(root, "causation_id", "causation_id", &ev->causation_id, sub,
                           sizeof(sub))) ||
        (rc = decode_metadata(root, ev, sub, sizeof(sub)))) {
        snprintf(err, errlen, "%s: %s", name, sub);
        return rc;
    }
    return 0;
}

int event_decode(const char *json, size_t len, struct event **out, char *err, size_t errlen)
{
    int rc;
    cJSON *root = NULL;
    struct event *ev = NULL;
    const char *end = NULL;

    if (json == NULL || len == 0) {
        snprintf(err, errlen, "empty message");
        return -EBADMSG;
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        snprintf(err, errlen, "malformed JSON near byte %ld", off);
        return -EBADMSG;
    }
    while (end && end < json + len &&
           (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t' || *end == '\0'))
        end++;
    if (end && end < json + len) {
        snprintf(err, errlen, "malformed JSON: trailing data at byte %ld", (long)(end - json));
        rc = -EBADMSG;
        goto free_root;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "message is not a JSON object");
        rc = -EBADMSG;
        goto free_root;
    }
    ev = calloc(1, sizeof(*ev));
    if (ev == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto free_root;
    }
    rc = decode_envelope(root, ev, err, errlen);
    if (rc != 0)
        goto free_event;

    /* What is left after the envelope is the data. */
    for (size_t i = 0; i < sizeof(envelope_keys) / sizeof(envelope_keys[0]); i++)
        cJSON_DeleteItemFromObjectCaseSensitive(root, envelope_keys[i]);
    ev->data = root;
    root = NULL;
    rc = check_data(ev->type, ev->data, -EBADMSG, err, errlen);
    if (rc != 0)
        goto free_event;
    *out = ev;
    return 0;

free_event:
    event_free(ev);
free_root:
    cJSON_Delete(root);
    return rc;
}

/* ---- JSON Schema ------------------------------------------------------ */

static cJSON *type_prop(const char *type)
{
    cJSON *p = cJSON_CreateObject();
    if (p && !cJSON_AddStringToObject(p, "type", type)) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

static cJSON *str_prop(const char *format, int min_len)
{
    cJSON *p = type_prop("string");
    if (p && format && !cJSON_AddStringToObject(p, "format", format))
        goto fail;
    if (p && min_len && !cJSON_AddNumberToObject(p, "minLength", min_len))
        goto fail;
    return p;
fail:
    cJSON_Delete(p);
    return NULL;
}

static cJSON *nullable_str_prop(void)
{
    cJSON *p = cJSON_CreateObject();
    const char *const kinds[] = {"string", "null"};
    cJSON *arr = cJSON_CreateStringArray(kinds, 2);
    if (p == NULL || arr == NULL || !cJSON_AddItemToObject(p, "type", arr)) {
        cJSON_Delete(arr);
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

static int put(cJSON *obj, const char *key, cJSON *item)
{
    if (item == NULL || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return -ENOMEM;
    }
    return 0;
}

static int add_required(cJSON *req, const char *name)
{
    cJSON *s = cJSON_CreateString(name);
    if (s == NULL || !cJSON_AddItemToArray(req, s)) {
        cJSON_Delete(s);
        return -ENOMEM;
    }
    return 0;
}

static cJSON *metadata_schema(void)
{
    cJSON *m = type_prop("object");
    cJSON *props = cJSON_CreateObject();
    cJSON *req = cJSON_CreateArray();
    if (m == NULL || props == NULL || req == NULL)
        goto fail;
    cJSON *trace = str_prop(NULL, 0);
    if (trace && !cJSON_AddStringToObject(trace, "pattern", "^[0-9a-f]{32}$")) {
        cJSON_Delete(trace);
        trace = NULL;
    }
    if (put(props, "service", str_prop(NULL, 1)) ||
        put(props, "service_version", str_prop(NULL, 0)) ||
        put(props, "user_id", nullable_str_prop()) || put(props, "ip", str_prop(NULL, 0)) ||
        put(props, "user_agent", str_prop(NULL, 0)) || put(props, "trace_id", trace))
        goto fail;
    if (add_required(req, "service") || add_required(req, "service_version") ||
        add_required(req, "trace_id"))
        goto fail;
    cJSON_AddItemToObject(m, "properties", props);
    cJSON_AddItemToObject(m, "required", req);
    return m;
fail:
    cJSON_Delete(req);
    cJSON_Delete(props);
    cJSON_Delete(m);
    return NULL;
}

cJSON *event_schema(enum event_type type)
{
    if (!type_ok(type))
        return NULL;
    const struct type_info *ti = &types[type];
    char id[160];
    cJSON *s = cJSON_CreateObject();
    cJSON *props = cJSON_CreateObject();
    cJSON *req = cJSON_CreateArray();
    if (s == NULL || props == NULL || req == NULL)
        goto fail;
    snprintf(id, sizeof(id), "urn:execd:event:%s:%d", ti->name, ti->version);
    if (!cJSON_AddStringToObject(s, "$schema", "https://json-schema.org/draft/2020-12/schema") ||
        !cJSON_AddStringToObject(s, "$id", id) || !cJSON_AddStringToObject(s, "title", ti->name) ||
        !cJSON_AddStringToObject(s, "type", "object"))
        goto fail;

    cJSON *etype = cJSON_CreateObject();
    if (etype && !cJSON_AddStringToObject(etype, "const", ti->name)) {
        cJSON_Delete(etype);
        etype = NULL;
    }
    cJSON *ever = type_prop("integer");
    if (ever && (!cJSON_AddNumberToObject(ever, "minimum", 1) ||
                 !cJSON_AddNumberToObject(ever, "maximum", ti->version))) {
        cJSON_Delete(ever);
        ever = NULL;
    }
    if (put(props, "event_id", str_prop("uuid", 0)) || put(props, "event_type", etype) ||
        put(props, "event_version", ever) || put(props, "timestamp", str_prop("date-time", 0)) ||
        put(props, "aggregate_id", str_prop(NULL, 1)) ||
        put(props, "correlation_id", str_prop(NULL, 1)) ||
        put(props, "causation_id", nullable_str_prop()) ||
        put(props, "metadata", metadata_schema()))
        goto fail;
    static const char *const env_required[] = {"event_id",  "event_type",   "event_version",
                                               "timestamp", "aggregate_id", "correlation_id",
                                               "metadata"};
    for (size_t i = 0; i < sizeof(env_required) / sizeof(env_required[0]); i++)
        if (add_required(req, env_required[i]))
            goto fail;
    for (size_t i = 0; i < ti->nfields; i++) {
        const struct field_spec *fs = &ti->fields[i];
        if (put(props, fs->name, type_prop(type_names[fs->type])))
            goto fail;
        if (fs->required && add_required(req, fs->name))
            goto fail;
    }
    cJSON_AddItemToObject(s, "properties", props);
    cJSON_AddItemToObject(s, "required", req);
    if (!cJSON_AddTrueToObject(s, "additionalProperties")) {
        cJSON_Delete(s);
        return NULL;
    }
    return s;
fail:
    cJSON_Delete(req);
    cJSON_Delete(props);
    cJSON_Delete(s);
    return NULL;
}

/* ---- data accessors --------------------------------------------------- */

static int set_item(struct event *ev, const char *field, cJSON *item)
{
    if (ev == NULL || field == NULL || item == NULL) {
        cJSON_Delete(item);
        return ev && field ? -ENOMEM : -EINVAL;
    }
    if (ev->data == NULL && (ev->data = cJSON_CreateObject()) == NULL) {
        cJSON_Delete(item);
        return -ENOMEM;
    }
    if (cJSON_GetObjectItemCaseSensitive(ev->data, field))
        return cJSON_ReplaceItemInObjectCaseSensitive(ev->data, field, item)
                   ? 0
                   : (cJSON_Delete(item), -ENOMEM);
    if (!cJSON_AddItemToObject(ev->data, field, item)) {
        cJSON_Delete(item);
        return -ENOMEM;
    }
    return 0;
}

int event_set_str(struct event *ev, const char *field, const char *value)
{
    return set_item(ev, field, cJSON_CreateString(value ? value : ""));
}

int event_set_int(struct event *ev, const char *field, long long value)
{
    return set_item(ev, field, cJSON_CreateNumber((double)value));
}

int event_set_bool(struct event *ev, const char *field, int value)
{
    return set_item(ev, field, cJSON_CreateBool(value));
}

int event_set_json(struct event *ev, const char *field, cJSON *value)
{
    return set_item(ev, field, value);
}

const char *event_get_str(const struct event *ev, const char *field)
{
    if (ev == NULL || ev->data == NULL || field == NULL)
        return NULL;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(ev->data, field);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

long long event_get_int(const struct event *ev, const char *field, long long def)
{
    if (ev == NULL || ev->data == NULL || field == NULL)
        return def;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(ev->data, field);
    return is_integer(item) ? (long long)item->valuedouble : def;
}
