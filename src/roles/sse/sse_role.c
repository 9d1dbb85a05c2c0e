/*
 * sse_role.c — the sse role: the per-process hub and its consumers.
 *
 * EXECD_SSE_THREADS consumers share one consumer group whose id is unique to
 * this process ("execd-sse-<host>-<pid>-<random>", latest offsets): a
 * replica only streams what happens from its start on, and late subscribers
 * read the past from the event store (sse_stream.c).  Nothing here writes
 * to a socket; see sse.h for the threading model.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "bus.h"
#include "config.h"
#include "events.h"
#include "execution.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "sse.h"
#include "util.h"

/* ---- items ---- */

struct sse_item *sse_item_new(void)
{
    struct sse_item *it = calloc(1, sizeof(*it));
    if (it)
        atomic_init(&it->refs, 1);
    return it;
}

void sse_item_ref(struct sse_item *it)
{
    atomic_fetch_add(&it->refs, 1);
}

void sse_item_unref(struct sse_item *it)
{
    if (it && atomic_fetch_sub(&it->refs, 1) == 1)
        free(it);
}

/* ---- hub ---- */

static size_t bucket_of(enum sse_kind kind, const char *key)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % SSE_BUCKETS;
}

void sse_hub_init(struct sse_hub *hub, size_t queue_max)
{
    memset(hub, 0, sizeof(*hub));
    pthread_mutex_init(&hub->mu, NULL);
    hub->queue_max = queue_max ? queue_max : 1;
}

void sse_hub_destroy(struct sse_hub *hub)
{
    for (size_t i = 0; i < SSE_RECENT; i++) {
        sse_item_unref(hub->recent[i]);
        hub->recent[i] = NULL;
    }
    pthread_mutex_destroy(&hub->mu);
}

/* Queues it on sub (hub locked): false when the queue is full. */
static bool sub_push(struct sse_sub *sub, struct sse_item *it)
{
    if (sub->dropped)
        return false;
    if (sub->n == sub->cap) {
        sub->dropped = true;
        pthread_cond_signal(&sub->cv);
        return false;
    }
    sse_item_ref(it);
    sub->q[(sub->head + sub->n) % sub->cap] = it;
    sub->n++;
    pthread_cond_signal(&sub->cv);
    return true;
}

void sse_hub_publish(struct sse_hub *hub, struct sse_item *it)
{
    pthread_mutex_lock(&hub->mu);
    struct sse_item *old = hub->recent[hub->rpos];
    sse_item_ref(it);
    hub->recent[hub->rpos] = it;
    hub->rpos = (hub->rpos + 1) % SSE_RECENT;
    for (struct sse_sub *s = hub->buckets[bucket_of(it->kind, it->key)]; s; s = s->next)
        if (s->kind == it->kind && strcmp(s->key, it->key) == 0)
            sub_push(s, it);
    pthread_mutex_unlock(&hub->mu);
    sse_item_unref(old);
}

int sse_sub_init(struct sse_hub *hub, struct sse_sub *sub, enum sse_kind kind, const char *key)
{
    memset(sub, 0, sizeof(*sub));
    sub->kind = kind;
    snprintf(sub->key, sizeof(sub->key), "%s", key);
    sub->cap = hub->queue_max;
    sub->q = calloc(sub->cap, sizeof(*sub->q));
    if (!sub->q)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sub->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&hub->mu);
    size_t b = bucket_of(kind, sub->key);
    sub->next = hub->buckets[b];
    hub->buckets[b] = sub;
    sub->linked = true;
    /* The seam: events consumed just before this subscription may not be in
     * the event store yet; the ring still has them (oldest first). */
    for (size_t i = 0; i < SSE_RECENT; i++) {
        struct sse_item *it = hub->recent[(hub->rpos + i) % SSE_RECENT];
        if (it && it->kind == kind && strcmp(it->key, sub->key) == 0 && sub->n < sub->cap)
            sub_push(sub, it);
    }
    pthread_mutex_unlock(&hub->mu);
    return 0;
}

void sse_sub_release(struct sse_hub *hub, struct sse_sub *sub)
{
    if (!sub->q)
        return;
    pthread_mutex_lock(&hub->mu);
    if (sub->linked) {
        struct sse_sub **pp = &hub->buckets[bucket_of(sub->kind, sub->key)];
        while (*pp && *pp != sub)
            pp = &(*pp)->next;
        if (*pp)
            *pp = sub->next;
        sub->linked = false;
    }
    pthread_mutex_unlock(&hub->mu);
    while (sub->n) {
        sse_item_unref(sub->q[sub->head]);
        sub->head = (sub->head + 1) % sub->cap;
        sub->n--;
    }
    free(sub->q);
    sub->q = NULL;
    pthread_cond_destroy(&sub->cv);
}

