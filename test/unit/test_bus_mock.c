/*
 * test_bus_mock.c — the bus consumer's handler contract and health against
 * librdkafka's in-process mock cluster (no servers): retries with backoff,
 * dead-lettering with its headers, -ESHUTDOWN leaving the offset unstored,
 * batch fallback to single messages, prompt stop during a backoff, and
 * bus_health turning -EIO when the broker goes down.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "bus.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

static struct config cfg;
static rd_kafka_t *mock_owner;
static rd_kafka_mock_cluster_t *mock;
static char *saved_brokers, *saved_prefix;

/* ------------------------------------------------------------ recording */

#define MAX_SEEN 256
struct seen {
    pthread_mutex_t mu;
    int calls;
    int msgs;
    char payload[MAX_SEEN][64];
    char headers[MAX_SEEN][512]; /* "name=value;..." */
    int n;
    int fail_first;     /* fail this many calls with rc */
    int rc;             /* error returned while failing */
    const char *poison; /* batch: any batch holding it fails; alone, rc */
};

static struct seen *seen_new(void)
{
    struct seen *s = calloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void seen_free(struct seen *s)
{
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void record(struct seen *s, const struct bus_msg *m)
{
    if (s->n >= MAX_SEEN)
        return;
    snprintf(s->payload[s->n], sizeof(s->payload[0]), "%.*s", (int)m->len, m->payload);
    size_t off = 0;
    for (size_t i = 0; i < m->nheaders; i++)
        off += (size_t)snprintf(s->headers[s->n] + off, sizeof(s->headers[0]) - off, "%s=%s;",
                                m->headers[i].name, m->headers[i].value);
    s->n++;
}

static int count_of(struct seen *s, int *calls)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n;
    if (calls)
        *calls = s->calls;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int handler(void *ctx, const struct bus_msg *m, char *err, size_t errlen)
{
    struct seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    int call = s->calls++;
    int rc = call < s->fail_first ? s->rc : 0;
    if (rc)
        snprintf(err, errlen, "induced failure %d", call + 1);
    else
        record(s, m);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int batch_handler(void *ctx, const struct bus_msg *const *msgs, size_t n, char *err,
                         size_t errlen)
{
    struct seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->calls++;
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (s->poison && msgs[i]->len == strlen(s->poison) &&
            memcmp(msgs[i]->payload, s->poison, msgs[i]->len) == 0)
            bad = 1;
    if (bad) {
        snprintf(err, errlen, "poison in batch of %zu", n);
    } else {
        for (size_t i = 0; i < n; i++)
            record(s, msgs[i]);
        s->msgs += (int)n;
    }
    pthread_mutex_unlock(&s->mu);
    return bad ? (n == 1 ? s->rc : -EIO) : 0;
}

static int wait_n(struct seen *s, int n, int64_t timeout_ms)
{
    int64_t dl = now_mono_ms() + timeout_ms;
    while (count_of(s, NULL) < n && now_mono_ms() < dl)
        sleep_ms(5);
    return count_of(s, NULL);
}

/* ------------------------------------------------------------ fixture */

/* A fresh topic prefix (every topic of the table) per test, so dead letters and
 * group offsets of one test are never seen by another. */
static void new_prefix(void)
{
    static char prefix[32];
    char tag[UUID_LEN];
    uuid_v4(tag);
    snprintf(prefix, sizeof(prefix), "m%.8s-", tag);
    for (int i = 0; i < TOPIC_COUNT; i++) {
        char name[128];
        snprintf(name, sizeof(name), "%s%s", prefix, topic_table[i].name);
        assert_int_equal(rd_kafka_mock_topic_create(mock, name, topic_table[i].partitions, 1), 0);
    }
    cfg.topic_prefix = prefix;
}

static int setup(void **state)
{
    (void)state;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
    mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(mock_owner);
    mock = rd_kafka_mock_cluster_new(mock_owner, 1);
    assert_non_null(mock);
    saved_brokers = cfg.kafka_brokers;
    saved_prefix = cfg.topic_prefix;
    cfg.kafka_brokers = (char *)(uintptr_t)rd_kafka_mock_cluster_bootstraps(mock);
    new_prefix();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cfg.kafka_brokers = saved_brokers;
    cfg.topic_prefix = saved_prefix;
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_owner);
    return 0;
}

struct rig {
    struct metrics *metrics;
    struct bus *bus;
    struct bus_consumer *c;   /* under test */
    struct bus_consumer *dlq; /* reads the dead-letter queue */
    struct seen *seen, *dead;
};

static void rig_start(struct rig *r, const char *group, enum topic_id topic, int batch)
{
    memset(r, 0, sizeof(*r));
    new_prefix();
    r->metrics = metrics_new();
    assert_int_equal(bus_new(&cfg, r->metrics, &r->bus), 0);
    r->seen = seen_new();
    r->dead = seen_new();
    static enum topic_id topics[1];
    topics[0] = topic;
    struct bus_consumer_opts o = {
        .role = "t", .group = group, .topics = topics, .ntopics = 1, .ctx = r->seen};
    if (batch) {
        o.batch_handler = batch_handler;
        o.batch_max = 50;
        o.batch_ms = 200;
    } else {
        o.handler = handler;
    }
    assert_int_equal(bus_consumer_new(r->bus, &o, &r->c), 0);
    static const enum topic_id dlq_topic[] = {TOPIC_DEAD_LETTER_QUEUE};
    char g[64];
    snprintf(g, sizeof(g), "%s-dlq-reader", group);
    struct bus_consumer_opts d = {.role = "d",
                                  .group = g,
                                  .topics = dlq_topic,
                                  .ntopics = 1,
                                  .handler = handler,
                                  .ctx = r->dead};
    assert_int_equal(bus_consumer_new(r->bus, &d, &r->dlq), 0);
    assert_int_equal(bus_consumer_start(r->dlq), 0);
}

static void rig_stop(struct rig *r)
{
    if (r->c) {
        assert_int_equal(bus_consumer_join(r->c, now_mono_ms() + 10000), 0);
        bus_consumer_free(r->c);
    }
    assert_int_equal(bus_consumer_join(r->dlq, now_mono_ms() + 10000), 0);
    bus_consumer_free(r->dlq);
    bus_free(r->bus);
    metrics_free(r->metrics);
    seen_free(r->seen);
    seen_free(r->dead);
}

static void publish(struct rig *r, enum topic_id t, const char *key, const char *payload)
{
    const struct bus_header h[] = {{"event_type", "unit_test"}, {"x-trace", "abc"}};
    assert_int_equal(bus_publish(r->bus, t, key, payload, strlen(payload), h, 2), 0);
}

/* ------------------------------------------------------------ tests */

static void test_retry_then_success_no_dlq(void **state)
{
    (void)state;
    struct rig r;
    int64_t saved = cfg.kafka_retry_backoff_ms;
    cfg.kafka_retry_backoff_ms = 20;
    rig_start(&r, "g-retry-ok", TOPIC_SAGA_COMMANDS, 0);
    r.seen->fail_first = 2;
    r.seen->rc = -EIO;
    assert_int_equal(bus_consumer_start(r.c), 0);
    int64_t t0 = now_mono_ms();
    publish(&r, TOPIC_SAGA_COMMANDS, "k1", "hello");
    assert_int_equal(wait_n(r.seen, 1, 10000), 1);
    int calls;
    count_of(r.seen, &calls);
    assert_int_equal(calls, 3);                      /* 2 failures + success, attempts = 3 */
    assert_true(now_mono_ms() - t0 >= 20 + 40 - 10); /* backoff 20 then 40 ms (±10 %) */
    assert_string_equal(r.seen->payload[0], "hello");
    assert_non_null(strstr(r.seen->headers[0], "event_type=unit_test;"));
    sleep_ms(300);
    assert_int_equal(count_of(r.dead, NULL), 0);
    rig_stop(&r);
    cfg.kafka_retry_backoff_ms = saved;
}

static void test_exhausted_retries_dead_letter_with_headers(void **state)
{
    (void)state;
    struct rig r;
    int64_t saved = cfg.kafka_retry_backoff_ms;
    cfg.kafka_retry_backoff_ms = 5;
    rig_start(&r, "g-retry-dlq", TOPIC_USER_EVENTS, 0);
    r.seen->fail_first = 3;
    r.seen->rc = -EIO;
    assert_int_equal(bus_consumer_start(r.c), 0);
    publish(&r, TOPIC_USER_EVENTS, "user-7", "payload-A");
    publish(&r, TOPIC_USER_EVENTS, "user-7", "payload-B"); /* same partition, after A */
    assert_int_equal(wait_n(r.dead, 1, 10000), 1);
    assert_int_equal(wait_n(r.seen, 1, 10000), 1); /* the consumer moved on to B */
    assert_string_equal(r.seen->payload[0], "payload-B");
    assert_string_equal(r.dead->payload[0], "payload-A");
    const char *h = r.dead->headers[0];
    char want[128];
    snprintf(want, sizeof(want), "original_topic=%suser_events;", cfg.topic_prefix);
    assert_non_null(strstr(h, want));
    assert_non_null(strstr(h, "event_type=unit_test;x-trace=abc;")); /* originals kept */
    assert_non_null(strstr(h, "original_partition="));
    assert_non_null(strstr(h, "original_offset=0;"));
    snprintf(want, sizeof(want), "consumer_group=%sg-retry-dlq;", cfg.topic_prefix);
    assert_non_null(strstr(h, want));
    assert_non_null(strstr(h, "error=induced failure 3;"));
    assert_non_null(strstr(h, "retry_count=2;"));
    assert_non_null(strstr(h, "failed_at=20"));
    rig_stop(&r);
    cfg.kafka_retry_backoff_ms = saved;
}

static void test_ebadmsg_dead_letters_at_once(void **state)
{
    (void)state;
    struct rig r;
    int64_t saved = cfg.kafka_retry_backoff_ms;
    cfg.kafka_retry_backoff_ms = 5000; /* a retry would show as a long wait */
    rig_start(&r, "g-badmsg", TOPIC_NOTIFICATION_EVENTS, 0);
    r.seen->fail_first = 1;
    r.seen->rc = -EBADMSG;
    assert_int_equal(bus_consumer_start(r.c), 0);
    publish(&r, TOPIC_NOTIFICATION_EVENTS, "n1", "bad");
    assert_int_equal(wait_n(r.dead, 1, 10000), 1);
    int calls;
    count_of(r.seen, &calls);
    assert_int_equal(calls, 1);
    assert_non_null(strstr(r.dead->headers[0], "retry_count=0;"));
    rig_stop(&r);
    cfg.kafka_retry_backoff_ms = saved;
}

static void test_eshutdown_leaves_offset_unstored(void **state)
{
    (void)state;
    struct rig r;
    rig_start(&r, "g-shutdown", TOPIC_SYSTEM_EVENTS, 0);
    r.seen->fail_first = 1;
    r.seen->rc = -ESHUTDOWN;
    assert_int_equal(bus_consumer_start(r.c), 0);
    publish(&r, TOPIC_SYSTEM_EVENTS, "s1", "first");
    int calls = 0;
    int64_t dl = now_mono_ms() + 10000;
    while (count_of(r.seen, &calls) == 0 && calls == 0 && now_mono_ms() < dl)
        sleep_ms(5);
    assert_int_equal(calls, 1);
    /* The thread stopped by itself; join closes the consumer. */
    assert_int_equal(bus_consumer_join(r.c, now_mono_ms() + 5000), 0);
    bus_consumer_free(r.c);
    r.c = NULL;
    assert_int_equal(count_of(r.dead, NULL), 0);

    /* Same group again: the message is redelivered (its offset was never stored). */
    struct seen *again = seen_new();
    static const enum topic_id t[] = {TOPIC_SYSTEM_EVENTS};
    struct bus_consumer_opts o = {.role = "t2",
                                  .group = "g-shutdown",
                                  .topics = t,
                                  .ntopics = 1,
                                  .handler = handler,
                                  .ctx = again};
    struct bus_consumer *c2 = NULL;
    assert_int_equal(bus_consumer_new(r.bus, &o, &c2), 0);
    assert_int_equal(bus_consumer_start(c2), 0);
    assert_int_equal(wait_n(again, 1, 15000), 1);
    assert_string_equal(again->payload[0], "first");
    assert_int_equal(bus_consumer_join(c2, now_mono_ms() + 5000), 0);
    bus_consumer_free(c2);
    seen_free(again);
    rig_stop(&r);
}

static void test_batch_falls_back_to_single_and_isolates_poison(void **state)
{
    (void)state;
    struct rig r;
    int64_t saved = cfg.kafka_retry_backoff_ms;
    cfg.kafka_retry_backoff_ms = 5;
    rig_start(&r, "g-batch", TOPIC_EXECUTION_TASKS, 1);
    r.seen->poison = "poison";
    r.seen->rc = -EBADMSG;
    /* Publish first (one key: one partition, in order), then consume as one batch. */
    publish(&r, TOPIC_EXECUTION_TASKS, "e1", "m1");
    publish(&r, TOPIC_EXECUTION_TASKS, "e1", "m2");
    publish(&r, TOPIC_EXECUTION_TASKS, "e1", "poison");
    publish(&r, TOPIC_EXECUTION_TASKS, "e1", "m4");
    assert_int_equal(bus_consumer_start(r.c), 0);
    assert_int_equal(wait_n(r.dead, 1, 10000), 1);
    assert_int_equal(wait_n(r.seen, 3, 10000), 3);
    assert_string_equal(r.dead->payload[0], "poison");
    assert_string_equal(r.seen->payload[0], "m1");
    assert_string_equal(r.seen->payload[1], "m2");
    assert_string_equal(r.seen->payload[2], "m4");
    assert_non_null(strstr(r.dead->headers[0], "error=poison in batch of 1;"));
    /* Later traffic is batched again. */
    publish(&r, TOPIC_EXECUTION_TASKS, "e1", "m5");
    assert_int_equal(wait_n(r.seen, 4, 10000), 4);
    rig_stop(&r);
    cfg.kafka_retry_backoff_ms = saved;
}

static void test_stop_interrupts_backoff(void **state)
{
    (void)state;
    struct rig r;
    int64_t saved = cfg.kafka_retry_backoff_ms;
    cfg.kafka_retry_backoff_ms = 20000;
    rig_start(&r, "g-stop", TOPIC_EXECUTION_EVENTS, 0);
    r.seen->fail_first = 100;
    r.seen->rc = -EAGAIN;
    assert_int_equal(bus_consumer_start(r.c), 0);
    publish(&r, TOPIC_EXECUTION_EVENTS, "x", "slow");
    int calls = 0;
    int64_t dl = now_mono_ms() + 10000;
    while ((count_of(r.seen, &calls), calls) == 0 && now_mono_ms() < dl)
        sleep_ms(5);
    assert_int_equal(calls, 1);
    int64_t t0 = now_mono_ms();
    bus_consumer_stop(r.c);
    assert_int_equal(bus_consumer_join(r.c, now_mono_ms() + 5000), 0);
    assert_true(now_mono_ms() - t0 < 2000);
    bus_consumer_free(r.c);
    r.c = NULL;
    assert_int_equal(count_of(r.dead, NULL), 0); /* not dead-lettered, not stored */
    rig_stop(&r);
    cfg.kafka_retry_backoff_ms = saved;
}

/* Value of a metric line starting with prefix (name{labels}), or -1. */
static long long metric_line(struct metrics *m, const char *prefix)
{
    struct strbuf sb = {0};
    long long v = -1;
    if (metrics_render(m, &sb) == 0 && sb.s) {
        const char *p = strstr(sb.s, prefix);
        if (p)
            v = strtoll(strchr(p, ' ') + 1, NULL, 10);
    }
    sb_release(&sb);
    return v;
}

static void test_lag_gauge_and_counters(void **state)
{
    (void)state;
    struct rig r;
    int64_t saved = cfg.kafka_retry_backoff_ms;
    cfg.kafka_retry_backoff_ms = 20000; /* the first message sticks in backoff */
    rig_start(&r, "g-lag", TOPIC_EXECUTION_EVENTS, 0);
    r.seen->fail_first = 100;
    r.seen->rc = -EIO;
    for (int i = 0; i < 6; i++)
        publish(&r, TOPIC_EXECUTION_EVENTS, "same-key", "m");
    assert_int_equal(bus_consumer_start(r.c), 0);
    char want[160];
    snprintf(want, sizeof(want),
             "execd_kafka_consumer_lag{group=\"%sg-lag\",topic=\"execution_events\"}",
             cfg.topic_prefix);
    int64_t dl = now_mono_ms() + 12000;
    long long lag = -1;
    while ((lag = metric_line(r.metrics, want)) != 5 && now_mono_ms() < dl)
        sleep_ms(50);
    assert_int_equal(lag, 5); /* 6 published, 1 consumed (stuck in its backoff) */
    assert_int_equal(metric_line(r.metrics, "execd_kafka_consumed_total{role=\"t\"}"), 1);
    assert_int_equal(metric_line(r.metrics, "execd_kafka_handler_failed_total{role=\"t\"}"), 1);
    assert_int_equal(
        metric_line(r.metrics, "execd_kafka_published_total{topic=\"execution_events\"}"), 6);
    bus_consumer_stop(r.c);
    rig_stop(&r);
    cfg.kafka_retry_backoff_ms = saved;
}

static void test_health_fails_promptly_when_broker_down(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    struct bus *bus = NULL;
    assert_int_equal(bus_new(&cfg, m, &bus), 0);
    assert_int_equal(bus_health(bus, 1500), 0);
    assert_int_equal(rd_kafka_mock_broker_set_down(mock, 1), 0);
    int64_t t0 = now_mono_ms();
    int rc = 0;
    while (now_mono_ms() - t0 < 3000 && (rc = bus_health(bus, 1500)) == 0)
        sleep_ms(20);
    assert_int_equal(rc, -EIO);
    assert_true(now_mono_ms() - t0 <= 2500);
    assert_int_equal(rd_kafka_mock_broker_set_up(mock, 1), 0);
    int64_t dl = now_mono_ms() + 10000;
    while (bus_health(bus, 1500) != 0 && now_mono_ms() < dl)
        sleep_ms(20);
    assert_int_equal(bus_health(bus, 1500), 0);
    bus_free(bus);
    metrics_free(m);
}

static void test_publish_rejects_oversized_and_bad_args(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    struct bus *bus = NULL;
    assert_int_equal(bus_new(&cfg, m, &bus), 0);
    size_t big = 6 * 1048576;
    char *p = malloc(big);
    memset(p, 'x', big);
    assert_int_equal(bus_publish(bus, TOPIC_SYSTEM_EVENTS, "k", p, big, NULL, 0), -EMSGSIZE);
    free(p);
    assert_int_equal(bus_publish(bus, TOPIC_COUNT, "k", "x", 1, NULL, 0), -EINVAL);
    char name[128];
    bus_topic_name(bus, TOPIC_DEAD_LETTER_QUEUE, name, sizeof(name));
    char want[128];
    snprintf(want, sizeof(want), "%sdead_letter_queue", cfg.topic_prefix);
    assert_string_equal(name, want);
    bus_free(bus);
    metrics_free(m);
}

int main(void)
{
    char err[256];
    static char name[] = "test_bus_mock";
    char *argv[] = {name, NULL};
    if (config_load(&cfg, 1, argv, err, sizeof(err))) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    log_setup(getenv("TEST_LOG_LEVEL") ? getenv("TEST_LOG_LEVEL") : "error", "logfmt");
    cfg.kafka_handler_attempts = 3;
    cfg.kafka_publish_timeout_ms = 5000;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_then_success_no_dlq),
        cmocka_unit_test(test_exhausted_retries_dead_letter_with_headers),
        cmocka_unit_test(test_ebadmsg_dead_letters_at_once),
        cmocka_unit_test(test_eshutdown_leaves_offset_unstored),
        cmocka_unit_test(test_batch_falls_back_to_single_and_isolates_poison),
        cmocka_unit_test(test_stop_interrupts_backoff),
        cmocka_unit_test(test_publish_rejects_oversized_and_bad_args),
        cmocka_unit_test(test_lag_gauge_and_counters),
        cmocka_unit_test(test_health_fails_promptly_when_broker_down),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    config_release(&cfg);
    return rc;
}
