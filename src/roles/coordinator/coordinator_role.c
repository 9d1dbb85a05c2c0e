/*
 * coordinator_role.c — admission, the priority queue and the global cap
 * (DESIGN §5).
 *
 * EXECD_COORDINATOR_THREADS consumers in group "execd-coordinator" read
 * execution_events and saga_commands.  Everything the coordinator knows is
 * in MongoDB, so replicas share it and a restart loses nothing:
 *
 *   execution_admissions  one ledger document per execution id: the
 *       decision and its state admitted → scheduled → released, or
 *       rejected; admitted_at_ms feeds the per-minute window, the admitted
 *       and scheduled ones are the user's active executions.  It is the
 *       idempotency record for redelivered and replayed requests (expires
 *       after EXECD_EVENT_RETENTION_DAYS through the store reaper).
 *   execution_queue  the waiting requests: {_id: execution id, priority,
 *       arrival_us, state new|waiting|claimed, request: the original
 *       execution_requested JSON}.  Order: priority descending, then
 *       arrival (the request's timestamp), then id.  Bounded by
 *       EXECD_QUEUE_MAX.
 *   resource_allocations  one document per claimed capacity slot:
 *       {_id: "slot-<n>", n, holder: execution id, claimed_at_ms,
 *       expires_at_ms}, n < EXECD_MAX_CONCURRENT.  A claim inserts the
 *       first free slot-<n>; the unique _id makes two claims of one slot
 *       impossible and a unique index on holder gives an execution at most
 *       one slot, across replicas.  A release deletes {holder: id}, so
 *       releases are idempotent.  (Claims are inserts, not a findAndModify
 *       of {holder: null}: FerretDB 1.24 runs update and findAndModify as a
 *       query followed by a separate write, so two concurrent claims could
 *       both take one free slot; a primary-key insert is atomic on both
 *       FerretDB and MongoDB.)
 *   rate_limit_overrides  read only (written by the admin API): {_id:
 *       user id, bypass: bool, multiplier: number}.
 *
 * execution_requested: the ledger decides once (validation, per-user
 * limits, queue bound; under a process-wide lock so this replica's
 * decisions are serial).  A rejection publishes execution_rejected (reason,
 * retry_after) then execution_failed (rate_limited, system_error or
 * resource_limit).  An admission publishes execution_accepted, writes the
 * queue entry (state new, invisible to drains) and, when nothing waits
 * ahead of it and a slot is free, schedules it at once; otherwise it
 * publishes execution_queued (position, estimated wait), then makes the
 * entry waiting.  The handler returns 0 only after that, so the offset is
 * stored after the queue entry is durable.
 *
 * Scheduling one execution: the ledger must still say admitted; reuse a
 * slot already held by the id (a retry after a crash) or claim one; publish execution_scheduled and
 * republish the same execution_requested event to its task topic
 * (execution_tasks); then ledger → scheduled.  A crash in between repeats
 * the publish (at-least-once: the worker is idempotent), never the claim.
 *
 * Terminal events (completed/failed/timeout/cancelled) and
 * release_capacity_command release the slot, mark the ledger released,
 * drop a still waiting queue entry (a cancel while queued) and drain: claim
 * the head of the queue (findAndModify waiting → claimed), schedule it,
 * delete it.  Drains are serialised within a process (drain_lock); across
 * replicas two drainers could claim one head at the same instant on
 * FerretDB (see above) and publish its task twice — the slot stays single
 * (unique holder) and the worker is idempotent on redelivered tasks.
 *
 * A sweeper thread, every EXECD_COORDINATOR_SWEEP_MS and once at start-up,
 * frees slots held past their expires_at (timeout + SLOT_GRACE_S), puts
 * claims left by a crashed drainer back to waiting, and drains — which is
 * also how a restarted coordinator rebuilds and resumes its queue.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "admission.h"
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

#define ROLE "coordinator"
#define LEDGER "execution_admissions"
#define QUEUE "execution_queue"
#define SLOTS "resource_allocations"
#define OVERRIDES "rate_limit_overrides"
#define MAX_CONSUMERS 64
#define SLOT_GRACE_S 120
#define CLAIM_STALE_MS 30000
#define NEW_STALE_MS 60000
#define DRAIN_MAX 10000
#define WINDOW_FETCH_MAX 100000

struct coordinator {
    struct host *host;
    const struct config *cfg;
    struct store *store;
    struct bus *bus;
    struct bus_consumer *consumers[MAX_CONSUMERS];
    int nconsumers;
    pthread_mutex_t admit_lock; /* serialises this replica's decisions */
    pthread_mutex_t drain_lock; /* one drain at a time in this replica */
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    pthread_t sweeper;
    bool sweeper_started;
    atomic_bool stopping;
    atomic_llong avg_run_ms;
    struct metric *m_admitted, *m_rejected, *m_queued, *m_scheduled, *m_released, *m_reaped;
    struct metric *m_depth, *m_wait;
};

