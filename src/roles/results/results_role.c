/*
 * results_role.c — stores each execution's result exactly once (DESIGN §8).
 *
 * EXECD_RESULTS_THREADS consumers in group "execd-results" read
 * execution_events.  On execution_completed/_failed/_timeout/_cancelled the
 * result is inserted into `execution_results` (owned by this role):
 *
 *   {_id: execution_id, execution_id, user_id, status, stdout, stderr,
 *    exit_code, resource_usage, stdout_truncated, stderr_truncated,
 *    error_type, error_message, size_bytes, terminal_event_id,
 *    result_event_id, stored_at, published}
 *
 * The primary key makes the write happen once: a second terminal event (a
 * redelivery, a replay, or a later contradictory terminal event) collides
 * and changes nothing — the first terminal event wins, as in the
 * projection, which copies the same event's result fields into the read
 * model (`executions`; see projection_role.c for why one role writes that
 * document).  An insert is atomic on FerretDB and MongoDB alike, where a
 * conditional update of a document another role updates is not on
 * FerretDB 1.24.
 *
 * Then result_stored (size_bytes = stdout + stderr bytes, status) is
 * published with event_id = result_event_id, and published is set.  A
 * redelivery that finds the result stored but not published (the process
 * died between the two) publishes the same event again, same event_id; the
 * event store and SSE deduplicate by event_id, so exactly one
 * result_stored reaches them.  A stored and published result makes a
 * redelivery a no-op.
 *
 * MongoDB outages are retried in the handler with backoff, up to
 * RESULT_ATTEMPTS; after that result_failed (error) is published and the
 * message is done.
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

#define ROLE "results"
#define RESULTS "execution_results"
#define MAX_CONSUMERS 64
#define RESULT_ATTEMPTS 6
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 3000
#define RETRY_SLICE_MS 50

struct results {
    struct host *host;
    struct store *store;
    struct bus *bus;
    struct bus_consumer *consumers[MAX_CONSUMERS];
    int nconsumers;
    atomic_bool stopping;
    struct metric *m_stored, *m_dups, *m_failed;
};

static const enum topic_id results_topics[] = {TOPIC_EXECUTION_EVENTS};

static bool stopping(const struct results *rs)
{
    return atomic_load(&rs->stopping) || (rs->host->stopping && atomic_load(rs->host->stopping));
}

static const char *execution_id_of(const struct event *ev)
{
    const char *id = event_get_str(ev, "execution_id");
    return id ? id : ev->aggregate_id;
}

/* Copies field from the event's data into doc as name (when present). */
static int copy_field(cJSON *doc, const char *name, const struct event *ev, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev->data, field);
    if (v == NULL)
        return 0;
    cJSON *dup = cJSON_Duplicate(v, 1);
    if (dup == NULL || !cJSON_AddItemToObject(doc, name, dup)) {
        cJSON_Delete(dup);
        return -ENOMEM;
    }
    return 0;
}

static size_t str_len(const struct event *ev, const char *field)
{
    const char *s = event_get_str(ev, field);
    return s ? strlen(s) : 0;
}

