/*
 * worker.c — the worker role: turns scheduled tasks into Kubernetes objects.
 *
 * EXECD_WORKER_THREADS consumers in group execd-worker read ONLY
 * execution_tasks (DESIGN §2).  For each execution_requested task:
 *   1. the deny-all NetworkPolicy, once per process (409 = there already);
 *   2. ConfigMap exec-<id> (script + entrypoint), 409 = there already;
 *   3. Pod exec-<id>, 409 = there already (a redelivered task);
 *   4. pod_created → execution_events; the offset is stored after that.
 * Transient API failures (unreachable, 5xx, 429) are retried inside the
 * handler a few times; then, or at once for a rejection (422, 403 …), the
 * execution ends: execution_failed with error_type system_error and the API's
 * message, and the ConfigMap is removed.  A bounded set of executions this
 * process already created skips redeliveries that arrive after the pod has
 * finished and been cleaned up (results' exactly-once write covers the rest).
 *
 * One more consumer (group execd-worker-commands) reads saga_commands:
 * delete_pod_command deletes the pod and its ConfigMap (404 = done).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "host.h"
#include "k8s.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "topics.h"
#include "util.h"
#include "worker.h"

#define MAX_CONSUMERS 64
#define ATTEMPTS 4
#define BACKOFF_MS 200
#define RECENT 4096

struct worker {
    struct host *host;
    struct k8s *k8s;
    struct worker_params wp;
    struct bus_consumer *consumers[MAX_CONSUMERS + 1];
    int nconsumers;
    atomic_bool stopping;
    pthread_mutex_t mu;
    bool netpol_done;
    char (*recent)[UUID_LEN + 8];
    size_t nrecent, recent_pos;
    struct metric *created, *failed, *deleted;
};

static bool stopping(struct worker *w)
{
    return atomic_load(&w->stopping) || (w->host->stopping && atomic_load(w->host->stopping));
}

static bool recent_has(struct worker *w, const char *id)
{
    bool found = false;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nrecent && !found; i++)
        found = strcmp(w->recent[i], id) == 0;
    pthread_mutex_unlock(&w->mu);
    return found;
}

static void recent_add(struct worker *w, const char *id)
{
    pthread_mutex_lock(&w->mu);
    snprintf(w->recent[w->recent_pos], sizeof(w->recent[0]), "%s", id);
    w->recent_pos = (w->recent_pos + 1) % RECENT;
    if (w->nrecent < RECENT)
        w->nrecent++;
    pthread_mutex_unlock(&w->mu);
}

static bool transient(int rc)
{
    return rc == -EAGAIN || rc == -ECONNREFUSED || rc == -ETIMEDOUT;
}

/* Creates obj, retrying transient failures; 409 counts as success. */
static int create(struct worker *w, enum k8s_kind kind, const cJSON *obj, char *err, size_t errlen)
{
    int rc = 0;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        if (attempt) {
            if (stopping(w))
                return -ESHUTDOWN;
            sleep_ms((int64_t)BACKOFF_MS << (attempt - 1));
        }
        rc = k8s_create(w->k8s, kind, w->wp.ns, obj, NULL, err, errlen);
        if (rc == 0 || rc == -EEXIST)
            return 0;
        if (!transient(rc))
            return rc;
    }
    return rc;
}

static int ensure_netpol(struct worker *w, char *err, size_t errlen)
{
    pthread_mutex_lock(&w->mu);
    bool done = w->netpol_done;
    pthread_mutex_unlock(&w->mu);
    if (done)
        return 0;
    cJSON *np = worker_netpol(&w->wp);
    if (!np)
        return -ENOMEM;
    int rc = create(w, K8S_NETWORKPOLICY, np, err, errlen);
    cJSON_Delete(np);
    if (rc == 0) {
        pthread_mutex_lock(&w->mu);
        w->netpol_done = true;
        pthread_mutex_unlock(&w->mu);
        log_info(WORKER_ROLE, "deny-all network policy in place", "ns=%s name=%s", w->wp.ns,
                 WORKER_NETPOL_NAME);
    }
    return rc;
}

static int publish_pod_event(struct worker *w, enum event_type type, const struct event *task,
                             const char *id, const char *pod)
{
    struct event *ev = event_derive(type, task);
    if (!ev)
        return -ENOMEM;
    int rc = event_set_str(ev, "execution_id", id);
    if (!rc)
        rc = event_set_str(ev, "pod_name", pod);
    if (!rc)
        rc = event_set_str(ev, "namespace", w->wp.ns);
    if (!rc)
        rc = bus_publish_event(w->host->bus, ev);
    event_free(ev);
    return rc;
}