static const enum topic_id coordinator_topics[] = {TOPIC_EXECUTION_EVENTS, TOPIC_SAGA_COMMANDS};

static const struct store_index ledger_indexes[] = {
    {.name = "user_state", .keys = "{\"user_id\":1,\"state\":1}"},
    {.name = "user_admitted_at", .keys = "{\"user_id\":1,\"admitted_at_ms\":1}"},
};
static const struct store_index queue_indexes[] = {
    {.name = "state_order", .keys = "{\"state\":1,\"priority\":-1,\"arrival_us\":1}"},
};
static const struct store_index slot_indexes[] = {
    {.name = "holder_unique", .keys = "{\"holder\":1}", .unique = true},
    {.name = "expires_at_ms_1", .keys = "{\"expires_at_ms\":1}"},
};

static bool stopping(const struct coordinator *co)
{
    return atomic_load(&co->stopping) || (co->host->stopping && atomic_load(co->host->stopping));
}

static void metric_inc(struct metric *m)
{
    if (m)
        metric_add(m, 1);
}

/* Runs an update built from a template; 0, -ENOMEM or the store's error. */
static int update_doc(struct coordinator *co, const char *coll, cJSON *filter, cJSON *upd,
                      int64_t *matched)
{
    int rc =
        filter && upd ? store_update_one(co->store, coll, filter, upd, false, matched) : -ENOMEM;
    cJSON_Delete(filter);
    cJSON_Delete(upd);
    return rc;
}

static int delete_docs(struct coordinator *co, const char *coll, cJSON *filter)
{
    int rc = filter ? store_delete_many(co->store, coll, filter, NULL) : -ENOMEM;
    cJSON_Delete(filter);
    return rc;
}

static int find_doc(struct coordinator *co, const char *coll, cJSON *filter, cJSON **out)
{
    int rc = filter ? store_find_one(co->store, coll, filter, NULL, out) : -ENOMEM;
    cJSON_Delete(filter);
    return rc;
}

static int count_docs(struct coordinator *co, const char *coll, cJSON *filter, int64_t *out)
{
    int rc = filter ? store_count(co->store, coll, filter, out) : -ENOMEM;
    cJSON_Delete(filter);
    return rc;
}

