/*
 * sse.h — internals of the sse role (DESIGN §10, api.md "Live streams").
 *
 * One hub per process.  The role's consumers (group unique per process, so
 * every replica sees every event for its own clients; latest offsets) turn
 * each execution_events / notification_events message into a small
 * refcounted sse_item and hand it to the hub, which
 *   - keeps the last SSE_RECENT items in a ring, so a stream that subscribes
 *     while an event is between the bus and the event store still gets it
 *     (the history/live seam), and
 *   - appends it to the bounded queue of every subscriber of that execution
 *     (or user, for notifications); a full queue marks the subscriber
 *     dropped and its stream ends (the client reconnects with Last-Event-ID).
 * A stream's connection thread is the only writer of its socket: it blocks
 * on its own subscriber's condition variable with a timeout (heartbeats,
 * stop) and writes frames itself.
 */
#ifndef EXECD_SSE_H
#define EXECD_SSE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SSE_ROLE "sse"
#define SSE_KEY_MAX 130
#define SSE_ID_MAX 64
#define SSE_RECENT 4096
#define SSE_BUCKETS 1024
#define SSE_MAX_CONSUMERS 16
/* HTTP threads kept free of streams for the API, health and metrics. */
#define SSE_HTTP_RESERVE 16

enum sse_kind { SSE_EXEC, SSE_NOTIF };

struct sse_item {
    atomic_int refs;
    enum sse_kind kind;
    char key[SSE_KEY_MAX]; /* execution id or user id */
    char event_id[SSE_ID_MAX];
    char type[48];
    char timestamp[40];
    char status[24];         /* "" when the event carries none */
    char extra[SSE_KEY_MAX]; /* notification_id */
    char channel[32];        /* notifications */
    int64_t recv_us;         /* wall clock when consumed */
};

struct sse_item *sse_item_new(void);
void sse_item_ref(struct sse_item *it);
void sse_item_unref(struct sse_item *it);

struct sse_sub {
    enum sse_kind kind;
    char key[SSE_KEY_MAX];
    struct sse_item **q;
    size_t cap, head, n;
    bool dropped;
    bool linked;
    pthread_cond_t cv;
    struct sse_sub *next;
};

struct sse_hub {
    pthread_mutex_t mu;
    struct sse_sub *buckets[SSE_BUCKETS];
    struct sse_item *recent[SSE_RECENT];
    size_t rpos;
    bool stopping;
    size_t queue_max;
};

enum sse_wait { SSE_GOT, SSE_TIMEOUT, SSE_DROPPED, SSE_STOPPING };

void sse_hub_init(struct sse_hub *hub, size_t queue_max);
void sse_hub_destroy(struct sse_hub *hub);
/* Takes a reference of it (the caller keeps its own). */
void sse_hub_publish(struct sse_hub *hub, struct sse_item *it);
/* Links sub and queues the recent items for its key. */
int sse_sub_init(struct sse_hub *hub, struct sse_sub *sub, enum sse_kind kind, const char *key);
void sse_sub_release(struct sse_hub *hub, struct sse_sub *sub);
/* Waits until an item is queued or deadline (monotonic ms) passes. */
enum sse_wait sse_sub_wait(struct sse_hub *hub, struct sse_sub *sub, int64_t deadline_ms,
                           struct sse_item **out);
/* Wakes every subscriber; later waits return SSE_STOPPING. */
void sse_hub_stop(struct sse_hub *hub);

struct host;
struct metric;
struct sse {
    struct host *host;
    struct sse_hub hub;
    struct bus_consumer *consumers[SSE_MAX_CONSUMERS];
    int nconsumers;
    char group[192];
    atomic_bool stopping;
    atomic_int active;
    int max_streams; /* EXECD_SSE_MAX_STREAMS, bounded by the HTTP threads */
    struct metric *m_streams, *m_dropped, *m_rejected, *m_frames;
};

bool sse_stopping(const struct sse *s);
/* Registers the two stream routes on the main server. */
int sse_routes(struct sse *s);

#endif
