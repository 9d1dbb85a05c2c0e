/*
 * projection_role.c — the read model's status fields (DESIGN §4, §8).
 *
 * EXECD_PROJECTION_THREADS consumers in group "execd-projection" read
 * execution_events.  Every event that maps to a status (execution.h:
 * execution_status_of_event) becomes one conditional upsert of the
 * execution's `executions` document:
 *
 *   filter  {execution_id: id, $or: [{status_rank: {$lte: bound}},
 *                                    {status_rank: {$exists: false}}]}
 *           bound = the rank of the new status, minus one for terminal
 *           states: a same-rank non-terminal event may add information
 *           (queue position, pod name), a terminal state is never
 *           replaced, and status never moves backwards.
 *   $set    status, status_rank, updated_at, and what the event carries:
 *           queue_position + estimated_wait_seconds (execution_queued),
 *           pod_name (pod_* and execution_started), error_type +
 *           error_message (execution_failed; error_type timeout for
 *           execution_timeout), and with a terminal state the result the
 *           event carries: stdout, stderr, exit_code, resource_usage,
 *           stdout_truncated, stderr_truncated
 *   $min    queued_at | scheduled_at | started_at | finished_at (the
 *           event's timestamp; the earliest wins on redelivery)
 *   $setOnInsert  user_id, created_at (and lang, lang_version, priority
 *           from execution_requested) — only when the api's insert has not
 *           happened yet; fields the api inserts are never $set here.
 *
 * A stale event finds no document it may change; the upsert then collides
 * with the unique index on execution_id (duplicate key) and is a no-op.  A
 * duplicate key can also be a race with the api's insert, so the upsert is
 * tried once more: if the document may change it now updates, else it is
 * stale.  Redelivery and replay are therefore harmless.
 *
 * Why the projection, not the results role, writes the result fields into
 * `executions`: FerretDB 1.24 runs an update as a query followed by a
 * separate whole-document write, so two roles updating one document at the
 * same moment lose one update (seen in tests: a result write put the status
 * back to "scheduled").  One writer per document after the api's insert —
 * this role, whose updates of one execution are serial because its events
 * share a partition — is correct on FerretDB and MongoDB alike.  The first
 * terminal event wins here, as in the results role, whose exactly-once
 * record is `execution_results`.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "execution.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "store.h"
#include "topics.h"
#include "util.h"

#define ROLE "projection"
#define EXECUTIONS "executions"
#define MAX_CONSUMERS 64
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define RETRY_SLICE_MS 50

struct projection {
    struct host *host;
    struct store *store;
    struct bus *bus;
    struct bus_consumer *consumers[MAX_CONSUMERS];
    int nconsumers;
    atomic_bool stopping;
    struct metric *m_applied, *m_stale;
};

static const enum topic_id projection_topics[] = {TOPIC_EXECUTION_EVENTS};

static const struct store_index execution_indexes[] = {
    {.name = "execution_id_unique", .keys = "{\"execution_id\":1}", .unique = true},
};

static bool stopping(const struct projection *pj)
{
    return atomic_load(&pj->stopping) || (pj->host->stopping && atomic_load(pj->host->stopping));
}

static int add_item(cJSON *obj, const char *name, cJSON *item)
{
    if (item == NULL || !cJSON_AddItemToObject(obj, name, item)) {
        cJSON_Delete(item);
        return -ENOMEM;
    }
    return 0;
}

static int copy_field(cJSON *obj, const char *as, const struct event *ev, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev->data, field);
    return v ? add_item(obj, as, cJSON_Duplicate(v, 1)) : 0;
}

/* The update document of ev moving to status st; NULL on ENOMEM. */
static cJSON *status_update(const struct event *ev, enum execution_status st)
{
    int64_t ts_us = 0;
    if (ts_parse_us(ev->timestamp, &ts_us) != 0)
        ts_us = now_wall_us();
    cJSON *upd = exec_json("{\"$set\":{\"status\":%S,\"status_rank\":%L},\"$min\":{},"
                           "\"$setOnInsert\":{\"user_id\":%S}}",
                           execution_status_name(st), (long long)execution_status_rank(st),
                           ev->meta.user_id);
    if (upd == NULL)
        return NULL;
    cJSON *set = cJSON_GetObjectItemCaseSensitive(upd, "$set");
    cJSON *min = cJSON_GetObjectItemCaseSensitive(upd, "$min");
    cJSON *ins = cJSON_GetObjectItemCaseSensitive(upd, "$setOnInsert");
    int rc = add_item(set, "updated_at", store_date(now_wall_ms())) ||
             add_item(min, execution_status_time_field(st), store_date(ts_us / 1000)) ||
             add_item(ins, "created_at", store_date(ts_us / 1000));
    switch (ev->type) {
    case EV_execution_requested:
        rc = rc || copy_field(ins, "lang", ev, "lang") ||
             copy_field(ins, "lang_version", ev, "lang_version") ||
             copy_field(ins, "priority", ev, "priority");
        break;
    case EV_execution_queued:
        rc = rc || copy_field(set, "queue_position", ev, "position") ||
             copy_field(set, "estimated_wait_seconds", ev, "estimated_wait_seconds");
        break;
    case EV_execution_failed:
        rc = rc || copy_field(set, "error_type", ev, "error_type") ||
             copy_field(set, "error_message", ev, "message");
        break;
    case EV_execution_timeout:
        rc = rc || add_item(set, "error_type", cJSON_CreateString("timeout"));
        break;
    default:
        break;
    }
    if (execution_status_terminal(st)) {
        static const char *const result_fields[] = {"stdout",           "stderr",
                                                    "exit_code",        "resource_usage",
                                                    "stdout_truncated", "stderr_truncated"};
        for (size_t i = 0; i < sizeof(result_fields) / sizeof(result_fields[0]); i++)
            rc = rc || copy_field(set, result_fields[i], ev, result_fields[i]);
    }
    if (ev->type != EV_execution_requested)
        rc = rc || copy_field(set, "pod_name", ev, "pod_name");
    if (rc) {
        cJSON_Delete(upd);
        return NULL;
    }
    return upd;
}