enum sse_wait sse_sub_wait(struct sse_hub *hub, struct sse_sub *sub, int64_t deadline_ms,
                           struct sse_item **out)
{
    enum sse_wait rc;
    pthread_mutex_lock(&hub->mu);
    for (;;) {
        if (hub->stopping) {
            rc = SSE_STOPPING;
            break;
        }
        if (sub->n) {
            *out = sub->q[sub->head];
            sub->head = (sub->head + 1) % sub->cap;
            sub->n--;
            rc = SSE_GOT;
            break;
        }
        if (sub->dropped) {
            rc = SSE_DROPPED;
            break;
        }
        int64_t left = deadline_ms - now_mono_ms();
        if (left <= 0) {
            rc = SSE_TIMEOUT;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sub->cv, &hub->mu, &ts);
    }
    pthread_mutex_unlock(&hub->mu);
    return rc;
}

void sse_hub_stop(struct sse_hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    hub->stopping = true;
    for (size_t b = 0; b < SSE_BUCKETS; b++)
        for (struct sse_sub *s = hub->buckets[b]; s; s = s->next)
            pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&hub->mu);
}

/* ---- consumer ---- */

bool sse_stopping(const struct sse *s)
{
    return atomic_load(&s->stopping) || (s->host->stopping && atomic_load(s->host->stopping)) ||
           (s->host->http && http_server_stopping(s->host->http));
}

static void copy_str(char *out, size_t len, const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsString(v))
        snprintf(out, len, "%s", v->valuestring);
}

static int handle(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct sse *s = ctx;
    int64_t recv_us = now_wall_us();
    cJSON *o = cJSON_ParseWithLength(msg->payload, msg->len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return 0; /* not ours to judge: the store and the DLQ see it too */
    }
    struct sse_item *it = sse_item_new();
    if (!it) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    it->recv_us = recv_us;
    copy_str(it->event_id, sizeof(it->event_id), o, "event_id");
    copy_str(it->type, sizeof(it->type), o, "event_type");
    copy_str(it->timestamp, sizeof(it->timestamp), o, "timestamp");
    if (msg->topic == TOPIC_NOTIFICATION_EVENTS) {
        it->kind = SSE_NOTIF;
        copy_str(it->key, sizeof(it->key), o, "user_id");
        copy_str(it->extra, sizeof(it->extra), o, "notification_id");
        copy_str(it->channel, sizeof(it->channel), o, "channel");
    } else {
        it->kind = SSE_EXEC;
        copy_str(it->key, sizeof(it->key), o, "execution_id");
        if (!it->key[0])
            copy_str(it->key, sizeof(it->key), o, "aggregate_id");
        int t = event_type_lookup(it->type);
        int st = t >= 0 ? execution_status_of_event((enum event_type)t) : -1;
        if (st >= 0)
            snprintf(it->status, sizeof(it->status), "%s",
                     execution_status_name((enum execution_status)st));
        else if (t == EV_result_stored)
            copy_str(it->status, sizeof(it->status), o, "status");
    }
    cJSON_Delete(o);
    if (it->key[0] && it->event_id[0] && it->type[0])
        sse_hub_publish(&s->hub, it);
    sse_item_unref(it);
    return 0;
}

/* ---- lifecycle ---- */

static const enum topic_id sse_topics[] = {TOPIC_EXECUTION_EVENTS, TOPIC_NOTIFICATION_EVENTS};