static const char *jstr(const cJSON *doc, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t jint(const cJSON *doc, const char *field, int64_t def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : def;
}

static const char *execution_id_of(const struct event *ev)
{
    const char *id = event_get_str(ev, "execution_id");
    return id ? id : ev->aggregate_id;
}

/* The task topic of a request: a routing table with one default row. */
static enum topic_id task_topic_of(const struct event *request)
{
    (void)request;
    return TOPIC_EXECUTION_TASKS;
}

/* Publishes a derived event built by the caller; frees it. */
static int publish(struct coordinator *co, struct event *ev)
{
    if (ev == NULL)
        return -ENOMEM;
    int rc = bus_publish_event(co->bus, ev);
    if (rc != 0)
        log_warn(ROLE, "cannot publish event", "type=%s execution_id=%s err=%d",
                 event_type_name(ev->type), ev->aggregate_id, rc);
    event_free(ev);
    return rc;
}

/* ---- capacity slots ---------------------------------------------------- */

/* Claimed slots with n below the cap; -errno on failure. */
static int64_t slots_held(struct coordinator *co)
{
    int64_t n = 0;
    int rc = count_docs(co, SLOTS,
                        exec_json("{\"n\":{\"$lt\":%L}}", (long long)co->cfg->max_concurrent), &n);
    return rc != 0 ? rc : n;
}

/* Claims a slot for id (or finds the one it holds): 0, -EAGAIN none free. */
static int claim_slot(struct coordinator *co, const char *id, const char *user, int64_t timeout_s)
{
    cJSON *held = NULL;
    int rc = find_doc(co, SLOTS, exec_json("{\"holder\":%S}", id), &held);
    cJSON_Delete(held);
    if (rc == 0)
        return 0;
    if (rc != -ENOENT)
        return rc;
    int64_t cap = co->cfg->max_concurrent;
    for (int64_t n = 0; n < cap; n++) {
        char slot[32];
        admission_slot_id(n, slot, sizeof(slot));
        int64_t now = now_wall_ms();
        cJSON *doc = exec_json("{\"_id\":%S,\"n\":%L,\"holder\":%S,\"user_id\":%S,"
                               "\"claimed_at_ms\":%L,\"expires_at_ms\":%L}",
                               slot, (long long)n, id, user, (long long)now,
                               (long long)(now + (timeout_s + SLOT_GRACE_S) * 1000));
        rc = doc ? store_insert_one(co->store, SLOTS, doc) : -ENOMEM;
        cJSON_Delete(doc);
        if (rc != -EEXIST)
            return rc;
    }
    /* Every slot taken — or id got one concurrently (unique holder). */
    rc = find_doc(co, SLOTS, exec_json("{\"holder\":%S}", id), &held);
    cJSON_Delete(held);
    return rc == 0 ? 0 : rc == -ENOENT ? -EAGAIN : rc;
}

/* Frees the slot held by id (idempotent); *released tells whether one was. */
static int release_slot(struct coordinator *co, const char *id, bool *released)
{
    cJSON *filter = exec_json("{\"holder\":%S}", id);
    cJSON *old = NULL;
    int rc = filter
                 ? store_find_and_modify(co->store, SLOTS, filter, NULL, NULL, false, false, &old)
                 : -ENOMEM;
    cJSON_Delete(filter);
    *released = rc == 0;
    if (rc == 0) {
        int64_t claimed = jint(old, "claimed_at_ms", 0);
        if (claimed > 0)
            atomic_store(&co->avg_run_ms, admission_avg_update(atomic_load(&co->avg_run_ms),
                                                               now_wall_ms() - claimed));
        metric_inc(co->m_released);
    }
    cJSON_Delete(old);
    return rc == -ENOENT ? 0 : rc;
}

/* ---- scheduling ---------------------------------------------------------- */

/* Whether the ledger of id is in state. 1 yes, 0 no, < 0 error. */
static int ledger_is(struct coordinator *co, const char *id, const char *state)
{
    cJSON *doc = NULL;
    int rc = find_doc(co, LEDGER, exec_json("{\"_id\":%S}", id), &doc);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    const char *s = jstr(doc, "state");
    int yes = s && strcmp(s, state) == 0;
    cJSON_Delete(doc);
    return yes;
}

/* Schedules the admitted request: 0 done, -EAGAIN no free slot, -ECANCELED
 * not admitted any more (scheduled already, or ended), else an error. */
static int schedule(struct coordinator *co, const struct event *request)
{
    const char *id = execution_id_of(request);
    const char *user = request->meta.user_id ? request->meta.user_id : "";
    int rc = ledger_is(co, id, "admitted");
    if (rc <= 0)
        return rc == 0 ? -ECANCELED : rc;
    rc = claim_slot(co, id, user, event_get_int(request, "timeout_seconds", 60));
    if (rc != 0)
        return rc;
    /* A terminal event may have released the ledger while we claimed. */
    rc = ledger_is(co, id, "admitted");
    if (rc <= 0) {
        bool released;
        release_slot(co, id, &released);
        return rc == 0 ? -ECANCELED : rc;
    }
    enum topic_id task_topic = task_topic_of(request);
    struct event *ev = event_derive(EV_execution_scheduled, request);
    if (ev == NULL || event_set_str(ev, "execution_id", id) ||
        event_set_str(ev, "task_topic", topic_table[task_topic].name)) {
        event_free(ev);
        return -ENOMEM;
    }
    if ((rc = publish(co, ev)) != 0)
        return rc;
    if ((rc = bus_publish_event_to(co->bus, task_topic, request)) != 0) {
        log_warn(ROLE, "cannot publish the task", "execution_id=%s err=%d", id, rc);
        return rc;
    }
    rc = update_doc(co, LEDGER, exec_json("{\"_id\":%S,\"state\":\"admitted\"}", id),
                    exec_json("{\"$set\":{\"state\":\"scheduled\",\"scheduled_at_ms\":%L}}",
                              (long long)now_wall_ms()),
                    NULL);
    if (rc != 0)
        return rc;
    metric_inc(co->m_scheduled);
    log_debug(ROLE, "execution scheduled", "execution_id=%s user_id=%s", id, user);
    return 0;
}

static void refresh_depth(struct coordinator *co)
{
    int64_t depth = 0;
    if (co->m_depth && count_docs(co, QUEUE, exec_json("{}"), &depth) == 0)
        metric_set(co->m_depth, depth);
}

/* Moves queue heads into free slots while both exist. */
static int drain(struct coordinator *co)
{
    int rc = 0;
    pthread_mutex_lock(&co->drain_lock);
    for (int i = 0; i < DRAIN_MAX && !stopping(co); i++) {
        int64_t held = slots_held(co);
        if (held < 0) {
            rc = (int)held;
            break;
        }
        if (held >= co->cfg->max_concurrent)
            break;
        cJSON *filter = exec_json("{\"state\":\"waiting\"}");
        cJSON *upd = exec_json("{\"$set\":{\"state\":\"claimed\",\"claimed_at_ms\":%L}}",
                               (long long)now_wall_ms());
        cJSON *sort = exec_json("{\"priority\":-1,\"arrival_us\":1,\"_id\":1}");
        cJSON *entry = NULL;
        rc = filter && upd && sort
                 ? store_find_and_modify(co->store, QUEUE, filter, upd, sort, false, true, &entry)
                 : -ENOMEM;
        cJSON_Delete(filter);
        cJSON_Delete(upd);
        cJSON_Delete(sort);
        if (rc == -ENOENT) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        const char *id = jstr(entry, "_id");
        const char *json = jstr(entry, "request");
        struct event *request = NULL;
        char err[256];
        int src = json ? event_decode(json, strlen(json), &request, err, sizeof(err)) : -EBADMSG;
        if (src != 0 || id == NULL) {
            log_error(ROLE, "dropping an unreadable queue entry", "id=%s err=\"%s\"", id ? id : "-",
                      src ? err : "no request");
            if (id)
                delete_docs(co, QUEUE, exec_json("{\"_id\":%S}", id));
            cJSON_Delete(entry);
            continue;
        }
        int64_t waited_ms = now_wall_ms() - jint(entry, "enqueued_at_ms", now_wall_ms());
        rc = schedule(co, request);
        event_free(request);
        if (rc == 0 || rc == -ECANCELED) {
            if (rc == 0 && co->m_wait)
                metric_observe(co->m_wait, (double)waited_ms / 1000.0);
            rc = delete_docs(co, QUEUE, exec_json("{\"_id\":%S}", id));
        } else {
            /* No slot after all (another replica took it) or an error: back
             * to waiting; a later release or the sweeper tries again. */
            update_doc(co, QUEUE, exec_json("{\"_id\":%S,\"state\":\"claimed\"}", id),
                       exec_json("{\"$set\":{\"state\":\"waiting\"}}"), NULL);
            cJSON_Delete(entry);
            if (rc == -EAGAIN)
                rc = 0;
            break;
        }
        cJSON_Delete(entry);
        if (rc != 0)
            break;
    }
    pthread_mutex_unlock(&co->drain_lock);
    refresh_depth(co);
    return rc;
}

/* ---- admission ----------------------------------------------------------- */

static void read_override(struct coordinator *co, const char *user, struct admission_override *ov,
                          bool *found)
{
    cJSON *doc = NULL;
    *found = false;
    *ov = (struct admission_override){.bypass = false, .multiplier = 1.0};
    if (find_doc(co, OVERRIDES, exec_json("{\"_id\":%S}", user), &doc) != 0)
        return;
    *found = true;
    ov->bypass = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "bypass"));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "multiplier");
    if (cJSON_IsNumber(m) && m->valuedouble > 0)
        ov->multiplier = m->valuedouble;
    cJSON_Delete(doc);
}

