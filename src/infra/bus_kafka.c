/*
 * bus_kafka.c — the Kafka port (include/bus.h) on librdkafka 2.0.2.
 *
 * Producer: one idempotent producer per process (acks=all), its delivery
 * reports served by the "bus-dr" thread.  bus_publish hands a refcounted
 * waiter to librdkafka as the message opaque and sleeps on it until the
 * delivery report arrives (or the publish timeout passes; the waiter then
 * outlives the caller until the report frees it).
 *
 * Consumers: one thread per consumer polling every 100 ms.  Offsets are
 * stored (enable.auto.offset.store=false) only after the handler returned 0
 * or the message was dead-lettered and its DLQ copy delivery-reported; the
 * auto-commit then commits them every 500 ms and on revocation.  Batches are
 * collected across polls; a revocation in the middle drops the batch's
 * messages of the lost partitions (their new owner gets them again).
 */
#include "bus.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "retry.h"
#include "util.h"

extern char **environ;

#define BUS_ROLE "bus"
#define PROP_ENV_PREFIX "EXECD_KAFKA_PROP_"
#define TOPIC_NAME_MAX 160
#define MSG_MAX_BYTES (4 * 1048576 + 65536) /* largest topic (DLQ) + headers/overhead */
#define POLL_MS 100
#define LAG_INTERVAL_MS 5000
#define ERR_RELOG_MS 30000
#define ENSURE_TIMEOUT_MS 30000
#define RETRY_MAX_MS 30000
#define DLQ_EXTRA_HEADERS 7

/* ------------------------------------------------------------ helpers */

static void *unconst(const void *p)
{
    return (void *)(uintptr_t)p;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void deadline_ts(int64_t deadline_mono_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_mono_ms / 1000);
    ts->tv_nsec = (long)(deadline_mono_ms % 1000) * 1000000L;
}

static int cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr))
        return -ENOMEM;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc ? -ENOMEM : 0;
}

/* Logs a library error once per code (again after ERR_RELOG_MS). */
#define ERRLOG_SLOTS 8
struct errlog {
    pthread_mutex_t mu;
    int code[ERRLOG_SLOTS];
    int64_t at_ms[ERRLOG_SLOTS];
    unsigned next;
};

static void errlog_emit(struct errlog *el, const char *role, int code, const char *what,
                        const char *reason)
{
    int64_t now = now_mono_ms();
    int skip = 0;
    pthread_mutex_lock(&el->mu);
    int slot = -1;
    for (int i = 0; i < ERRLOG_SLOTS; i++)
        if (el->at_ms[i] && el->code[i] == code)
            slot = i;
    if (slot >= 0 && now - el->at_ms[slot] < ERR_RELOG_MS) {
        skip = 1;
    } else {
        if (slot < 0)
            slot = (int)(el->next++ % ERRLOG_SLOTS);
        el->code[slot] = code;
        el->at_ms[slot] = now ? now : 1;
    }
    pthread_mutex_unlock(&el->mu);
    if (!skip)
        log_warn(role, what, "err=\"%s\" code=%d", reason ? reason : "", code);
}

static int map_err(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return 0;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return -ETIMEDOUT;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return -EMSGSIZE;
    default:
        return -EIO;
    }
}

static int cset(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t errlen)
{
    if (rd_kafka_conf_set(conf, k, v, err, errlen) != RD_KAFKA_CONF_OK) {
        log_error(BUS_ROLE, "cannot set kafka property", "key=%s err=\"%s\"", k, err);
        return -EINVAL;
    }
    return 0;
}

/* EXECD_KAFKA_PROP_a_b=v → a.b=v (name lowercased, every '_' a '.'). */
static int apply_env_props(rd_kafka_conf_t *conf, char *err, size_t errlen)
{
    size_t plen = strlen(PROP_ENV_PREFIX);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, PROP_ENV_PREFIX, plen) != 0)
            continue;
        const char *name = *e + plen;
        const char *eq = strchr(name, '=');
        if (!eq || eq == name)
            continue;
        char key[128];
        size_t n = (size_t)(eq - name);
        if (n >= sizeof(key)) {
            log_error(BUS_ROLE, "kafka property name too long", "env=%.*s", (int)n, name);
            return -EINVAL;
        }
        for (size_t i = 0; i < n; i++)
            key[i] = name[i] == '_' ? '.' : (char)tolower((unsigned char)name[i]);
        key[n] = '\0';
        int rc = cset(conf, key, eq + 1, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* Connection failures also reach the error callback, which logs them once. */
    enum log_level lvl = level <= 4 ? LOG_WARN : LOG_DEBUG;
    if (strcmp(fac, "FAIL") == 0)
        lvl = LOG_DEBUG;
    if (!log_enabled(lvl))
        return;
    log_emit(lvl, BUS_ROLE, "librdkafka", "client=%s facility=%s text=\"%s\"", rd_kafka_name(rk),
             fac, buf);
}

static int common_conf(rd_kafka_conf_t *conf, const struct config *cfg, const char *client_id,
                       char *err, size_t errlen)
{
    int rc = 0;
    rc = rc ? rc : cset(conf, "bootstrap.servers", cfg->kafka_brokers, err, errlen);
    rc = rc ? rc : cset(conf, "client.id", client_id, err, errlen);
    rc = rc ? rc : cset(conf, "socket.nagle.disable", "true", err, errlen);
    rc = rc ? rc : cset(conf, "log.connection.close", "false", err, errlen);
    rc = rc ? rc : cset(conf, "reconnect.backoff.ms", "50", err, errlen);
    rc = rc ? rc : cset(conf, "reconnect.backoff.max.ms", "1000", err, errlen);
    if (rc)
        return rc;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    return 0;
}

/* ------------------------------------------------------------ producer */

struct bus {
    const struct config *cfg;
    struct metrics *metrics;
    rd_kafka_t *rk;
    pthread_t dr_thread;
    int dr_started;
    atomic_bool dr_stop;
    struct errlog elog;
    struct metric *published[TOPIC_COUNT];
    struct metric *failed[TOPIC_COUNT];
    struct metric *latency;
};

