/*
 * module.h — the role interface.
 *
 * Every role (api, coordinator, worker, …, node) is one `const struct role`
 * filled with designated initializers.  main.c selects roles from
 * EXECD_ROLES, then drives them through the lifecycle:
 *
 *   init(host, &state)  validate config, allocate; no threads
 *   start(state)        spawn threads, subscribe; returns promptly
 *   stop(state)         set a flag, wake threads; idempotent, non-blocking
 *   join(state, dl)     drain, flush, close consumers before deadline dl
 *   destroy(state)      free; NULL-safe, copes with half-initialised state
 *   health(state, out)  optional: add checks to the readiness report
 *
 * A role reaches core services only through the struct host it is given.
 */
#ifndef EXECD_MODULE_H
#define EXECD_MODULE_H

#include <stdint.h>

struct host;
struct cJSON;

enum role_needs {
    ROLE_NEEDS_BUS = 1u << 0,   /* Kafka producer/consumers */
    ROLE_NEEDS_STORE = 1u << 1, /* MongoDB */
    ROLE_NEEDS_HTTP = 1u << 2,  /* routes on the main HTTP server */
};

struct role {
    const char *name;
    unsigned needs; /* enum role_needs bits */
    int (*init)(struct host *host, void **state);
    int (*start)(void *state);
    void (*stop)(void *state);
    int (*join)(void *state, int64_t deadline_ms);
    void (*destroy)(void *state);
    /* Adds "name": {"status": "ok"|"fail", ...} entries to out; returns 0
     * when healthy, negative errno when not.  May be NULL. */
    int (*health)(void *state, struct cJSON *out);
};

/* The static registry (src/roles/registry.c), NULL-terminated. */
extern const struct role *const role_registry[];

/* Returns the role named name, or NULL. */
const struct role *role_find(const char *name);

#endif
