/*
 * coordinator_role.c — admission, the priority queue and the global cap
 * (DESIGN §5).
 *
 * EXECD_COORDINATOR_THREADS consumers in group "execd-coordinator" read
 * execution_events and saga_commands; only execution_requested, the
 * terminal events and release_capacity_command are decoded (the event_type
 * header is checked first, everything else is skipped).  MongoDB is the
 * source of truth, so replicas share it and a restart loses nothing:
 *
 *   execution_admissions  one ledger document per execution id: the
 *       decision and its state admitted → scheduled → released, or
 *       rejected; admitted_at_ms feeds the per-minute window, the admitted
 *       and scheduled ones are the user's active executions.  It is the
 *       idempotency record for redelivered and replayed requests (expires
 *       after EXECD_EVENT_RETENTION_DAYS through the store reaper).
 *   execution_queue  the waiting requests: {_id: execution id, priority,
 *       arrival_us, state waiting|claimed (new: written by older versions),
 *       request: the original execution_requested JSON}.  Order: priority
 *       descending, then arrival (the request's timestamp), then id.
 *       Bounded by EXECD_QUEUE_MAX.
 *   resource_allocations  one document per claimed capacity slot:
 *       {_id: "slot-<n>", n, holder: execution id, claimed_at_ms,
 *       expires_at_ms}, n < EXECD_MAX_CONCURRENT.  A claim inserts a free
 *       slot-<n>; the unique _id makes two claims of one slot impossible and
 *       a unique index on holder gives an execution at most one slot, across
 *       replicas: this insert is the exact global cap.  A release deletes
 *       {holder: id}, so releases are idempotent.  (Claims are inserts, not
 *       a findAndModify of {holder: null}: FerretDB 1.24 runs update and
 *       findAndModify as a query followed by a separate write, so two
 *       concurrent claims could both take one free slot; a primary-key
 *       insert is atomic on both FerretDB and MongoDB.)
 *   rate_limit_overrides  read only (written by the admin API): {_id:
 *       user id, bypass: bool, multiplier: number}.
 *
 * In memory, per process, hints that save round trips (never the
 * authority for the cap or for scheduling):
 *   - per user: the active execution ids and the admission times of the
 *     window, loaded from the ledger on first use and again every
 *     USER_REFRESH_MS, kept up to date by this replica's admissions and
 *     releases; the override, re-read every OVERRIDE_TTL_MS.  A decision
 *     that would reject is re-taken on freshly read counts, override and
 *     queue depth, so a stale cache never rejects.  Per-user limits are
 *     exact within one replica (decisions are serial under admit_lock);
 *     across replicas a user may exceed them by what other replicas
 *     admitted since the last refresh.
 *   - the slot map: which slot-<n> are believed free, so a claim usually
 *     takes one insert; a slot is reserved while its insert is in flight.
 *   - the queue mirror: the keys of the waiting entries, for positions, the
 *     queue bound and "nothing waits": a drain is only attempted when the
 *     mirror has entries and the map has a free slot (the sweeper drains
 *     regardless).
 *   The sweeper re-reads the slots and the waiting entries every
 *   EXECD_COORDINATOR_SWEEP_MS (and at start: the restart rebuild), which
 *   corrects the hints for what other replicas did.
 *
 * execution_requested: the ledger decides once (validation, per-user
 * limits, queue bound; under admit_lock so this replica's decisions are
 * serial).  A rejection publishes execution_rejected (reason, retry_after)
 * and execution_failed (rate_limited, system_error or resource_limit).  An
 * admission, when the mirror is empty and a slot can be claimed, schedules
 * at once without a queue entry (the offset is stored only after the task
 * is delivered and a redelivery finds the ledger admitted and resumes);
 * otherwise it publishes execution_accepted + execution_queued (position,
 * estimated wait) and inserts the waiting queue entry.  The handler returns
 * 0 only after that, so the offset is stored after the queue entry is
 * durable.
 *
 * Scheduling one execution: claim a slot (or find the one the id holds: a
 * retry after a crash); the ledger must still say admitted (a slot claimed
 * for an execution that ended meanwhile is given back); publish
 * execution_scheduled and the same execution_requested event to its task
 * topic (execution_tasks) with one delivery wait (bus_publish_events); then
 * ledger → scheduled.  A crash in between repeats the publish
 * (at-least-once: the worker is idempotent), never the claim.
 *
 * Terminal events (completed/failed/timeout/cancelled) and
 * release_capacity_command mark the ledger released, then release the
 * slot (in this order, so a concurrent schedule either sees the ledger
 * released or has its slot deleted), drop a still waiting queue entry (a
 * cancel while queued) and drain: claim the head of the queue
 * (findAndModify waiting → claimed), schedule it, delete it.  Drains are
 * serialised within a process (drain_lock); across replicas two drainers
 * could claim one head at the same instant on FerretDB (see above) and
 * publish its task twice — the slot stays single (unique holder) and the
 * worker is idempotent on redelivered tasks.
 *
 * The sweeper, every EXECD_COORDINATOR_SWEEP_MS and once at start-up, frees
 * slots held past their expires_at (timeout + SLOT_GRACE_S), puts claims
 * left by a crashed drainer back to waiting, refreshes the hints and
 * drains — which is also how a restarted coordinator resumes its queue.
 *
 * Cost (FerretDB round trips / Kafka delivery waits): an admission that
 * schedules at once 4 / 1 (ledger insert, slot insert, ledger check,
 * ledger update; accepted + scheduled + task in one wait), a queued one
 * 2 / 1; a release 2 / 0 plus, when the queue has entries, 5 / 1 per
 * execution drained.  execd_coordinator_admit_seconds and
 * execd_coordinator_release_seconds time the handlers; at debug level each
 * one logs its duration and counts.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

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
#define USER_REFRESH_MS 2000
#define OVERRIDE_TTL_MS 1000
#define USER_CACHE_MAX 4096

enum slot_hint { SLOT_FREE, SLOT_HELD, SLOT_RESERVED };

/* A user's limits state as this replica knows it (under admit_lock). */
struct user {
    struct user *next;
    char *id;
    char **active; /* admitted, not released execution ids */
    size_t nactive, capactive;
    int64_t *recent; /* admission times, ascending, the newest ones only */
    size_t nrecent, caprecent;
    int64_t loaded_ms; /* 0: never read from the ledger */
    struct admission_override ov;
    bool has_ov;
    int64_t ov_ms; /* 0: never read */
};