static int sse_init(struct host *host, void **state)
{
    if (!host->bus || !host->store || !host->http) {
        log_error(SSE_ROLE, "sse role needs the bus, the store and the http server", "%s", "");
        return -EINVAL;
    }
    struct sse *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->host = host;
    sse_hub_init(&s->hub, (size_t)host->cfg->sse_queue_max);
    char hn[64] = "host", rnd[9];
    if (gethostname(hn, sizeof(hn)) != 0)
        snprintf(hn, sizeof(hn), "host");
    hn[sizeof(hn) - 1] = '\0';
    if (auth_random_hex(rnd, 4) != 0)
        snprintf(rnd, sizeof(rnd), "%08x", (unsigned)now_wall_us());
    snprintf(s->group, sizeof(s->group), "execd-sse-%s-%d-%s", hn, (int)getpid(), rnd);
    if (host->metrics) {
        s->m_streams =
            metrics_get(host->metrics, METRIC_GAUGE, "execd_sse_streams", "Open SSE streams", "");
        s->m_dropped = metrics_get(host->metrics, METRIC_COUNTER, "execd_sse_dropped_total",
                                   "SSE subscribers dropped because their queue overflowed", "");
        s->m_rejected = metrics_get(host->metrics, METRIC_COUNTER, "execd_sse_rejected_total",
                                    "SSE streams refused with 503 (EXECD_SSE_MAX_STREAMS)", "");
        s->m_frames = metrics_get(host->metrics, METRIC_COUNTER, "execd_sse_frames_total",
                                  "SSE event frames written", "");
    }
    /* Each open stream holds one civetweb thread until it ends: never let
     * streams take the threads the rest of the HTTP API needs. */
    int64_t cap = host->cfg->sse_max_streams;
    int64_t room = host->cfg->http_threads - SSE_HTTP_RESERVE;
    if (room < 1)
        room = 1;
    s->max_streams = (int)(cap < room ? cap : room);
    if (s->max_streams < cap)
        log_warn(SSE_ROLE, "stream cap lowered to fit the HTTP threads",
                 "sse_max_streams=%lld http_threads=%lld effective=%d hint=\"raise "
                 "EXECD_HTTP_THREADS above EXECD_SSE_MAX_STREAMS + %d\"",
                 (long long)cap, (long long)host->cfg->http_threads, s->max_streams,
                 SSE_HTTP_RESERVE);
    int rc = sse_routes(s);
    if (rc) {
        sse_hub_destroy(&s->hub);
        free(s);
        return rc;
    }
    *state = s;
    return 0;
}

static int sse_start(void *state)
{
    struct sse *s = state;
    int threads = (int)s->host->cfg->sse_threads;
    if (threads > SSE_MAX_CONSUMERS)
        threads = SSE_MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = SSE_ROLE,
        .group = s->group,
        .topics = sse_topics,
        .ntopics = sizeof(sse_topics) / sizeof(sse_topics[0]),
        .handler = handle,
        .ctx = s,
        .latest = 1,
    };
    for (int i = 0; i < threads; i++) {
        struct bus_consumer *c = NULL;
        int rc = bus_consumer_new(s->host->bus, &opts, &c);
        if (rc) {
            log_error(SSE_ROLE, "cannot create the sse consumer", "err=%d", rc);
            return rc;
        }
        s->consumers[s->nconsumers++] = c;
        if ((rc = bus_consumer_start(c)) != 0) {
            log_error(SSE_ROLE, "cannot start the sse consumer", "err=%d", rc);
            return rc;
        }
    }
    log_info(SSE_ROLE, "sse consuming", "group=%s consumers=%d max_streams=%lld heartbeat_ms=%lld",
             s->group, s->nconsumers, (long long)s->max_streams,
             (long long)s->host->cfg->sse_heartbeat_ms);
    return 0;
}

static void sse_stop(void *state)
{
    struct sse *s = state;
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    sse_hub_stop(&s->hub);
    for (int i = 0; i < s->nconsumers; i++)
        bus_consumer_stop(s->consumers[i]);
}

static int sse_join(void *state, int64_t deadline_ms)
{
    struct sse *s = state;
    int rc = 0;
    for (int i = 0; s && i < s->nconsumers; i++)
        if (bus_consumer_join(s->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    return rc;
}

static void sse_destroy(void *state)
{
    struct sse *s = state;
    if (!s)
        return;
    for (int i = 0; i < s->nconsumers; i++)
        bus_consumer_free(s->consumers[i]);
    sse_hub_destroy(&s->hub);
    free(s);
}

static int sse_health(void *state, cJSON *out)
{
    struct sse *s = state;
    cJSON *o = cJSON_AddObjectToObject(out, "sse");
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "streams", atomic_load(&s->active));
    cJSON_AddNumberToObject(o, "max_streams", s->max_streams);
    return 0;
}

const struct role role_sse = {
    .name = "sse",
    .needs = ROLE_NEEDS_BUS | ROLE_NEEDS_STORE | ROLE_NEEDS_HTTP,
    .init = sse_init,
    .start = sse_start,
    .stop = sse_stop,
    .join = sse_join,
    .destroy = sse_destroy,
    .health = sse_health,
};
