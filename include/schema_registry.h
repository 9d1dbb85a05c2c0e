/*
 * schema_registry.h — registers the catalog's JSON Schemas at start-up
 * (DESIGN §3, embedded registry).
 *
 * Collection `schemas`: one document per subject (= event type name) and
 * version {subject, version, schema_id, event_version, schema (JSON text),
 * fields [{name, type, required}], created_at}; unique on subject+version.
 * schema_id is global and increasing (counter document {_id: "schema_id"} in
 * `counters`, bumped with findAndModify $inc).
 *
 * For every catalog type: the latest registered version identical to ours →
 * its id is reused; otherwise ours must be compatible with the latest (it
 * may add optional fields; removing a field, changing its type, making it
 * required or adding a required field is incompatible) and is inserted as
 * the next version.  Two processes racing on the same version: the loser
 * gets a duplicate key and re-reads.  Every type's id is published with
 * event_set_schema_id.
 */
#ifndef EXECD_SCHEMA_REGISTRY_H
#define EXECD_SCHEMA_REGISTRY_H

#include <stddef.h>

struct store;

/* 0; -EINVAL with a message naming the event type and the field in err on an
 * incompatible change; -EIO (or another store error) when Mongo fails. */
int schema_registry_sync(struct store *store, char *err, size_t errlen);

#endif
