/*
 * saga_role.c — the saga role: no execution stays non-terminal (DESIGN §6).
 *
 * EXECD_SAGA_THREADS consumers in group "execd-saga" read execution_events;
 * events of one execution share a partition, so one consumer handles them
 * in order.  The state machine is src/domain/saga.c; this file persists it
 * and publishes what it decides.
 *
 * `sagas` holds one document per execution (unique index on execution_id):
 *   {_id = saga_id, saga_id, saga_name, execution_id, user_id, state,
 *    final_state, current_step, completed_steps[], compensated_steps[],
 *    error_message, created_at, updated_at, completed_at, retry_count,
 *    timeout_seconds, started, deadlines{step: date|null}, deadline_at_ms
 *    (0 = none), correlation_id, outbox[], outbox_pending, version}
 *
 * Every state change is ONE conditional update {_id, version: v} → v+1 that
 * writes the whole new state together with an outbox: the encoded events
 * the transition publishes (saga_*, execution_failed/_timeout/_cancelled,
 * and the commands delete_pod_command / release_capacity_command to
 * saga_commands), each with its event_id fixed at that moment.  Only then
 * are they published, in order; a second conditional update empties the
 * outbox (and moves a compensating saga to its final state).  A crash
 * between the two leaves the outbox in the document: whoever next touches
 * the saga (an event, the deadline thread, a restart) publishes it again
 * with the same event ids, so a compensation is recorded exactly once
 * (compensated_steps is written with the outbox that carries its command)
 * and published at least once; the only duplicate possible is the window
 * between a delivery report and the outbox update, and it carries the same
 * event_id.  Commands are idempotent at their consumers anyway (the worker
 * deletes with 404 = done, the coordinator releases by holder).
 *
 * The deadline thread ("saga-deadline") wakes every 250 ms and reads the
 * sagas whose deadline_at_ms has passed or whose outbox is pending, and
 * handles them in parallel on a small pool ("saga-due"); since
 * the deadlines live in the documents, a restarted role resumes every open
 * saga and its deadlines.  FerretDB 1.24 runs an update as a query plus a
 * whole-document write, so two writers of one saga must not overlap: the
 * consumer and the deadline thread of this process take the saga's stripe
 * lock around each read-modify-write, and a version mismatch (another
 * replica) reloads and retries.  Run one saga consumer group; replicas split
 * the partitions, but their deadline threads may still meet one saga — the
 * version check makes that safe on MongoDB; on FerretDB run one replica.
 *
 * Cancel: execution_cancel_requested (published by POST
 * /api/v1/executions/{id}/cancel or POST /api/v1/sagas/{id}/cancel) for a
 * saga before finalize → compensating: saga_compensating, execution_cancelled
 * (first, so the execution's status is decided before the pod goes away),
 * delete_pod_command, release_capacity_command, saga_cancelled.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "execution.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "pool.h"
#include "saga.h"
#include "saga_role.h"
#include "store.h"
#include "topics.h"
#include "util.h"

#define TICK_MS 250
#define TICK_BATCH 200
#define CONFLICT_ATTEMPTS 5
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define RETRY_SLICE_MS 50
#define ID_MAX 128
#define DUE_THREADS 4

struct rec {
    char saga_id[UUID_LEN];
    char execution_id[ID_MAX];
    char user_id[ID_MAX];
    char correlation_id[ID_MAX];
    struct saga s;
    int64_t version;
    int64_t created_ms;
    int64_t completed_ms;
    int64_t retry_count;
    cJSON *outbox; /* array of encoded events (strings); owned */
};

static const struct store_index saga_indexes[] = {
    {.name = "execution_id_unique", .keys = "{\"execution_id\":1}", .unique = true},
    {.name = "deadline_at_ms", .keys = "{\"deadline_at_ms\":1}", .unique = false},
    {.name = "state", .keys = "{\"state\":1}", .unique = false},
};

static const enum topic_id saga_topics[] = {TOPIC_EXECUTION_EVENTS};

static bool stopping(const struct saga_role *sr)
{
    return atomic_load(&sr->stopping) || (sr->host->stopping && atomic_load(sr->host->stopping));
}

static pthread_mutex_t *stripe(struct saga_role *sr, const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &sr->stripes[h % SAGA_STRIPES];
}