/* Shared between bus_publish and the delivery report; the last one frees. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int done;
    rd_kafka_resp_err_t err;
};

static struct waiter *waiter_new(void)
{
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    if (pthread_mutex_init(&w->mu, NULL)) {
        free(w);
        return NULL;
    }
    if (cond_init_mono(&w->cv)) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    w->refs = 2;
    return w;
}

static void waiter_unref(struct waiter *w, int n)
{
    pthread_mutex_lock(&w->mu);
    w->refs -= n;
    int last = w->refs <= 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    (void)rk;
    (void)opaque;
    struct waiter *w = rkm->_private;
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->err = rkm->err;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    waiter_unref(w, 1);
}

static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct bus *bus = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        log_error(BUS_ROLE, "kafka producer fatal error", "err=\"%s\" code=%d", buf, (int)orig);
        return;
    }
    errlog_emit(&bus->elog, BUS_ROLE, err, "kafka producer error", reason);
}

static void *dr_main(void *arg)
{
    struct bus *bus = arg;
    thread_name_set("bus-dr");
    while (!atomic_load(&bus->dr_stop))
        rd_kafka_poll(bus->rk, POLL_MS);
    return NULL;
}

static void topic_label(char *out, size_t len, const char *name)
{
    snprintf(out, len, "topic=\"%s\"", name);
}

int bus_new(const struct config *cfg, struct metrics *metrics, struct bus **out)
{
    char err[512];
    char num[32];
    int rc = -ENOMEM;
    struct bus *bus = calloc(1, sizeof(*bus));
    if (!bus)
        return -ENOMEM;
    bus->cfg = cfg;
    bus->metrics = metrics;
    pthread_mutex_init(&bus->elog.mu, NULL);
    atomic_init(&bus->dr_stop, false);

    for (int i = 0; i < TOPIC_COUNT; i++) {
        char labels[TOPIC_NAME_MAX + 16];
        topic_label(labels, sizeof(labels), topic_table[i].name);
        bus->published[i] = metrics_get(metrics, METRIC_COUNTER, "execd_kafka_published_total",
                                        "Messages delivered to Kafka", labels);
        bus->failed[i] =
            metrics_get(metrics, METRIC_COUNTER, "execd_kafka_publish_failed_total",
                        "Publishes that failed (no delivery report or an error)", labels);
    }
    bus->latency = metrics_get(metrics, METRIC_HISTOGRAM, "execd_kafka_publish_seconds",
                               "Publish latency up to the delivery report", "");

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        goto fail_bus;
    char client_id[96];
    snprintf(client_id, sizeof(client_id), "%s-producer", cfg->service_name);
    rc = common_conf(conf, cfg, client_id, err, sizeof(err));
    snprintf(num, sizeof(num), "%d", MSG_MAX_BYTES);
    rc = rc ? rc : cset(conf, "enable.idempotence", "true", err, sizeof(err));
    rc = rc ? rc : cset(conf, "acks", "all", err, sizeof(err));
    rc = rc ? rc : cset(conf, "linger.ms", "1", err, sizeof(err));
    rc = rc ? rc : cset(conf, "compression.type", "none", err, sizeof(err));
    rc = rc ? rc : cset(conf, "message.max.bytes", num, err, sizeof(err));
    snprintf(num, sizeof(num), "%lld", (long long)cfg->kafka_publish_timeout_ms);
    rc = rc ? rc : cset(conf, "message.timeout.ms", num, err, sizeof(err));
    rc = rc ? rc : apply_env_props(conf, err, sizeof(err));
    if (rc)
        goto fail_conf;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, producer_error_cb);
    rd_kafka_conf_set_opaque(conf, bus);

    bus->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!bus->rk) {
        log_error(BUS_ROLE, "cannot create kafka producer", "err=\"%s\"", err);
        rc = -EINVAL;
        goto fail_conf;
    }
    conf = NULL; /* owned by rk now */

    if (pthread_create(&bus->dr_thread, NULL, dr_main, bus)) {
        rc = -EAGAIN;
        goto fail_rk;
    }
    bus->dr_started = 1;
    log_info(BUS_ROLE, "kafka producer ready", "brokers=%s prefix=\"%s\"", cfg->kafka_brokers,
             cfg->topic_prefix);
    *out = bus;
    return 0;

fail_rk:
    rd_kafka_destroy(bus->rk);
fail_conf:
    if (conf)
        rd_kafka_conf_destroy(conf);
fail_bus:
    pthread_mutex_destroy(&bus->elog.mu);
    free(bus);
    return rc;
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    if (bus->rk) {
        rd_kafka_resp_err_t e = rd_kafka_flush(bus->rk, (int)bus->cfg->kafka_publish_timeout_ms);
        if (e)
            log_warn(BUS_ROLE, "kafka producer flush incomplete", "err=\"%s\" pending=%d",
                     rd_kafka_err2str(e), rd_kafka_outq_len(bus->rk));
    }
    if (bus->dr_started) {
        atomic_store(&bus->dr_stop, true);
        pthread_join(bus->dr_thread, NULL);
    }
    if (bus->rk)
        rd_kafka_destroy(bus->rk);
    pthread_mutex_destroy(&bus->elog.mu);
    free(bus);
}

void bus_topic_name(const struct bus *bus, enum topic_id topic, char *out, size_t len)
{
    const char *name = (int)topic >= 0 && topic < TOPIC_COUNT ? topic_table[topic].name : "";
    snprintf(out, len, "%s%s", bus->cfg->topic_prefix, name);
}

/* Topic id of a full broker name, or -1. */
static int topic_of_name(const struct bus *bus, const char *full)
{
    size_t plen = strlen(bus->cfg->topic_prefix);
    if (strncmp(full, bus->cfg->topic_prefix, plen) != 0)
        return -1;
    return topic_lookup(full + plen);
}

/* One produced message waiting for its delivery report. */
struct pending {
    struct waiter *w;
    int topic_idx;
    int64_t t0;
    int64_t deadline;
};

/* Produces without waiting; on success p holds the waiter for
 * publish_wait.  hdrs (may be NULL) is consumed in every case.  topic_idx
 * selects the metrics (-1: none). */
