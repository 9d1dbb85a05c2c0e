/*
 * pool.h — a bounded thread pool.
 *
 * pool_submit never blocks: it returns -EAGAIN when the queue is full and the
 * caller backs off (pauses its consumer, answers 503).  Threads are named
 * "<name>-<n>" and all joined by pool_free.
 */
#ifndef EXECD_POOL_H
#define EXECD_POOL_H

#include <stddef.h>

struct pool;
typedef void (*pool_fn)(void *arg);

/* Returns NULL on allocation or thread-creation failure.  Freed by pool_free. */
struct pool *pool_new(const char *name, int threads, size_t queue_cap);
/* 0, -EAGAIN when full, -ESHUTDOWN after pool_stop. */
int pool_submit(struct pool *pool, pool_fn fn, void *arg);
/* Stops accepting work; queued jobs still run.  Idempotent. */
void pool_stop(struct pool *pool);
/* Blocks until the queue is empty and no job is running. */
void pool_drain(struct pool *pool);
size_t pool_queued(struct pool *pool);
/* Stops, runs what is queued, joins the threads, frees.  NULL-safe. */
void pool_free(struct pool *pool);

#endif
