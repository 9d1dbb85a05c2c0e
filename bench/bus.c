/*
 * bench/bus.c — the bus and the event store against the local services.
 *
 *  1. produce→consume hop latency (p50/p99/max) of BENCH_HOPS messages
 *     (default 2000) through our layer (bus_publish + a bus consumer), beside
 *     raw librdkafka with the same settings (idempotent producer, acks=all,
 *     linger.ms=1, consumer fetch.wait.max.ms=10), in the same run.
 *  2. event-store ingestion (bench_store_ingestion): BENCH_EVENTS events
 *     (default 5000) are published with bus_publish_event to a fresh prefix,
 *     then the store role (role_find("store"), its public lifecycle) is
 *     started on a fresh database and timed until every event is in
 *     `events`; beside store_insert_many over batches of
 *     EXECD_STORE_BATCH_SIZE and raw mongoc insert_many of the same documents.
 *
 * Addresses come from the usual EXECD_KAFKA_BROKERS / EXECD_MONGO_URI.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <mongoc/mongoc.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "store.h"
#include "util.h"

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : def;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct lat {
    int64_t *us;
    size_t n, cap;
    pthread_mutex_t mu;
};

static void lat_add(struct lat *l, int64_t us)
{
    pthread_mutex_lock(&l->mu);
    if (l->n < l->cap)
        l->us[l->n++] = us;
    pthread_mutex_unlock(&l->mu);
}

static size_t lat_count(struct lat *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static double pct(const int64_t *sorted, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

/* Payload: "<send mono us> <seq>". Measuring starts at seq >= 0; warm-up uses -1. */
static int64_t payload_sent_us(const char *p, size_t len, long *seq)
{
    char buf[64];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    long long t = 0;
    long s = -1;
    if (sscanf(buf, "%lld %ld", &t, &s) != 2)
        return -1;
    *seq = s;
    return t;
}

/* ---------------------------------------------------------------- ours */

static int hop_handler(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct lat *l = ctx;
    int64_t now = mono_us();
    long seq;
    int64_t t = payload_sent_us(msg->payload, msg->len, &seq);
    if (t > 0 && seq >= 0)
        lat_add(l, now - t);
    else if (t > 0)
        lat_add(l, -1); /* warm-up marker */
    return 0;
}

static int wait_count(struct lat *l, size_t want, int64_t timeout_ms)
{
    int64_t deadline = now_mono_ms() + timeout_ms;
    while (lat_count(l) < want) {
        if (now_mono_ms() > deadline)
            return -ETIMEDOUT;
        sleep_ms(1);
    }
    return 0;
}

static int bench_ours(const struct config *cfg, struct metrics *m, long hops, struct lat *l)
{
    struct bus *bus = NULL;
    struct bus_consumer *c = NULL;
    int rc = bus_new(cfg, m, &bus);
    if (rc || (rc = bus_ensure_topics(bus)))
        goto out;
    static const enum topic_id topics[] = {TOPIC_SYSTEM_EVENTS};
    struct bus_consumer_opts o = {.role = "bench",
                                  .group = "bench-hop",
                                  .topics = topics,
                                  .ntopics = 1,
                                  .handler = hop_handler,
                                  .ctx = l};
    if ((rc = bus_consumer_new(bus, &o, &c)) || (rc = bus_consumer_start(c)))
        goto out;
    char p[64];
    /* Warm-up until the consumer is assigned and has consumed one message. */
    snprintf(p, sizeof(p), "%lld -1", (long long)mono_us());
    if ((rc = bus_publish(bus, TOPIC_SYSTEM_EVENTS, "warm", p, strlen(p), NULL, 0)) ||
        (rc = wait_count(l, 1, 20000)))
        goto out;
    pthread_mutex_lock(&l->mu);
    l->n = 0;
    pthread_mutex_unlock(&l->mu);
    for (long i = 0; i < hops; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%ld", i % 97);
        snprintf(p, sizeof(p), "%lld %ld", (long long)mono_us(), i);
        if ((rc = bus_publish(bus, TOPIC_SYSTEM_EVENTS, key, p, strlen(p), NULL, 0)))
            goto out;
    }
    rc = wait_count(l, (size_t)hops, 20000);
out:
    if (c) {
        bus_consumer_join(c, now_mono_ms() + 10000);
        bus_consumer_free(c);
    }
    bus_free(bus);
    return rc;
}