static int publish_start(struct bus *bus, int topic_idx, const char *tname, const void *key,
                         size_t keylen, const void *payload, size_t len, rd_kafka_headers_t *hdrs,
                         struct pending *p)
{
    p->t0 = mono_us();
    p->deadline = now_mono_ms() + bus->cfg->kafka_publish_timeout_ms;
    p->topic_idx = topic_idx;
    p->w = NULL;
    struct metric *failed = topic_idx >= 0 ? bus->failed[topic_idx] : NULL;
    struct waiter *w = waiter_new();
    if (!w) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        metric_add(failed, 1);
        return -ENOMEM;
    }

    rd_kafka_resp_err_t e;
    for (;;) {
        e = rd_kafka_producev(
            bus->rk, RD_KAFKA_V_TOPIC(tname), RD_KAFKA_V_KEY(unconst(key), keylen),
            RD_KAFKA_V_VALUE(unconst(payload), len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(w), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || now_mono_ms() >= p->deadline)
            break;
        sleep_ms(2); /* the bus-dr thread drains the queue */
    }
    if (e) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        waiter_unref(w, 2);
        metric_add(failed, 1);
        errlog_emit(&bus->elog, BUS_ROLE, e, "cannot publish to kafka", rd_kafka_err2str(e));
        return map_err(e);
    }
    p->w = w;
    return 0;
}

/* Waits for the delivery report of a started publish and drops the waiter. */
static int publish_wait(struct bus *bus, struct pending *p)
{
    struct waiter *w = p->w;
    struct metric *failed = p->topic_idx >= 0 ? bus->failed[p->topic_idx] : NULL;
    /* message.timeout.ms = the publish timeout, so the report normally comes
     * by then; the grace covers a report that is just late. */
    struct timespec ts;
    deadline_ts(p->deadline + 1000, &ts);
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    int done = w->done;
    rd_kafka_resp_err_t e = w->err;
    pthread_mutex_unlock(&w->mu);
    waiter_unref(w, 1);
    p->w = NULL;

    int rc = done ? map_err(e) : -ETIMEDOUT;
    if (rc) {
        metric_add(failed, 1);
        errlog_emit(&bus->elog, BUS_ROLE, done ? (int)e : RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
                    "kafka delivery failed",
                    done ? rd_kafka_err2str(e) : "no delivery report within the publish timeout");
        return rc;
    }
    if (p->topic_idx >= 0)
        metric_add(bus->published[p->topic_idx], 1);
    metric_observe(bus->latency, (double)(mono_us() - p->t0) / 1e6);
    return 0;
}

/* Produces and waits for the delivery report.  hdrs (may be NULL) is
 * consumed in every case.  topic_idx selects the metrics (-1: none). */
static int publish_raw(struct bus *bus, int topic_idx, const char *tname, const void *key,
                       size_t keylen, const void *payload, size_t len, rd_kafka_headers_t *hdrs)
{
    struct pending p;
    int rc = publish_start(bus, topic_idx, tname, key, keylen, payload, len, hdrs, &p);
    return rc ? rc : publish_wait(bus, &p);
}

static rd_kafka_headers_t *headers_build(const struct bus_header *headers, size_t nheaders)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(nheaders ? nheaders : 1);
    if (!h)
        return NULL;
    for (size_t i = 0; i < nheaders; i++) {
        if (!headers[i].name || !headers[i].value)
            continue;
        rd_kafka_header_add(h, headers[i].name, -1, headers[i].value, -1);
    }
    return h;
}

int bus_publish(struct bus *bus, enum topic_id topic, const char *key, const void *payload,
                size_t len, const struct bus_header *headers, size_t nheaders)
{
    if (!bus || (int)topic < 0 || topic >= TOPIC_COUNT || (!payload && len))
        return -EINVAL;
    char tname[TOPIC_NAME_MAX];
    bus_topic_name(bus, topic, tname, sizeof(tname));
    rd_kafka_headers_t *h = NULL;
    if (nheaders) {
        h = headers_build(headers, nheaders);
        if (!h)
            return -ENOMEM;
    }
    return publish_raw(bus, (int)topic, tname, key, key ? strlen(key) : 0, payload, len, h);
}

/* Encodes ev and produces it to topic without waiting (see publish_start). */
static int publish_event_start(struct bus *bus, enum topic_id topic, const struct event *ev,
                               struct pending *p)
{
    if ((int)topic < 0 || topic >= TOPIC_COUNT)
        return -EINVAL;
    char err[256] = "";
    char *json = NULL;
    int rc = event_encode(ev, &json, err, sizeof(err));
    if (rc) {
        log_warn(BUS_ROLE, "cannot publish invalid event", "event_type=%s event_id=%s err=\"%s\"",
                 event_type_name(ev->type), ev->event_id, err);
        return -EINVAL;
    }
    char version[16], schema[16], span[33], trace[33], traceparent[96];
    snprintf(version, sizeof(version), "%d", ev->version);
    snprintf(schema, sizeof(schema), "%d", event_schema_id(ev->type));
    trace_id_new(span);
    span[16] = '\0';
    if (strlen(ev->meta.trace_id) == 32)
        memcpy(trace, ev->meta.trace_id, sizeof(trace));
    else
        trace_id_new(trace);
    snprintf(traceparent, sizeof(traceparent), "00-%s-%s-01", trace, span);
    const struct bus_header h[] = {
        {"event_type", event_type_name(ev->type)},
        {"event_version", version},
        {"schema_id", schema},
        {"content-type", "application/json"},
        {"traceparent", traceparent},
    };
    rd_kafka_headers_t *hdrs = headers_build(h, sizeof(h) / sizeof(h[0]));
    if (!hdrs) {
        free(json);
        return -ENOMEM;
    }
    char tname[TOPIC_NAME_MAX];
    bus_topic_name(bus, topic, tname, sizeof(tname));
    const char *key = ev->aggregate_id;
    rc = publish_start(bus, (int)topic, tname, key, key ? strlen(key) : 0, json, strlen(json), hdrs,
                       p);
    free(json);
    return rc;
}

int bus_publish_event_to(struct bus *bus, enum topic_id topic, const struct event *ev)
{
    if (!bus || !ev)
        return -EINVAL;
    struct pending p;
    int rc = publish_event_start(bus, topic, ev, &p);
    return rc ? rc : publish_wait(bus, &p);
}