/* The result document of a terminal event; NULL on ENOMEM. */
static cJSON *result_doc(const struct event *ev, const char *id, const char *result_event_id,
                         long long size)
{
    int st = execution_status_of_event(ev->type);
    cJSON *doc =
        exec_json("{\"_id\":%S,\"execution_id\":%S,\"user_id\":%S,\"status\":%S,"
                  "\"size_bytes\":%L,"
                  "\"terminal_event_id\":%S,\"result_event_id\":%S,\"published\":false}",
                  id, id, ev->meta.user_id, execution_status_name((enum execution_status)st), size,
                  ev->event_id, result_event_id);
    cJSON *at = store_date(now_wall_ms());
    if (doc == NULL || at == NULL || !cJSON_AddItemToObject(doc, "stored_at", at)) {
        cJSON_Delete(at);
        cJSON_Delete(doc);
        return NULL;
    }
    static const char *const fields[][2] = {
        {"stdout", "stdout"},
        {"stderr", "stderr"},
        {"exit_code", "exit_code"},
        {"resource_usage", "resource_usage"},
        {"stdout_truncated", "stdout_truncated"},
        {"stderr_truncated", "stderr_truncated"},
        {"error_type", "error_type"},
        {"error_message", "message"},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (copy_field(doc, fields[i][0], ev, fields[i][1]) != 0) {
            cJSON_Delete(doc);
            return NULL;
        }
    /* A run that produced nothing still has empty streams. */
    if ((!cJSON_HasObjectItem(doc, "stdout") && !cJSON_AddStringToObject(doc, "stdout", "")) ||
        (!cJSON_HasObjectItem(doc, "stderr") && !cJSON_AddStringToObject(doc, "stderr", ""))) {
        cJSON_Delete(doc);
        return NULL;
    }
    if (ev->type == EV_execution_timeout && !cJSON_HasObjectItem(doc, "error_type") &&
        !cJSON_AddStringToObject(doc, "error_type", "timeout")) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

/* Sleeps delay in slices; false when stopping. */
static bool backoff(struct results *rs, int64_t delay)
{
    for (int64_t waited = 0; waited < delay; waited += RETRY_SLICE_MS) {
        if (stopping(rs))
            return false;
        sleep_ms(RETRY_SLICE_MS);
    }
    return !stopping(rs);
}

/* Publishes result_stored with the given event id, then marks it published. */
static int publish_stored(struct results *rs, const struct event *terminal, const char *id,
                          const char *event_id, const char *status, long long size)
{
    struct event *ev = event_derive(EV_result_stored, terminal);
    if (ev == NULL || event_set_str(ev, "execution_id", id) ||
        event_set_int(ev, "size_bytes", size) || event_set_str(ev, "status", status)) {
        event_free(ev);
        return -ENOMEM;
    }
    snprintf(ev->event_id, sizeof(ev->event_id), "%s", event_id);
    int rc = bus_publish_event(rs->bus, ev);
    event_free(ev);
    if (rc != 0) {
        log_warn(ROLE, "cannot publish result_stored", "execution_id=%s err=%d", id, rc);
        return rc;
    }
    cJSON *filter = exec_json("{\"_id\":%S}", id);
    cJSON *upd = exec_json("{\"$set\":{\"published\":true}}");
    rc = filter && upd ? store_update_one(rs->store, RESULTS, filter, upd, false, NULL) : -ENOMEM;
    cJSON_Delete(filter);
    cJSON_Delete(upd);
    return rc;
}

static int publish_failed(struct results *rs, const struct event *terminal, const char *id, int err)
{
    struct event *ev = event_derive(EV_result_failed, terminal);
    char why[96];
    snprintf(why, sizeof(why), "cannot store the result: error %d", err);
    if (ev == NULL || event_set_str(ev, "execution_id", id) || event_set_str(ev, "error", why)) {
        event_free(ev);
        return -ENOMEM;
    }
    int rc = bus_publish_event(rs->bus, ev);
    event_free(ev);
    if (rs->m_failed)
        metric_add(rs->m_failed, 1);
    log_error(ROLE, "result not stored", "execution_id=%s err=%d", id, err);
    return rc;
}

/* A redelivered or second terminal event: republish only a result_stored
 * that never went out. */
static int on_duplicate(struct results *rs, const struct event *ev, const char *id)
{
    if (rs->m_dups)
        metric_add(rs->m_dups, 1);
    cJSON *doc = NULL;
    cJSON *filter = exec_json("{\"_id\":%S}", id);
    int rc = filter ? store_find_one(rs->store, RESULTS, filter, NULL, &doc) : -ENOMEM;
    cJSON_Delete(filter);
    if (rc != 0)
        return rc;
    const cJSON *eid = cJSON_GetObjectItemCaseSensitive(doc, "result_event_id");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(doc, "status");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(doc, "size_bytes");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "published")) && cJSON_IsString(eid) &&
        cJSON_IsString(status)) {
        rc = publish_stored(rs, ev, id, eid->valuestring, status->valuestring,
                            cJSON_IsNumber(size) ? (long long)size->valuedouble : 0);
    } else {
        log_debug(ROLE, "result already stored", "execution_id=%s type=%s", id,
                  event_type_name(ev->type));
    }
    cJSON_Delete(doc);
    return rc;
}

