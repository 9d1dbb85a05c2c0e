/*
 * monitor.c — the monitor role: execution pods → execution events.
 *
 * One watch thread ("monitor-watch") lists the pods labelled
 * app.kubernetes.io/managed-by=execd in EXECD_K8S_NAMESPACE, then watches
 * from the list's resourceVersion with bookmarks; a watch that ends is
 * resumed from the last resourceVersion seen, ERROR 410 (or a failing watch)
 * relists, failures back off 100 ms → 5 s.  Each pod event goes to one of
 * EXECD_MONITOR_THREADS shards, chosen by execution id, so the events of one
 * execution are handled in order on one thread while executions proceed in
 * parallel.  A shard owns its pods' state (no locks):
 *
 *   PodScheduled=True          → pod_scheduled                 (once)
 *   Running                    → pod_running, execution_started (once)
 *   Succeeded / Failed         → pod_succeeded / pod_failed, then exactly one
 *                                terminal event: execution_completed (the
 *                                program ran; any exit code), _timeout (the
 *                                entrypoint's marker or DeadlineExceeded) or
 *                                _failed (OOMKilled → resource_limit; image or
 *                                runtime missing, start errors, evictions →
 *                                system_error); stdout/stderr from the framed
 *                                log, exit code and usage from the termination
 *                                message; then the Pod and its ConfigMap are
 *                                deleted and pod_deleted published
 *   Pending with an image or config error (real clusters keep such pods
 *   Pending)                   → execution_failed/system_error, cleanup
 *
 * A terminal event is published before the pod is deleted, so a crash in
 * between republishes it after the relist (results writes once).  Each shard
 * also remembers the last 4096 finished executions, so a relist or a late
 * MODIFIED never produces a second terminal event in this process.  After a
 * relist every shard gets a sweep: pods it knows that the list no longer
 * holds are gone (pod_deleted).
 */
#include "monitor.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
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
#include "pool.h"
#include "util.h"

#define SELECTOR "app.kubernetes.io/managed-by=execd"
#define MAX_SHARDS 64
#define BUCKETS 256
#define DONE_RING 4096
#define SHARD_QUEUE 4096
#define WATCH_TIMEOUT_S 300
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PUBLISH_ATTEMPTS 5

struct pstate {
    char name[128];
    char id[64];
    char *correlation, *causation, *user;
    char trace[33];
    long long timeout_s;
    bool scheduled, running, started, terminal, deleted_pub;
    int64_t gen;
    struct pstate *next;
};

struct monitor;

struct shard {
    struct monitor *mon;
    struct pool *pool;
    struct pstate *buckets[BUCKETS];
    char (*done)[64];
    size_t ndone, done_pos;
};

enum job_kind { JOB_POD, JOB_DELETED, JOB_SWEEP };

struct job {
    struct shard *sh;
    enum job_kind kind;
    cJSON *pod;
    int64_t gen;
};

struct monitor {
    struct host *host;
    struct k8s *k8s;
    const char *ns;
    long long output_limit;
    struct shard shards[MAX_SHARDS];
    int nshards;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_bool watching;
    int64_t gen;
    struct metric *terminal, *relists;
};

static bool stopping(struct monitor *m)
{
    return atomic_load(&m->stop) || (m->host->stopping && atomic_load(m->host->stopping));
}

/* ------------------------------------------------------------- json access */