static void rec_release(struct rec *r)
{
    cJSON_Delete(r->outbox);
    r->outbox = NULL;
}

/* ---- document <-> record ---- */

static const char *doc_str(const cJSON *doc, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t doc_int(const cJSON *doc, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    if (cJSON_IsObject(v)) { /* {"$numberLong": "..."} */
        const char *s = doc_str(v, "$numberLong");
        return s ? strtoll(s, NULL, 10) : 0;
    }
    return 0;
}

static int64_t doc_date(const cJSON *doc, const char *name)
{
    int64_t ms = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (v && !cJSON_IsNull(v) && store_date_ms(v, &ms) == 0)
        return ms;
    return 0;
}

static unsigned doc_bits(const cJSON *doc, const char *name, int (*lookup)(const char *))
{
    unsigned bits = 0;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, name);
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        int i = cJSON_IsString(it) ? lookup(it->valuestring) : -1;
        if (i >= 0)
            bits |= 1u << i;
    }
    return bits;
}

static void copy_str(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s ? s : "");
}

static int rec_from_doc(const cJSON *doc, struct rec *r)
{
    memset(r, 0, sizeof(*r));
    const char *sid = doc_str(doc, "saga_id");
    const char *eid = doc_str(doc, "execution_id");
    int st = saga_state_lookup(doc_str(doc, "state"));
    int step = saga_step_lookup(doc_str(doc, "current_step"));
    if (!sid || !eid || st < 0 || step < 0)
        return -EINVAL;
    copy_str(r->saga_id, sizeof(r->saga_id), sid);
    copy_str(r->execution_id, sizeof(r->execution_id), eid);
    copy_str(r->user_id, sizeof(r->user_id), doc_str(doc, "user_id"));
    copy_str(r->correlation_id, sizeof(r->correlation_id), doc_str(doc, "correlation_id"));
    r->s.state = (enum saga_state)st;
    int fin = saga_state_lookup(doc_str(doc, "final_state"));
    r->s.final = fin >= 0 ? (enum saga_state)fin : r->s.state;
    r->s.step = (enum saga_step)step;
    r->s.completed = doc_bits(doc, "completed_steps", saga_step_lookup);
    r->s.compensated = doc_bits(doc, "compensated_steps", saga_comp_lookup);
    r->s.timeout_s = doc_int(doc, "timeout_seconds");
    r->s.deadline_ms = doc_int(doc, "deadline_at_ms");
    r->s.started = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "started"));
    copy_str(r->s.error, sizeof(r->s.error), doc_str(doc, "error_message"));
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(doc, "deadlines");
    for (int i = 0; i < SAGA_STEP_COUNT; i++)
        r->s.deadlines[i] = doc_date(dl, saga_step_name((enum saga_step)i));
    r->version = doc_int(doc, "version");
    r->created_ms = doc_date(doc, "created_at");
    r->completed_ms = doc_date(doc, "completed_at");
    r->retry_count = doc_int(doc, "retry_count");
    const cJSON *ob = cJSON_GetObjectItemCaseSensitive(doc, "outbox");
    r->outbox = cJSON_IsArray(ob) ? cJSON_Duplicate(ob, 1) : cJSON_CreateArray();
    return r->outbox ? 0 : -ENOMEM;
}

static cJSON *names_of(unsigned bits, int n, const char *(*name)(int))
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++)
        if (bits & (1u << i))
            cJSON_AddItemToArray(arr, cJSON_CreateString(name(i)));
    return arr;
}

static const char *step_name_i(int i)
{
    return saga_step_name((enum saga_step)i);
}

static const char *comp_name_i(int i)
{
    return saga_comp_name((enum saga_comp)i);
}

static cJSON *date_or_null(int64_t ms)
{
    return ms > 0 ? store_date(ms) : cJSON_CreateNull();
}