int bus_publish_events(struct bus *bus, const enum topic_id *topics, const struct event *const *evs,
                       size_t n)
{
    if (!bus || (n && !evs))
        return -EINVAL;
    struct pending one[8];
    struct pending *ps = n <= 8 ? one : calloc(n, sizeof(*ps));
    if (!ps)
        return -ENOMEM;
    int rc = 0;
    size_t started = 0;
    for (size_t i = 0; i < n; i++) {
        if (!evs[i]) {
            rc = -EINVAL;
            break;
        }
        enum topic_id t = topics ? topics[i] : event_topic(evs[i]->type);
        if ((rc = publish_event_start(bus, t, evs[i], &ps[i])) != 0)
            break;
        started = i + 1;
    }
    /* Every started publish is waited for, even after a failure, so no
     * report outlives the call. */
    for (size_t i = 0; i < started; i++) {
        int w = publish_wait(bus, &ps[i]);
        if (w && !rc)
            rc = w;
    }
    if (ps != one)
        free(ps);
    return rc;
}

int bus_publish_event(struct bus *bus, const struct event *ev)
{
    if (!ev)
        return -EINVAL;
    return bus_publish_event_to(bus, event_topic(ev->type), ev);
}

int bus_health(struct bus *bus, int timeout_ms)
{
    if (!bus || !bus->rk)
        return -EIO;
    if (timeout_ms <= 0 || timeout_ms > 2000)
        timeout_ms = 2000;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(bus->rk, 0, NULL, &md, timeout_ms);
    if (e) {
        errlog_emit(&bus->elog, BUS_ROLE, e, "kafka health check failed", rd_kafka_err2str(e));
        return -EIO;
    }
    int ok = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return ok ? 0 : -EIO;
}

/* Waits until metadata shows every topic of the table with its partitions
 * and a leader for each. */
static int wait_topics_visible(struct bus *bus, int64_t deadline)
{
    int rc = -ETIMEDOUT;
    while (now_mono_ms() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        int remaining = (int)(deadline - now_mono_ms());
        rd_kafka_resp_err_t e =
            rd_kafka_metadata(bus->rk, 1, NULL, &md, remaining > 5000 ? 5000 : remaining);
        if (!e) {
            int found = 0;
            for (int i = 0; i < TOPIC_COUNT; i++) {
                char name[TOPIC_NAME_MAX];
                bus_topic_name(bus, (enum topic_id)i, name, sizeof(name));
                for (int t = 0; t < md->topic_cnt; t++) {
                    const struct rd_kafka_metadata_topic *mt = &md->topics[t];
                    if (strcmp(mt->topic, name) != 0 || mt->err || mt->partition_cnt <= 0)
                        continue;
                    int leaders = 1;
                    for (int p = 0; p < mt->partition_cnt; p++)
                        if (mt->partitions[p].leader < 0 || mt->partitions[p].err)
                            leaders = 0;
                    found += leaders;
                    break;
                }
            }
            rd_kafka_metadata_destroy(md);
            if (found == TOPIC_COUNT)
                return 0;
        }
        sleep_ms(50);
    }
    return rc;
}

int bus_ensure_topics(struct bus *bus)
{
    if (!bus)
        return -EINVAL;
    const struct config *cfg = bus->cfg;
    char err[512];
    int rc = 0;
    int64_t deadline = now_mono_ms() + ENSURE_TIMEOUT_MS;
    rd_kafka_NewTopic_t *nt[TOPIC_COUNT] = {0};
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;

    /* Fail fast (and let the caller retry) when no broker answers at all. */
    const struct rd_kafka_metadata *probe = NULL;
    rd_kafka_resp_err_t pe = rd_kafka_metadata(bus->rk, 0, NULL, &probe, 5000);
    if (pe) {
        errlog_emit(&bus->elog, BUS_ROLE, pe, "cannot reach kafka", rd_kafka_err2str(pe));
        return -EIO;
    }
    rd_kafka_metadata_destroy(probe);

    for (int i = 0; i < TOPIC_COUNT; i++) {
        char name[TOPIC_NAME_MAX], retention[32], maxmsg[32];
        bus_topic_name(bus, (enum topic_id)i, name, sizeof(name));
        int64_t ret = topic_table[i].retention_ms;
        if (i == TOPIC_EXECUTION_EVENTS)
            ret = cfg->event_retention_days * DAY_MS;
        snprintf(retention, sizeof(retention), "%lld", (long long)ret);
        snprintf(maxmsg, sizeof(maxmsg), "%d", topic_table[i].max_message_bytes);
        nt[i] = rd_kafka_NewTopic_new(name, topic_table[i].partitions,
                                      (int)cfg->kafka_replication_factor, err, sizeof(err));
        if (!nt[i]) {
            log_error(BUS_ROLE, "cannot describe topic", "topic=%s err=\"%s\"", name, err);
            rc = -EINVAL;
            goto out;
        }
        if (rd_kafka_NewTopic_set_config(nt[i], "retention.ms", retention) ||
            rd_kafka_NewTopic_set_config(nt[i], "max.message.bytes", maxmsg)) {
            rc = -ENOMEM;
            goto out;
        }
    }

    opts = rd_kafka_AdminOptions_new(bus->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    q = rd_kafka_queue_new(bus->rk);
    if (!opts || !q) {
        rc = -ENOMEM;
        goto out;
    }
    if (rd_kafka_AdminOptions_set_operation_timeout(opts, 10000, err, sizeof(err)) ||
        rd_kafka_AdminOptions_set_request_timeout(opts, 15000, err, sizeof(err))) {
        log_error(BUS_ROLE, "cannot set admin options", "err=\"%s\"", err);
        rc = -EINVAL;
        goto out;
    }
    rd_kafka_CreateTopics(bus->rk, nt, TOPIC_COUNT, opts, q);
    ev = rd_kafka_queue_poll(q, 20000);
    if (!ev) {
        log_error(BUS_ROLE, "cannot create topics: no answer from the broker", "brokers=%s",
                  cfg->kafka_brokers);
        rc = -ETIMEDOUT;
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        log_error(BUS_ROLE, "cannot create topics", "brokers=%s err=\"%s\"", cfg->kafka_brokers,
                  rd_kafka_event_error_string(ev));
        rc = map_err(rd_kafka_event_error(ev)) == -ETIMEDOUT ? -ETIMEDOUT : -EIO;
        goto out;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t cnt = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
    int created = 0;
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            created++;
        } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *msg = rd_kafka_topic_result_error_string(tr[i]);
            log_error(BUS_ROLE, "cannot create topic", "topic=%s err=\"%s\"",
                      rd_kafka_topic_result_name(tr[i]), msg ? msg : rd_kafka_err2str(e));
            rc = -EIO;
        }
    }
    if (rc)
        goto out;
    rc = wait_topics_visible(bus, deadline);
    if (rc)
        log_error(BUS_ROLE, "topics not visible in metadata", "timeout_ms=%d", ENSURE_TIMEOUT_MS);
    else
        log_info(BUS_ROLE, "topics ready", "created=%d total=%d prefix=\"%s\"", created,
                 TOPIC_COUNT, cfg->topic_prefix);