static int on_terminal(struct results *rs, const struct event *ev)
{
    const char *id = execution_id_of(ev);
    char result_event_id[UUID_LEN];
    uuid_v4(result_event_id);
    long long size = (long long)(str_len(ev, "stdout") + str_len(ev, "stderr"));
    cJSON *doc = result_doc(ev, id, result_event_id, size);
    if (doc == NULL)
        return -ENOMEM;
    int rc;
    int64_t delay = RETRY_MIN_MS;
    for (int attempt = 1;; attempt++) {
        rc = store_insert_one(rs->store, RESULTS, doc);
        if ((rc != -EIO && rc != -ETIMEDOUT) || attempt >= RESULT_ATTEMPTS)
            break;
        log_warn(ROLE, "cannot store the result, retrying", "execution_id=%s retry_ms=%lld err=%d",
                 id, (long long)delay, rc);
        if (!backoff(rs, delay)) {
            rc = -ESHUTDOWN;
            break;
        }
        delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
    }
    cJSON_Delete(doc);
    if (rc == 0) {
        if (rs->m_stored)
            metric_add(rs->m_stored, 1);
        log_debug(ROLE, "result stored", "execution_id=%s type=%s size=%lld", id,
                  event_type_name(ev->type), size);
        int st = execution_status_of_event(ev->type);
        return publish_stored(rs, ev, id, result_event_id,
                              execution_status_name((enum execution_status)st), size);
    }
    if (rc == -EEXIST)
        return on_duplicate(rs, ev, id);
    if (rc == -ESHUTDOWN || rc == -ENOMEM)
        return rc;
    return publish_failed(rs, ev, id, rc);
}

static int handle(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct results *rs = ctx;
    struct event *ev = NULL;
    if (event_decode(msg->payload, msg->len, &ev, err, errlen) != 0)
        return -EBADMSG;
    int rc = 0;
    if (execution_event_terminal(ev->type)) {
        rc = on_terminal(rs, ev);
        if (rc != 0 && rc != -ESHUTDOWN)
            snprintf(err, errlen, "result of %s: error %d", ev->aggregate_id, rc);
    }
    event_free(ev);
    return rc;
}

static int results_init(struct host *host, void **state)
{
    if (host->store == NULL || host->bus == NULL) {
        log_error(ROLE, "results role needs the bus and the store", "bus=%p store=%p",
                  (void *)host->bus, (void *)host->store);
        return -EINVAL;
    }
    struct results *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        return -ENOMEM;
    rs->host = host;
    rs->store = host->store;
    rs->bus = host->bus;
    if (host->metrics) {
        rs->m_stored = metrics_get(host->metrics, METRIC_COUNTER, "execd_results_stored_total",
                                   "Execution results stored", "");
        rs->m_dups = metrics_get(host->metrics, METRIC_COUNTER, "execd_results_duplicate_total",
                                 "Terminal events whose result was already stored", "");
        rs->m_failed = metrics_get(host->metrics, METRIC_COUNTER, "execd_results_failed_total",
                                   "Results that could not be stored (result_failed)", "");
    }
    *state = rs;
    return 0;
}

static int results_start(void *state)
{
    struct results *rs = state;
    int threads = (int)rs->host->cfg->results_threads;
    if (threads > MAX_CONSUMERS)
        threads = MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = ROLE,
        .group = "execd-results",
        .topics = results_topics,
        .ntopics = 1,
        .handler = handle,
        .ctx = rs,
    };
    for (int i = 0; i < threads; i++) {
        struct bus_consumer *consumer = NULL;
        int rc = bus_consumer_new(rs->bus, &opts, &consumer);
        if (rc != 0) {
            log_error(ROLE, "cannot create the results consumer", "err=%d", rc);
            return rc;
        }
        rs->consumers[rs->nconsumers++] = consumer;
        if ((rc = bus_consumer_start(consumer)) != 0) {
            log_error(ROLE, "cannot start the results consumer", "err=%d", rc);
            return rc;
        }
    }
    log_info(ROLE, "results consuming", "consumers=%d", rs->nconsumers);
    return 0;
}

static void results_stop(void *state)
{
    struct results *rs = state;
    if (rs == NULL)
        return;
    atomic_store(&rs->stopping, true);
    for (int i = 0; i < rs->nconsumers; i++)
        bus_consumer_stop(rs->consumers[i]);
}

static int results_join(void *state, int64_t deadline_ms)
{
    struct results *rs = state;
    int rc = 0;
    for (int i = 0; rs && i < rs->nconsumers; i++)
        if (bus_consumer_join(rs->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    return rc;
}

static void results_destroy(void *state)
{
    struct results *rs = state;
    if (rs == NULL)
        return;
    for (int i = 0; i < rs->nconsumers; i++)
        bus_consumer_free(rs->consumers[i]);
    free(rs);
}

const struct role role_results = {
    .name = "results",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE,
    .init = results_init,
    .start = results_start,
    .stop = results_stop,
    .join = results_join,
    .destroy = results_destroy,
    .health = NULL,
};