/* The user's admissions inside the window, ascending; *out owned by caller. */
static int read_window(struct coordinator *co, const char *user, int64_t now, int64_t limit,
                       int64_t **out, size_t *n)
{
    cJSON *filter = exec_json("{\"user_id\":%S,\"admitted_at_ms\":{\"$gt\":%L}}", user,
                              (long long)(now - ADMISSION_WINDOW_MS));
    cJSON *opts =
        exec_json("{\"sort\":{\"admitted_at_ms\":1},\"projection\":{\"admitted_at_ms\":1},"
                  "\"limit\":%L}",
                  (long long)(limit < WINDOW_FETCH_MAX ? limit : WINDOW_FETCH_MAX));
    cJSON *arr = NULL;
    int rc = filter && opts ? store_find(co->store, LEDGER, filter, opts, &arr) : -ENOMEM;
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    if (rc != 0)
        return rc;
    int count = cJSON_GetArraySize(arr);
    int64_t *ts = calloc(count > 0 ? (size_t)count : 1, sizeof(*ts));
    if (ts == NULL) {
        cJSON_Delete(arr);
        return -ENOMEM;
    }
    size_t k = 0;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, arr) ts[k++] = jint(doc, "admitted_at_ms", 0);
    cJSON_Delete(arr);
    *out = ts;
    *n = k;
    return 0;
}

static enum execution_error error_of(enum admission_verdict v)
{
    switch (v) {
    case ADMIT_INVALID_RUNTIME:
        return EXEC_ERR_SYSTEM_ERROR;
    case ADMIT_INVALID_LIMITS:
        return EXEC_ERR_RESOURCE_LIMIT;
    default:
        return EXEC_ERR_RATE_LIMITED;
    }
}