out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    for (int i = 0; i < TOPIC_COUNT; i++)
        if (nt[i])
            rd_kafka_NewTopic_destroy(nt[i]);
    return rc;
}

const char *bus_msg_header(const struct bus_msg *msg, const char *name)
{
    if (!msg || !name)
        return NULL;
    for (size_t i = 0; i < msg->nheaders; i++)
        if (msg->headers[i].name && strcmp(msg->headers[i].name, name) == 0)
            return msg->headers[i].value;
    return NULL;
}

/* ------------------------------------------------------------ consumer */

/* A polled message and its bus_msg view (header values copied NUL-terminated
 * into arena). */
struct cmsg {
    rd_kafka_message_t *rkm;
    char *arena;
    struct bus_msg msg;
};

struct bus_consumer {
    struct bus *bus;
    char *role;
    char *group;
    char thread_name[32];
    enum topic_id topics[TOPIC_COUNT];
    size_t ntopics;
    bus_handler_fn handler;
    bus_batch_fn batch_handler;
    size_t batch_max;
    int batch_ms;
    void *ctx;
    int latest;

    rd_kafka_t *rk;
    pthread_t thread;
    int started;
    int joined;
    int closed;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;

    struct errlog elog;
    struct retry_policy policy;
    uint64_t rng;

    struct cmsg *batch;
    size_t nbatch;
    int64_t batch_start_ms;

    struct metric *consumed, *failed, *dead, *lag[TOPIC_COUNT];
    int64_t next_lag_ms;
};

static double rand01(struct bus_consumer *c)
{
    /* xorshift64*: jitter only, not security. */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void update_lag(struct bus_consumer *c);

static void maybe_update_lag(struct bus_consumer *c)
{
    int64_t now = now_mono_ms();
    if (now >= c->next_lag_ms) {
        update_lag(c);
        c->next_lag_ms = now + LAG_INTERVAL_MS;
    }
}

/* Sleeps ms unless stop is asked; -ESHUTDOWN when stopping.  The lag gauge
 * keeps being refreshed meanwhile: a consumer stuck in backoff is exactly
 * when it matters. */
static int nap(struct bus_consumer *c, int64_t ms)
{
    int64_t end = now_mono_ms() + ms;
    while (!atomic_load(&c->stop)) {
        int64_t now = now_mono_ms();
        if (now >= end)
            break;
        int64_t until = end - now > 1000 ? now + 1000 : end;
        struct timespec ts;
        deadline_ts(until, &ts);
        pthread_mutex_lock(&c->mu);
        while (!atomic_load(&c->stop))
            if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&c->mu);
        maybe_update_lag(c);
    }
    return atomic_load(&c->stop) ? -ESHUTDOWN : 0;
}

static int cmsg_init(struct bus_consumer *c, rd_kafka_message_t *rkm, struct cmsg *cm)
{
    memset(cm, 0, sizeof(*cm));
    cm->rkm = rkm;
    struct bus_msg *m = &cm->msg;
    m->topic_name = rd_kafka_topic_name(rkm->rkt);
    int t = topic_of_name(c->bus, m->topic_name);
    m->topic = t >= 0 ? (enum topic_id)t : TOPIC_COUNT;
    m->partition = rkm->partition;
    m->offset = rkm->offset;
    m->timestamp_ms = rd_kafka_message_timestamp(rkm, NULL);
    m->key = rkm->key;
    m->key_len = rkm->key_len;
    m->payload = rkm->payload;
    m->len = rkm->len;

    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(rkm, &h) || !h)
        return 0;
    size_t n = rd_kafka_header_cnt(h);
    if (n > BUS_MAX_HEADERS)
        n = BUS_MAX_HEADERS;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const void *val;
        size_t sz;
        if (rd_kafka_header_get_all(h, i, &name, &val, &sz) == 0)
            total += sz + 1;
    }
    cm->arena = malloc(total + 1);
    if (!cm->arena)
        return -ENOMEM;
    char *p = cm->arena;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const void *val;
        size_t sz;
        if (rd_kafka_header_get_all(h, i, &name, &val, &sz))
            continue;
        if (val && sz)
            memcpy(p, val, sz);
        p[sz] = '\0';
        m->headers[m->nheaders].name = name;
        m->headers[m->nheaders].value = p;
        m->nheaders++;
        p += sz + 1;
    }
    return 0;
}

static void cmsg_release(struct cmsg *cm)
{
    free(cm->arena);
    if (cm->rkm)
        rd_kafka_message_destroy(cm->rkm);
    memset(cm, 0, sizeof(*cm));
}

static void batch_clear(struct bus_consumer *c)
{
    for (size_t i = 0; i < c->nbatch; i++)
        cmsg_release(&c->batch[i]);
    c->nbatch = 0;
}