static int apply(struct projection *pj, const struct event *ev, enum execution_status st)
{
    const char *id = event_get_str(ev, "execution_id");
    if (id == NULL)
        id = ev->aggregate_id;
    cJSON *filter = exec_json("{\"execution_id\":%S,\"$or\":[{\"status_rank\":{\"$lte\":%L}},"
                              "{\"status_rank\":{\"$exists\":false}}]}",
                              id, (long long)execution_rank_bound(st));
    cJSON *upd = status_update(ev, st);
    int rc = filter && upd ? 0 : -ENOMEM;
    int64_t delay = RETRY_MIN_MS;
    for (int dup = 0; rc == 0;) {
        rc = store_update_one(pj->store, EXECUTIONS, filter, upd, true, NULL);
        if (rc == -EEXIST && dup++ == 0) {
            rc = 0; /* maybe a race with another insert: once more */
            continue;
        }
        if (rc != -EIO && rc != -ETIMEDOUT)
            break;
        /* MongoDB is down: wait here rather than dead-letter a valid event. */
        log_warn(ROLE, "cannot update the read model, retrying",
                 "execution_id=%s retry_ms=%lld err=%d", id, (long long)delay, rc);
        for (int64_t waited = 0; waited < delay && !stopping(pj); waited += RETRY_SLICE_MS)
            sleep_ms(RETRY_SLICE_MS);
        if (stopping(pj)) {
            rc = -ESHUTDOWN;
            break;
        }
        delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
        rc = 0;
    }
    cJSON_Delete(filter);
    cJSON_Delete(upd);
    if (rc == 0) {
        if (pj->m_applied)
            metric_add(pj->m_applied, 1);
        log_debug(ROLE, "status applied", "execution_id=%s status=%s event=%s", id,
                  execution_status_name(st), event_type_name(ev->type));
    } else if (rc == -EEXIST) {
        if (pj->m_stale)
            metric_add(pj->m_stale, 1);
        log_debug(ROLE, "stale status ignored", "execution_id=%s status=%s event=%s", id,
                  execution_status_name(st), event_type_name(ev->type));
        rc = 0;
    }
    return rc;
}