/* Decides and records the decision in the ledger (under admit_lock). */
static int decide(struct coordinator *co, const struct event *request, const char *id,
                  const char *user, int64_t arrival_us)
{
    const struct config *cfg = co->cfg;
    const char *script = event_get_str(request, "script");
    struct admission_policy pol = {
        .max_script_bytes = cfg->max_script_bytes,
        .max_timeout_seconds = cfg->max_timeout_seconds,
        .user_max_concurrent = cfg->user_max_concurrent,
        .user_max_per_minute = cfg->user_max_per_minute,
        .queue_max = cfg->queue_max,
    };
    struct admission_request req = {
        .lang = event_get_str(request, "lang"),
        .lang_version = event_get_str(request, "lang_version"),
        .script_bytes = script ? strlen(script) : 0,
        .timeout_seconds = event_get_int(request, "timeout_seconds", 0),
    };
    struct admission_override ov;
    bool has_override;
    int64_t now = now_wall_ms();
    int64_t *recent = NULL;
    size_t nrecent = 0;
    struct admission_state st = {.now_ms = now, .avg_run_ms = atomic_load(&co->avg_run_ms)};
    struct admission_decision d;
    int rc;

    pthread_mutex_lock(&co->admit_lock);
    read_override(co, user, &ov, &has_override);
    if (!ov.bypass) {
        rc = count_docs(
            co, LEDGER,
            exec_json("{\"user_id\":%S,\"state\":{\"$in\":[\"admitted\",\"scheduled\"]}}", user),
            &st.active);
        if (rc == 0)
            rc = read_window(co, user, now, admission_scaled_limit(cfg->user_max_per_minute, &ov),
                             &recent, &nrecent);
        if (rc != 0)
            goto unlock;
    }
    st.recent_ms = recent;
    st.nrecent = nrecent;
    if ((rc = count_docs(co, QUEUE, exec_json("{}"), &st.queue_depth)) != 0)
        goto unlock;
    admission_decide(&pol, &req, &st, has_override ? &ov : NULL, &d);
    cJSON *doc;
    if (d.verdict == ADMIT_OK)
        doc = exec_json("{\"_id\":%S,\"user_id\":%S,\"state\":\"admitted\",\"priority\":%L,"
                        "\"arrival_us\":%L,\"admitted_at_ms\":%L,\"notified\":false}",
                        id, user, event_get_int(request, "priority", 0), (long long)arrival_us,
                        (long long)now);
    else
        doc = exec_json("{\"_id\":%S,\"user_id\":%S,\"state\":\"rejected\",\"reason\":%S,"
                        "\"retry_after\":%L,\"error_type\":%S,\"decided_at_ms\":%L,"
                        "\"notified\":false}",
                        id, user, d.reason, (long long)d.retry_after_s,
                        execution_error_name(error_of(d.verdict)), (long long)now);
    cJSON *expires = store_date(now + (int64_t)cfg->event_retention_days * 24 * 3600 * 1000);
    if (doc == NULL || expires == NULL || !cJSON_AddItemToObject(doc, "expires_at", expires)) {
        cJSON_Delete(expires);
        cJSON_Delete(doc);
        rc = -ENOMEM;
        goto unlock;
    }
    rc = store_insert_one(co->store, LEDGER, doc);
    cJSON_Delete(doc);
    if (rc == -EEXIST)
        rc = 0; /* another consumer decided first; the ledger holds its decision */
unlock:
    pthread_mutex_unlock(&co->admit_lock);
    free(recent);
    return rc;
}

static int notify_rejection(struct coordinator *co, const struct event *request, const cJSON *led)
{
    const char *id = execution_id_of(request);
    const char *reason = jstr(led, "reason");
    const char *error_type = jstr(led, "error_type");
    int64_t retry_after = jint(led, "retry_after", 0);
    struct event *rej = event_derive(EV_execution_rejected, request);
    if (rej == NULL || event_set_str(rej, "execution_id", id) ||
        event_set_str(rej, "reason", reason ? reason : "rejected") ||
        (retry_after > 0 && event_set_int(rej, "retry_after", retry_after))) {
        event_free(rej);
        return -ENOMEM;
    }
    int rc = publish(co, rej);
    if (rc != 0)
        return rc;
    struct event *fail = event_derive(EV_execution_failed, request);
    if (fail == NULL || event_set_str(fail, "execution_id", id) ||
        event_set_str(fail, "error_type", error_type ? error_type : "rate_limited") ||
        event_set_str(fail, "message", reason ? reason : "rejected")) {
        event_free(fail);
        return -ENOMEM;
    }
    if ((rc = publish(co, fail)) != 0)
        return rc;
    metric_inc(co->m_rejected);
    log_info(ROLE, "execution rejected", "execution_id=%s user_id=%s reason=\"%s\"", id,
             request->meta.user_id ? request->meta.user_id : "-", reason ? reason : "-");
    return update_doc(co, LEDGER, exec_json("{\"_id\":%S}", id),
                      exec_json("{\"$set\":{\"notified\":true}}"), NULL);
}

/* Queue position of a waiting key (1 = next). */
static int position_of(struct coordinator *co, int64_t priority, int64_t arrival_us, const char *id,
                       int64_t *out)
{
    int64_t ahead = 0;
    int rc = count_docs(co, QUEUE,
                        exec_json("{\"state\":{\"$in\":[\"waiting\",\"claimed\"]},\"$or\":["
                                  "{\"priority\":{\"$gt\":%L}},"
                                  "{\"priority\":%L,\"arrival_us\":{\"$lt\":%L}},"
                                  "{\"priority\":%L,\"arrival_us\":%L,\"_id\":{\"$lt\":%S}}]}",
                                  (long long)priority, (long long)priority, (long long)arrival_us,
                                  (long long)priority, (long long)arrival_us, id),
                        &ahead);
    if (rc == 0)
        *out = ahead + 1;
    return rc;
}