/* Ends the execution: execution_failed/system_error with msg. */
static int fail_execution(struct worker *w, const struct event *task, const char *id,
                          const char *pod, const char *msg)
{
    char e[256];
    (void)k8s_delete(w->k8s, K8S_CONFIGMAP, w->wp.ns, pod, e, sizeof(e));
    struct event *ev = event_derive(EV_execution_failed, task);
    if (!ev)
        return -ENOMEM;
    int rc = event_set_str(ev, "execution_id", id);
    if (!rc)
        rc = event_set_str(ev, "error_type", "system_error");
    if (!rc)
        rc = event_set_str(ev, "message", msg);
    if (!rc)
        rc = bus_publish_event(w->host->bus, ev);
    event_free(ev);
    if (w->failed)
        metric_add(w->failed, 1);
    log_warn(WORKER_ROLE, "execution failed before it ran", "execution_id=%s err=\"%s\"", id, msg);
    return rc;
}

static int run_task(struct worker *w, const struct event *task, char *err, size_t errlen)
{
    const char *id = event_get_str(task, "execution_id");
    if (!id || !*id) {
        snprintf(err, errlen, "execution_requested without execution_id");
        return -EBADMSG;
    }
    if (recent_has(w, id)) {
        log_info(WORKER_ROLE, "task already handled, skipped", "execution_id=%s", id);
        return 0;
    }
    char pod[128], why[512] = "", msg[700];
    worker_object_name(id, pod, sizeof(pod));
    int rc = ensure_netpol(w, why, sizeof(why));
    if (rc == -ESHUTDOWN)
        return rc;
    if (rc) {
        snprintf(msg, sizeof(msg), "cannot create the deny-all NetworkPolicy in '%s': %s", w->wp.ns,
                 why);
        goto failed;
    }
    cJSON *cm = worker_configmap(&w->wp, task, why, sizeof(why));
    if (!cm) {
        snprintf(msg, sizeof(msg), "cannot build ConfigMap %s: %s", pod, why);
        goto failed;
    }
    rc = create(w, K8S_CONFIGMAP, cm, why, sizeof(why));
    cJSON_Delete(cm);
    if (rc == -ESHUTDOWN)
        return rc;
    if (rc) {
        snprintf(msg, sizeof(msg), "cannot create ConfigMap %s: %s", pod, why);
        goto failed;
    }
    cJSON *p = worker_pod(&w->wp, task, why, sizeof(why));
    if (!p) {
        snprintf(msg, sizeof(msg), "cannot build Pod %s: %s", pod, why);
        goto failed;
    }
    rc = create(w, K8S_POD, p, why, sizeof(why));
    cJSON_Delete(p);
    if (rc == -ESHUTDOWN)
        return rc;
    if (rc) {
        snprintf(msg, sizeof(msg), "cannot create Pod %s: %s", pod, why);
        goto failed;
    }
    rc = publish_pod_event(w, EV_pod_created, task, id, pod);
    if (rc) {
        snprintf(err, errlen, "cannot publish pod_created: %s", strerror(-rc));
        return rc;
    }
    recent_add(w, id);
    if (w->created)
        metric_add(w->created, 1);
    log_debug(WORKER_ROLE, "pod created", "execution_id=%s pod=%s", id, pod);
    return 0;
failed:
    rc = fail_execution(w, task, id, pod, msg);
    if (rc) {
        snprintf(err, errlen, "cannot publish execution_failed: %s", strerror(-rc));
        return rc;
    }
    recent_add(w, id);
    return 0;
}

static int handle_task(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct worker *w = ctx;
    struct event *ev = NULL;
    int rc = event_decode(msg->payload, msg->len, &ev, err, errlen);
    if (rc)
        return -EBADMSG;
    rc = ev->type == EV_execution_requested ? run_task(w, ev, err, errlen) : 0;
    event_free(ev);
    return rc;
}

static int delete_retrying(struct worker *w, enum k8s_kind kind, const char *name, char *err,
                           size_t errlen)
{
    int rc = 0;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        if (attempt) {
            if (stopping(w))
                return -ESHUTDOWN;
            sleep_ms((int64_t)BACKOFF_MS << (attempt - 1));
        }
        rc = k8s_delete(w->k8s, kind, w->wp.ns, name, err, errlen);
        if (rc == 0 || rc == -ENOENT)
            return 0;
        if (!transient(rc))
            return rc;
    }
    return rc;
}

static int handle_command(void *ctx, const struct bus_msg *msg, char *err, size_t errlen)
{
    struct worker *w = ctx;
    struct event *ev = NULL;
    int rc = event_decode(msg->payload, msg->len, &ev, err, errlen);
    if (rc)
        return -EBADMSG;
    if (ev->type != EV_delete_pod_command) {
        event_free(ev);
        return 0;
    }
    const char *id = event_get_str(ev, "execution_id");
    const char *pod = event_get_str(ev, "pod_name");
    char name[128];
    if (!pod || !*pod) {
        worker_object_name(id ? id : "", name, sizeof(name));
        pod = name;
    }
    rc = delete_retrying(w, K8S_POD, pod, err, errlen);
    if (rc == 0)
        rc = delete_retrying(w, K8S_CONFIGMAP, pod, err, errlen);
    if (rc == 0) {
        if (w->deleted)
            metric_add(w->deleted, 1);
        const char *reason = event_get_str(ev, "reason");
        log_info(WORKER_ROLE, "pod deleted on command", "execution_id=%s pod=%s reason=\"%s\"",
                 id ? id : "", pod, reason ? reason : "");
    }
    event_free(ev);
    return rc;
}