static int handle(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct projection *pj = ctx;
    struct event *ev = NULL;
    if (event_decode(msg->payload, msg->len, &ev, err, errlen) != 0)
        return -EBADMSG;
    int st = execution_status_of_event(ev->type);
    int rc = st >= 0 ? apply(pj, ev, (enum execution_status)st) : 0;
    if (rc != 0 && rc != -ESHUTDOWN)
        snprintf(err, errlen, "status of %s: error %d", ev->aggregate_id, rc);
    event_free(ev);
    return rc;
}

static int projection_init(struct host *host, void **state)
{
    if (host->store == NULL || host->bus == NULL) {
        log_error(ROLE, "projection role needs the bus and the store", "bus=%p store=%p",
                  (void *)host->bus, (void *)host->store);
        return -EINVAL;
    }
    struct projection *pj = calloc(1, sizeof(*pj));
    if (pj == NULL)
        return -ENOMEM;
    pj->host = host;
    pj->store = host->store;
    pj->bus = host->bus;
    int rc = store_create_indexes(host->store, EXECUTIONS, execution_indexes,
                                  sizeof(execution_indexes) / sizeof(execution_indexes[0]));
    if (rc != 0) {
        log_error(ROLE, "cannot create the executions index", "err=%d", rc);
        free(pj);
        return rc;
    }
    if (host->metrics) {
        pj->m_applied = metrics_get(host->metrics, METRIC_COUNTER, "execd_projection_applied_total",
                                    "Status updates applied to the read model", "");
        pj->m_stale = metrics_get(host->metrics, METRIC_COUNTER, "execd_projection_stale_total",
                                  "Status updates ignored because the status was further", "");
    }
    *state = pj;
    return 0;
}

static int projection_start(void *state)
{
    struct projection *pj = state;
    int threads = (int)pj->host->cfg->projection_threads;
    if (threads > MAX_CONSUMERS)
        threads = MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = ROLE,
        .group = "execd-projection",
        .topics = projection_topics,
        .ntopics = 1,
        .handler = handle,
        .ctx = pj,
    };
    for (int i = 0; i < threads; i++) {
        struct bus_consumer *consumer = NULL;
        int rc = bus_consumer_new(pj->bus, &opts, &consumer);
        if (rc != 0) {
            log_error(ROLE, "cannot create the projection consumer", "err=%d", rc);
            return rc;
        }
        pj->consumers[pj->nconsumers++] = consumer;
        if ((rc = bus_consumer_start(consumer)) != 0) {
            log_error(ROLE, "cannot start the projection consumer", "err=%d", rc);
            return rc;
        }
    }
    log_info(ROLE, "projection consuming", "consumers=%d", pj->nconsumers);
    return 0;
}

static void projection_stop(void *state)
{
    struct projection *pj = state;
    if (pj == NULL)
        return;
    atomic_store(&pj->stopping, true);
    for (int i = 0; i < pj->nconsumers; i++)
        bus_consumer_stop(pj->consumers[i]);
}

static int projection_join(void *state, int64_t deadline_ms)
{
    struct projection *pj = state;
    int rc = 0;
    for (int i = 0; pj && i < pj->nconsumers; i++)
        if (bus_consumer_join(pj->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    return rc;
}

static void projection_destroy(void *state)
{
    struct projection *pj = state;
    if (pj == NULL)
        return;
    for (int i = 0; i < pj->nconsumers; i++)
        bus_consumer_free(pj->consumers[i]);
    free(pj);
}

const struct role role_projection = {
    .name = "projection",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE,
    .init = projection_init,
    .start = projection_start,
    .stop = projection_stop,
    .join = projection_join,
    .destroy = projection_destroy,
    .health = NULL,
};
