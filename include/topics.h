/*
 * topics.h — the topic table (DESIGN §2), defined once.
 *
 * Names here are logical; the broker name is EXECD_TOPIC_PREFIX + name.
 */
#ifndef EXECD_TOPICS_H
#define EXECD_TOPICS_H

#include <stdint.h>

#define DAY_MS (24LL * 3600 * 1000)

/* X(ID, name, partitions, retention_ms, max_message_bytes) */
#define TOPIC_TABLE(X)                                                                             \
    X(EXECUTION_EVENTS, "execution_events", 6, 7 * DAY_MS, 2 * 1048576)                            \
    X(EXECUTION_TASKS, "execution_tasks", 3, 1 * DAY_MS, 2 * 1048576)                              \
    X(SAGA_COMMANDS, "saga_commands", 3, 1 * DAY_MS, 1048576)                                      \
    X(USER_EVENTS, "user_events", 3, 30 * DAY_MS, 1048576)                                         \
    X(NOTIFICATION_EVENTS, "notification_events", 3, 7 * DAY_MS, 1048576)                          \
    X(SYSTEM_EVENTS, "system_events", 3, 30 * DAY_MS, 1048576)                                     \
    X(DEAD_LETTER_QUEUE, "dead_letter_queue", 3, 14 * DAY_MS, 4 * 1048576)

#define TOPIC_ENUM(id, name, parts, ret, max) TOPIC_##id,
enum topic_id { TOPIC_TABLE(TOPIC_ENUM) TOPIC_COUNT };
#undef TOPIC_ENUM

struct topic_spec {
    const char *name;
    int partitions;
    int64_t retention_ms;
    int max_message_bytes;
};

extern const struct topic_spec topic_table[TOPIC_COUNT];

/* Returns the topic id of a logical name, or -1. */
int topic_lookup(const char *name);

#endif