static int on_requested(struct coordinator *co, const struct event *request, const char *payload,
                        size_t len)
{
    const char *id = execution_id_of(request);
    const char *user = request->meta.user_id ? request->meta.user_id : "anonymous";
    int64_t arrival_us = 0;
    if (ts_parse_us(request->timestamp, &arrival_us) != 0)
        arrival_us = now_wall_us();
    int64_t priority = event_get_int(request, "priority", 0);

    cJSON *led = NULL;
    int rc = find_doc(co, LEDGER, exec_json("{\"_id\":%S}", id), &led);
    if (rc == -ENOENT) {
        if ((rc = decide(co, request, id, user, arrival_us)) != 0)
            return rc;
        rc = find_doc(co, LEDGER, exec_json("{\"_id\":%S}", id), &led);
        if (rc == 0 && strcmp(jstr(led, "state") ? jstr(led, "state") : "", "admitted") == 0) {
            struct event *acc = event_derive(EV_execution_accepted, request);
            if (acc == NULL || event_set_str(acc, "execution_id", id)) {
                event_free(acc);
                cJSON_Delete(led);
                return -ENOMEM;
            }
            if ((rc = publish(co, acc)) != 0) {
                cJSON_Delete(led);
                return rc;
            }
            metric_inc(co->m_admitted);
        }
    }
    if (rc != 0)
        return rc;
    char state[16];
    snprintf(state, sizeof(state), "%s", jstr(led, "state") ? jstr(led, "state") : "");
    if (strcmp(state, "rejected") == 0) {
        rc = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(led, "notified"))
                 ? 0
                 : notify_rejection(co, request, led);
        cJSON_Delete(led);
        return rc;
    }
    cJSON_Delete(led);
    if (strcmp(state, "admitted") != 0)
        return 0; /* scheduled or ended before: a redelivery or a replay */

    /* The queue entry, durable before the offset is stored. */
    cJSON *entry =
        exec_json("{\"_id\":%S,\"user_id\":%S,\"priority\":%L,\"arrival_us\":%L,"
                  "\"state\":\"new\",\"enqueued_at_ms\":%L}",
                  id, user, (long long)priority, (long long)arrival_us, (long long)now_wall_ms());
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        memcpy(copy, payload, len);
        copy[len] = '\0';
    }
    cJSON *raw = copy ? cJSON_CreateString(copy) : NULL;
    free(copy);
    if (entry == NULL || raw == NULL || !cJSON_AddItemToObject(entry, "request", raw)) {
        cJSON_Delete(raw);
        cJSON_Delete(entry);
        return -ENOMEM;
    }
    rc = store_insert_one(co->store, QUEUE, entry);
    cJSON_Delete(entry);
    if (rc == -EEXIST) {
        cJSON *cur = NULL;
        rc = find_doc(co, QUEUE, exec_json("{\"_id\":%S}", id), &cur);
        const char *qs = rc == 0 ? jstr(cur, "state") : NULL;
        bool fresh = qs && strcmp(qs, "new") == 0;
        cJSON_Delete(cur);
        if (rc == -ENOENT)
            return 0; /* scheduled and removed meanwhile */
        if (rc != 0)
            return rc;
        if (!fresh)
            return drain(co); /* already waiting: a redelivery */
    } else if (rc != 0) {
        return rc;
    }

    int64_t position = 0;
    if ((rc = position_of(co, priority, arrival_us, id, &position)) != 0)
        return rc;
    if (position == 1) {
        rc = schedule(co, request);
        if (rc == 0 || rc == -ECANCELED) {
            rc = delete_docs(co, QUEUE, exec_json("{\"_id\":%S}", id));
            refresh_depth(co);
            return rc;
        }
        if (rc != -EAGAIN)
            return rc;
    }
    struct event *q = event_derive(EV_execution_queued, request);
    int64_t wait_ms = admission_estimated_wait_ms(position, co->cfg->max_concurrent,
                                                  atomic_load(&co->avg_run_ms));
    if (q == NULL || event_set_str(q, "execution_id", id) ||
        event_set_int(q, "position", position) ||
        event_set_json(q, "estimated_wait_seconds", cJSON_CreateNumber((double)wait_ms / 1000.0))) {
        event_free(q);
        return -ENOMEM;
    }
    if ((rc = publish(co, q)) != 0)
        return rc;
    metric_inc(co->m_queued);
    rc = update_doc(co, QUEUE, exec_json("{\"_id\":%S,\"state\":\"new\"}", id),
                    exec_json("{\"$set\":{\"state\":\"waiting\"}}"), NULL);
    if (rc != 0)
        return rc;
    log_debug(ROLE, "execution queued", "execution_id=%s position=%lld", id, (long long)position);
    return drain(co);
}

/* ---- release ------------------------------------------------------------- */