/* Stores offset+1 of every message (max per partition). */
static void store_offsets(struct bus_consumer *c, struct cmsg *const *cms, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    if (!l)
        return;
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_message_t *rkm = cms[i]->rkm;
        const char *t = rd_kafka_topic_name(rkm->rkt);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(l, t, rkm->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(l, t, rkm->partition);
        if (tp->offset < rkm->offset + 1)
            tp->offset = rkm->offset + 1;
    }
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
    if (e)
        errlog_emit(&c->elog, c->role, e, "cannot store offsets", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

/* Builds the DLQ headers: the original ones (minus ours) plus the seven. */
static rd_kafka_headers_t *dlq_headers(struct bus_consumer *c, const struct cmsg *cm,
                                       const char *error, int retries)
{
    static const char *const ours[DLQ_EXTRA_HEADERS] = {
        "original_topic", "original_partition", "original_offset", "consumer_group",
        "error",          "retry_count",        "failed_at"};
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(cm->rkm, &orig) == 0 && orig) {
        h = rd_kafka_headers_copy(orig);
        if (!h)
            return NULL;
        for (int i = 0; i < DLQ_EXTRA_HEADERS; i++)
            rd_kafka_header_remove(h, ours[i]);
    } else {
        h = rd_kafka_headers_new(DLQ_EXTRA_HEADERS);
        if (!h)
            return NULL;
    }
    char part[16], off[24], retry[16], ts[TS_LEN];
    snprintf(part, sizeof(part), "%d", (int)cm->rkm->partition);
    snprintf(off, sizeof(off), "%lld", (long long)cm->rkm->offset);
    snprintf(retry, sizeof(retry), "%d", retries);
    ts_format_us(now_wall_us(), ts);
    const char *vals[DLQ_EXTRA_HEADERS] = {
        cm->msg.topic_name, part, off, c->group, error, retry, ts};
    for (int i = 0; i < DLQ_EXTRA_HEADERS; i++)
        rd_kafka_header_add(h, ours[i], -1, vals[i], -1);
    return h;
}

/* Dead-letters cm and stores its offset once the DLQ copy is delivered;
 * retries the DLQ produce until it succeeds or stop is asked (-ESHUTDOWN). */
static int dead_letter(struct bus_consumer *c, struct cmsg *cm, const char *error, int retries)
{
    char tname[TOPIC_NAME_MAX];
    bus_topic_name(c->bus, TOPIC_DEAD_LETTER_QUEUE, tname, sizeof(tname));
    for (int a = 0;; a++) {
        rd_kafka_headers_t *h = dlq_headers(c, cm, error, retries);
        int rc = h ? publish_raw(c->bus, TOPIC_DEAD_LETTER_QUEUE, tname, cm->rkm->key,
                                 cm->rkm->key_len, cm->rkm->payload, cm->rkm->len, h)
                   : -ENOMEM;
        if (rc == 0) {
            struct cmsg *one = cm;
            store_offsets(c, &one, 1);
            metric_add(c->dead, 1);
            log_warn(c->role, "message dead-lettered",
                     "topic=%s partition=%d offset=%lld retries=%d err=\"%s\"", cm->msg.topic_name,
                     (int)cm->rkm->partition, (long long)cm->rkm->offset, retries, error);
            return 0;
        }
        int64_t d = retry_delay_ms(&c->policy, a, rand01(c));
        log_error(c->role, "cannot publish to the dead-letter queue, retrying",
                  "topic=%s offset=%lld err=%d delay_ms=%lld", cm->msg.topic_name,
                  (long long)cm->rkm->offset, rc, (long long)d);
        if (nap(c, d))
            return -ESHUTDOWN;
    }
}

static int call_one(struct bus_consumer *c, struct cmsg *cm, char *err, size_t errlen)
{
    if (c->handler)
        return c->handler(c->ctx, &cm->msg, err, errlen);
    const struct bus_msg *one = &cm->msg;
    return c->batch_handler(c->ctx, &one, 1, err, errlen);
}

/* The single-message contract; 0 = move on, -ESHUTDOWN = stop. */
static int process_one(struct bus_consumer *c, struct cmsg *cm)
{
    int attempts = (int)c->bus->cfg->kafka_handler_attempts;
    char err[512];
    for (int a = 0;; a++) {
        err[0] = '\0';
        int rc = call_one(c, cm, err, sizeof(err));
        if (rc == 0) {
            store_offsets(c, &cm, 1);
            return 0;
        }
        if (rc == -ESHUTDOWN)
            return -ESHUTDOWN;
        metric_add(c->failed, 1);
        if (!err[0])
            snprintf(err, sizeof(err), "%s", strerror(-rc));
        if (rc == -EBADMSG || a + 1 >= attempts)
            return dead_letter(c, cm, err, a);
        int64_t d = retry_delay_ms(&c->policy, a, rand01(c));
        log_warn(c->role, "handler failed, retrying",
                 "topic=%s partition=%d offset=%lld attempt=%d delay_ms=%lld err=\"%s\"",
                 cm->msg.topic_name, (int)cm->rkm->partition, (long long)cm->rkm->offset, a + 1,
                 (long long)d, err);
        if (nap(c, d))
            return -ESHUTDOWN;
    }
}

/* Handles the collected batch; on repeated failure one message at a time. */
static int flush_batch(struct bus_consumer *c)
{
    int rc = 0;
    if (!c->nbatch)
        return 0;
    size_t n = c->nbatch;
    const struct bus_msg **msgs = calloc(n, sizeof(*msgs));
    struct cmsg **cms = calloc(n, sizeof(*cms));
    if (!msgs || !cms) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        msgs[i] = &c->batch[i].msg;
        cms[i] = &c->batch[i];
    }
    int attempts = (int)c->bus->cfg->kafka_handler_attempts;
    char err[512];
    for (int a = 0; a < attempts; a++) {
        err[0] = '\0';
        rc = c->batch_handler(c->ctx, msgs, n, err, sizeof(err));
        if (rc == 0) {
            store_offsets(c, cms, n);
            goto out;
        }
        if (rc == -ESHUTDOWN)
            goto out;
        metric_add(c->failed, 1);
        log_warn(c->role, "batch handler failed", "n=%zu attempt=%d rc=%d err=\"%s\"", n, a + 1, rc,
                 err);
        if (rc == -EBADMSG || a + 1 >= attempts)
            break;
        if (nap(c, retry_delay_ms(&c->policy, a, rand01(c)))) {
            rc = -ESHUTDOWN;
            goto out;
        }
    }
    log_warn(c->role, "batch keeps failing, handling its messages one by one", "n=%zu", n);
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = process_one(c, cms[i]);

out:
    free(msgs);
    free(cms);
    batch_clear(c);
    return rc == -ESHUTDOWN ? -ESHUTDOWN : 0;
}