/* A waiting entry as the queue mirror knows it. */
struct qkey {
    char *id;
    int64_t priority;
    int64_t arrival_us;
};

struct coordinator {
    struct host *host;
    const struct config *cfg;
    struct store *store;
    struct bus *bus;
    struct bus_consumer *consumers[MAX_CONSUMERS];
    int nconsumers;
    pthread_mutex_t admit_lock; /* serialises this replica's decisions; guards users */
    pthread_mutex_t drain_lock; /* one drain at a time in this replica */
    pthread_mutex_t hint_lock;  /* slot map and queue mirror */
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    pthread_t sweeper;
    bool sweeper_started;
    atomic_bool stopping;
    atomic_llong avg_run_ms;
    /* users (admit_lock) */
    struct user *users;
    size_t nusers;
    /* slot map (hint_lock): state and a change counter per slot */
    int64_t cap;
    unsigned char *slot_state;
    uint32_t *slot_ver;
    int64_t slot_cursor;
    /* queue mirror (hint_lock): sorted by admission_compare */
    struct qkey *q;
    size_t nq, capq;
    uint64_t q_gen; /* bumped by every local change */
    struct metric *m_admitted, *m_rejected, *m_queued, *m_scheduled, *m_released, *m_reaped;
    struct metric *m_depth, *m_wait, *m_admit_s, *m_release_s;
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

/* Round trips and delivery waits of the current handler (debug timing). */
static _Thread_local int t_rt, t_waits;
static _Thread_local int64_t t_pub_us;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

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
    t_rt++;
    int rc =
        filter && upd ? store_update_one(co->store, coll, filter, upd, false, matched) : -ENOMEM;
    cJSON_Delete(filter);
    cJSON_Delete(upd);
    return rc;
}

static int delete_docs(struct coordinator *co, const char *coll, cJSON *filter)
{
    t_rt++;
    int rc = filter ? store_delete_many(co->store, coll, filter, NULL) : -ENOMEM;
    cJSON_Delete(filter);
    return rc;
}

static int find_doc(struct coordinator *co, const char *coll, cJSON *filter, cJSON **out)
{
    t_rt++;
    int rc = filter ? store_find_one(co->store, coll, filter, NULL, out) : -ENOMEM;
    cJSON_Delete(filter);
    return rc;
}

static int find_docs(struct coordinator *co, const char *coll, cJSON *filter, cJSON *opts,
                     cJSON **out)
{
    t_rt++;
    int rc = filter ? store_find(co->store, coll, filter, opts, out) : -ENOMEM;
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    return rc;
}

static int count_docs(struct coordinator *co, const char *coll, cJSON *filter, int64_t *out)
{
    t_rt++;
    int rc = filter ? store_count(co->store, coll, filter, out) : -ENOMEM;
    cJSON_Delete(filter);
    return rc;
}