/* The whole state of r as a document body (no _id). */
static cJSON *rec_fields(const struct rec *r, int64_t now_ms)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "saga_id", r->saga_id);
    cJSON_AddStringToObject(o, "saga_name", SAGA_NAME);
    cJSON_AddStringToObject(o, "execution_id", r->execution_id);
    if (r->user_id[0])
        cJSON_AddStringToObject(o, "user_id", r->user_id);
    else
        cJSON_AddNullToObject(o, "user_id");
    cJSON_AddStringToObject(o, "correlation_id", r->correlation_id);
    cJSON_AddStringToObject(o, "state", saga_state_name(r->s.state));
    cJSON_AddStringToObject(o, "final_state", saga_state_name(r->s.final));
    cJSON_AddStringToObject(o, "current_step", saga_step_name(r->s.step));
    cJSON_AddItemToObject(o, "completed_steps",
                          names_of(r->s.completed, SAGA_STEP_COUNT, step_name_i));
    cJSON_AddItemToObject(o, "compensated_steps",
                          names_of(r->s.compensated, SAGA_COMP_COUNT, comp_name_i));
    if (r->s.error[0])
        cJSON_AddStringToObject(o, "error_message", r->s.error);
    else
        cJSON_AddNullToObject(o, "error_message");
    cJSON_AddItemToObject(o, "updated_at", store_date(now_ms));
    cJSON_AddItemToObject(o, "completed_at", date_or_null(r->completed_ms));
    cJSON_AddNumberToObject(o, "retry_count", (double)r->retry_count);
    cJSON_AddNumberToObject(o, "timeout_seconds", (double)r->s.timeout_s);
    cJSON_AddBoolToObject(o, "started", r->s.started);
    cJSON *dl = cJSON_AddObjectToObject(o, "deadlines");
    for (int i = 0; dl && i < SAGA_STEP_COUNT; i++)
        cJSON_AddItemToObject(dl, saga_step_name((enum saga_step)i),
                              date_or_null(r->s.deadlines[i]));
    cJSON_AddNumberToObject(o, "deadline_at_ms", (double)r->s.deadline_ms);
    cJSON_AddItemToObject(o, "outbox", cJSON_Duplicate(r->outbox, 1));
    cJSON_AddBoolToObject(o, "outbox_pending", cJSON_GetArraySize(r->outbox) > 0);
    cJSON_AddNumberToObject(o, "version", (double)r->version);
    return o;
}

/* ---- persistence ---- */

static int load(struct saga_role *sr, const char *execution_id, struct rec *r)
{
    cJSON *filter = exec_json("{\"execution_id\":%S}", execution_id);
    cJSON *doc = NULL;
    int rc = filter ? store_find_one(sr->host->store, SAGA_COLL, filter, NULL, &doc) : -ENOMEM;
    cJSON_Delete(filter);
    if (rc == 0) {
        rc = rec_from_doc(doc, r);
        if (rc)
            log_error(SAGA_ROLE, "malformed saga document", "execution_id=%s", execution_id);
    }
    cJSON_Delete(doc);
    return rc;
}

/* One conditional update: {_id, version: r->version} → the state of r at
 * version + 1.  -EAGAIN when the version moved (reload and retry). */
static int save(struct saga_role *sr, struct rec *r)
{
    int64_t old = r->version;
    r->version = old + 1;
    if (saga_state_terminal(r->s.state) && r->completed_ms == 0)
        r->completed_ms = now_wall_ms();
    cJSON *set = rec_fields(r, now_wall_ms());
    cJSON *filter = exec_json("{\"_id\":%S,\"version\":%L}", r->saga_id, (long long)old);
    cJSON *upd = cJSON_CreateObject();
    int rc = set && filter && upd ? 0 : -ENOMEM;
    int64_t matched = 0;
    if (rc == 0) {
        cJSON_AddItemToObject(upd, "$set", set);
        set = NULL;
        rc = store_update_one(sr->host->store, SAGA_COLL, filter, upd, false, &matched);
    }
    cJSON_Delete(set);
    cJSON_Delete(filter);
    cJSON_Delete(upd);
    if (rc == 0 && matched == 0) {
        if (sr->m_conflicts)
            metric_add(sr->m_conflicts, 1);
        rc = -EAGAIN;
    }
    if (rc)
        r->version = old;
    return rc;
}

/* ---- effects → events ---- */