/* Drops the collected messages of revoked partitions: not handled, not stored. */
static void batch_drop_revoked(struct bus_consumer *c, const rd_kafka_topic_partition_list_t *l)
{
    size_t kept = 0, dropped = 0;
    for (size_t i = 0; i < c->nbatch; i++) {
        const rd_kafka_message_t *rkm = c->batch[i].rkm;
        int lost = rd_kafka_topic_partition_list_find(l, rd_kafka_topic_name(rkm->rkt),
                                                      rkm->partition) != NULL;
        if (lost) {
            cmsg_release(&c->batch[i]);
            dropped++;
        } else {
            c->batch[kept++] = c->batch[i];
        }
    }
    c->nbatch = kept;
    if (dropped)
        log_info(c->role, "dropped in-flight messages of revoked partitions", "n=%zu", dropped);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct bus_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        log_info(c->role, "partitions assigned", "group=%s n=%d", c->group, parts->cnt);
    } else {
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            batch_drop_revoked(c, parts);
        else
            errlog_emit(&c->elog, c->role, err, "rebalance error", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
        log_info(c->role, "partitions revoked", "group=%s n=%d", c->group, parts ? parts->cnt : 0);
    }
}

static void consumer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct bus_consumer *c = opaque;
    errlog_emit(&c->elog, c->role, err, "kafka consumer error", reason);
}

static void update_lag(struct bus_consumer *c)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(c->rk, &a) || !a)
        return;
    int64_t sum[TOPIC_COUNT] = {0};
    if (a->cnt > 0 && rd_kafka_position(c->rk, a) == 0) {
        for (int i = 0; i < a->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &a->elems[i];
            int t = topic_of_name(c->bus, tp->topic);
            if (t < 0)
                continue;
            int64_t lo = -1, hi = -1;
            if (rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition, &lo, &hi) ||
                hi < 0) {
                if (rd_kafka_query_watermark_offsets(c->rk, tp->topic, tp->partition, &lo, &hi,
                                                     500))
                    continue;
            }
            int64_t pos = tp->offset >= 0 ? tp->offset : lo;
            if (pos >= 0 && hi > pos)
                sum[t] += hi - pos;
        }
    }
    rd_kafka_topic_partition_list_destroy(a);
    for (size_t i = 0; i < c->ntopics; i++)
        metric_set(c->lag[c->topics[i]], sum[c->topics[i]]);
}

static void *consumer_main(void *arg)
{
    struct bus_consumer *c = arg;
    thread_name_set(c->thread_name);
    log_info(c->role, "consumer started", "group=%s topics=%zu", c->group, c->ntopics);
    while (!atomic_load(&c->stop)) {
        maybe_update_lag(c);
        int64_t now = now_mono_ms();
        int timeout = POLL_MS;
        if (c->batch_handler && c->nbatch) {
            int64_t left = c->batch_start_ms + c->batch_ms - now;
            if (left <= 0) {
                if (flush_batch(c) == -ESHUTDOWN)
                    break;
                continue;
            }
            if (left < timeout)
                timeout = (int)left;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, timeout);
        if (!rkm)
            continue;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                errlog_emit(&c->elog, c->role, rkm->err, "kafka consume error",
                            rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        metric_add(c->consumed, 1);
        if (!c->batch_handler) {
            struct cmsg cm;
            int rc = cmsg_init(c, rkm, &cm);
            if (rc == 0)
                rc = process_one(c, &cm);
            cmsg_release(&cm);
            if (rc == -ESHUTDOWN)
                break;
            continue;
        }
        if (!c->nbatch)
            c->batch_start_ms = now_mono_ms();
        if (cmsg_init(c, rkm, &c->batch[c->nbatch])) {
            cmsg_release(&c->batch[c->nbatch]);
            continue; /* not stored: redelivered after a restart */
        }
        c->nbatch++;
        if (c->nbatch >= c->batch_max && flush_batch(c) == -ESHUTDOWN)
            break;
    }
    batch_clear(c); /* collected, never handled: not stored */
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(c->rk);
    if (e)
        log_warn(c->role, "consumer close failed", "err=\"%s\"", rd_kafka_err2str(e));
    c->closed = 1;
    log_info(c->role, "consumer stopped", "group=%s", c->group);
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int bus_consumer_new(struct bus *bus, const struct bus_consumer_opts *opts,
                     struct bus_consumer **out)
{
    if (!bus || !opts || !opts->group || !opts->topics || !opts->ntopics ||
        opts->ntopics > TOPIC_COUNT || (!opts->handler == !opts->batch_handler))
        return -EINVAL;
    if (opts->batch_handler && (opts->batch_max == 0 || opts->batch_ms <= 0))
        return -EINVAL;
    for (size_t i = 0; i < opts->ntopics; i++)
        if ((int)opts->topics[i] < 0 || opts->topics[i] >= TOPIC_COUNT)
            return -EINVAL;

    const struct config *cfg = bus->cfg;
    char err[512], num[32];
    int rc = -ENOMEM;
    rd_kafka_conf_t *conf = NULL;
    struct bus_consumer *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->bus = bus;
    c->role = strdup(opts->role ? opts->role : opts->group);
    /* Groups are namespaced like topics, so deployments sharing a cluster
     * (EXECD_TOPIC_PREFIX) never rebalance each other. */
    size_t glen = strlen(cfg->topic_prefix) + strlen(opts->group) + 1;
    c->group = malloc(glen);
    if (!c->role || !c->group)
        goto fail;
    snprintf(c->group, glen, "%s%s", cfg->topic_prefix, opts->group);
    snprintf(c->thread_name, sizeof(c->thread_name), "%s-consumer", c->role);
    memcpy(c->topics, opts->topics, opts->ntopics * sizeof(opts->topics[0]));
    c->ntopics = opts->ntopics;
    c->handler = opts->handler;
    c->batch_handler = opts->batch_handler;
    c->batch_max = opts->batch_max;
    c->batch_ms = opts->batch_ms;
    c->ctx = opts->ctx;
    c->latest = opts->latest;
    atomic_init(&c->stop, false);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->elog.mu, NULL);
    if (cond_init_mono(&c->cv))
        goto fail_sync;
    c->policy = (struct retry_policy){
        .base_ms = cfg->kafka_retry_backoff_ms,
        .multiplier = 2.0,
        .max_ms =
            cfg->kafka_retry_backoff_ms > RETRY_MAX_MS ? cfg->kafka_retry_backoff_ms : RETRY_MAX_MS,
        .jitter = 0.1,
    };
    c->rng = (uint64_t)mono_us() ^ (uint64_t)(uintptr_t)c ^ 0x9E3779B97F4A7C15ULL;
    if (!c->rng)
        c->rng = 1;
    if (c->batch_handler) {
        c->batch = calloc(c->batch_max, sizeof(*c->batch));
        if (!c->batch)
            goto fail_cv;
    }

    char labels[256];
    snprintf(labels, sizeof(labels), "role=\"%s\"", c->role);
    c->consumed = metrics_get(bus->metrics, METRIC_COUNTER, "execd_kafka_consumed_total",
                              "Messages consumed from Kafka", labels);
    c->failed = metrics_get(bus->metrics, METRIC_COUNTER, "execd_kafka_handler_failed_total",
                            "Handler calls that failed", labels);
    c->dead = metrics_get(bus->metrics, METRIC_COUNTER, "execd_kafka_dead_lettered_total",
                          "Messages sent to the dead-letter queue", labels);
    for (size_t i = 0; i < c->ntopics; i++) {
        snprintf(labels, sizeof(labels), "group=\"%s\",topic=\"%s\"", c->group,
                 topic_table[c->topics[i]].name);
        c->lag[c->topics[i]] = metrics_get(
            bus->metrics, METRIC_GAUGE, "execd_kafka_consumer_lag",
            "Messages behind the high watermark (sum over assigned partitions)", labels);
    }

    conf = rd_kafka_conf_new();
    if (!conf)
        goto fail_batch;
    char client_id[128];
    snprintf(client_id, sizeof(client_id), "%s-%s", cfg->service_name, c->role);
    int64_t session = cfg->kafka_session_timeout_ms;
    int64_t heartbeat = session / 3 < 2000 ? session / 3 : 2000;
    rc = common_conf(conf, cfg, client_id, err, sizeof(err));
    rc = rc ? rc : cset(conf, "group.id", c->group, err, sizeof(err));
    rc = rc ? rc : cset(conf, "enable.auto.commit", "true", err, sizeof(err));
    rc = rc ? rc : cset(conf, "enable.auto.offset.store", "false", err, sizeof(err));
    rc = rc ? rc : cset(conf, "auto.commit.interval.ms", "500", err, sizeof(err));
    rc =
        rc ? rc : cset(conf, "partition.assignment.strategy", "range,roundrobin", err, sizeof(err));
    snprintf(num, sizeof(num), "%lld", (long long)session);
    rc = rc ? rc : cset(conf, "session.timeout.ms", num, err, sizeof(err));
    snprintf(num, sizeof(num), "%lld", (long long)heartbeat);
    rc = rc ? rc : cset(conf, "heartbeat.interval.ms", num, err, sizeof(err));
    rc = rc ? rc : cset(conf, "fetch.wait.max.ms", "10", err, sizeof(err));
    rc = rc ? rc : cset(conf, "fetch.min.bytes", "1", err, sizeof(err));
    rc = rc ? rc : cset(conf, "fetch.error.backoff.ms", "50", err, sizeof(err));
    rc = rc ? rc : cset(conf, "enable.partition.eof", "false", err, sizeof(err));
    rc = rc ? rc
            : cset(conf, "auto.offset.reset", c->latest ? "latest" : "earliest", err, sizeof(err));
    rc = rc ? rc : apply_env_props(conf, err, sizeof(err));
    if (rc)
        goto fail_conf;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, consumer_error_cb);
    rd_kafka_conf_set_opaque(conf, c);

    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!c->rk) {
        log_error(c->role, "cannot create kafka consumer", "group=%s err=\"%s\"", c->group, err);
        rc = -EINVAL;
        goto fail_conf;
    }
    rd_kafka_poll_set_consumer(c->rk);
    *out = c;
    return 0;

