/*
 * test_pool.c — the bounded thread pool: runs everything, bounds the queue.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "pool.h"
#include "util.h"

static atomic_int ran;
static atomic_int concurrent, peak;
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;

static void count_job(void *arg)
{
    (void)arg;
    int now = atomic_fetch_add(&concurrent, 1) + 1;
    int p = atomic_load(&peak);
    while (now > p && !atomic_compare_exchange_weak(&peak, &p, now)) {
    }
    sleep_ms(1);
    atomic_fetch_sub(&concurrent, 1);
    atomic_fetch_add(&ran, 1);
}

static void gated_job(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gate_mu);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    atomic_fetch_add(&ran, 1);
}

static void runs_every_job(void **state)
{
    (void)state;
    atomic_store(&ran, 0);
    atomic_store(&peak, 0);
    struct pool *pool = pool_new("t", 3, 1000);
    assert_non_null(pool);
    for (int i = 0; i < 500; i++)
        assert_int_equal(pool_submit(pool, count_job, NULL), 0);
    pool_drain(pool);
    assert_int_equal(atomic_load(&ran), 500);
    assert_true(atomic_load(&peak) <= 3);
    assert_true(atomic_load(&peak) >= 2);
    pool_free(pool);
}

static void full_queue_is_eagain(void **state)
{
    (void)state;
    atomic_store(&ran, 0);
    gate_open = 0;
    struct pool *pool = pool_new("t", 1, 2);
    assert_non_null(pool);
    /* One job occupies the worker, two fill the queue. */
    assert_int_equal(pool_submit(pool, gated_job, NULL), 0);
    int64_t deadline = now_mono_ms() + 5000;
    while (pool_queued(pool) != 0 && now_mono_ms() < deadline)
        sleep_ms(1);
    assert_int_equal(pool_submit(pool, gated_job, NULL), 0);
    assert_int_equal(pool_submit(pool, gated_job, NULL), 0);
    assert_int_equal(pool_submit(pool, gated_job, NULL), -EAGAIN);
    assert_int_equal(pool_queued(pool), 2);
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    pool_free(pool); /* runs what is queued, then joins */
    assert_int_equal(atomic_load(&ran), 3);
}

static void stopped_pool_refuses(void **state)
{
    (void)state;
    struct pool *pool = pool_new("t", 2, 4);
    pool_stop(pool);
    assert_int_equal(pool_submit(pool, count_job, NULL), -ESHUTDOWN);
    pool_free(pool);
    pool_free(NULL);
    assert_null(pool_new("t", 0, 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs_every_job),
        cmocka_unit_test(full_queue_is_eagain),
        cmocka_unit_test(stopped_pool_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