static struct event *effect_event(const struct rec *r, const struct saga_effect *e,
                                  const struct event *cause)
{
    enum event_type type = saga_action_event(e->action);
    struct event *ev = cause ? event_derive(type, cause) : event_new(type, r->execution_id);
    if (!ev)
        return NULL;
    if (!cause) {
        if (r->user_id[0])
            ev->meta.user_id = xstrdup(r->user_id);
        if (r->correlation_id[0]) {
            free(ev->correlation_id);
            ev->correlation_id = xstrdup(r->correlation_id);
        }
    }
    const char *id = r->execution_id;
    const char *reason = r->s.error[0] ? r->s.error : NULL;
    char pod[ID_MAX + 8];
    int rc = event_set_str(ev, "execution_id", id);
    switch (e->action) {
    case SAGA_ACT_EXEC_FAILED:
        rc = rc || event_set_str(ev, "error_type", "system_error") ||
             event_set_str(ev, "message", reason ? reason : "saga gave up");
        break;
    case SAGA_ACT_EXEC_TIMEOUT:
        rc = rc || event_set_int(ev, "timeout_seconds", (long long)r->s.timeout_s);
        break;
    case SAGA_ACT_EXEC_CANCELLED:
        rc = rc || event_set_str(ev, "reason", reason ? reason : "cancelled");
        break;
    case SAGA_ACT_DELETE_POD:
        snprintf(pod, sizeof(pod), "exec-%s", id);
        rc = rc || event_set_str(ev, "pod_name", pod) ||
             event_set_str(ev, "reason", reason ? reason : "saga compensation");
        break;
    case SAGA_ACT_RELEASE_CAPACITY:
        rc = rc || event_set_str(ev, "reason", reason ? reason : "saga compensation");
        break;
    default: /* saga_* */
        rc = rc || event_set_str(ev, "saga_id", r->saga_id) ||
             event_set_str(ev, "step", saga_step_name(e->step)) ||
             event_set_str(ev, "state",
                           saga_state_name(e->action == SAGA_ACT_COMPENSATING ? SAGA_COMPENSATING
                                           : r->s.state == SAGA_COMPENSATING  ? r->s.final
                                                                              : r->s.state));
        if (reason && (e->action == SAGA_ACT_COMPENSATING || e->action == SAGA_ACT_FAILED ||
                       e->action == SAGA_ACT_CANCELLED))
            rc = rc || event_set_str(ev, "reason", reason);
        break;
    }
    if (rc || (!cause && ((r->user_id[0] && !ev->meta.user_id) || !ev->correlation_id))) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

/* Appends the encoded events of fx to r->outbox. */
static int outbox_add(struct saga_role *sr, struct rec *r, const struct saga_effects *fx,
                      const struct event *cause)
{
    for (size_t i = 0; i < fx->n; i++) {
        struct event *ev = effect_event(r, &fx->list[i], cause);
        char *json = NULL;
        char err[256];
        int rc = ev ? event_encode(ev, &json, err, sizeof(err)) : -ENOMEM;
        if (rc == 0 && !cJSON_AddItemToArray(r->outbox, cJSON_CreateString(json)))
            rc = -ENOMEM;
        if (rc == 0 && fx->list[i].action == SAGA_ACT_DELETE_POD && sr->m_compensations)
            metric_add(sr->m_compensations, 1);
        if (rc)
            log_error(SAGA_ROLE, "cannot build a saga event", "execution_id=%s action=%s err=%d",
                      r->execution_id, saga_action_name(fx->list[i].action), rc);
        free(json);
        event_free(ev);
        if (rc)
            return rc;
    }
    return 0;
}

/* Publishes the outbox in order, then empties it (and ends a compensating
 * saga) with one more conditional update. */
static int flush(struct saga_role *sr, struct rec *r)
{
    int n = cJSON_GetArraySize(r->outbox);
    if (n == 0 && r->s.state != SAGA_COMPENSATING)
        return 0;
    for (int i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetArrayItem(r->outbox, i);
        if (!cJSON_IsString(it))
            continue;
        struct event *ev = NULL;
        char err[256];
        if (event_decode(it->valuestring, strlen(it->valuestring), &ev, err, sizeof(err)) != 0) {
            log_error(SAGA_ROLE, "dropping an undecodable outbox entry",
                      "execution_id=%s err=\"%s\"", r->execution_id, err);
            continue;
        }
        int rc = bus_publish_event(sr->host->bus, ev);
        if (rc == 0)
            log_debug(SAGA_ROLE, "saga published", "execution_id=%s event=%s event_id=%s",
                      r->execution_id, event_type_name(ev->type), ev->event_id);
        else
            log_warn(SAGA_ROLE, "cannot publish a saga event, will retry",
                     "execution_id=%s event=%s err=%d", r->execution_id, event_type_name(ev->type),
                     rc);
        event_free(ev);
        if (rc) {
            r->retry_count++;
            return rc;
        }
    }
    cJSON_Delete(r->outbox);
    r->outbox = cJSON_CreateArray();
    if (!r->outbox)
        return -ENOMEM;
    enum saga_state before = r->s.state;
    saga_finish(&r->s);
    int rc = save(sr, r);
    if (rc == 0 && before != r->s.state)
        log_info(SAGA_ROLE, "saga ended", "execution_id=%s saga_id=%s state=%s error=\"%s\"",
                 r->execution_id, r->saga_id, saga_state_name(r->s.state), r->s.error);
    return rc;
}

/* ---- transitions ---- */

/* Inserts the saga of an execution_requested; a duplicate key means a
 * redelivery (the saga exists). */
static int create_once(struct saga_role *sr, const struct event *ev, const char *id)
{
    struct rec r;
    memset(&r, 0, sizeof(r));
    uuid_v4(r.saga_id);
    copy_str(r.execution_id, sizeof(r.execution_id), id);
    copy_str(r.user_id, sizeof(r.user_id), ev->meta.user_id);
    copy_str(r.correlation_id, sizeof(r.correlation_id),
             ev->correlation_id ? ev->correlation_id : ev->event_id);
    r.created_ms = now_wall_ms();
    r.version = 1;
    struct saga_effects fx = {.n = 0};
    saga_init(&r.s, event_get_int(ev, "timeout_seconds", 0), &fx);
    r.outbox = cJSON_CreateArray();
    int rc = r.outbox ? outbox_add(sr, &r, &fx, ev) : -ENOMEM;
    cJSON *doc = rc == 0 ? rec_fields(&r, r.created_ms) : NULL;
    if (rc == 0 && !doc)
        rc = -ENOMEM;
    if (rc == 0) {
        cJSON_AddStringToObject(doc, "_id", r.saga_id);
        cJSON_AddItemToObject(doc, "created_at", store_date(r.created_ms));
        rc = store_insert_one(sr->host->store, SAGA_COLL, doc);
    }
    cJSON_Delete(doc);
    if (rc == -EEXIST) {
        rec_release(&r);
        return 0;
    }
    if (rc == 0) {
        if (sr->m_started)
            metric_add(sr->m_started, 1);
        log_debug(SAGA_ROLE, "saga started", "execution_id=%s saga_id=%s", id, r.saga_id);
        rc = flush(sr, &r);
    }
    rec_release(&r);
    return rc;
}

/* 1 when the event store already holds a terminal execution event of id
 * (the store role writes every event; the saga consumer may lag behind it). */
static int ended_elsewhere(struct saga_role *sr, const char *id)
{
    static const char *const terminal[] = {"execution_completed", "execution_failed",
                                           "execution_timeout", "execution_cancelled"};
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "aggregate_id", id);
    cJSON_AddItemToObject(cJSON_AddObjectToObject(filter, "event_type"), "$in",
                          cJSON_CreateStringArray(terminal, 4));
    int64_t n = 0;
    int rc = store_count(sr->host->store, "events", filter, &n);
    cJSON_Delete(filter);
    return rc == 0 && n > 0;
}