static const cJSON *jobj(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = jobj(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *pod_name(const cJSON *pod)
{
    return jstr(jobj(pod, "metadata"), "name");
}

static const char *pod_exec_id(const cJSON *pod)
{
    const cJSON *md = jobj(pod, "metadata");
    const char *id = jstr(jobj(md, "annotations"), "execd/execution-id");
    return id ? id : jstr(jobj(md, "labels"), "execd/execution-id");
}

static const cJSON *container_status(const cJSON *pod)
{
    return cJSON_GetArrayItem(jobj(jobj(pod, "status"), "containerStatuses"), 0);
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* --------------------------------------------------------------- shard state */

static struct pstate **slot(struct shard *sh, const char *name)
{
    struct pstate **pp = &sh->buckets[hash(name) % BUCKETS];
    while (*pp && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void pstate_free(struct pstate *st)
{
    if (!st)
        return;
    free(st->correlation);
    free(st->causation);
    free(st->user);
    free(st);
}

static bool done_has(const struct shard *sh, const char *id)
{
    for (size_t i = 0; i < sh->ndone; i++)
        if (strcmp(sh->done[i], id) == 0)
            return true;
    return false;
}

static void done_add(struct shard *sh, const char *id)
{
    snprintf(sh->done[sh->done_pos], sizeof(sh->done[0]), "%s", id);
    sh->done_pos = (sh->done_pos + 1) % DONE_RING;
    if (sh->ndone < DONE_RING)
        sh->ndone++;
}

static struct pstate *pstate_new(const cJSON *pod, const char *name, const char *id)
{
    struct pstate *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    const cJSON *ann = jobj(jobj(pod, "metadata"), "annotations");
    snprintf(st->name, sizeof(st->name), "%s", name);
    snprintf(st->id, sizeof(st->id), "%s", id);
    st->correlation = xstrdup(jstr(ann, "execd/correlation-id"));
    st->causation = xstrdup(jstr(ann, "execd/causation-id"));
    const char *user = jstr(ann, "execd/user-id");
    st->user = user && *user ? strdup(user) : NULL;
    const char *tr = jstr(ann, "execd/trace-id");
    if (tr && strlen(tr) == 32)
        memcpy(st->trace, tr, 33);
    const char *to = jstr(ann, "execd/timeout-seconds");
    st->timeout_s = to ? strtoll(to, NULL, 10) : 0;
    return st;
}

/* ------------------------------------------------------------------ events */

/* A new event of the execution's chain (ids from the pod's annotations). */
static struct event *chain_event(const struct pstate *st, enum event_type type)
{
    struct event *ev = event_new(type, st->id);
    if (!ev)
        return NULL;
    if (st->correlation) {
        free(ev->correlation_id);
        ev->correlation_id = strdup(st->correlation);
    }
    if (st->causation)
        ev->causation_id = strdup(st->causation);
    if (st->trace[0])
        memcpy(ev->meta.trace_id, st->trace, sizeof(ev->meta.trace_id));
    if (st->user)
        ev->meta.user_id = strdup(st->user);
    if (event_set_str(ev, "execution_id", st->id)) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

/* Publishes ev (and frees it), retrying a few times; 0 or the last error. */
static int publish(struct monitor *m, struct event *ev)
{
    if (!ev)
        return -ENOMEM;
    int rc = 0;
    for (int attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
        if (attempt) {
            if (stopping(m))
                break;
            sleep_ms(100LL << attempt);
        }
        rc = bus_publish_event(m->host->bus, ev);
        if (rc == 0 || rc == -EINVAL || rc == -EMSGSIZE)
            break;
    }
    if (rc)
        log_error(MONITOR_ROLE, "cannot publish an execution event",
                  "type=%s execution_id=%s err=%d", event_type_name(ev->type), ev->aggregate_id,
                  rc);
    event_free(ev);
    return rc;
}

static int pod_event(struct monitor *m, const struct pstate *st, enum event_type type,
                     const char *reason, const cJSON *exit_code)
{
    struct event *ev = chain_event(st, type);
    if (!ev)
        return -ENOMEM;
    int rc = event_set_str(ev, "pod_name", st->name);
    if (!rc)
        rc = event_set_str(ev, "namespace", m->ns);
    if (!rc && reason && *reason)
        rc = event_set_str(ev, "reason", reason);
    if (!rc && cJSON_IsNumber(exit_code))
        rc = event_set_int(ev, "exit_code", exit_code->valueint);
    if (rc) {
        event_free(ev);
        return rc;
    }
    return publish(m, ev);
}

static cJSON *usage_json(const struct run_info *info, const cJSON *term)
{
    cJSON *u = cJSON_CreateObject();
    if (!u)
        return NULL;
    double wall = info->wall_seconds;
    if (!info->valid && term) {
        int64_t a = 0, b = 0;
        const char *sa = jstr(term, "startedAt"), *fa = jstr(term, "finishedAt");
        if (sa && fa && ts_parse_us(sa, &a) == 0 && ts_parse_us(fa, &b) == 0 && b > a)
            wall = (double)(b - a) / 1e6;
    }
    cJSON_AddNumberToObject(u, "execution_time_wall_seconds", wall);
    cJSON_AddNumberToObject(u, "cpu_time_jiffies", (double)info->cpu_jiffies);
    cJSON_AddNumberToObject(u, "clk_tck_hertz", (double)(info->clk_tck > 0 ? info->clk_tck : 100));
    cJSON_AddNumberToObject(u, "peak_memory_kb", (double)info->peak_memory_kb);
    return u;
}

static bool one_of(const char *s, const char *const *set)
{
    for (; s && *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

/* Container reasons meaning the program never ran: the platform failed. */
static const char *const start_failures[] = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "StartError",
    "ContainerCannotRun",
    "RunContainerError",
    "ContainerStatusUnknown",
    NULL,
};

/* The waiting reason of a Pending pod that will never start, or NULL. */
static const char *stuck_reason(const cJSON *pod, const char **message)
{
    const cJSON *w = jobj(jobj(container_status(pod), "state"), "waiting");
    const char *r = jstr(w, "reason");
    if (r && one_of(r, start_failures) && strcmp(r, "ContainerStatusUnknown") != 0) {
        *message = jstr(w, "message");
        return r;
    }
    return NULL;
}

/* Builds and publishes the one terminal event of st. */
static int terminal_event(struct monitor *m, struct pstate *st, const cJSON *pod, const char *stuck,
                          const char *stuck_msg)
{
    const cJSON *status = jobj(pod, "status");
    const cJSON *term = jobj(jobj(container_status(pod), "state"), "terminated");
    const char *preason = jstr(status, "reason");
    const char *treason = jstr(term, "reason");
    const cJSON *exit_code = jobj(term, "exitCode");
    struct run_info info;
    monitor_parse_message(jstr(term, "message"), &info);

    char msg[1200];
    const char *error_type = NULL;
    enum event_type type;
    bool ran = !stuck && term && !one_of(treason, start_failures);
    if (stuck) {
        type = EV_execution_failed, error_type = "system_error";
        snprintf(msg, sizeof(msg), "%s: %s", stuck, stuck_msg ? stuck_msg : "the pod cannot start");
    } else if (!term) {
        type = EV_execution_failed, error_type = "system_error";
        const char *pm = jstr(status, "message");
        snprintf(msg, sizeof(msg), "pod %s ended %s without running its container%s%s%s%s",
                 st->name, jstr(status, "phase") ? jstr(status, "phase") : "", preason ? " (" : "",
                 preason ? preason : "", preason ? ")" : "", pm ? pm : "");
    } else if (!ran) {
        type = EV_execution_failed, error_type = "system_error";
        const char *tm = jstr(term, "message");
        snprintf(msg, sizeof(msg), "%s: %s", treason ? treason : "error",
                 tm                        ? tm
                 : jstr(status, "message") ? jstr(status, "message")
                                           : "");
    } else if (info.timed_out || one_of(preason, (const char *const[]){"DeadlineExceeded", NULL}) ||
               one_of(treason, (const char *const[]){"DeadlineExceeded", NULL})) {
        type = EV_execution_timeout;
    } else if (one_of(treason, (const char *const[]){"OOMKilled", NULL})) {
        type = EV_execution_failed, error_type = "resource_limit";
        snprintf(msg, sizeof(msg),
                 "the program was killed for exceeding its memory limit (OOMKilled)");
    } else if (one_of(preason, (const char *const[]){"Evicted", NULL})) {
        type = EV_execution_failed, error_type = "system_error";
        snprintf(msg, sizeof(msg), "pod %s was evicted: %s", st->name,
                 jstr(status, "message") ? jstr(status, "message") : "");
    } else if (info.valid) {
        type = EV_execution_completed;
    } else {
        type = EV_execution_failed, error_type = "system_error";
        snprintf(msg, sizeof(msg),
                 "the entrypoint reported no result (container exit code %d, reason %s)",
                 cJSON_IsNumber(exit_code) ? exit_code->valueint : -1, treason ? treason : "");
    }

    char *out = NULL, *err = NULL;
    if (ran) {
        char *log = NULL;
        size_t len = 0;
        char why[256];
        int rc = k8s_pod_log(m->k8s, m->ns, st->name, NULL, 2 * m->output_limit + 8192, &log, &len,
                             why, sizeof(why));
        if (rc == 0 && !monitor_split_log(log, len, &out, &err))
            log_warn(MONITOR_ROLE, "pod log is not framed by the entrypoint", "pod=%s bytes=%zu",
                     st->name, len);
        else if (rc != 0)
            log_warn(MONITOR_ROLE, "cannot read the pod log", "pod=%s err=\"%s\"", st->name, why);
        free(log);
    }
    struct event *ev = chain_event(st, type);
    int rc = ev ? 0 : -ENOMEM;
    if (!rc && error_type) {
        rc = event_set_str(ev, "error_type", error_type);
        if (!rc)
            rc = event_set_str(ev, "message", msg);
    }
    if (!rc && type == EV_execution_timeout)
        rc = event_set_int(ev, "timeout_seconds", st->timeout_s > 0 ? st->timeout_s : 0);
    int code = info.valid ? info.exit_code : cJSON_IsNumber(exit_code) ? exit_code->valueint : -1;
    if (!rc && (type == EV_execution_completed || (type == EV_execution_failed && ran)))
        rc = event_set_int(ev, "exit_code", code);
    if (!rc && (type == EV_execution_completed || ran)) {
        rc = event_set_str(ev, "stdout", out ? out : "");
        if (!rc)
            rc = event_set_str(ev, "stderr", err ? err : "");
        if (!rc)
            rc = event_set_json(ev, "resource_usage", usage_json(&info, term));
    }
    if (!rc && type == EV_execution_completed) {
        rc = event_set_bool(ev, "stdout_truncated", info.stdout_truncated);
        if (!rc)
            rc = event_set_bool(ev, "stderr_truncated", info.stderr_truncated);
    }
    free(out);
    free(err);
    if (rc) {
        event_free(ev);
        return rc;
    }
    log_info(MONITOR_ROLE, "execution finished", "execution_id=%s event=%s exit=%d reason=%s",
             st->id, event_type_name(type), code,
             treason ? treason
             : stuck ? stuck
                     : "");
    if (m->terminal)
        metric_add(m->terminal, 1);
    return publish(m, ev);
}

/* Deletes the pod and its ConfigMap; pod_deleted once both are gone. */
static void cleanup(struct monitor *m, struct pstate *st)
{
    char why[256];
    int rc = k8s_delete(m->k8s, K8S_POD, m->ns, st->name, why, sizeof(why));
    if (rc && rc != -ENOENT) {
        log_warn(MONITOR_ROLE, "cannot delete a finished pod", "pod=%s err=\"%s\"", st->name, why);
        return;
    }
    rc = k8s_delete(m->k8s, K8S_CONFIGMAP, m->ns, st->name, why, sizeof(why));
    if (rc && rc != -ENOENT)
        log_warn(MONITOR_ROLE, "cannot delete a configmap", "name=%s err=\"%s\"", st->name, why);
    if (pod_event(m, st, EV_pod_deleted, "completed", NULL) == 0)
        st->deleted_pub = true;
}

static void on_pod(struct shard *sh, const cJSON *pod, int64_t gen)
{
    struct monitor *m = sh->mon;
    const char *name = pod_name(pod);
    const char *id = pod_exec_id(pod);
    if (!name || !id)
        return;
    struct pstate **pp = slot(sh, name);
    struct pstate *st = *pp;
    if (!st) {
        if (!(st = pstate_new(pod, name, id)))
            return;
        *pp = st;
        if (done_has(sh, id)) /* finished earlier: only the cleanup may remain */
            st->scheduled = st->running = st->started = st->terminal = true;
    }
    if (gen > st->gen)
        st->gen = gen;
    const cJSON *status = jobj(pod, "status");
    const char *phase = jstr(status, "phase");
    bool is_terminal = phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0);
    bool is_running = phase && strcmp(phase, "Running") == 0;
    const cJSON *c;
    bool scheduled = false;
    cJSON_ArrayForEach(c, jobj(status, "conditions"))
    {
        const char *t = jstr(c, "type"), *s = jstr(c, "status");
        if (t && s && strcmp(t, "PodScheduled") == 0 && strcmp(s, "True") == 0)
            scheduled = true;
    }
    if (!st->scheduled && (scheduled || is_running || is_terminal)) {
        if (pod_event(m, st, EV_pod_scheduled, NULL, NULL) == 0)
            st->scheduled = true;
    }
    const char *stuck_msg = NULL;
    const char *stuck = is_terminal || is_running ? NULL : stuck_reason(pod, &stuck_msg);
    const cJSON *term = jobj(jobj(container_status(pod), "state"), "terminated");
    bool ran = is_running || (is_terminal && term && !one_of(jstr(term, "reason"), start_failures));
    if (!st->running && is_running) {
        if (pod_event(m, st, EV_pod_running, NULL, NULL) == 0)
            st->running = true;
    }
    if (!st->started && ran) {
        struct event *ev = chain_event(st, EV_execution_started);
        if (ev && event_set_str(ev, "pod_name", st->name) != 0) {
            event_free(ev);
            ev = NULL;
        }
        if (ev && publish(m, ev) == 0) /* publish frees ev; a failure retries next event */
            st->started = true;
    }
    if (!st->terminal && (is_terminal || stuck)) {
        if (is_terminal)
            (void)pod_event(m, st,
                            strcmp(phase, "Succeeded") == 0 ? EV_pod_succeeded : EV_pod_failed,
                            jstr(term, "reason") ? jstr(term, "reason") : jstr(status, "reason"),
                            jobj(term, "exitCode"));
        if (terminal_event(m, st, pod, stuck, stuck_msg) == 0) {
            st->terminal = true;
            done_add(sh, st->id);
        }
    }
    if (st->terminal && !st->deleted_pub)
        cleanup(m, st);
}

static void on_deleted(struct shard *sh, const cJSON *pod)
{
    const char *name = pod_name(pod);
    if (!name)
        return;
    struct pstate **pp = slot(sh, name);
    struct pstate *st = *pp;
    if (!st)
        return;
    if (!st->deleted_pub)
        (void)pod_event(sh->mon, st, EV_pod_deleted, "deleted", NULL);
    *pp = st->next;
    pstate_free(st);
}

static void on_sweep(struct shard *sh, int64_t gen)
{
    for (int b = 0; b < BUCKETS; b++) {
        struct pstate **pp = &sh->buckets[b];
        while (*pp) {
            struct pstate *st = *pp;
            if (st->gen >= gen) {
                pp = &st->next;
                continue;
            }
            if (!st->deleted_pub)
                (void)pod_event(sh->mon, st, EV_pod_deleted, "gone", NULL);
            *pp = st->next;
            pstate_free(st);
        }
    }
}

static void run_job(void *arg)
{
    struct job *j = arg;
    if (j->kind == JOB_POD)
        on_pod(j->sh, j->pod, j->gen);
    else if (j->kind == JOB_DELETED)
        on_deleted(j->sh, j->pod);
    else
        on_sweep(j->sh, j->gen);
    cJSON_Delete(j->pod);
    free(j);
}

/* Hands pod (owned) to its shard; waits while the shard's queue is full. */
static void dispatch(struct monitor *m, struct shard *sh, enum job_kind kind, cJSON *pod)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        cJSON_Delete(pod);
        return;
    }
    *j = (struct job){.sh = sh, .kind = kind, .pod = pod, .gen = m->gen};
    for (;;) {
        int rc = pool_submit(sh->pool, run_job, j);
        if (rc == 0)
            return;
        if (rc != -EAGAIN || stopping(m))
            break;
        sleep_ms(5);
    }
    cJSON_Delete(pod);
    free(j);
}

static struct shard *shard_of(struct monitor *m, const cJSON *pod)
{
    const char *id = pod_exec_id(pod);
    return &m->shards[hash(id ? id : "") % (unsigned)m->nshards];
}

static int on_watch(void *ctx, const char *type, cJSON *obj)
{
    struct monitor *m = ctx;
    if (strcmp(type, "BOOKMARK") == 0 || !pod_exec_id(obj)) {
        cJSON_Delete(obj);
        return stopping(m);
    }
    dispatch(m, shard_of(m, obj), strcmp(type, "DELETED") == 0 ? JOB_DELETED : JOB_POD, obj);
    return stopping(m);
}

/* Lists the pods, hands each to its shard, sweeps; rv gets the list's version. */
static int relist(struct monitor *m, char *rv, size_t rvlen)
{
    cJSON *list = NULL;
    char why[512];
    int rc = k8s_list_pods(m->k8s, m->ns, SELECTOR, &list, why, sizeof(why));
    if (rc)
        return rc;
    const char *v = jstr(jobj(list, "metadata"), "resourceVersion");
    snprintf(rv, rvlen, "%s", v ? v : "");
    m->gen++;
    cJSON *items = cJSON_DetachItemFromObjectCaseSensitive(list, "items");
    cJSON *pod;
    while ((pod = cJSON_DetachItemFromArray(items, 0)))
        if (pod_exec_id(pod))
            dispatch(m, shard_of(m, pod), JOB_POD, pod);
        else
            cJSON_Delete(pod);
    cJSON_Delete(items);
    cJSON_Delete(list);
    for (int i = 0; i < m->nshards; i++)
        dispatch(m, &m->shards[i], JOB_SWEEP, NULL);
    if (m->relists)
        metric_add(m->relists, 1);
    return 0;
}

static void backoff(struct monitor *m, int64_t *ms)
{
    for (int64_t left = *ms; left > 0 && !stopping(m); left -= 50)
        sleep_ms(left < 50 ? left : 50);
    *ms = *ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *ms * 2;
}

static void *watch_main(void *arg)
{
    struct monitor *m = arg;
    thread_name_set("monitor-watch");
    int64_t delay = BACKOFF_MIN_MS;
    bool listed = false;
    struct k8s_watch w = {
        .ns = m->ns,
        .label_selector = SELECTOR,
        .timeout_seconds = WATCH_TIMEOUT_S,
        .bookmarks = 1,
        .stop = &m->stop,
        .fn = on_watch,
        .ctx = m,
    };
    while (!stopping(m)) {
        if (!listed) {
            int rc = relist(m, w.resource_version, sizeof(w.resource_version));
            if (rc) {
                log_warn(MONITOR_ROLE, "cannot list pods, retrying", "api=%s err=%d delay_ms=%lld",
                         k8s_base_url(m->k8s), rc, (long long)delay);
                backoff(m, &delay);
                continue;
            }
            listed = true;
            atomic_store(&m->watching, true);
            log_info(MONITOR_ROLE, "pods listed, watching", "ns=%s rv=%s", m->ns,
                     w.resource_version);
        }
        int rc = k8s_watch_pods(m->k8s, &w);
        if (stopping(m))
            break;
        if (rc == 0) {
            delay = BACKOFF_MIN_MS; /* the server closed the watch: resume */
            continue;
        }
        listed = false;
        atomic_store(&m->watching, false);
        if (rc == -ESTALE) {
            log_info(MONITOR_ROLE, "watch expired, relisting", "rv=%s", w.resource_version);
            continue;
        }
        log_warn(MONITOR_ROLE, "watch failed, relisting", "err=%d delay_ms=%lld", rc,
                 (long long)delay);
        backoff(m, &delay);
    }
    return NULL;
}

/* ------------------------------------------------------------------- role */

static int monitor_init(struct host *host, void **state)
{
    if (!host->bus) {
        log_error(MONITOR_ROLE, "the monitor role needs the bus", "bus=%p", (void *)host->bus);
        return -EINVAL;
    }
    struct monitor *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->host = host;
    m->ns = host->cfg->k8s_namespace;
    m->output_limit = (long long)host->cfg->output_limit_bytes;
    char err[512] = "";
    int rc = k8s_new(host->cfg, &m->k8s, err, sizeof(err));
    if (rc) {
        log_error(MONITOR_ROLE, "cannot set up the kubernetes client", "err=\"%s\"", err);
        free(m);
        return rc;
    }
    if (host->metrics) {
        m->terminal =
            metrics_get(host->metrics, METRIC_COUNTER, "execd_monitor_terminal_events_total",
                        "Terminal execution events published by the monitor", "");
        m->relists = metrics_get(host->metrics, METRIC_COUNTER, "execd_monitor_relists_total",
                                 "Pod lists (start, 410 Gone, broken watches)", "");
    }
    *state = m;
    return 0;
}

static int monitor_start(void *state)
{
    struct monitor *m = state;
    int n = (int)m->host->cfg->monitor_threads;
    if (n > MAX_SHARDS)
        n = MAX_SHARDS;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "monitor-%d", i % 100);
        struct shard *sh = &m->shards[i];
        sh->mon = m;
        sh->done = calloc(DONE_RING, sizeof(*sh->done));
        sh->pool = sh->done ? pool_new(name, 1, SHARD_QUEUE) : NULL;
        if (!sh->pool) {
            free(sh->done);
            sh->done = NULL;
            return -ENOMEM;
        }
        m->nshards++;
    }
    if (pthread_create(&m->thread, NULL, watch_main, m) != 0)
        return -EAGAIN;
    m->thread_started = true;
    log_info(MONITOR_ROLE, "monitor started", "api=%s ns=%s threads=%d", k8s_base_url(m->k8s),
             m->ns, n);
    return 0;
}

static void monitor_stop(void *state)
{
    struct monitor *m = state;
    if (m)
        atomic_store(&m->stop, true);
}

static int monitor_join(void *state, int64_t deadline_ms)
{
    (void)deadline_ms;
    struct monitor *m = state;
    if (!m)
        return 0;
    if (m->thread_started) {
        pthread_join(m->thread, NULL);
        m->thread_started = false;
    }
    for (int i = 0; i < m->nshards; i++) {
        pool_free(m->shards[i].pool); /* runs what is queued, joins */
        m->shards[i].pool = NULL;
    }
    return 0;
}

static void monitor_destroy(void *state)
{
    struct monitor *m = state;
    if (!m)
        return;
    atomic_store(&m->stop, true);
    (void)monitor_join(m, 0);
    for (int i = 0; i < m->nshards; i++) {
        for (int b = 0; b < BUCKETS; b++) {
            struct pstate *st = m->shards[i].buckets[b];
            while (st) {
                struct pstate *next = st->next;
                pstate_free(st);
                st = next;
            }
        }
        free(m->shards[i].done);
    }
    k8s_free(m->k8s);
    free(m);
}

static int monitor_health(void *state, cJSON *out)
{
    struct monitor *m = state;
    bool ok = atomic_load(&m->watching);
    cJSON *o = cJSON_AddObjectToObject(out, "monitor");
    cJSON_AddStringToObject(o, "status", ok ? "ok" : "fail");
    cJSON_AddStringToObject(o, "kubernetes_api", k8s_base_url(m->k8s));
    cJSON_AddBoolToObject(o, "watching", ok);
    return ok ? 0 : -EIO;
}

const struct role role_monitor = {
    .name = "monitor",
    .needs = ROLE_NEEDS_BUS,
    .init = monitor_init,
    .start = monitor_start,
    .stop = monitor_stop,
    .join = monitor_join,
    .destroy = monitor_destroy,
    .health = monitor_health,
};
