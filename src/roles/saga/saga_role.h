/*
 * saga_role.h — private to src/roles/saga: the role's state, shared by the
 * engine (saga_role.c) and the HTTP routes (saga_http.c).
 */
#ifndef EXECD_SAGA_ROLE_H
#define EXECD_SAGA_ROLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "saga.h"

#define SAGA_ROLE "saga"
#define SAGA_COLL "sagas"
#define SAGA_USERS "users"
#define SAGA_MAX_CONSUMERS 64
#define SAGA_STRIPES 64

struct host;
struct bus_consumer;
struct metric;
struct http_req;
struct pool;

struct saga_role {
    struct host *host;
    struct saga_timeouts t;
    struct bus_consumer *consumers[SAGA_MAX_CONSUMERS];
    int nconsumers;
    pthread_t ticker;
    struct pool *due_pool; /* runs the due sagas of a deadline pass in parallel */
    bool ticker_started;
    atomic_bool stopping;
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;
    /* One writer per saga inside the process: the consumers and the deadline
     * thread take the stripe of the execution id around read-modify-write. */
    pthread_mutex_t stripes[SAGA_STRIPES];
    struct metric *m_started, *m_compensations, *m_deadlines, *m_conflicts;
};

/* Registers the /api/v1/sagas routes (call from init). */
int saga_http_init(struct saga_role *sr);

#endif