/* Applies one input to the saga of id under its stripe lock.  ev is the
 * event (NULL for a deadline tick). */
static int step(struct saga_role *sr, const char *id, const struct event *ev)
{
    int rc = 0;
    for (int attempt = 0; attempt < CONFLICT_ATTEMPTS; attempt++) {
        struct rec r;
        rc = load(sr, id, &r);
        if (rc == -ENOENT)
            return 0; /* no saga: an execution from before the saga role */
        if (rc)
            return rc;
        /* Left over by a crash or a failed publish: out first. */
        if (cJSON_GetArraySize(r.outbox) > 0 || r.s.state == SAGA_COMPENSATING) {
            rc = flush(sr, &r);
            if (rc) {
                rec_release(&r);
                if (rc == -EAGAIN)
                    continue;
                return rc;
            }
        }
        struct saga_effects fx = {.n = 0};
        int64_t now = now_wall_ms();
        int changed;
        if (ev) {
            const char *detail = event_get_str(ev, "reason");
            if (!detail)
                detail = event_get_str(ev, "message");
            if (!detail)
                detail = event_get_str(ev, "error");
            /* Deadlines run from when the event happened, not from when this
             * consumer got to it: a lagging saga must not extend them. */
            int64_t at = now, us = 0;
            if (ts_parse_us(ev->timestamp, &us) == 0 && us / 1000 < now)
                at = us / 1000;
            changed = saga_on_event(&r.s, ev->type, detail, at, &sr->t, &fx);
        } else if (ended_elsewhere(sr, id)) {
            /* The run already ended and this consumer has not caught up
             * with its terminal event: let the event, not the deadline,
             * move the saga (no second terminal event, no compensation). */
            changed = 0;
        } else {
            changed = saga_on_deadline(&r.s, now, &sr->t, &fx);
            if (changed && sr->m_deadlines)
                metric_add(sr->m_deadlines, 1);
        }
        if (!changed) {
            rec_release(&r);
            return 0;
        }
        rc = outbox_add(sr, &r, &fx, ev);
        if (rc == 0)
            rc = save(sr, &r);
        if (rc == 0) {
            log_debug(SAGA_ROLE, "saga moved", "execution_id=%s state=%s step=%s input=%s", id,
                      saga_state_name(r.s.state), saga_step_name(r.s.step),
                      ev ? event_type_name(ev->type) : "deadline");
            if (r.s.state == SAGA_COMPENSATING)
                log_info(SAGA_ROLE, "saga compensating", "execution_id=%s step=%s reason=\"%s\"",
                         id, saga_step_name(r.s.step), r.s.error);
            rc = flush(sr, &r);
        }
        rec_release(&r);
        if (rc != -EAGAIN)
            return rc;
    }
    return rc;
}

