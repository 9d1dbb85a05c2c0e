/*
 * topics.c — the topic table generated from TOPIC_TABLE (include/topics.h).
 */
#include "topics.h"

#include <string.h>

#define TOPIC_ROW(id, nm, parts, ret, max)                                                         \
    [TOPIC_##id] = {.name = nm, .partitions = parts, .retention_ms = ret, .max_message_bytes = max},

const struct topic_spec topic_table[TOPIC_COUNT] = {TOPIC_TABLE(TOPIC_ROW)};

#undef TOPIC_ROW

int topic_lookup(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < TOPIC_COUNT; i++)
        if (strcmp(topic_table[i].name, name) == 0)
            return i;
    return -1;
}
