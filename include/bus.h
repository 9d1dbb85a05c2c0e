/*
 * bus.h — the Kafka port: one shared idempotent producer per process and a
 * consumer per role.
 *
 * Publishing waits for the delivery report, so a successful bus_publish means
 * the broker has the message (acks=all).  Consumers store an offset only
 * after the handler returned 0, i.e. after its effect is durable.  Handler
 * contract:
 *    0           done; the offset is stored
 *   -EBADMSG     permanently bad (fails its schema): dead-letter queue at once
 *   -ESHUTDOWN   stopping; the offset is not stored (redelivered later)
 *   other < 0    retried with exponential backoff (EXECD_KAFKA_RETRY_BACKOFF_MS)
 *                up to EXECD_KAFKA_HANDLER_ATTEMPTS, then dead-letter queue
 * A dead-lettered message carries headers original_topic, original_partition,
 * original_offset, consumer_group, error, retry_count (plus its own), and the
 * consumer moves on.  EXECD_KAFKA_PROP_a_b=v sets librdkafka property a.b=v.
 */
#ifndef EXECD_BUS_H
#define EXECD_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "topics.h"

struct config;
struct metrics;
struct event;
struct bus;
struct bus_consumer;

struct bus_header {
    const char *name;
    const char *value; /* NUL-terminated */
};

#define BUS_MAX_HEADERS 24

/* A consumed message; everything is borrowed for the handler call only. */
struct bus_msg {
    enum topic_id topic;
    const char *topic_name; /* full broker name, with prefix */
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms;
    const char *key;
    size_t key_len;
    const char *payload;
    size_t len;
    struct bus_header headers[BUS_MAX_HEADERS];
    size_t nheaders;
};

/* Value of the first header called name, or NULL. */
const char *bus_msg_header(const struct bus_msg *msg, const char *name);

/* Creates the producer and its delivery-report thread.  Free with bus_free. */
int bus_new(const struct config *cfg, struct metrics *metrics, struct bus **out);
/* Flushes (bounded by the publish timeout) and frees.  NULL-safe. */
void bus_free(struct bus *bus);

/* Creates every topic of topic_table that is missing, with its partitions,
 * retention and max message size; existing topics are success. */
int bus_ensure_topics(struct bus *bus);
/* Full broker name of a topic (prefix + name) into out. */
void bus_topic_name(const struct bus *bus, enum topic_id topic, char *out, size_t len);
/* 0 when a metadata request succeeds within timeout_ms, else -EIO. */
int bus_health(struct bus *bus, int timeout_ms);

/* Publishes and waits for the delivery report: 0, -ETIMEDOUT, -EMSGSIZE,
 * -EIO.  Headers are copied. */
int bus_publish(struct bus *bus, enum topic_id topic, const char *key, const void *payload,
                size_t len, const struct bus_header *headers, size_t nheaders);
/* Encodes ev (validating it) and publishes it to its catalog topic, key =
 * aggregate_id, with headers event_type, event_version, schema_id,
 * content-type and traceparent.  -EINVAL when ev does not validate. */
int bus_publish_event(struct bus *bus, const struct event *ev);
/* Same, to an explicit topic (e.g. the coordinator's task topic). */
int bus_publish_event_to(struct bus *bus, enum topic_id topic, const struct event *ev);
/* Publishes n events with one wait: each is encoded and produced at once (to
 * topics[i], or to its catalog topic when topics is NULL), then every
 * delivery report is awaited.  0 when all were delivered, else the first
 * error (the others may have been delivered: callers must be idempotent,
 * as with a retried bus_publish_event).  Events to one partition keep their
 * order (the producer is idempotent). */
int bus_publish_events(struct bus *bus, const enum topic_id *topics, const struct event *const *evs,
                       size_t n);

typedef int (*bus_handler_fn)(void *ctx, const struct bus_msg *msg, char *err, size_t errlen);
/* A batch handler gets up to batch_max messages; when it keeps failing the
 * bus falls back to one message at a time so a poison message is isolated. */
typedef int (*bus_batch_fn)(void *ctx, const struct bus_msg *const *msgs, size_t n, char *err,
                            size_t errlen);

struct bus_consumer_opts {
    const char *role;  /* for logs and metrics */
    const char *group; /* consumer group id, e.g. "execd-store" */
    const enum topic_id *topics;
    size_t ntopics;
    bus_handler_fn handler;     /* either this … */
    bus_batch_fn batch_handler; /* … or this */
    size_t batch_max;           /* batch_handler only */
    int batch_ms;               /* longest wait to fill a batch */
    void *ctx;
    int latest; /* start at the end when the group has no offset (default: earliest) */
};

/* Creates a consumer (not yet polling).  Free with bus_consumer_free. */
int bus_consumer_new(struct bus *bus, const struct bus_consumer_opts *opts,
                     struct bus_consumer **out);
/* Starts the consumer thread. */
int bus_consumer_start(struct bus_consumer *consumer);
/* Asks the thread to finish its current message and stop.  Idempotent. */
void bus_consumer_stop(struct bus_consumer *consumer);
/* Waits for the thread, closes the consumer (leaves the group). */
int bus_consumer_join(struct bus_consumer *consumer, int64_t deadline_ms);
void bus_consumer_free(struct bus_consumer *consumer);

#endif