static bool relevant(enum event_type type)
{
    switch (type) {
    case EV_execution_rejected:
    case EV_execution_scheduled:
    case EV_pod_created:
    case EV_pod_scheduled:
    case EV_pod_running:
    case EV_execution_started:
    case EV_execution_completed:
    case EV_execution_failed:
    case EV_execution_timeout:
    case EV_execution_cancelled:
    case EV_execution_cancel_requested:
    case EV_result_stored:
    case EV_result_failed:
        return true;
    default:
        return false;
    }
}

static int handle(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct saga_role *sr = ctx;
    struct event *ev = NULL;
    if (event_decode(msg->payload, msg->len, &ev, err, errlen) != 0)
        return -EBADMSG;
    if (ev->type != EV_execution_requested && !relevant(ev->type)) {
        event_free(ev);
        return 0;
    }
    const char *id = event_get_str(ev, "execution_id");
    if (!id || !*id)
        id = ev->aggregate_id;
    int rc = 0;
    int64_t delay = RETRY_MIN_MS;
    for (;;) {
        pthread_mutex_t *mu = stripe(sr, id);
        pthread_mutex_lock(mu);
        rc = ev->type == EV_execution_requested ? create_once(sr, ev, id) : step(sr, id, ev);
        pthread_mutex_unlock(mu);
        if (rc != -EIO && rc != -ETIMEDOUT && rc != -EAGAIN)
            break;
        /* MongoDB or Kafka trouble: wait here rather than dead-letter a valid
         * event; the outbox keeps what was decided. */
        log_warn(SAGA_ROLE, "cannot apply an event to its saga, retrying",
                 "execution_id=%s event=%s retry_ms=%lld err=%d", id, event_type_name(ev->type),
                 (long long)delay, rc);
        for (int64_t waited = 0; waited < delay && !stopping(sr); waited += RETRY_SLICE_MS)
            sleep_ms(RETRY_SLICE_MS);
        if (stopping(sr)) {
            rc = -ESHUTDOWN;
            break;
        }
        delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
    }
    if (rc != 0 && rc != -ESHUTDOWN)
        snprintf(err, errlen, "saga of %s on %s: error %d", id, event_type_name(ev->type), rc);
    event_free(ev);
    return rc;
}

/* ---- the deadline thread ---- */

struct due_job {
    struct saga_role *sr;
    char execution_id[ID_MAX];
};

static void due_run(void *arg)
{
    struct due_job *job = arg;
    struct saga_role *sr = job->sr;
    if (!stopping(sr)) {
        pthread_mutex_t *mu = stripe(sr, job->execution_id);
        pthread_mutex_lock(mu);
        int rc = step(sr, job->execution_id, NULL);
        pthread_mutex_unlock(mu);
        if (rc && rc != -ESHUTDOWN)
            log_warn(SAGA_ROLE, "cannot handle a due saga", "execution_id=%s err=%d",
                     job->execution_id, rc);
    }
    free(job);
}