static int insert_doc(struct coordinator *co, const char *coll, const cJSON *doc)
{
    t_rt++;
    return doc ? store_insert_one(co->store, coll, doc) : -ENOMEM;
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

/* Publishes n events (to topics[i], or their catalog topics when topics is
 * NULL) with one delivery wait. */
static int publish_all(struct coordinator *co, const enum topic_id *topics,
                       const struct event *const *evs, size_t n)
{
    t_waits++;
    int64_t t0 = mono_us();
    int rc = bus_publish_events(co->bus, topics, evs, n);
    t_pub_us += mono_us() - t0;
    if (rc != 0)
        log_warn(ROLE, "cannot publish", "first_type=%s execution_id=%s n=%zu err=%d",
                 event_type_name(evs[0]->type), evs[0]->aggregate_id, n, rc);
    return rc;
}

/* A derived event with execution_id set; NULL on ENOMEM. */
static struct event *derive(enum event_type type, const struct event *request, const char *id)
{
    struct event *ev = event_derive(type, request);
    if (ev != NULL && event_set_str(ev, "execution_id", id) != 0) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

/* ---- hints: slot map and queue mirror ----------------------------------- */

static void slot_set(struct coordinator *co, int64_t n, enum slot_hint s)
{
    if (n < 0 || n >= co->cap)
        return;
    pthread_mutex_lock(&co->hint_lock);
    co->slot_state[n] = (unsigned char)s;
    co->slot_ver[n]++;
    pthread_mutex_unlock(&co->hint_lock);
}

/* Reserves a slot believed free, round robin; -1 when none is. */
static int64_t slot_reserve(struct coordinator *co)
{
    int64_t got = -1;
    pthread_mutex_lock(&co->hint_lock);
    for (int64_t i = 0; i < co->cap; i++) {
        int64_t n = (co->slot_cursor + i) % co->cap;
        if (co->slot_state[n] == SLOT_FREE) {
            co->slot_state[n] = SLOT_RESERVED;
            co->slot_ver[n]++;
            co->slot_cursor = (n + 1) % co->cap;
            got = n;
            break;
        }
    }
    pthread_mutex_unlock(&co->hint_lock);
    return got;
}

static bool slot_any_free(struct coordinator *co)
{
    bool any = false;
    pthread_mutex_lock(&co->hint_lock);
    for (int64_t n = 0; n < co->cap && !any; n++)
        any = co->slot_state[n] == SLOT_FREE;
    pthread_mutex_unlock(&co->hint_lock);
    return any;
}

/* Index where key goes in the mirror (the number of keys ahead of it). */
static size_t q_lower_bound(const struct coordinator *co, const struct admission_key *key)
{
    size_t lo = 0, hi = co->nq;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        struct admission_key k = {co->q[mid].priority, co->q[mid].arrival_us, co->q[mid].id};
        if (admission_compare(&k, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static ssize_t q_find_locked(const struct coordinator *co, const char *id)
{
    for (size_t i = 0; i < co->nq; i++)
        if (strcmp(co->q[i].id, id) == 0)
            return (ssize_t)i;
    return -1;
}

static void q_publish_depth_locked(struct coordinator *co)
{
    if (co->m_depth)
        metric_set(co->m_depth, (int64_t)co->nq);
}

/* Adds a waiting key (no-op when present); 1-based position it took. */
static int64_t q_add(struct coordinator *co, const char *id, int64_t priority, int64_t arrival_us)
{
    struct admission_key key = {priority, arrival_us, id};
    pthread_mutex_lock(&co->hint_lock);
    ssize_t at = q_find_locked(co, id);
    if (at >= 0) {
        pthread_mutex_unlock(&co->hint_lock);
        return at + 1;
    }
    size_t pos = q_lower_bound(co, &key);
    char *copy = strdup(id);
    if (copy != NULL && co->nq == co->capq) {
        size_t cap = co->capq ? co->capq * 2 : 64;
        struct qkey *q = realloc(co->q, cap * sizeof(*q));
        if (q == NULL) {
            free(copy);
            copy = NULL;
        } else {
            co->q = q;
            co->capq = cap;
        }
    }
    if (copy != NULL) {
        memmove(&co->q[pos + 1], &co->q[pos], (co->nq - pos) * sizeof(*co->q));
        co->q[pos] = (struct qkey){copy, priority, arrival_us};
        co->nq++;
        co->q_gen++;
        q_publish_depth_locked(co);
    }
    pthread_mutex_unlock(&co->hint_lock);
    return (int64_t)pos + 1;
}

/* The position a new key would take (1 = next) and the mirror's size. */
static int64_t q_position(struct coordinator *co, const char *id, int64_t priority,
                          int64_t arrival_us, int64_t *depth)
{
    struct admission_key key = {priority, arrival_us, id};
    pthread_mutex_lock(&co->hint_lock);
    ssize_t at = q_find_locked(co, id);
    size_t pos = at >= 0 ? (size_t)at : q_lower_bound(co, &key);
    if (depth)
        *depth = (int64_t)co->nq;
    pthread_mutex_unlock(&co->hint_lock);
    return (int64_t)pos + 1;
}

/* Removes id; true when it was there. */
static bool q_remove(struct coordinator *co, const char *id)
{
    pthread_mutex_lock(&co->hint_lock);
    ssize_t at = q_find_locked(co, id);
    if (at >= 0) {
        free(co->q[at].id);
        memmove(&co->q[at], &co->q[at + 1], (co->nq - (size_t)at - 1) * sizeof(*co->q));
        co->nq--;
        co->q_gen++;
        q_publish_depth_locked(co);
    }
    pthread_mutex_unlock(&co->hint_lock);
    return at >= 0;
}

static size_t q_size(struct coordinator *co)
{
    pthread_mutex_lock(&co->hint_lock);
    size_t n = co->nq;
    pthread_mutex_unlock(&co->hint_lock);
    return n;
}

/* Re-reads the slots: every slot not touched locally while the query ran
 * takes its state from MongoDB. */
static int refresh_slots(struct coordinator *co)
{
    uint32_t *ver = calloc((size_t)co->cap, sizeof(*ver));
    unsigned char *seen = calloc((size_t)co->cap, 1);
    if (ver == NULL || seen == NULL) {
        free(ver);
        free(seen);
        return -ENOMEM;
    }
    pthread_mutex_lock(&co->hint_lock);
    memcpy(ver, co->slot_ver, (size_t)co->cap * sizeof(*ver));
    pthread_mutex_unlock(&co->hint_lock);
    cJSON *arr = NULL;
    int rc = find_docs(co, SLOTS, exec_json("{\"n\":{\"$lt\":%L}}", (long long)co->cap),
                       exec_json("{\"projection\":{\"n\":1}}"), &arr);
    if (rc == 0) {
        const cJSON *doc;
        cJSON_ArrayForEach(doc, arr)
        {
            int64_t n = jint(doc, "n", -1);
            if (n >= 0 && n < co->cap)
                seen[n] = 1;
        }
        pthread_mutex_lock(&co->hint_lock);
        for (int64_t n = 0; n < co->cap; n++)
            if (co->slot_ver[n] == ver[n] && co->slot_state[n] != SLOT_RESERVED)
                co->slot_state[n] = seen[n] ? SLOT_HELD : SLOT_FREE;
        pthread_mutex_unlock(&co->hint_lock);
    }
    cJSON_Delete(arr);
    free(ver);
    free(seen);
    return rc;
}

/* Re-reads the waiting entries into the mirror, unless the mirror changed
 * locally while the query ran (it is then newer than the snapshot). */
static int refresh_queue(struct coordinator *co)
{
    pthread_mutex_lock(&co->hint_lock);
    uint64_t gen = co->q_gen;
    pthread_mutex_unlock(&co->hint_lock);
    cJSON *arr = NULL;
    int rc = find_docs(co, QUEUE, exec_json("{\"state\":{\"$in\":[\"new\",\"waiting\"]}}"),
                       exec_json("{\"projection\":{\"priority\":1,\"arrival_us\":1}}"), &arr);
    if (rc != 0) {
        cJSON_Delete(arr);
        return rc;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    struct qkey *q = calloc(n ? n : 1, sizeof(*q));
    size_t k = 0;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, arr)
    {
        const char *id = jstr(doc, "_id");
        if (q == NULL || id == NULL)
            continue;
        char *copy = strdup(id);
        if (copy == NULL)
            continue;
        q[k++] = (struct qkey){copy, jint(doc, "priority", 0), jint(doc, "arrival_us", 0)};
    }
    cJSON_Delete(arr);
    if (q == NULL)
        return -ENOMEM;
    /* Sort (insertion: the find has no order guarantee, the queue is small). */
    for (size_t i = 1; i < k; i++) {
        struct qkey x = q[i];
        struct admission_key kx = {x.priority, x.arrival_us, x.id};
        size_t j = i;
        while (j > 0) {
            struct admission_key kj = {q[j - 1].priority, q[j - 1].arrival_us, q[j - 1].id};
            if (admission_compare(&kj, &kx) <= 0)
                break;
            q[j] = q[j - 1];
            j--;
        }
        q[j] = x;
    }
    pthread_mutex_lock(&co->hint_lock);
    bool apply = co->q_gen == gen;
    if (apply) {
        for (size_t i = 0; i < co->nq; i++)
            free(co->q[i].id);
        free(co->q);
        co->q = q;
        co->nq = k;
        co->capq = n ? n : 1;
        q_publish_depth_locked(co);
    }
    pthread_mutex_unlock(&co->hint_lock);
    if (!apply) {
        for (size_t i = 0; i < k; i++)
            free(q[i].id);
        free(q);
    }
    return 0;
}

/* ---- capacity slots ---------------------------------------------------- */

/* The slot id holds, if any: 0 (and *n), -ENOENT, or an error. */
static int held_slot(struct coordinator *co, const char *id, int64_t *n)
{
    cJSON *held = NULL;
    int rc = find_doc(co, SLOTS, exec_json("{\"holder\":%S}", id), &held);
    if (rc == 0 && n)
        *n = jint(held, "n", -1);
    cJSON_Delete(held);
    return rc;
}

/* Claims a slot for id: 0 and *fresh = true when this call inserted it,
 * 0 and *fresh = false when id held one already (a retry after a crash),
 * -EAGAIN when none is free. */
static int claim_slot(struct coordinator *co, const char *id, const char *user, int64_t timeout_s,
                      bool *fresh)
{
    *fresh = false;
    for (;;) {
        int64_t n = slot_reserve(co);
        if (n < 0)
            break;
        char slot[32];
        admission_slot_id(n, slot, sizeof(slot));
        int64_t now = now_wall_ms();
        cJSON *doc = exec_json("{\"_id\":%S,\"n\":%L,\"holder\":%S,\"user_id\":%S,"
                               "\"claimed_at_ms\":%L,\"expires_at_ms\":%L}",
                               slot, (long long)n, id, user, (long long)now,
                               (long long)(now + (timeout_s + SLOT_GRACE_S) * 1000));
        int rc = insert_doc(co, SLOTS, doc);
        cJSON_Delete(doc);
        if (rc == 0) {
            slot_set(co, n, SLOT_HELD);
            *fresh = true;
            return 0;
        }
        if (rc != -EEXIST) {
            slot_set(co, n, SLOT_FREE);
            return rc;
        }
        /* Taken (by another replica), or id holds a slot already (unique
         * holder): tell them apart. */
        int64_t mine = -1;
        rc = held_slot(co, id, &mine);
        if (rc == 0) {
            slot_set(co, n, SLOT_FREE);
            slot_set(co, mine, SLOT_HELD);
            return 0;
        }
        slot_set(co, n, SLOT_HELD);
        if (rc != -ENOENT)
            return rc;
    }
    /* No slot believed free — or id got one before (unique holder). */
    int rc = held_slot(co, id, NULL);
    return rc == 0 ? 0 : rc == -ENOENT ? -EAGAIN : rc;
}

/* Frees the slot held by id (idempotent); *released tells whether one was. */
static int release_slot(struct coordinator *co, const char *id, bool *released)
{
    cJSON *filter = exec_json("{\"holder\":%S}", id);
    cJSON *old = NULL;
    t_rt++;
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
        slot_set(co, jint(old, "n", -1), SLOT_FREE);
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
 * not admitted any more (scheduled already, or ended), else an error.
 * accepted (may be NULL) is published first, in the same delivery wait. */
static int schedule(struct coordinator *co, const struct event *request,
                    const struct event *accepted)
{
    const char *id = execution_id_of(request);
    const char *user = request->meta.user_id ? request->meta.user_id : "";
    bool fresh = false;
    int rc = claim_slot(co, id, user, event_get_int(request, "timeout_seconds", 60), &fresh);
    if (rc != 0)
        return rc;
    /* A terminal event may have released the ledger (before or while we
     * claimed), or this is an entry scheduled before a crash. */
    rc = ledger_is(co, id, "admitted");
    if (rc <= 0) {
        if (fresh) {
            bool released;
            release_slot(co, id, &released);
        }
        return rc == 0 ? -ECANCELED : rc;
    }
    enum topic_id task_topic = task_topic_of(request);
    struct event *ev = derive(EV_execution_scheduled, request, id);
    if (ev == NULL || event_set_str(ev, "task_topic", topic_table[task_topic].name)) {
        event_free(ev);
        return -ENOMEM;
    }
    const struct event *evs[3];
    enum topic_id topics[3];
    size_t n = 0;
    if (accepted) {
        topics[n] = event_topic(accepted->type);
        evs[n++] = accepted;
    }
    topics[n] = event_topic(ev->type);
    evs[n++] = ev;
    topics[n] = task_topic;
    evs[n++] = request;
    rc = publish_all(co, topics, evs, n);
    event_free(ev);
    if (rc != 0)
        return rc;
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

/* Moves queue heads into free slots while both exist.  Unless forced (the
 * sweeper), only when the mirror has entries. */
static int drain(struct coordinator *co, bool force)
{
    int rc = 0;
    if (!force && q_size(co) == 0)
        return 0;
    pthread_mutex_lock(&co->drain_lock);
    for (int i = 0; i < DRAIN_MAX && !stopping(co); i++) {
        if (!force && q_size(co) == 0)
            break;
        if (!slot_any_free(co))
            break;
        cJSON *filter = exec_json("{\"state\":\"waiting\"}");
        cJSON *upd = exec_json("{\"$set\":{\"state\":\"claimed\",\"claimed_at_ms\":%L}}",
                               (long long)now_wall_ms());
        cJSON *sort = exec_json("{\"priority\":-1,\"arrival_us\":1,\"_id\":1}");
        cJSON *entry = NULL;
        t_rt++;
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
        if (id)
            q_remove(co, id);
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
        rc = schedule(co, request, NULL);
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
            q_add(co, id, jint(entry, "priority", 0), jint(entry, "arrival_us", 0));
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
    return rc;
}

/* ---- per-user state (admit_lock) ----------------------------------------- */

static void user_free(struct user *u)
{
    for (size_t i = 0; i < u->nactive; i++)
        free(u->active[i]);
    free(u->active);
    free(u->recent);
    free(u->id);
    free(u);
}

static bool user_idle(const struct user *u, int64_t now)
{
    return u->nactive == 0 &&
           (u->nrecent == 0 || u->recent[u->nrecent - 1] <= now - ADMISSION_WINDOW_MS);
}

static struct user *user_get(struct coordinator *co, const char *id)
{
    for (struct user *u = co->users; u; u = u->next)
        if (strcmp(u->id, id) == 0)
            return u;
    if (co->nusers >= USER_CACHE_MAX) {
        int64_t now = now_wall_ms();
        for (struct user **p = &co->users; *p;) {
            if (user_idle(*p, now)) {
                struct user *dead = *p;
                *p = dead->next;
                user_free(dead);
                co->nusers--;
            } else {
                p = &(*p)->next;
            }
        }
    }
    struct user *u = calloc(1, sizeof(*u));
    if (u == NULL || (u->id = strdup(id)) == NULL) {
        free(u);
        return NULL;
    }
    u->next = co->users;
    co->users = u;
    co->nusers++;
    return u;
}

static int user_add_active(struct user *u, const char *id)
{
    for (size_t i = 0; i < u->nactive; i++)
        if (strcmp(u->active[i], id) == 0)
            return 0;
    if (u->nactive == u->capactive) {
        size_t cap = u->capactive ? u->capactive * 2 : 8;
        char **a = realloc(u->active, cap * sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        u->active = a;
        u->capactive = cap;
    }
    if ((u->active[u->nactive] = strdup(id)) == NULL)
        return -ENOMEM;
    u->nactive++;
    return 0;
}

static bool user_drop_active(struct user *u, const char *id)
{
    for (size_t i = 0; i < u->nactive; i++)
        if (strcmp(u->active[i], id) == 0) {
            free(u->active[i]);
            u->active[i] = u->active[--u->nactive];
            return true;
        }
    return false;
}

/* Keeps the admission times inside the window, at most keep of them. */
static void user_prune(struct user *u, int64_t now, int64_t keep)
{
    size_t first = 0;
    while (first < u->nrecent && u->recent[first] <= now - ADMISSION_WINDOW_MS)
        first++;
    if (keep < 1)
        keep = 1;
    if (keep > WINDOW_FETCH_MAX)
        keep = WINDOW_FETCH_MAX;
    if (u->nrecent - first > (size_t)keep)
        first = u->nrecent - (size_t)keep;
    if (first == 0)
        return;
    if (u->nrecent > first)
        memmove(u->recent, u->recent + first, (u->nrecent - first) * sizeof(*u->recent));
    u->nrecent -= first;
}

static int user_add_recent(struct user *u, int64_t t)
{
    if (u->nrecent == u->caprecent) {
        size_t cap = u->caprecent ? u->caprecent * 2 : 16;
        int64_t *r = realloc(u->recent, cap * sizeof(*r));
        if (r == NULL)
            return -ENOMEM;
        u->recent = r;
        u->caprecent = cap;
    }
    size_t i = u->nrecent++;
    while (i > 0 && u->recent[i - 1] > t) {
        u->recent[i] = u->recent[i - 1];
        i--;
    }
    u->recent[i] = t;
    return 0;
}

static void read_override(struct coordinator *co, struct user *u, int64_t now)
{
    cJSON *doc = NULL;
    u->has_ov = false;
    u->ov = (struct admission_override){.bypass = false, .multiplier = 1.0};
    u->ov_ms = now;
    if (find_doc(co, OVERRIDES, exec_json("{\"_id\":%S}", u->id), &doc) != 0)
        return;
    u->has_ov = true;
    u->ov.bypass = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "bypass"));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "multiplier");
    if (cJSON_IsNumber(m) && m->valuedouble > 0)
        u->ov.multiplier = m->valuedouble;
    cJSON_Delete(doc);
}

/* Loads the user's active ids and newest admissions in the window from
 * the ledger. */
static int user_load(struct coordinator *co, struct user *u, int64_t now, int64_t limit)
{
    if (limit > WINDOW_FETCH_MAX)
        limit = WINDOW_FETCH_MAX;
    if (limit < 1)
        limit = 1;
    cJSON *act = NULL, *win = NULL;
    int rc = find_docs(
        co, LEDGER,
        exec_json("{\"user_id\":%S,\"state\":{\"$in\":[\"admitted\",\"scheduled\"]}}", u->id),
        exec_json("{\"projection\":{\"_id\":1}}"), &act);
    if (rc == 0)
        rc = find_docs(co, LEDGER,
                       exec_json("{\"user_id\":%S,\"admitted_at_ms\":{\"$gt\":%L}}", u->id,
                                 (long long)(now - ADMISSION_WINDOW_MS)),
                       exec_json("{\"sort\":{\"admitted_at_ms\":-1},"
                                 "\"projection\":{\"admitted_at_ms\":1},\"limit\":%L}",
                                 (long long)limit),
                       &win);
    if (rc != 0) {
        cJSON_Delete(act);
        cJSON_Delete(win);
        return rc;
    }
    for (size_t i = 0; i < u->nactive; i++)
        free(u->active[i]);
    u->nactive = 0;
    u->nrecent = 0;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, act)
    {
        const char *id = jstr(doc, "_id");
        if (id && (rc = user_add_active(u, id)) != 0)
            break;
    }
    /* Newest first from the query: stored in reverse, ascending. */
    size_t nwin = (size_t)cJSON_GetArraySize(win);
    if (rc == 0 && nwin > u->caprecent) {
        int64_t *r = realloc(u->recent, nwin * sizeof(*r));
        if (r == NULL)
            rc = -ENOMEM;
        else {
            u->recent = r;
            u->caprecent = nwin;
        }
    }
    if (rc == 0) {
        size_t k = nwin;
        cJSON_ArrayForEach(doc, win) u->recent[--k] = jint(doc, "admitted_at_ms", 0);
        u->nrecent = nwin;
    }
    cJSON_Delete(act);
    cJSON_Delete(win);
    u->loaded_ms = rc == 0 ? now : 0;
    return rc;
}

/* Forgets an active execution of whichever user holds it (the event's user
 * first). */
static void users_release(struct coordinator *co, const char *id, const char *user_hint)
{
    pthread_mutex_lock(&co->admit_lock);
    bool done = false;
    for (struct user *u = co->users; u && user_hint && !done; u = u->next)
        if (strcmp(u->id, user_hint) == 0)
            done = user_drop_active(u, id);
    for (struct user *u = co->users; u && !done; u = u->next)
        done = user_drop_active(u, id);
    pthread_mutex_unlock(&co->admit_lock);
}

/* ---- admission ----------------------------------------------------------- */

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

/* Decides and records the decision in the ledger (under admit_lock).  On
 * success *led is the inserted ledger document; -EEXIST when the ledger
 * had a decision already. */
static int decide(struct coordinator *co, const struct event *request, const char *id,
                  const char *user, int64_t arrival_us, cJSON **led)
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
    int64_t now = now_wall_ms();
    struct admission_decision d;
    struct user *u = NULL;
    int rc = 0;

    pthread_mutex_lock(&co->admit_lock);
    admission_validate(&pol, &req, &d);
    if (d.verdict == ADMIT_OK) {
        if ((u = user_get(co, user)) == NULL) {
            rc = -ENOMEM;
            goto unlock;
        }
        bool fresh_ov = false, fresh_counts = false, fresh_depth = false;
        if (u->ov_ms == 0 || now - u->ov_ms >= OVERRIDE_TTL_MS) {
            read_override(co, u, now);
            fresh_ov = true;
        }
        int64_t limit = admission_scaled_limit(cfg->user_max_per_minute, u->has_ov ? &u->ov : NULL);
        if (u->loaded_ms == 0 || now - u->loaded_ms >= USER_REFRESH_MS) {
            if ((rc = user_load(co, u, now, limit)) != 0)
                goto unlock;
            fresh_counts = true;
        }
        int64_t depth = (int64_t)q_size(co);
        for (;;) {
            user_prune(u, now, limit);
            struct admission_state st = {
                .now_ms = now,
                .active = (int64_t)u->nactive,
                .recent_ms = u->recent,
                .nrecent = u->nrecent,
                .queue_depth = depth,
                .avg_run_ms = atomic_load(&co->avg_run_ms),
            };
            admission_decide(&pol, &req, &st, u->has_ov ? &u->ov : NULL, &d);
            if (d.verdict == ADMIT_OK)
                break;
            /* Never reject on a cached view: re-read what the verdict used. */
            bool again = false;
            if (!fresh_ov) {
                read_override(co, u, now);
                fresh_ov = again = true;
                limit = admission_scaled_limit(cfg->user_max_per_minute, u->has_ov ? &u->ov : NULL);
            }
            if (!fresh_counts &&
                (d.verdict == ADMIT_USER_CONCURRENCY || d.verdict == ADMIT_USER_RATE || again)) {
                if ((rc = user_load(co, u, now, limit)) != 0)
                    goto unlock;
                fresh_counts = again = true;
            }
            if (!fresh_depth && d.verdict == ADMIT_QUEUE_FULL) {
                if ((rc = count_docs(co, QUEUE, exec_json("{}"), &depth)) != 0)
                    goto unlock;
                fresh_depth = again = true;
            }
            if (!again)
                break;
        }
    }
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
    rc = insert_doc(co, LEDGER, doc);
    if (rc == 0 && d.verdict == ADMIT_OK && u != NULL) {
        if (user_add_active(u, id) != 0 || user_add_recent(u, now) != 0)
            u->loaded_ms = 0; /* out of memory: re-read next time */
    }
    if (rc == 0)
        *led = doc;
    else
        cJSON_Delete(doc);
unlock:
    pthread_mutex_unlock(&co->admit_lock);
    return rc;
}

static int notify_rejection(struct coordinator *co, const struct event *request, const cJSON *led)
{
    const char *id = execution_id_of(request);
    const char *reason = jstr(led, "reason");
    const char *error_type = jstr(led, "error_type");
    int64_t retry_after = jint(led, "retry_after", 0);
    struct event *rej = derive(EV_execution_rejected, request, id);
    struct event *fail = derive(EV_execution_failed, request, id);
    if (rej == NULL || fail == NULL || event_set_str(rej, "reason", reason ? reason : "rejected") ||
        (retry_after > 0 && event_set_int(rej, "retry_after", retry_after)) ||
        event_set_str(fail, "error_type", error_type ? error_type : "rate_limited") ||
        event_set_str(fail, "message", reason ? reason : "rejected")) {
        event_free(rej);
        event_free(fail);
        return -ENOMEM;
    }
    const struct event *evs[2] = {rej, fail};
    int rc = publish_all(co, NULL, evs, 2);
    event_free(rej);
    event_free(fail);
    if (rc != 0)
        return rc;
    metric_inc(co->m_rejected);
    log_info(ROLE, "execution rejected", "execution_id=%s user_id=%s reason=\"%s\"", id,
             request->meta.user_id ? request->meta.user_id : "-", reason ? reason : "-");
    return update_doc(co, LEDGER, exec_json("{\"_id\":%S}", id),
                      exec_json("{\"$set\":{\"notified\":true}}"), NULL);
}

/* An admitted request: scheduled at once when nothing waits and a slot is
 * free, else queued (accepted + queued published, then the entry). */
static int admit(struct coordinator *co, const struct event *request, const char *payload,
                 size_t len, bool fresh)
{
    const char *id = execution_id_of(request);
    const char *user = request->meta.user_id ? request->meta.user_id : "anonymous";
    int64_t arrival_us = 0;
    if (ts_parse_us(request->timestamp, &arrival_us) != 0)
        arrival_us = now_wall_us();
    int64_t priority = event_get_int(request, "priority", 0);
    struct event *acc = derive(EV_execution_accepted, request, id);
    if (acc == NULL)
        return -ENOMEM;
    int rc;
    if (q_size(co) == 0 && slot_any_free(co)) {
        rc = schedule(co, request, acc);
        if (rc == 0 || rc == -ECANCELED) {
            event_free(acc);
            if (fresh) {
                if (rc == 0)
                    metric_inc(co->m_admitted);
                return 0;
            }
            /* A redelivery may have left an entry before. */
            q_remove(co, id);
            return delete_docs(co, QUEUE, exec_json("{\"_id\":%S}", id));
        }
        if (rc != -EAGAIN) {
            event_free(acc);
            return rc;
        }
    }

    int64_t depth = 0;
    int64_t position = q_position(co, id, priority, arrival_us, &depth);
    struct event *q = derive(EV_execution_queued, request, id);
    int64_t wait_ms = admission_estimated_wait_ms(position, co->cfg->max_concurrent,
                                                  atomic_load(&co->avg_run_ms));
    if (q == NULL || event_set_int(q, "position", position) ||
        event_set_json(q, "estimated_wait_seconds", cJSON_CreateNumber((double)wait_ms / 1000.0))) {
        event_free(q);
        event_free(acc);
        return -ENOMEM;
    }
    const struct event *evs[2] = {acc, q};
    rc = publish_all(co, NULL, evs, 2);
    event_free(acc);
    event_free(q);
    if (rc != 0)
        return rc;
    if (fresh)
        metric_inc(co->m_admitted);
    metric_inc(co->m_queued);

    /* The queue entry, durable before the offset is stored. */
    cJSON *entry =
        exec_json("{\"_id\":%S,\"user_id\":%S,\"priority\":%L,\"arrival_us\":%L,"
                  "\"state\":\"waiting\",\"enqueued_at_ms\":%L}",
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
    rc = insert_doc(co, QUEUE, entry);
    cJSON_Delete(entry);
    if (rc == -EEXIST) {
        /* A redelivery: the entry is there (or being scheduled), or an entry
         * an older version left in state new. */
        update_doc(co, QUEUE, exec_json("{\"_id\":%S,\"state\":\"new\"}", id),
                   exec_json("{\"$set\":{\"state\":\"waiting\"}}"), NULL);
        rc = 0;
    } else if (rc != 0) {
        return rc;
    }
    q_add(co, id, priority, arrival_us);
    log_debug(ROLE, "execution queued", "execution_id=%s position=%lld depth=%lld", id,
              (long long)position, (long long)depth);
    return drain(co, false);
}

static int on_requested(struct coordinator *co, const struct event *request, const char *payload,
                        size_t len)
{
    const char *id = execution_id_of(request);
    const char *user = request->meta.user_id ? request->meta.user_id : "anonymous";
    int64_t arrival_us = 0;
    if (ts_parse_us(request->timestamp, &arrival_us) != 0)
        arrival_us = now_wall_us();

    cJSON *led = NULL;
    bool fresh = true;
    int rc = decide(co, request, id, user, arrival_us, &led);
    if (rc == -EEXIST) {
        fresh = false;
        rc = find_doc(co, LEDGER, exec_json("{\"_id\":%S}", id), &led);
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
    return admit(co, request, payload, len, fresh);
}

/* ---- release ------------------------------------------------------------- */

static int release(struct coordinator *co, const char *id, const char *why, const char *user)
{
    int64_t matched = 0;
    int rc = update_doc(
        co, LEDGER, exec_json("{\"_id\":%S,\"state\":{\"$in\":[\"admitted\",\"scheduled\"]}}", id),
        exec_json("{\"$set\":{\"state\":\"released\",\"released_at_ms\":%L,\"released_by\":%S}}",
                  (long long)now_wall_ms(), why),
        &matched);
    if (rc != 0)
        return rc;
    bool released = false;
    if ((rc = release_slot(co, id, &released)) != 0)
        return rc;
    if (matched)
        users_release(co, id, user);
    /* A waiting entry of an execution that ended (cancelled while queued);
     * one this replica does not know is dropped when a drain reaches it. */
    if (q_remove(co, id) &&
        (rc = delete_docs(
             co, QUEUE, exec_json("{\"_id\":%S,\"state\":{\"$in\":[\"new\",\"waiting\"]}}", id))) !=
            0)
        return rc;
    if (released || matched)
        log_debug(ROLE, "capacity released", "execution_id=%s slot=%d by=%s", id, released, why);
    return drain(co, false);
}

/* ---- consumer ------------------------------------------------------------ */

static bool wanted(int type)
{
    return type == EV_execution_requested || type == EV_release_capacity_command ||
           (type >= 0 && execution_event_terminal((enum event_type)type));
}

static int handle(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct coordinator *co = ctx;
    /* Most of execution_events is not ours: skip it on the header. */
    const char *htype = bus_msg_header(msg, "event_type");
    if (htype != NULL) {
        int t = event_type_lookup(htype);
        if (t >= 0 && !wanted(t))
            return 0;
    }
    int64_t t0 = mono_us();
    t_rt = t_waits = 0;
    t_pub_us = 0;
    struct event *ev = NULL;
    if (event_decode(msg->payload, msg->len, &ev, err, errlen) != 0)
        return -EBADMSG;
    int rc = 0;
    struct metric *timer = NULL;
    if (ev->type == EV_execution_requested) {
        rc = on_requested(co, ev, msg->payload, msg->len);
        timer = co->m_admit_s;
    } else if (wanted((int)ev->type)) {
        rc = release(co, execution_id_of(ev), event_type_name(ev->type), ev->meta.user_id);
        timer = co->m_release_s;
    } else {
        event_free(ev);
        return 0;
    }
    double secs = (double)(mono_us() - t0) / 1e6;
    if (timer && rc == 0)
        metric_observe(timer, secs);
    if (log_enabled(LOG_DEBUG))
        log_debug(ROLE, "handled",
                  "type=%s execution_id=%s ms=%.2f mongo_round_trips=%d "
                  "kafka_waits=%d kafka_ms=%.2f rc=%d",
                  event_type_name(ev->type), ev->aggregate_id, secs * 1000.0, t_rt, t_waits,
                  (double)t_pub_us / 1000.0, rc);
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
    int rc = find_docs(co, SLOTS, exec_json("{\"expires_at_ms\":{\"$lt\":%L}}", (long long)now),
                       NULL, &expired);
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
        release(co, holder, "reaper", jstr(slot, "user_id"));
    }
    cJSON_Delete(expired);
}

/* Re-reads the slot map and the queue mirror (also the start-up rebuild). */
static void refresh_hints(struct coordinator *co)
{
    int rc = refresh_slots(co);
    if (rc != 0)
        log_warn(ROLE, "cannot read the capacity slots", "err=%d", rc);
    if ((rc = refresh_queue(co)) != 0)
        log_warn(ROLE, "cannot read the queue", "err=%d", rc);
}

static void sweep(struct coordinator *co)
{
    int64_t now = now_wall_ms();
    reap_slots(co);
    cJSON *f = exec_json("{\"state\":\"claimed\",\"claimed_at_ms\":{\"$lt\":%L}}",
                         (long long)(now - CLAIM_STALE_MS));
    cJSON *u = exec_json("{\"$set\":{\"state\":\"waiting\"}}");
    if (f && u)
        store_update_many(co->store, QUEUE, f, u, NULL);
    cJSON_Delete(f);
    cJSON_Delete(u);
    f = exec_json("{\"state\":\"new\",\"enqueued_at_ms\":{\"$lt\":%L}}",
                  (long long)(now - NEW_STALE_MS));
    u = exec_json("{\"$set\":{\"state\":\"waiting\"}}");
    if (f && u)
        store_update_many(co->store, QUEUE, f, u, NULL);
    cJSON_Delete(f);
    cJSON_Delete(u);
    refresh_hints(co);
    drain(co, true);
}

static void *sweeper_main(void *arg)
{
    struct coordinator *co = arg;
    thread_name_set("coord-sweep");
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
    co->cap = co->cfg->max_concurrent > 0 ? co->cfg->max_concurrent : 1;
    co->slot_state = calloc((size_t)co->cap, 1); /* SLOT_FREE until the first read */
    co->slot_ver = calloc((size_t)co->cap, sizeof(*co->slot_ver));
    pthread_mutex_init(&co->admit_lock, NULL);
    pthread_mutex_init(&co->hint_lock, NULL);
    pthread_mutex_init(&co->drain_lock, NULL);
    pthread_mutex_init(&co->wake_lock, NULL);
    pthread_cond_init(&co->wake, NULL);
    *state = co;
    if (co->slot_state == NULL || co->slot_ver == NULL)
        return -ENOMEM;
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
        co->m_admit_s =
            metrics_get(m, METRIC_HISTOGRAM, "execd_coordinator_admit_seconds",
                        "Time the coordinator took to handle one execution_requested", "");
        co->m_release_s =
            metrics_get(m, METRIC_HISTOGRAM, "execd_coordinator_release_seconds",
                        "Time the coordinator took to release (and refill) one slot", "");
    }
    return 0;
}

static int coordinator_start(void *state)
{
    struct coordinator *co = state;
    int threads = (int)co->cfg->coordinator_threads;
    if (threads > MAX_CONSUMERS)
        threads = MAX_CONSUMERS;
    /* The restart rebuild: slots and waiting entries from MongoDB. */
    refresh_hints(co);
    log_info(ROLE, "queue rebuilt from execution_queue", "waiting=%zu", q_size(co));
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
    pthread_mutex_destroy(&co->hint_lock);
    while (co->users) {
        struct user *u = co->users;
        co->users = u->next;
        user_free(u);
    }
    for (size_t i = 0; i < co->nq; i++)
        free(co->q[i].id);
    free(co->q);
    free(co->slot_state);
    free(co->slot_ver);
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