static int worker_init(struct host *host, void **state)
{
    if (!host->bus) {
        log_error(WORKER_ROLE, "the worker role needs the bus", "bus=%p", (void *)host->bus);
        return -EINVAL;
    }
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->host = host;
    w->wp.ns = host->cfg->k8s_namespace;
    w->wp.output_limit = (long long)host->cfg->output_limit_bytes;
    pthread_mutex_init(&w->mu, NULL);
    w->recent = calloc(RECENT, sizeof(*w->recent));
    char err[512] = "";
    int rc = w->recent ? k8s_new(host->cfg, &w->k8s, err, sizeof(err)) : -ENOMEM;
    if (rc) {
        log_error(WORKER_ROLE, "cannot set up the kubernetes client", "err=\"%s\"", err);
        free(w->recent);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return rc;
    }
    if (host->metrics) {
        w->created = metrics_get(host->metrics, METRIC_COUNTER, "execd_worker_pods_created_total",
                                 "Execution pods created by the worker", "");
        w->failed =
            metrics_get(host->metrics, METRIC_COUNTER, "execd_worker_creation_failures_total",
                        "Executions the worker ended failed/system_error", "");
        w->deleted = metrics_get(host->metrics, METRIC_COUNTER, "execd_worker_pods_deleted_total",
                                 "Pods deleted on delete_pod_command", "");
    }
    *state = w;
    return 0;
}

static int add_consumer(struct worker *w, const struct bus_consumer_opts *opts)
{
    struct bus_consumer *consumer = NULL;
    int rc = bus_consumer_new(w->host->bus, opts, &consumer);
    if (rc) {
        log_error(WORKER_ROLE, "cannot create a consumer", "group=%s err=%d", opts->group, rc);
        return rc;
    }
    w->consumers[w->nconsumers++] = consumer;
    rc = bus_consumer_start(consumer);
    if (rc)
        log_error(WORKER_ROLE, "cannot start a consumer", "group=%s err=%d", opts->group, rc);
    return rc;
}

static int worker_start(void *state)
{
    struct worker *w = state;
    static const enum topic_id tasks[] = {TOPIC_EXECUTION_TASKS};
    static const enum topic_id commands[] = {TOPIC_SAGA_COMMANDS};
    int n = (int)w->host->cfg->worker_threads;
    if (n > MAX_CONSUMERS)
        n = MAX_CONSUMERS;
    struct bus_consumer_opts opts = {
        .role = WORKER_ROLE,
        .group = "execd-worker",
        .topics = tasks,
        .ntopics = 1,
        .handler = handle_task,
        .ctx = w,
    };
    for (int i = 0; i < n; i++) {
        int rc = add_consumer(w, &opts);
        if (rc)
            return rc;
    }
    opts.group = "execd-worker-commands";
    opts.topics = commands;
    opts.handler = handle_command;
    int rc = add_consumer(w, &opts);
    if (rc)
        return rc;
    log_info(WORKER_ROLE, "worker consuming", "api=%s ns=%s consumers=%d", k8s_base_url(w->k8s),
             w->wp.ns, n);
    return 0;
}

static void worker_stop(void *state)
{
    struct worker *w = state;
    if (!w)
        return;
    atomic_store(&w->stopping, true);
    for (int i = 0; i < w->nconsumers; i++)
        bus_consumer_stop(w->consumers[i]);
}

static int worker_join(void *state, int64_t deadline_ms)
{
    struct worker *w = state;
    int rc = 0;
    for (int i = 0; w && i < w->nconsumers; i++)
        if (bus_consumer_join(w->consumers[i], deadline_ms) != 0)
            rc = -ETIMEDOUT;
    return rc;
}

static void worker_destroy(void *state)
{
    struct worker *w = state;
    if (!w)
        return;
    for (int i = 0; i < w->nconsumers; i++)
        bus_consumer_free(w->consumers[i]);
    k8s_free(w->k8s);
    free(w->recent);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static int worker_health(void *state, cJSON *out)
{
    struct worker *w = state;
    int rc = k8s_health(w->k8s);
    cJSON *o = cJSON_AddObjectToObject(out, "worker");
    cJSON_AddStringToObject(o, "status", rc ? "fail" : "ok");
    cJSON_AddStringToObject(o, "kubernetes_api", k8s_base_url(w->k8s));
    return rc ? -EIO : 0;
}

const struct role role_worker = {
    .name = "worker",
    .needs = ROLE_NEEDS_BUS,
    .init = worker_init,
    .start = worker_start,
    .stop = worker_stop,
    .join = worker_join,
    .destroy = worker_destroy,
    .health = worker_health,
};
