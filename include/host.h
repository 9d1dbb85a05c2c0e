/*
 * host.h — the door from a role to the core services.
 *
 * main.c fills one struct host per role.  Services a role did not ask for in
 * its `needs` bits may be NULL.  Everything here outlives the role.
 */
#ifndef EXECD_HOST_H
#define EXECD_HOST_H

#include <stdatomic.h>

struct config;
struct bus;
struct store;
struct http_server;
struct metrics;

struct host {
    const char *role;            /* this role's name, for logs */
    const struct config *cfg;    /* const after start-up */
    struct bus *bus;             /* shared producer + consumer factory */
    struct store *store;         /* MongoDB client pool */
    struct http_server *http;    /* the main HTTP server (EXECD_HTTP_LISTEN) */
    struct metrics *metrics;     /* the process's metrics registry */
    const atomic_bool *stopping; /* set when shutdown begins */
};

#endif