/* One pass: every saga whose deadline passed or whose outbox is pending,
 * handled in parallel on the deadline pool (a saga at a time per stripe);
 * returns when the pass is done. */
static void tick(struct saga_role *sr)
{
    cJSON *filter = exec_json("{\"$or\":[{\"state\":\"running\",\"deadline_at_ms\":{\"$gt\":0,"
                              "\"$lte\":%L}},{\"outbox_pending\":true},"
                              "{\"state\":\"compensating\"}]}",
                              (long long)now_wall_ms());
    cJSON *opts =
        exec_json("{\"limit\":%L,\"projection\":{\"execution_id\":1}}", (long long)TICK_BATCH);
    cJSON *docs = NULL;
    int rc = filter && opts ? store_find(sr->host->store, SAGA_COLL, filter, opts, &docs) : -ENOMEM;
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    if (rc) {
        log_warn(SAGA_ROLE, "cannot read due sagas", "err=\"%s\"", store_strerror(rc));
        return;
    }
    const cJSON *doc;
    cJSON_ArrayForEach(doc, docs)
    {
        const char *id = doc_str(doc, "execution_id");
        struct due_job *job = id && !stopping(sr) ? calloc(1, sizeof(*job)) : NULL;
        if (!job)
            continue;
        job->sr = sr;
        copy_str(job->execution_id, sizeof(job->execution_id), id);
        if (pool_submit(sr->due_pool, due_run, job) != 0)
            due_run(job); /* full or stopping: inline */
    }
    pool_drain(sr->due_pool);
    cJSON_Delete(docs);
}

static void *ticker_main(void *arg)
{
    struct saga_role *sr = arg;
    thread_name_set("saga-deadline");
    while (!stopping(sr)) {
        tick(sr);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&sr->wake_mu);
        if (!stopping(sr))
            pthread_cond_timedwait(&sr->wake_cv, &sr->wake_mu, &ts);
        pthread_mutex_unlock(&sr->wake_mu);
    }
    return NULL;
}

/* ---- lifecycle ---- */

static void saga_destroy(void *state);

static int saga_init_role(struct host *host, void **state)
{
    if (!host->store || !host->bus) {
        log_error(SAGA_ROLE, "the saga role needs the bus and the store", "bus=%p store=%p",
                  (void *)host->bus, (void *)host->store);
        return -EINVAL;
    }
    struct saga_role *sr = calloc(1, sizeof(*sr));
    if (!sr)
        return -ENOMEM;
    sr->host = host;
    const struct config *cfg = host->cfg;
    sr->t.provision_ms = cfg->saga_provision_timeout_seconds * 1000;
    sr->t.grace_ms = cfg->saga_grace_seconds * 1000;
    sr->t.finalize_ms = cfg->saga_finalize_timeout_seconds * 1000;
    pthread_mutex_init(&sr->wake_mu, NULL);
    pthread_cond_init(&sr->wake_cv, NULL);
    for (int i = 0; i < SAGA_STRIPES; i++)
        pthread_mutex_init(&sr->stripes[i], NULL);
    sr->due_pool = pool_new("saga-due", DUE_THREADS, TICK_BATCH);
    if (!sr->due_pool) {
        saga_destroy(sr);
        return -ENOMEM;
    }
    int rc = store_create_indexes(host->store, SAGA_COLL, saga_indexes,
                                  sizeof(saga_indexes) / sizeof(saga_indexes[0]));
    if (rc) {
        log_error(SAGA_ROLE, "cannot create the sagas indexes", "err=\"%s\"", store_strerror(rc));
        saga_destroy(sr);
        return rc;
    }
    if (host->metrics) {
        sr->m_started = metrics_get(host->metrics, METRIC_COUNTER, "execd_saga_started_total",
                                    "Sagas started (one per execution)", "");
        sr->m_compensations =
            metrics_get(host->metrics, METRIC_COUNTER, "execd_saga_compensations_total",
                        "Sagas that decided to delete a pod and release its capacity", "");
        sr->m_deadlines = metrics_get(host->metrics, METRIC_COUNTER, "execd_saga_deadlines_total",
                                      "Saga step deadlines that fired", "");
        sr->m_conflicts = metrics_get(host->metrics, METRIC_COUNTER, "execd_saga_conflicts_total",
                                      "Conditional saga updates that found another version", "");
    }
    if (host->http && (rc = saga_http_init(sr)) != 0) {
        saga_destroy(sr);
        return rc;
    }
    *state = sr;
    return 0;
}