fail_conf:
    rd_kafka_conf_destroy(conf);
fail_batch:
    free(c->batch);
fail_cv:
    pthread_cond_destroy(&c->cv);
fail_sync:
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->elog.mu);
fail:
    free(c->role);
    free(c->group);
    free(c);
    return rc;
}

int bus_consumer_start(struct bus_consumer *c)
{
    if (!c || c->started)
        return c ? 0 : -EINVAL;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->ntopics);
    if (!l)
        return -ENOMEM;
    for (size_t i = 0; i < c->ntopics; i++) {
        char name[TOPIC_NAME_MAX];
        bus_topic_name(c->bus, c->topics[i], name, sizeof(name));
        rd_kafka_topic_partition_list_add(l, name, RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        log_error(c->role, "cannot subscribe", "group=%s err=\"%s\"", c->group,
                  rd_kafka_err2str(e));
        return -EIO;
    }
    if (pthread_create(&c->thread, NULL, consumer_main, c)) {
        rd_kafka_unsubscribe(c->rk);
        return -EAGAIN;
    }
    c->started = 1;
    return 0;
}

void bus_consumer_stop(struct bus_consumer *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, true);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int bus_consumer_join(struct bus_consumer *c, int64_t deadline_ms)
{
    if (!c)
        return -EINVAL;
    bus_consumer_stop(c);
    if (!c->started) {
        if (!c->closed && c->rk) {
            rd_kafka_consumer_close(c->rk);
            c->closed = 1;
        }
        return 0;
    }
    if (c->joined)
        return 0;
    struct timespec ts;
    deadline_ts(deadline_ms, &ts);
    pthread_mutex_lock(&c->mu);
    while (!c->done)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    int done = c->done;
    pthread_mutex_unlock(&c->mu);
    if (!done) {
        log_warn(c->role, "consumer did not stop before the deadline", "group=%s", c->group);
        return -ETIMEDOUT;
    }
    pthread_join(c->thread, NULL);
    c->joined = 1;
    return 0;
}

void bus_consumer_free(struct bus_consumer *c)
{
    if (!c)
        return;
    if (c->started && !c->joined) {
        bus_consumer_stop(c);
        pthread_join(c->thread, NULL); /* never detached: wait it out */
        c->joined = 1;
    }
    if (c->rk) {
        if (!c->closed)
            rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    batch_clear(c);
    free(c->batch);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->elog.mu);
    free(c->role);
    free(c->group);
    free(c);
}
