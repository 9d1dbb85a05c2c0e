/*
 * pool.c — a bounded thread pool: a ring of jobs under one mutex.
 *
 * Submitting never blocks (-EAGAIN when the ring is full).  pool_free stops
 * intake, lets the workers finish what is queued, and joins them.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

struct job {
    pool_fn fn;
    void *arg;
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued or we are stopping */
    pthread_cond_t idle; /* the queue drained and no job runs */
    struct job *ring;
    size_t cap, head, count;
    int running; /* jobs being executed */
    bool stopping;
    int nthreads;
    pthread_t *threads;
    char name[16];
};

struct worker_arg {
    struct pool *pool;
    int index;
};

static void *worker(void *p)
{
    struct worker_arg *wa = p;
    struct pool *pool = wa->pool;
    char name[16];
    snprintf(name, sizeof(name), "%.10s-%d", pool->name, wa->index);
    free(wa);
    thread_name_set(name);
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->count == 0 && !pool->stopping)
            pthread_cond_wait(&pool->work, &pool->mu);
        if (pool->count == 0 && pool->stopping)
            break;
        struct job job = pool->ring[pool->head];
        pool->head = (pool->head + 1) % pool->cap;
        pool->count--;
        pool->running++;
        pthread_mutex_unlock(&pool->mu);
        job.fn(job.arg);
        pthread_mutex_lock(&pool->mu);
        pool->running--;
        if (pool->count == 0 && pool->running == 0)
            pthread_cond_broadcast(&pool->idle);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

struct pool *pool_new(const char *name, int threads, size_t queue_cap)
{
    if (threads < 1 || queue_cap < 1)
        return NULL;
    struct pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    snprintf(pool->name, sizeof(pool->name), "%s", name ? name : "pool");
    pool->ring = calloc(queue_cap, sizeof(*pool->ring));
    pool->threads = calloc((size_t)threads, sizeof(*pool->threads));
    if (!pool->ring || !pool->threads)
        goto fail_alloc;
    pool->cap = queue_cap;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->idle, NULL);
    for (int i = 0; i < threads; i++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (!wa)
            goto fail_threads;
        wa->pool = pool;
        wa->index = i;
        if (pthread_create(&pool->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            goto fail_threads;
        }
        pool->nthreads++;
    }
    return pool;

fail_threads:
    pool_free(pool);
    return NULL;
fail_alloc:
    free(pool->ring);
    free(pool->threads);
    free(pool);
    return NULL;
}

int pool_submit(struct pool *pool, pool_fn fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&pool->mu);
    if (pool->stopping) {
        rc = -ESHUTDOWN;
    } else if (pool->count == pool->cap) {
        rc = -EAGAIN;
    } else {
        pool->ring[(pool->head + pool->count) % pool->cap] = (struct job){fn, arg};
        pool->count++;
        pthread_cond_signal(&pool->work);
    }
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

void pool_stop(struct pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->mu);
}

void pool_drain(struct pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    while (pool->count > 0 || pool->running > 0)
        pthread_cond_wait(&pool->idle, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

size_t pool_queued(struct pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    size_t n = pool->count;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

void pool_free(struct pool *pool)
{
    if (!pool)
        return;
    pool_stop(pool);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->idle);
    free(pool->ring);
    free(pool->threads);
    free(pool);
}