/* ---------------------------------------------------------------- raw */

static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *op)
{
    (void)rk;
    (void)op;
    atomic_store((atomic_int *)m->_private, m->err ? -1 : 1);
}

struct raw_consumer {
    rd_kafka_t *rk;
    struct lat *l;
    atomic_bool stop;
};

static void *raw_consume(void *arg)
{
    struct raw_consumer *rc = arg;
    while (!atomic_load(&rc->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rc->rk, 100);
        if (!m)
            continue;
        int64_t now = mono_us();
        if (!m->err) {
            long seq;
            int64_t t = payload_sent_us(m->payload, m->len, &seq);
            if (t > 0)
                lat_add(rc->l, seq >= 0 ? now - t : -1);
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

static rd_kafka_t *raw_new(rd_kafka_type_t type, const struct config *cfg, const char *group)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", cfg->kafka_brokers, err, sizeof(err));
    rd_kafka_conf_set(c, "socket.nagle.disable", "true", err, sizeof(err));
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set(c, "enable.idempotence", "true", err, sizeof(err));
        rd_kafka_conf_set(c, "acks", "all", err, sizeof(err));
        rd_kafka_conf_set(c, "linger.ms", "1", err, sizeof(err));
        rd_kafka_conf_set(c, "compression.type", "none", err, sizeof(err));
        rd_kafka_conf_set_dr_msg_cb(c, raw_dr);
    } else {
        rd_kafka_conf_set(c, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set(c, "auto.offset.reset", "earliest", err, sizeof(err));
        rd_kafka_conf_set(c, "enable.auto.offset.store", "false", err, sizeof(err));
        rd_kafka_conf_set(c, "auto.commit.interval.ms", "500", err, sizeof(err));
        rd_kafka_conf_set(c, "partition.assignment.strategy", "range,roundrobin", err, sizeof(err));
        rd_kafka_conf_set(c, "fetch.wait.max.ms", "10", err, sizeof(err));
        rd_kafka_conf_set(c, "fetch.min.bytes", "1", err, sizeof(err));
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "bench: rd_kafka_new: %s\n", err);
        rd_kafka_conf_destroy(c);
    }
    return rk;
}

static int raw_produce_wait(rd_kafka_t *p, const char *topic, const char *key, const char *v)
{
    atomic_int done = 0;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)(uintptr_t)v, strlen(v)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(&done), RD_KAFKA_V_END);
    if (e)
        return -EIO;
    while (!atomic_load(&done))
        rd_kafka_poll(p, 10);
    return atomic_load(&done) > 0 ? 0 : -EIO;
}

