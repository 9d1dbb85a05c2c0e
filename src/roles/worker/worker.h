/*
 * worker.h — private interfaces between the files of the worker role.
 *
 *   worker.c             the struct role: consumers of execution_tasks and
 *                        saga_commands, ConfigMap/Pod/NetworkPolicy creation
 *   worker_objects.c     the Kubernetes objects built from a task (DESIGN §7)
 *   worker_entrypoint.c  the entrypoint script shipped in the ConfigMap
 */
#ifndef EXECD_WORKER_H
#define EXECD_WORKER_H

#include <stddef.h>

struct cJSON;
struct event;

#define WORKER_ROLE "worker"
/* Where the ConfigMap (script + entrypoint) is mounted; also the workdir. */
#define WORKER_SCRIPTS_DIR "/scripts"
#define WORKER_CONTAINER "main"
#define WORKER_NETPOL_NAME "execd-deny-all"
/* activeDeadlineSeconds = timeout_seconds + this: the entrypoint enforces the
 * timeout itself and reports it with the output; the deadline is the backstop. */
#define WORKER_DEADLINE_GRACE_S 5

extern const char worker_entrypoint[];

struct worker_params {
    const char *ns;
    long long output_limit;
};

/* "exec-<id>" into out (the Pod and the ConfigMap name). */
void worker_object_name(const char *execution_id, char *out, size_t len);
/* The objects for task ev; NULL with a message in err when ev cannot be run
 * (e.g. an empty command).  Caller deletes. */
struct cJSON *worker_configmap(const struct worker_params *wp, const struct event *ev, char *err,
                               size_t errlen);
struct cJSON *worker_pod(const struct worker_params *wp, const struct event *ev, char *err,
                         size_t errlen);
struct cJSON *worker_netpol(const struct worker_params *wp);

#endif
