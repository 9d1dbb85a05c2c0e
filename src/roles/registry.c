/*
 * registry.c — the static list of roles this build provides.
 *
 * Order matters: roles start in this order and stop in reverse, so
 * producers of work come after the roles that consume it.  A role appears
 * here only once it is implemented; EXECD_ROLES naming anything else is a
 * start-up error.
 */
#include "module.h"

#include <string.h>

extern const struct role role_store;
extern const struct role role_api;
extern const struct role role_node;
extern const struct role role_coordinator;
extern const struct role role_worker;
extern const struct role role_monitor;
extern const struct role role_results;
extern const struct role role_projection;
extern const struct role role_saga;
extern const struct role role_sse;

const struct role *const role_registry[] = {
    &role_store,   &role_api,        &role_node, &role_coordinator, &role_worker, &role_monitor,
    &role_results, &role_projection, &role_saga, &role_sse,         NULL,
};

const struct role *role_find(const char *name)
{
    for (const struct role *const *r = role_registry; *r; r++)
        if (strcmp((*r)->name, name) == 0)
            return *r;
    return NULL;
}