static int bench_raw(const struct config *cfg, struct metrics *m, long hops, struct lat *l)
{
    /* Topics made by our layer (same table); everything after is raw. */
    struct bus *bus = NULL;
    int rc = bus_new(cfg, m, &bus);
    if (rc || (rc = bus_ensure_topics(bus))) {
        bus_free(bus);
        return rc ? rc : -EIO;
    }
    char topic[160];
    bus_topic_name(bus, TOPIC_SYSTEM_EVENTS, topic, sizeof(topic));
    bus_free(bus);

    rd_kafka_t *p = raw_new(RD_KAFKA_PRODUCER, cfg, NULL);
    rd_kafka_t *c = raw_new(RD_KAFKA_CONSUMER, cfg, "bench-hop-raw");
    if (!p || !c)
        return -EIO;
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(c, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    struct raw_consumer rcon = {.rk = c, .l = l};
    atomic_init(&rcon.stop, false);
    pthread_t th;
    pthread_create(&th, NULL, raw_consume, &rcon);
    char v[64];
    snprintf(v, sizeof(v), "%lld -1", (long long)mono_us());
    rc = raw_produce_wait(p, topic, "warm", v);
    if (!rc)
        rc = wait_count(l, 1, 20000);
    pthread_mutex_lock(&l->mu);
    l->n = 0;
    pthread_mutex_unlock(&l->mu);
    for (long i = 0; !rc && i < hops; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%ld", i % 97);
        snprintf(v, sizeof(v), "%lld %ld", (long long)mono_us(), i);
        rc = raw_produce_wait(p, topic, key, v);
    }
    if (!rc)
        rc = wait_count(l, (size_t)hops, 20000);
    atomic_store(&rcon.stop, true);
    pthread_join(th, NULL);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_flush(p, 5000);
    rd_kafka_destroy(p);
    return rc;
}

/* ------------------------------------------------- store ingestion hook */

struct pub_job {
    struct bus *bus;
    long from, to;
    char (*ids)[UUID_LEN];
    atomic_int *failed;
};

static struct event *bench_event(void)
{
    char agg[UUID_LEN];
    uuid_v4(agg);
    struct event *ev = event_new(EV_execution_started, agg);
    if (ev && (event_set_str(ev, "execution_id", agg) || event_set_str(ev, "pod_name", "exec-x"))) {
        event_free(ev);
        ev = NULL;
    }
    return ev;
}

static void *pub_main(void *arg)
{
    struct pub_job *j = arg;
    for (long i = j->from; i < j->to; i++) {
        struct event *ev = bench_event();
        if (!ev || bus_publish_event(j->bus, ev))
            atomic_fetch_add(j->failed, 1);
        event_free(ev);
    }
    return NULL;
}

/* The stored shape is the store role's business; the baselines insert the
 * encoded events as they are. */
static cJSON **bench_docs(long n)
{
    cJSON **docs = calloc((size_t)n, sizeof(*docs));
    for (long i = 0; docs && i < n; i++) {
        struct event *ev = bench_event();
        char *json = NULL, err[128];
        if (!ev || event_encode(ev, &json, err, sizeof(err)))
            abort();
        docs[i] = cJSON_Parse(json);
        free(json);
        event_free(ev);
    }
    return docs;
}

static char *uri_with_db(const char *uri, const char *db)
{
    const char *hosts = strstr(uri, "://");
    hosts = hosts ? hosts + 3 : uri;
    const char *slash = strchr(hosts, '/');
    const char *q = strchr(hosts, '?');
    size_t base = slash ? (size_t)(slash - uri) : q ? (size_t)(q - uri) : strlen(uri);
    size_t len = base + strlen(db) + (q ? strlen(q) : 0) + 4;
    char *out = malloc(len);
    snprintf(out, len, "%.*s/%s%s", (int)base, uri, db, q ? q : "");
    return out;
}

/* Current value of an unlabelled counter, read from the rendered registry. */
static int64_t metric_value(struct metrics *m, const char *name)
{
    struct strbuf sb = {0};
    int64_t v = 0;
    size_t nl = strlen(name);
    if (metrics_render(m, &sb) == 0 && sb.s) {
        for (const char *p = sb.s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
            if (strncmp(p, name, nl) == 0 && p[nl] == ' ')
                v = strtoll(p + nl + 1, NULL, 10);
    }
    sb_release(&sb);
    return v;
}

struct ingest_result {
    double role_eps, port_eps, raw_eps;
    double init_ms, first_ms, total_ms;
    int role_ok;
};

static int bench_store_ingestion(const struct config *base, struct metrics *m, long k,
                                 struct ingest_result *res)
{
    char tag[UUID_LEN], pfx[64], db[64];
    uuid_v4(tag);
    tag[8] = '\0';
    snprintf(pfx, sizeof(pfx), "bench-%s-", tag);
    snprintf(db, sizeof(db), "bench_%s", tag);
    struct config cfg = *base;
    cfg.topic_prefix = pfx;
    cfg.mongo_uri = uri_with_db(base->mongo_uri, db);
    atomic_bool stopping = false;
    struct bus *bus = NULL;
    struct store *store = NULL;
    int rc = bus_new(&cfg, m, &bus);
    if (rc || (rc = bus_ensure_topics(bus)) || (rc = store_new(&cfg, &store)))
        goto out;

    /* Backlog of k events (8 publisher threads: bus_publish is synchronous). */
    atomic_int failed = 0;
    pthread_t th[8];
    struct pub_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (struct pub_job){bus, k * i / 8, k * (i + 1) / 8, NULL, &failed};
        pthread_create(&th[i], NULL, pub_main, &jobs[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&failed)) {
        fprintf(stderr, "bench: %d events not published\n", atomic_load(&failed));
        rc = -EIO;
        goto out;
    }

    /* (a) the store role, through its public lifecycle. */
    const struct role *role = role_find("store");
    if (role) {
        struct host host = {.role = "store",
                            .cfg = &cfg,
                            .bus = bus,
                            .store = store,
                            .metrics = m,
                            .stopping = &stopping};
        void *state = NULL;
        int64_t t0 = mono_us();
        if ((rc = role->init(&host, &state)) || (rc = role->start(state)))
            goto role_out;
        res->init_ms = (double)(mono_us() - t0) / 1000.0;
        /* Progress from the role's own counter (counting documents on FerretDB
         * is slow enough to distort the figure); the total is checked after. */
        int64_t n = 0, deadline = now_mono_ms() + 120000;
        while (n < k && now_mono_ms() < deadline) {
            n = metric_value(m, "execd_store_events_stored_total");
            if (n > 0 && res->first_ms == 0)
                res->first_ms = (double)(mono_us() - t0) / 1000.0;
            if (n < k)
                sleep_ms(2);
        }
        int64_t dt = mono_us() - t0;
        if (store_count(store, "events", NULL, &n) || n != k) {
            fprintf(stderr, "bench: events holds %lld documents, expected %ld\n", (long long)n, k);
            n = 0;
        }
        res->role_ok = n >= k;
        res->role_eps = (double)n / ((double)dt / 1e6);
        res->total_ms = (double)dt / 1000.0;
    role_out:
        if (state) {
            role->stop(state);
            role->join(state, now_mono_ms() + 10000);
            role->destroy(state);
        }
        if (rc)
            goto out;
    }

    /* (b) store_insert_many over batches, (c) raw mongoc insert_many, both
     * into collections with the event store's indexes (as in
     * src/roles/store/store_role.c) so the comparison is like for like. */
    static const struct store_index idx[] = {
        {.name = "event_id_unique", .keys = "{\"event_id\":1}", .unique = true},
        {.name = "aggregate_id_timestamp", .keys = "{\"aggregate_id\":1,\"timestamp\":1}"},
        {.name = "event_type_1", .keys = "{\"event_type\":1}"},
        {.name = "metadata_user_id_1", .keys = "{\"metadata.user_id\":1}"},
        {.name = "timestamp_1", .keys = "{\"timestamp\":1}"},
    };
    if ((rc = store_create_indexes(store, "port_events", idx, 5)) ||
        (rc = store_create_indexes(store, "raw_events", idx, 5)))
        goto out;
    size_t batch = (size_t)cfg.store_batch_size;
    cJSON **docs = bench_docs(k);
    int64_t t0 = mono_us();
    for (long i = 0; i < k; i += (long)batch) {
        size_t n = (size_t)(k - i) < batch ? (size_t)(k - i) : batch, ins = 0, dup = 0;
        if ((rc = store_insert_many(store, "port_events", (const cJSON *const *)docs + i, n, &ins,
                                    &dup)))
            break;
    }
    res->port_eps = (double)k / ((double)(mono_us() - t0) / 1e6);

    mongoc_client_t *cl = mongoc_client_new(cfg.mongo_uri);
    mongoc_collection_t *coll = mongoc_client_get_collection(cl, db, "raw_events");
    const bson_t **bs = calloc((size_t)k, sizeof(*bs));
    for (long i = 0; i < k; i++) {
        char *s = cJSON_PrintUnformatted(docs[i]);
        bs[i] = bson_new_from_json((const uint8_t *)s, -1, NULL);
        free(s);
    }
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
    t0 = mono_us();
    for (long i = 0; i < k; i += (long)batch) {
        size_t n = (size_t)(k - i) < batch ? (size_t)(k - i) : batch;
        bson_error_t be;
        if (!mongoc_collection_insert_many(coll, bs + i, n, opts, NULL, &be)) {
            fprintf(stderr, "bench: raw insert_many: %s\n", be.message);
            break;
        }
    }
    res->raw_eps = (double)k / ((double)(mono_us() - t0) / 1e6);
    bson_destroy(opts);
    for (long i = 0; i < k; i++) {
        bson_destroy((bson_t *)(uintptr_t)bs[i]);
        cJSON_Delete(docs[i]);
    }
    free(bs);
    free(docs);
    mongoc_database_t *d = mongoc_client_get_database(cl, db);
    mongoc_database_drop(d, NULL);
    mongoc_database_destroy(d);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(cl);
out:
    store_free(store);
    bus_free(bus);
    free(cfg.mongo_uri);
    return rc;
}

/* ---------------------------------------------------------------- main */

static void summary(const char *name, struct lat *l, double *p50, double *p99)
{
    qsort(l->us, l->n, sizeof(l->us[0]), cmp_i64);
    *p50 = pct(l->us, l->n, 0.50);
    *p99 = pct(l->us, l->n, 0.99);
    printf("  %-28s %8zu %9.2f %9.2f %9.2f\n", name, l->n, *p50, *p99,
           l->n ? (double)l->us[l->n - 1] / 1000.0 : 0.0);
}

int main(int argc, char **argv)
{
    struct config cfg;
    char err[256];
    if (config_load(&cfg, argc, argv, err, sizeof(err))) {
        fprintf(stderr, "bench: %s\n", err);
        return 2;
    }
    log_setup(getenv("BENCH_LOG_LEVEL") ? getenv("BENCH_LOG_LEVEL") : "warn", "logfmt");
    event_set_service("execd-bench", EXECD_VERSION);
    mongoc_init();
    long hops = env_long("BENCH_HOPS", 2000);
    long k = env_long("BENCH_EVENTS", 5000);
    struct metrics *m = metrics_new();

    char tag[UUID_LEN], pfx_ours[64], pfx_raw[64];
    uuid_v4(tag);
    tag[8] = '\0';
    snprintf(pfx_ours, sizeof(pfx_ours), "bench-%s-a-", tag);
    snprintf(pfx_raw, sizeof(pfx_raw), "bench-%s-b-", tag);
    struct config c1 = cfg, c2 = cfg;
    c1.topic_prefix = pfx_ours;
    c2.topic_prefix = pfx_raw;

    struct lat ours = {.us = calloc((size_t)hops + 16, 8), .cap = (size_t)hops + 16};
    struct lat raw = {.us = calloc((size_t)hops + 16, 8), .cap = (size_t)hops + 16};
    pthread_mutex_init(&ours.mu, NULL);
    pthread_mutex_init(&raw.mu, NULL);
    int rc1 = bench_ours(&c1, m, hops, &ours);
    int rc2 = bench_raw(&c2, m, hops, &raw);
    printf("produce -> consume hop, %ld messages, loopback (ms)\n", hops);
    printf("  %-28s %8s %9s %9s %9s\n", "", "n", "p50", "p99", "max");
    double op50, op99, rp50, rp99;
    summary("execd bus", &ours, &op50, &op99);
    summary("raw librdkafka (baseline)", &raw, &rp50, &rp99);
    printf("  %-28s %8s %8.2fx %8.2fx\n", "ratio bus/raw", "", rp50 > 0 ? op50 / rp50 : 0,
           rp99 > 0 ? op99 / rp99 : 0);
    if (rc1 || rc2)
        printf("  (errors: bus=%d raw=%d)\n", rc1, rc2);

    struct ingest_result ir = {0};
    int rc3 = bench_store_ingestion(&cfg, m, k, &ir);
    printf("\nevent-store ingestion, %ld events, batch %lld (events/s)\n", k,
           (long long)cfg.store_batch_size);
    printf("  %-44s %10.0f%s\n", "store role: Kafka backlog -> events", ir.role_eps,
           ir.role_ok ? "" : " (incomplete)");
    printf("  %-44s %10s init %.0f ms, first event %.0f ms, all %.0f ms\n", "", "", ir.init_ms,
           ir.first_ms, ir.total_ms);
    printf("  %-44s %10.0f\n", "store_insert_many (port)", ir.port_eps);
    printf("  %-44s %10.0f\n", "raw mongoc insert_many (baseline)", ir.raw_eps);
    printf("  %-44s %9.2fx %9.2fx\n", "ratio role/raw, port/raw",
           ir.raw_eps > 0 ? ir.role_eps / ir.raw_eps : 0,
           ir.raw_eps > 0 ? ir.port_eps / ir.raw_eps : 0);
    if (rc3)
        printf("  (error: %d)\n", rc3);

    free(ours.us);
    free(raw.us);
    metrics_free(m);
    mongoc_cleanup();
    config_release(&cfg);
    return rc1 || rc2 || rc3 ? 1 : 0;
}