static int release(struct coordinator *co, const char *id, const char *why)
{
    bool released = false;
    int rc = release_slot(co, id, &released);
    if (rc != 0)
        return rc;
    int64_t matched = 0;
    rc = update_doc(co, LEDGER,
                    exec_json("{\"_id\":%S,\"state\":{\"$in\":[\"admitted\",\"scheduled\"]}}", id),
                    exec_json("{\"$set\":{\"state\":\"released\",\"released_at_ms\":%L,"
                              "\"released_by\":%S}}",
                              (long long)now_wall_ms(), why),
                    &matched);
    if (rc != 0)
        return rc;
    /* A waiting entry of an execution that ended (cancelled while queued). */
    if ((rc = delete_docs(
             co, QUEUE, exec_json("{\"_id\":%S,\"state\":{\"$in\":[\"new\",\"waiting\"]}}", id))) !=
        0)
        return rc;
    if (released || matched)
        log_debug(ROLE, "capacity released", "execution_id=%s slot=%d by=%s", id, released, why);
    return drain(co);
}

/* ---- consumer ------------------------------------------------------------ */

static int handle(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct coordinator *co = ctx;
    struct event *ev = NULL;
    if (event_decode(msg->payload, msg->len, &ev, err, errlen) != 0)
        return -EBADMSG;
    int rc = 0;
    if (ev->type == EV_execution_requested)
        rc = on_requested(co, ev, msg->payload, msg->len);
    else if (execution_event_terminal(ev->type) || ev->type == EV_release_capacity_command)
        rc = release(co, execution_id_of(ev), event_type_name(ev->type));
    if (rc != 0 && rc != -ESHUTDOWN)
        snprintf(err, errlen, "%s of %s failed: error %d", event_type_name(ev->type),
                 ev->aggregate_id, rc);
    event_free(ev);
    return rc;
}

/* ---- sweeper ------------------------------------------------------------- */

static void reap_slots(struct coordinator *co)
{
    int64_t now = now_wall_ms();
    cJSON *expired = NULL;
    cJSON *filter = exec_json("{\"expires_at_ms\":{\"$lt\":%L}}", (long long)now);
    int rc = filter ? store_find(co->store, SLOTS, filter, NULL, &expired) : -ENOMEM;
    cJSON_Delete(filter);
    if (rc != 0)
        return;
    const cJSON *slot;
    cJSON_ArrayForEach(slot, expired)
    {
        const char *holder = jstr(slot, "holder");
        if (holder == NULL)
            continue;
        log_warn(ROLE, "reaping a capacity slot held past its deadline", "slot=%s execution_id=%s",
                 jstr(slot, "_id") ? jstr(slot, "_id") : "-", holder);
        metric_inc(co->m_reaped);
        release(co, holder, "reaper");
    }
    cJSON_Delete(expired);
}

static void sweep(struct coordinator *co)
{
    int64_t now = now_wall_ms();
    reap_slots(co);
    update_doc(co, QUEUE,
               exec_json("{\"state\":\"claimed\",\"claimed_at_ms\":{\"$lt\":%L}}",
                         (long long)(now - CLAIM_STALE_MS)),
               exec_json("{\"$set\":{\"state\":\"waiting\"}}"), NULL);
    cJSON *f = exec_json("{\"state\":\"new\",\"enqueued_at_ms\":{\"$lt\":%L}}",
                         (long long)(now - NEW_STALE_MS));
    cJSON *u = exec_json("{\"$set\":{\"state\":\"waiting\"}}");
    if (f && u)
        store_update_many(co->store, QUEUE, f, u, NULL);
    cJSON_Delete(f);
    cJSON_Delete(u);
    drain(co);
}

static void *sweeper_main(void *arg)
{
    struct coordinator *co = arg;
    thread_name_set("coord-sweep");
    int64_t waiting = 0;
    if (count_docs(co, QUEUE, exec_json("{}"), &waiting) == 0)
        log_info(ROLE, "queue rebuilt from execution_queue", "waiting=%lld", (long long)waiting);
    while (!stopping(co)) {
        sweep(co);
        pthread_mutex_lock(&co->wake_lock);
        int64_t until = now_mono_ms() + co->cfg->coordinator_sweep_ms;
        while (!stopping(co) && now_mono_ms() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&co->wake, &co->wake_lock, &ts);
        }
        pthread_mutex_unlock(&co->wake_lock);
    }
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------- */

