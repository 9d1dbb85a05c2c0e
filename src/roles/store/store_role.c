/*
 * store_role.c — the event store (DESIGN §8): every event once in `events`.
 *
 * EXECD_STORE_THREADS consumers in group "execd-store" read every topic but
 * the dead-letter queue in batches (EXECD_STORE_BATCH_SIZE events or
 * EXECD_STORE_BATCH_MS, whichever first).  Each message is decoded and
 * validated with event_decode; the valid ones are written with one unordered
 * insert_many.  The unique index on event_id makes redelivery idempotent: a
 * duplicate is counted, not an error.  The bus stores offsets only after the
 * handler returned 0, so a crash between insert and commit re-inserts
 * nothing new.
 *
 * A batch holding an invalid message still stores its valid messages, then
 * returns -EBADMSG; the bus then hands the batch over one message at a time,
 * the invalid one returns -EBADMSG again and goes to the dead-letter queue,
 * and the valid ones are duplicates by then.
 *
 * MongoDB being down is retried inside the handler (bounded backoff) rather
 * than reported to the bus, which would dead-letter valid events.
 *
 * Stored document: the event's flat JSON (envelope, metadata, data fields)
 * plus topic, partition, offset, stored_at and ts (the timestamp as a BSON
 * date, for range queries).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "store.h"
#include "topics.h"
#include "util.h"

#define ROLE "store"
#define EVENTS "events"
#define MAX_CONSUMERS 64
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define RETRY_SLICE_MS 50

struct store_role {
    struct host *host;
    struct bus_consumer *consumers[MAX_CONSUMERS];
    int nconsumers;
    atomic_bool stopping;
    struct metric *stored;
    struct metric *dups;
    struct metric *invalid;
};

static const struct store_index event_indexes[] = {
    {.name = "event_id_unique", .keys = "{\"event_id\":1}", .unique = true},
    {.name = "aggregate_id_timestamp", .keys = "{\"aggregate_id\":1,\"timestamp\":1}"},
    {.name = "event_type_1", .keys = "{\"event_type\":1}"},
    {.name = "metadata_user_id_1", .keys = "{\"metadata.user_id\":1}"},
    {.name = "timestamp_1", .keys = "{\"timestamp\":1}"},
};

static const enum topic_id store_topics[] = {
    TOPIC_EXECUTION_EVENTS, TOPIC_EXECUTION_TASKS,     TOPIC_SAGA_COMMANDS,
    TOPIC_USER_EVENTS,      TOPIC_NOTIFICATION_EVENTS, TOPIC_SYSTEM_EVENTS,
};

/* The stored document of ev as consumed from msg; NULL on ENOMEM. */
static cJSON *event_document(const struct event *ev, const struct bus_msg *msg)
{
    char err[256];
    char *json = NULL;
    if (event_encode(ev, &json, err, sizeof(err)) != 0)
        return NULL;
    cJSON *doc = cJSON_Parse(json);
    free(json);
    if (doc == NULL)
        return NULL;
    int64_t us = 0;
    ts_parse_us(ev->timestamp, &us);
    cJSON *ts = store_date(us / 1000);
    cJSON *stored = store_date(now_wall_ms());
    int ok = ts && stored && cJSON_AddStringToObject(doc, "topic", topic_table[msg->topic].name) &&
             cJSON_AddNumberToObject(doc, "partition", msg->partition) &&
             cJSON_AddNumberToObject(doc, "offset", (double)msg->offset) &&
             cJSON_AddItemToObject(doc, "stored_at", stored);
    if (ok)
        stored = NULL;
    ok = ok && cJSON_AddItemToObject(doc, "ts", ts);
    if (ok)
        ts = NULL;
    cJSON_Delete(ts);
    cJSON_Delete(stored);
    if (!ok) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

static bool stopping(const struct store_role *st)
{
    return atomic_load(&st->stopping) || (st->host->stopping && atomic_load(st->host->stopping));
}

/* Inserts the batch; a MongoDB outage is not the events' fault, so i/o
 * errors are retried here (backoff up to RETRY_MAX_MS) instead of letting
 * the bus dead-letter valid events.  -ESHUTDOWN when stopping meanwhile
 * (the offsets are not stored; the batch is redelivered). */
static int insert_until_durable(struct store_role *st, const cJSON *const *docs, size_t n,
                                size_t *inserted, size_t *duplicates)
{
    int64_t delay = RETRY_MIN_MS;
    for (;;) {
        int rc = store_insert_many(st->host->store, EVENTS, docs, n, inserted, duplicates);
        if (rc != -EIO && rc != -ETIMEDOUT)
            return rc;
        log_warn(ROLE, "cannot insert events, retrying", "n=%zu retry_ms=%lld err=\"%s\"", n,
                 (long long)delay, store_strerror(rc));
        for (int64_t waited = 0; waited < delay; waited += RETRY_SLICE_MS) {
            if (stopping(st))
                return -ESHUTDOWN;
            sleep_ms(RETRY_SLICE_MS);
        }
        if (stopping(st))
            return -ESHUTDOWN;
        delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
    }
}

static int handle_batch(void *ctx, const struct bus_msg *const *msgs, size_t n, char *err,
                        size_t errlen)
{
    struct store_role *st = ctx;
    size_t ndocs = 0, nbad = 0;
    int rc = 0;
    char why[256] = "";

    cJSON **docs = calloc(n ? n : 1, sizeof(*docs));
    if (docs == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct bus_msg *msg = msgs[i];
        struct event *ev = NULL;
        char derr[256];
        if (event_decode(msg->payload, msg->len, &ev, derr, sizeof(derr)) != 0) {
            log_warn(ROLE, "invalid event rejected",
                     "topic=%s partition=%" PRId32 " offset=%" PRId64 " err=\"%s\"",
                     msg->topic_name, msg->partition, msg->offset, derr);
            if (nbad++ == 0)
                snprintf(why, sizeof(why), "%s", derr);
            continue;
        }
        docs[ndocs] = event_document(ev, msg);
        event_free(ev);
        if (docs[ndocs] == NULL) {
            snprintf(err, errlen, "out of memory building the stored document");
            rc = -ENOMEM;
            goto free_docs;
        }
        ndocs++;
    }

    size_t inserted = 0, duplicates = 0;
    if (ndocs > 0) {
        rc = insert_until_durable(st, (const cJSON *const *)docs, ndocs, &inserted, &duplicates);
        if (rc != 0) {
            snprintf(err, errlen, "cannot insert %zu events: %s", ndocs, store_strerror(rc));
            goto free_docs;
        }
        if (st->stored)
            metric_add(st->stored, (int64_t)inserted);
        if (st->dups)
            metric_add(st->dups, (int64_t)duplicates);
        log_debug(ROLE, "events stored", "n=%zu inserted=%zu duplicates=%zu", ndocs, inserted,
                  duplicates);
    }
    if (nbad > 0) {
        if (st->invalid && n == 1)
            metric_add(st->invalid, 1);
        if (n == 1)
            snprintf(err, errlen, "%s", why);
        else
            snprintf(err, errlen, "batch of %zu holds %zu invalid events, first: %s", n, nbad, why);
        /* In a batch, -EBADMSG makes the bus retry one message at a time at
         * once: the invalid one is dead-lettered, the valid ones (already
         * stored above) are duplicates. */
        rc = -EBADMSG;
    }
free_docs:
    for (size_t i = 0; i < ndocs; i++)
        cJSON_Delete(docs[i]);
    free(docs);
    return rc;
}

static int store_init(struct host *host, void **state)
{
    if (host->store == NULL || host->bus == NULL) {
        log_error(ROLE, "store role needs the bus and the store", "bus=%p store=%p",
                  (void *)host->bus, (void *)host->store);
        return -EINVAL;
    }
    struct store_role *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->host = host;
    int rc = store_create_indexes(host->store, EVENTS, event_indexes,
                                  sizeof(event_indexes) / sizeof(event_indexes[0]));
    if (rc != 0) {
        log_error(ROLE, "cannot create the event store indexes", "coll=%s err=%d", EVENTS, rc);
        free(st);
        return rc;
    }
    if (host->metrics) {
        st->stored = metrics_get(host->metrics, METRIC_COUNTER, "execd_store_events_stored_total",
                                 "Events inserted into the event store", "");
        st->dups = metrics_get(host->metrics, METRIC_COUNTER, "execd_store_events_duplicate_total",
                               "Redelivered events already in the event store", "");
        st->invalid = metrics_get(host->metrics, METRIC_COUNTER, "execd_store_events_invalid_total",
                                  "Events rejected by the event store (dead-lettered)", "");
    }
    *state = st;
    return 0;
}

static int store_start(void *state)
{
    struct store_role *st = state;
    const struct config *cfg = st->host->cfg;
    int threads = (int)cfg->store_threads;
    if (threads > MAX_CONSUMERS)
        threads = MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = ROLE,
        .group = "execd-store",
        .topics = store_topics,
        .ntopics = sizeof(store_topics) / sizeof(store_topics[0]),
        .batch_handler = handle_batch,
        .batch_max = (size_t)cfg->store_batch_size,
        .batch_ms = (int)cfg->store_batch_ms,
        .ctx = st,
    };
    for (int i = 0; i < threads; i++) {
        struct bus_consumer *consumer = NULL;
        int rc = bus_consumer_new(st->host->bus, &opts, &consumer);
        if (rc != 0) {
            log_error(ROLE, "cannot create the event store consumer", "err=%d", rc);
            return rc;
        }
        st->consumers[st->nconsumers++] = consumer;
        if ((rc = bus_consumer_start(consumer)) != 0) {
            log_error(ROLE, "cannot start the event store consumer", "err=%d", rc);
            return rc;
        }
    }
    log_info(ROLE, "event store consuming", "consumers=%d batch=%lld batch_ms=%lld", st->nconsumers,
             (long long)cfg->store_batch_size, (long long)cfg->store_batch_ms);
    return 0;
}

static void store_stop(void *state)
{
    struct store_role *st = state;
    if (st == NULL)
        return;
    atomic_store(&st->stopping, true);
    for (int i = 0; i < st->nconsumers; i++)
        bus_consumer_stop(st->consumers[i]);
}

static int store_join(void *state, int64_t deadline_ms)
{
    struct store_role *st = state;
    int rc = 0;
    for (int i = 0; st && i < st->nconsumers; i++)
        if (bus_consumer_join(st->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    return rc;
}

static void store_destroy(void *state)
{
    struct store_role *st = state;
    if (st == NULL)
        return;
    for (int i = 0; i < st->nconsumers; i++)
        bus_consumer_free(st->consumers[i]);
    free(st);
}

const struct role role_store = {
    .name = "store",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE,
    .init = store_init,
    .start = store_start,
    .stop = store_stop,
    .join = store_join,
    .destroy = store_destroy,
    .health = NULL,
};
