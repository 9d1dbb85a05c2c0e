/*
 * events.h — the event catalog (DESIGN §3) and the envelope codec.
 *
 * EVENT_CATALOG (src/domain/event_catalog.h) defines every event type once:
 * name, topic, version and its fields with type and required-ness.  From it
 * come the enum, the codec's validation, the JSON Schema per type and the
 * topic mapping.  An event is the envelope plus `data`, a cJSON object of
 * the type's own fields; on the wire they are one flat JSON object.
 */
#ifndef EXECD_EVENTS_H
#define EXECD_EVENTS_H

#include <stddef.h>

#include "topics.h"
#include "util.h"

struct cJSON;

#include "event_catalog.h"

#define EVENT_ENUM(name, topic, version, fields) EV_##name,
enum event_type { EVENT_CATALOG(EVENT_ENUM) EVENT_TYPE_COUNT };
#undef EVENT_ENUM

enum field_type { FT_STR, FT_INT, FT_NUM, FT_BOOL, FT_OBJ, FT_ARR };

struct field_spec {
    const char *name;
    enum field_type type;
    int required;
};

struct event_meta {
    char *service;
    char *service_version;
    char *user_id;
    char *ip;
    char *user_agent;
    char trace_id[33];
};

struct event {
    enum event_type type;
    int version;
    char event_id[UUID_LEN];
    char timestamp[TS_LEN];
    char *aggregate_id;
    char *correlation_id;
    char *causation_id;
    struct event_meta meta;
    struct cJSON *data; /* owned object: the type's fields */
};

/* A new event with a fresh id, the current time, a new trace id and
 * correlation_id = event_id; service from event_set_service.  NULL on ENOMEM. */
struct event *event_new(enum event_type type, const char *aggregate_id);
/* A new event caused by cause: same aggregate, correlation, trace and user;
 * causation_id = cause's event_id. */
struct event *event_derive(enum event_type type, const struct event *cause);
void event_free(struct event *ev);

/* Process-wide service name/version stamped into new events. */
void event_set_service(const char *service, const char *version);

/* Validates and encodes; *json owned by the caller (free()).  -EINVAL with a
 * message naming the field in err when ev does not match its schema. */
int event_encode(const struct event *ev, char **json, char *err, size_t errlen);
/* Parses and validates; -EBADMSG with a message in err on any defect. */
int event_decode(const char *json, size_t len, struct event **out, char *err, size_t errlen);
/* Checks data against the type's fields; -EINVAL naming the field. */
int event_validate(const struct event *ev, char *err, size_t errlen);

const char *event_type_name(enum event_type type);
/* -1 when unknown. */
int event_type_lookup(const char *name);
enum topic_id event_topic(enum event_type type);
int event_type_version(enum event_type type);
/* The type's fields and their count. */
const struct field_spec *event_fields(enum event_type type, size_t *n);
/* JSON Schema (draft 2020-12) of the whole message; caller frees (cJSON_Delete). */
struct cJSON *event_schema(enum event_type type);

/* Schema ids assigned by the registry at start-up (0 = not registered). */
void event_set_schema_id(enum event_type type, int id);
int event_schema_id(enum event_type type);

/* Convenience setters on ev->data (return 0 or -ENOMEM). */
int event_set_str(struct event *ev, const char *field, const char *value);
int event_set_int(struct event *ev, const char *field, long long value);
int event_set_bool(struct event *ev, const char *field, int value);
/* Takes ownership of value. */
int event_set_json(struct event *ev, const char *field, struct cJSON *value);
/* Getters: NULL / def when absent or of another type. */
const char *event_get_str(const struct event *ev, const char *field);
long long event_get_int(const struct event *ev, const char *field, long long def);

#endif