static int coordinator_init(struct host *host, void **state)
{
    if (host->store == NULL || host->bus == NULL) {
        log_error(ROLE, "coordinator role needs the bus and the store", "bus=%p store=%p",
                  (void *)host->bus, (void *)host->store);
        return -EINVAL;
    }
    struct coordinator *co = calloc(1, sizeof(*co));
    if (co == NULL)
        return -ENOMEM;
    co->host = host;
    co->cfg = host->cfg;
    co->store = host->store;
    co->bus = host->bus;
    atomic_store(&co->avg_run_ms, 1000);
    pthread_mutex_init(&co->admit_lock, NULL);
    pthread_mutex_init(&co->drain_lock, NULL);
    pthread_mutex_init(&co->wake_lock, NULL);
    pthread_cond_init(&co->wake, NULL);
    *state = co;
    int rc;
    if ((rc = store_create_indexes(co->store, LEDGER, ledger_indexes,
                                   sizeof(ledger_indexes) / sizeof(ledger_indexes[0]))) ||
        (rc = store_create_indexes(co->store, QUEUE, queue_indexes,
                                   sizeof(queue_indexes) / sizeof(queue_indexes[0]))) ||
        (rc = store_create_indexes(co->store, SLOTS, slot_indexes,
                                   sizeof(slot_indexes) / sizeof(slot_indexes[0]))) ||
        (rc = store_reaper_add(co->store, LEDGER, "expires_at"))) {
        log_error(ROLE, "cannot prepare the coordinator collections", "err=%d", rc);
        return rc;
    }
    if (host->metrics) {
        struct metrics *m = host->metrics;
        co->m_admitted = metrics_get(m, METRIC_COUNTER, "execd_coordinator_admitted_total",
                                     "Executions admitted by the coordinator", "");
        co->m_rejected = metrics_get(m, METRIC_COUNTER, "execd_coordinator_rejected_total",
                                     "Executions rejected by the coordinator", "");
        co->m_queued = metrics_get(m, METRIC_COUNTER, "execd_coordinator_queued_total",
                                   "Executions that waited in the queue", "");
        co->m_scheduled = metrics_get(m, METRIC_COUNTER, "execd_coordinator_scheduled_total",
                                      "Executions scheduled (published to a task topic)", "");
        co->m_released = metrics_get(m, METRIC_COUNTER, "execd_coordinator_released_total",
                                     "Capacity slots released", "");
        co->m_reaped = metrics_get(m, METRIC_COUNTER, "execd_coordinator_reaped_total",
                                   "Capacity slots reaped past their deadline", "");
        co->m_depth = metrics_get(m, METRIC_GAUGE, "execd_coordinator_queue_depth",
                                  "Executions waiting in execution_queue", "");
        co->m_wait = metrics_get(m, METRIC_HISTOGRAM, "execd_coordinator_queue_wait_seconds",
                                 "Time executions waited in the queue", "");
    }
    return 0;
}

static int coordinator_start(void *state)
{
    struct coordinator *co = state;
    int threads = (int)co->cfg->coordinator_threads;
    if (threads > MAX_CONSUMERS)
        threads = MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = ROLE,
        .group = "execd-coordinator",
        .topics = coordinator_topics,
        .ntopics = sizeof(coordinator_topics) / sizeof(coordinator_topics[0]),
        .handler = handle,
        .ctx = co,
    };
    for (int i = 0; i < threads; i++) {
        struct bus_consumer *consumer = NULL;
        int rc = bus_consumer_new(co->bus, &opts, &consumer);
        if (rc != 0) {
            log_error(ROLE, "cannot create the coordinator consumer", "err=%d", rc);
            return rc;
        }
        co->consumers[co->nconsumers++] = consumer;
        if ((rc = bus_consumer_start(consumer)) != 0) {
            log_error(ROLE, "cannot start the coordinator consumer", "err=%d", rc);
            return rc;
        }
    }
    int err = pthread_create(&co->sweeper, NULL, sweeper_main, co);
    if (err != 0) {
        log_error(ROLE, "cannot start the coordinator sweeper", "err=%d", err);
        return -err;
    }
    co->sweeper_started = true;
    log_info(ROLE, "coordinator consuming", "consumers=%d max_concurrent=%lld queue_max=%lld",
             co->nconsumers, (long long)co->cfg->max_concurrent, (long long)co->cfg->queue_max);
    return 0;
}

static void coordinator_stop(void *state)
{
    struct coordinator *co = state;
    if (co == NULL)
        return;
    atomic_store(&co->stopping, true);
    pthread_mutex_lock(&co->wake_lock);
    pthread_cond_broadcast(&co->wake);
    pthread_mutex_unlock(&co->wake_lock);
    for (int i = 0; i < co->nconsumers; i++)
        bus_consumer_stop(co->consumers[i]);
}

static int coordinator_join(void *state, int64_t deadline_ms)
{
    struct coordinator *co = state;
    int rc = 0;
    for (int i = 0; co && i < co->nconsumers; i++)
        if (bus_consumer_join(co->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    if (co && co->sweeper_started) {
        pthread_join(co->sweeper, NULL);
        co->sweeper_started = false;
    }
    return rc;
}

static void coordinator_destroy(void *state)
{
    struct coordinator *co = state;
    if (co == NULL)
        return;
    if (co->sweeper_started) {
        coordinator_stop(co);
        pthread_join(co->sweeper, NULL);
    }
    for (int i = 0; i < co->nconsumers; i++)
        bus_consumer_free(co->consumers[i]);
    pthread_cond_destroy(&co->wake);
    pthread_mutex_destroy(&co->wake_lock);
    pthread_mutex_destroy(&co->admit_lock);
    pthread_mutex_destroy(&co->drain_lock);
    free(co);
}

const struct role role_coordinator = {
    .name = "coordinator",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE,
    .init = coordinator_init,
    .start = coordinator_start,
    .stop = coordinator_stop,
    .join = coordinator_join,
    .destroy = coordinator_destroy,
    .health = NULL,
};