static int saga_start(void *state)
{
    struct saga_role *sr = state;
    int threads = (int)sr->host->cfg->saga_threads;
    if (threads > SAGA_MAX_CONSUMERS)
        threads = SAGA_MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = SAGA_ROLE,
        .group = "execd-saga",
        .topics = saga_topics,
        .ntopics = 1,
        .handler = handle,
        .ctx = sr,
    };
    for (int i = 0; i < threads; i++) {
        struct bus_consumer *consumer = NULL;
        int rc = bus_consumer_new(sr->host->bus, &opts, &consumer);
        if (rc) {
            log_error(SAGA_ROLE, "cannot create the saga consumer", "err=%d", rc);
            return rc;
        }
        sr->consumers[sr->nconsumers++] = consumer;
        if ((rc = bus_consumer_start(consumer)) != 0) {
            log_error(SAGA_ROLE, "cannot start the saga consumer", "err=%d", rc);
            return rc;
        }
    }
    int rc = pthread_create(&sr->ticker, NULL, ticker_main, sr);
    if (rc) {
        log_error(SAGA_ROLE, "cannot start the deadline thread", "err=%d", rc);
        return -rc;
    }
    sr->ticker_started = true;
    log_info(SAGA_ROLE, "saga consuming",
             "consumers=%d provision_timeout_s=%lld grace_s=%lld finalize_timeout_s=%lld",
             sr->nconsumers, (long long)(sr->t.provision_ms / 1000),
             (long long)(sr->t.grace_ms / 1000), (long long)(sr->t.finalize_ms / 1000));
    return 0;
}

static void saga_stop(void *state)
{
    struct saga_role *sr = state;
    if (!sr)
        return;
    atomic_store(&sr->stopping, true);
    pthread_mutex_lock(&sr->wake_mu);
    pthread_cond_broadcast(&sr->wake_cv);
    pthread_mutex_unlock(&sr->wake_mu);
    for (int i = 0; i < sr->nconsumers; i++)
        bus_consumer_stop(sr->consumers[i]);
}

static int saga_join(void *state, int64_t deadline_ms)
{
    struct saga_role *sr = state;
    int rc = 0;
    if (!sr)
        return 0;
    for (int i = 0; i < sr->nconsumers; i++)
        if (bus_consumer_join(sr->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    if (sr->ticker_started) {
        pthread_join(sr->ticker, NULL);
        sr->ticker_started = false;
    }
    return rc;
}

static void saga_destroy(void *state)
{
    struct saga_role *sr = state;
    if (!sr)
        return;
    if (sr->ticker_started) {
        atomic_store(&sr->stopping, true);
        pthread_mutex_lock(&sr->wake_mu);
        pthread_cond_broadcast(&sr->wake_cv);
        pthread_mutex_unlock(&sr->wake_mu);
        pthread_join(sr->ticker, NULL);
    }
    for (int i = 0; i < sr->nconsumers; i++)
        bus_consumer_free(sr->consumers[i]);
    pool_free(sr->due_pool);
    for (int i = 0; i < SAGA_STRIPES; i++)
        pthread_mutex_destroy(&sr->stripes[i]);
    pthread_cond_destroy(&sr->wake_cv);
    pthread_mutex_destroy(&sr->wake_mu);
    free(sr);
}

static int saga_health(void *state, cJSON *out)
{
    struct saga_role *sr = state;
    int rc = store_ping(sr->host->store);
    cJSON *o = cJSON_AddObjectToObject(out, "saga");
    cJSON_AddStringToObject(o, "status", rc ? "fail" : "ok");
    cJSON_AddBoolToObject(o, "deadline_thread", sr->ticker_started);
    return rc ? -EIO : 0;
}

const struct role role_saga = {
    .name = "saga",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE | ROLE_NEEDS_HTTP,
    .init = saga_init_role,
    .start = saga_start,
    .stop = saga_stop,
    .join = saga_join,
    .destroy = saga_destroy,
    .health = saga_health,
};
