/*
 * node_pods.c — the node's object store, watch history and pod runners.
 *
 * One mutex guards everything here: the objects (Pods, ConfigMaps,
 * NetworkPolicies as cJSON trees), the global resourceVersion, the FIFO of
 * pods waiting for a slot and the ring of the last node_watch_history pod
 * events.  Every change bumps the resourceVersion, stamps it into the object,
 * writes the object to <state_dir>/<kind>/<uid>.json and, for pods, appends a
 * pre-printed watch line to the ring and wakes the watchers.  A watcher keeps
 * a cursor (the last resourceVersion it has seen); a cursor below the oldest
 * evicted event is answered with ERROR 410 Expired.
 *
 * Slots are runner threads ("node-run-N", config_node_slots of them): each
 * takes the oldest pending pod, runs its container with sandbox_run and
 * writes the terminal status.  Pending pods that find no idle runner carry
 * PodScheduled=False/Unschedulable until one frees.  Pod phases move only
 * forward: Pending → Running → Succeeded|Failed.
 *
 * Restart: objects are reloaded from the state dir; a pod that was Pending
 * or Running when the node stopped (its process is gone) is marked Failed
 * with reason NodeRestarted.  Logs live in <state_dir>/logs/<uid>.log.
 */
#include "node.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "runtimes.h"
#include "util.h"

#define BOOKMARK_EVERY_MS 1000
#define NODE_NAME "execd-node"
#define IMAGE_PATH_DIR "/opt/execd/bin"
#define MAX_ENV 256
#define MAX_MOUNTS 32

enum phase { PH_PENDING, PH_RUNNING, PH_SUCCEEDED, PH_FAILED };
static const char *const phase_names[] = {"Pending", "Running", "Succeeded", "Failed"};
static const char *const kind_names[] = {"Pod", "ConfigMap", "NetworkPolicy"};
static const char *const kind_dirs[] = {"pods", "configmaps", "networkpolicies"};
static const char *const list_kinds[] = {"PodList", "ConfigMapList", "NetworkPolicyList"};
static const char *const api_versions[] = {"v1", "v1", "networking.k8s.io/v1"};

struct obj {
    enum kind kind;
    char ns[64];
    char name[254];
    char uid[UUID_LEN];
    cJSON *json;
    int refs;
    bool deleted;
    /* pods */
    enum phase phase;
    bool queued;
    bool running;
    int cancel[2];
    int64_t start_mono;
    char start_time[TS_LEN];
    struct obj *qnext;
};

struct wev {
    int64_t rv;
    char ns[64];
    char *line;
    size_t len;
    cJSON *meta; /* {name, namespace, labels, phase} for selectors */
};

struct node_store {
    const struct config *cfg;
    struct sandbox *sb;
    const atomic_bool *stopping;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t watch_cv;
    pthread_cond_t queue_cv;
    int64_t rv;
    struct obj **objs;
    size_t nobjs, cap;
    struct obj *qhead, *qtail;
    int idle, running;
    struct wev *ring;
    size_t ring_cap, ring_start, ring_len;
    int64_t floor;
    pthread_t *runners;
    int nrunners, started;
    int slots;
    char dir[1024];
};

/* ----------------------------------------------------------------- helpers */

static void ts_k8s(int64_t wall_us, char out[TS_LEN])
{
    time_t secs = (time_t)(wall_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, TS_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *jobj(cJSON *obj, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsObject(v)) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
        v = cJSON_AddObjectToObject(obj, key);
    }
    return v;
}

static void jset_str(cJSON *obj, const char *key, const char *value)
{
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    cJSON_AddStringToObject(obj, key, value);
}

static cJSON *container0(cJSON *pod)
{
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(pod, "spec");
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(spec, "containers"), 0);
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[1024];
    bfmt(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, mode) != 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static void obj_path(const struct node_store *st, const struct obj *o, char *out, size_t len)
{
    bfmt(out, len, "%s/%s/%s.json", st->dir, kind_dirs[o->kind], o->uid);
}

static void log_path(const struct node_store *st, const char *uid, char *out, size_t len)
{
    bfmt(out, len, "%s/logs/%s.log", st->dir, uid);
}

static int write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[1100];
    bfmt(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            close(fd);
            (void)unlink(tmp);
            return -EIO;
        }
        off += (size_t)n;
    }
    close(fd);
    return rename(tmp, path) == 0 ? 0 : -errno;
}

static void persist(struct node_store *st, const struct obj *o)
{
    char path[1100];
    obj_path(st, o, path, sizeof(path));
    char *s = cJSON_PrintUnformatted(o->json);
    if (!s || write_atomic(path, s, strlen(s)) != 0)
        log_warn(NODE_ROLE, "cannot persist object", "kind=%s name=%s/%s path=%s",
                 kind_names[o->kind], o->ns, o->name, path);
    cJSON_free(s);
    char rv[32];
    bfmt(path, sizeof(path), "%s/rv", st->dir);
    bfmt(rv, sizeof(rv), "%lld\n", (long long)st->rv);
    (void)write_atomic(path, rv, strlen(rv));
}

static void unpersist(struct node_store *st, const struct obj *o)
{
    char path[1100];
    obj_path(st, o, path, sizeof(path));
    (void)unlink(path);
}

/* ------------------------------------------------------------ watch events */

static void ring_push(struct node_store *st, const char *type, const struct obj *o)
{
    char *obj = cJSON_PrintUnformatted(o->json);
    if (!obj)
        return;
    struct strbuf sb = {0};
    sb_printf(&sb, "{\"type\":\"%s\",\"object\":%s}\n", type, obj);
    cJSON_free(obj);
    if (!sb.s)
        return;
    cJSON *meta = cJSON_CreateObject();
    cJSON *md = cJSON_GetObjectItemCaseSensitive(o->json, "metadata");
    cJSON *labels = cJSON_GetObjectItemCaseSensitive(md, "labels");
    cJSON *mmd = cJSON_AddObjectToObject(meta, "metadata");
    cJSON_AddStringToObject(mmd, "name", o->name);
    cJSON_AddStringToObject(mmd, "namespace", o->ns);
    if (labels)
        cJSON_AddItemToObject(mmd, "labels", cJSON_Duplicate(labels, 1));
    cJSON *mst = cJSON_AddObjectToObject(meta, "status");
    cJSON_AddStringToObject(mst, "phase", phase_names[o->phase]);
    cJSON *msp = cJSON_AddObjectToObject(meta, "spec");
    const char *nn = jstr(cJSON_GetObjectItemCaseSensitive(o->json, "spec"), "nodeName");
    cJSON_AddStringToObject(msp, "nodeName", nn ? nn : "");
    cJSON_AddStringToObject(msp, "restartPolicy", "Never");
    if (st->ring_len == st->ring_cap) {
        struct wev *old = &st->ring[st->ring_start];
        st->floor = old->rv;
        free(old->line);
        cJSON_Delete(old->meta);
        st->ring_start = (st->ring_start + 1) % st->ring_cap;
        st->ring_len--;
    }
    struct wev *e = &st->ring[(st->ring_start + st->ring_len) % st->ring_cap];
    e->rv = st->rv;
    bfmt(e->ns, sizeof(e->ns), "%s", o->ns);
    e->len = sb.len;
    e->line = sb_steal(&sb);
    e->meta = meta;
    st->ring_len++;
    pthread_cond_broadcast(&st->watch_cv);
}

/* Bumps the resourceVersion of o, persists it and records the event. */
static void touch(struct node_store *st, struct obj *o, const char *type)
{
    st->rv++;
    char rv[32];
    bfmt(rv, sizeof(rv), "%lld", (long long)st->rv);
    jset_str(jobj(o->json, "metadata"), "resourceVersion", rv);
    if (strcmp(type, "DELETED") == 0) {
        unpersist(st, o);
        char path[1100];
        bfmt(path, sizeof(path), "%s/rv", st->dir);
        char v[32];
        bfmt(v, sizeof(v), "%lld\n", (long long)st->rv);
        (void)write_atomic(path, v, strlen(v));
    } else {
        persist(st, o);
    }
    if (o->kind == KIND_POD)
        ring_push(st, type, o);
}

/* ---------------------------------------------------------------- objects */

static void obj_unref(struct node_store *st, struct obj *o)
{
    if (--o->refs > 0)
        return;
    if (o->kind == KIND_POD && o->deleted) {
        char path[1100];
        log_path(st, o->uid, path, sizeof(path));
        (void)unlink(path);
    }
    cJSON_Delete(o->json);
    free(o);
}

static struct obj *find(struct node_store *st, enum kind kind, const char *ns, const char *name)
{
    for (size_t i = 0; i < st->nobjs; i++) {
        struct obj *o = st->objs[i];
        if (o->kind == kind && strcmp(o->ns, ns) == 0 && strcmp(o->name, name) == 0)
            return o;
    }
    return NULL;
}

static int add_obj(struct node_store *st, struct obj *o)
{
    if (st->nobjs == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 64;
        struct obj **v = realloc(st->objs, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        st->objs = v;
        st->cap = cap;
    }
    st->objs[st->nobjs++] = o;
    return 0;
}

static void remove_obj(struct node_store *st, struct obj *o)
{
    for (size_t i = 0; i < st->nobjs; i++)
        if (st->objs[i] == o) {
            st->objs[i] = st->objs[--st->nobjs];
            return;
        }
}

static void dequeue(struct node_store *st, struct obj *o)
{
    struct obj **pp = &st->qhead;
    st->qtail = NULL;
    while (*pp) {
        if (*pp == o) {
            *pp = o->qnext;
            o->qnext = NULL;
            o->queued = false;
            continue;
        }
        st->qtail = *pp;
        pp = &(*pp)->qnext;
    }
}

static int queue_len(const struct node_store *st)
{
    int n = 0;
    for (const struct obj *o = st->qhead; o; o = o->qnext)
        n++;
    return n;
}

/* ------------------------------------------------------------ pod status */

static cJSON *condition(const char *type, bool ok, const char *when, const char *reason,
                        const char *message)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", type);
    cJSON_AddStringToObject(c, "status", ok ? "True" : "False");
    cJSON_AddNullToObject(c, "lastProbeTime");
    cJSON_AddStringToObject(c, "lastTransitionTime", when);
    if (reason)
        cJSON_AddStringToObject(c, "reason", reason);
    if (message)
        cJSON_AddStringToObject(c, "message", message);
    return c;
}

static const char *qos_class(cJSON *pod)
{
    cJSON *res = cJSON_GetObjectItemCaseSensitive(container0(pod), "resources");
    cJSON *lim = cJSON_GetObjectItemCaseSensitive(res, "limits");
    cJSON *req = cJSON_GetObjectItemCaseSensitive(res, "requests");
    bool any = cJSON_GetArraySize(lim) > 0 || cJSON_GetArraySize(req) > 0;
    if (!any)
        return "BestEffort";
    const char *keys[] = {"cpu", "memory"};
    for (int i = 0; i < 2; i++) {
        const char *l = jstr(lim, keys[i]);
        const char *r = jstr(req, keys[i]);
        if (!l || (r && strcmp(l, r) != 0))
            return "Burstable";
    }
    return "Guaranteed";
}

/* A fresh status object with the container status filled by the caller. */
static cJSON *status_base(struct obj *p, cJSON **cstate)
{
    cJSON *c = container0(p->json);
    cJSON *status = cJSON_CreateObject();
    cJSON_AddStringToObject(status, "phase", phase_names[p->phase]);
    cJSON_AddArrayToObject(status, "conditions");
    cJSON_AddStringToObject(status, "hostIP", "127.0.0.1");
    if (p->start_time[0])
        cJSON_AddStringToObject(status, "startTime", p->start_time);
    cJSON_AddStringToObject(status, "qosClass", qos_class(p->json));
    cJSON *css = cJSON_AddArrayToObject(status, "containerStatuses");
    cJSON *cs = cJSON_CreateObject();
    cJSON_AddItemToArray(css, cs);
    const char *cname = jstr(c, "name");
    const char *image = jstr(c, "image");
    cJSON_AddStringToObject(cs, "name", cname ? cname : "");
    cJSON_AddStringToObject(cs, "image", image ? image : "");
    char id[128];
    bfmt(id, sizeof(id), "execd-node://%s", image ? image : "");
    cJSON_AddStringToObject(cs, "imageID", p->phase == PH_PENDING ? "" : id);
    if (p->phase != PH_PENDING) {
        bfmt(id, sizeof(id), "execd://%s", p->uid);
        cJSON_AddStringToObject(cs, "containerID", id);
    }
    cJSON_AddBoolToObject(cs, "ready", p->phase == PH_RUNNING);
    cJSON_AddNumberToObject(cs, "restartCount", 0);
    cJSON_AddBoolToObject(cs, "started", p->phase == PH_RUNNING);
    cJSON_AddObjectToObject(cs, "lastState");
    *cstate = cJSON_AddObjectToObject(cs, "state");
    return status;
}

static void set_status(struct obj *p, cJSON *status)
{
    cJSON_DeleteItemFromObjectCaseSensitive(p->json, "status");
    cJSON_AddItemToObject(p->json, "status", status);
}

static void status_pending(struct obj *p, bool schedulable, int slots)
{
    cJSON *cstate;
    cJSON *status = status_base(p, &cstate);
    char now[TS_LEN];
    ts_k8s(now_wall_us(), now);
    cJSON *conds = cJSON_GetObjectItemCaseSensitive(status, "conditions");
    if (schedulable) {
        cJSON_AddItemToArray(conds, condition("PodScheduled", true, now, NULL, NULL));
    } else {
        char msg[160];
        bfmt(msg, sizeof(msg),
             "0/1 nodes are available: all %d pod slots of " NODE_NAME
             " are in use; the pod waits for a free slot",
             slots);
        cJSON_AddItemToArray(conds, condition("PodScheduled", false, now, "Unschedulable", msg));
    }
    cJSON *w = cJSON_AddObjectToObject(cstate, "waiting");
    cJSON_AddStringToObject(w, "reason", "ContainerCreating");
    set_status(p, status);
}

static void status_running(struct obj *p, int64_t started_us)
{
    p->phase = PH_RUNNING;
    cJSON *cstate;
    cJSON *status = status_base(p, &cstate);
    char at[TS_LEN];
    ts_k8s(started_us, at);
    cJSON *conds = cJSON_GetObjectItemCaseSensitive(status, "conditions");
    cJSON_AddItemToArray(conds, condition("Initialized", true, p->start_time, NULL, NULL));
    cJSON_AddItemToArray(conds, condition("Ready", true, at, NULL, NULL));
    cJSON_AddItemToArray(conds, condition("ContainersReady", true, at, NULL, NULL));
    cJSON_AddItemToArray(conds, condition("PodScheduled", true, p->start_time, NULL, NULL));
    cJSON *r = cJSON_AddObjectToObject(cstate, "running");
    cJSON_AddStringToObject(r, "startedAt", at);
    set_status(p, status);
    jset_str(jobj(p->json, "spec"), "nodeName", NODE_NAME);
}

struct outcome {
    enum phase phase;
    int exit_code;
    const char *reason;     /* container terminated reason */
    const char *pod_reason; /* status.reason, may be NULL */
    const char *pod_message;
    const char *message; /* terminated.message, may be NULL */
    int64_t started_us, finished_us;
};

static void status_terminated(struct obj *p, const struct outcome *oc)
{
    p->phase = oc->phase;
    cJSON *cstate;
    cJSON *status = status_base(p, &cstate);
    char fin[TS_LEN], sta[TS_LEN];
    ts_k8s(oc->finished_us, fin);
    ts_k8s(oc->started_us ? oc->started_us : oc->finished_us, sta);
    if (oc->pod_reason)
        cJSON_AddStringToObject(status, "reason", oc->pod_reason);
    if (oc->pod_message)
        cJSON_AddStringToObject(status, "message", oc->pod_message);
    if (!p->start_time[0]) {
        bfmt(p->start_time, sizeof(p->start_time), "%s", sta);
        cJSON_AddStringToObject(status, "startTime", p->start_time);
    }
    cJSON *conds = cJSON_GetObjectItemCaseSensitive(status, "conditions");
    cJSON_AddItemToArray(conds, condition("Initialized", true, p->start_time, NULL, NULL));
    cJSON_AddItemToArray(conds, condition("Ready", false, fin, "PodCompleted", NULL));
    cJSON_AddItemToArray(conds, condition("ContainersReady", false, fin, "PodCompleted", NULL));
    cJSON_AddItemToArray(conds, condition("PodScheduled", true, p->start_time, NULL, NULL));
    cJSON *t = cJSON_AddObjectToObject(cstate, "terminated");
    cJSON_AddNumberToObject(t, "exitCode", oc->exit_code);
    cJSON_AddStringToObject(t, "reason", oc->reason);
    if (oc->message && oc->message[0])
        cJSON_AddStringToObject(t, "message", oc->message);
    cJSON_AddStringToObject(t, "startedAt", sta);
    cJSON_AddStringToObject(t, "finishedAt", fin);
    char id[64];
    bfmt(id, sizeof(id), "execd://%s", p->uid);
    cJSON_AddStringToObject(t, "containerID", id);
    set_status(p, status);
    jset_str(jobj(p->json, "spec"), "nodeName", NODE_NAME);
}

static void fail_pod(struct node_store *st, struct obj *p, int exit_code, const char *reason,
                     const char *message)
{
    int64_t now = now_wall_us();
    struct outcome oc = {.phase = PH_FAILED,
                         .exit_code = exit_code,
                         .reason = reason,
                         .pod_reason = reason,
                         .pod_message = message,
                         .message = message,
                         .started_us = now,
                         .finished_us = now};
    status_terminated(p, &oc);
    touch(st, p, "MODIFIED");
    log_info(NODE_ROLE, "pod failed before start", "pod=%s/%s reason=%s msg=\"%s\"", p->ns, p->name,
             reason, message);
}

/* ------------------------------------------------------------- run plans */

struct plan {
    struct strbuf strs; /* not used for pointers: each string is strdup'ed */
    char *argv[MAX_ENV + 2];
    int argc;
    char *env[MAX_ENV + 8];
    int envc;
    const char *links[RUNTIME_MAX_NAMES * 2 + 2];
    const char *binds[RUNTIME_MAX_BINDS + 1];
    struct sandbox_mount mounts[MAX_MOUNTS];
    struct sandbox_file *files[MAX_MOUNTS];
    char *file_data[MAX_MOUNTS];
    int nmounts;
    char *mount_dst[MAX_MOUNTS];
    char *workdir;
    char *term_path;
    char *hostname;
    uid_t uid;
    gid_t gid;
    int64_t memory, cpu, tmp_size;
    int64_t deadline_mono;
    bool fallback_logs;
};

static void plan_free(struct plan *pl)
{
    for (int i = 0; i < pl->argc; i++)
        free(pl->argv[i]);
    for (int i = 0; i < pl->envc; i++)
        free(pl->env[i]);
    for (int i = 0; i < pl->nmounts; i++) {
        if (pl->files[i]) {
            for (int k = 0; k < pl->mounts[i].nfiles; k++) {
                free((char *)(uintptr_t)pl->files[i][k].path);
                free((char *)(uintptr_t)pl->files[i][k].data);
            }
            free(pl->files[i]);
        }
        free(pl->mount_dst[i]);
    }
    free(pl->workdir);
    free(pl->term_path);
    free(pl->hostname);
}

static const char *env_lookup(struct plan *pl, const char *name, size_t len)
{
    for (int i = pl->envc - 1; i >= 0; i--)
        if (strncmp(pl->env[i], name, len) == 0 && pl->env[i][len] == '=')
            return pl->env[i] + len + 1;
    return NULL;
}

/* Kubernetes $(VAR) expansion in command/args: $(NAME) → value when defined,
 * $$ → $, anything else unchanged. */
static char *expand(struct plan *pl, const char *s)
{
    struct strbuf sb = {0};
    sb_append(&sb, "", 0);
    for (const char *p = s; *p;) {
        if (p[0] == '$' && p[1] == '$') {
            sb_append(&sb, "$", 1);
            p += 2;
        } else if (p[0] == '$' && p[1] == '(') {
            const char *end = strchr(p + 2, ')');
            const char *v = end ? env_lookup(pl, p + 2, (size_t)(end - p - 2)) : NULL;
            if (v) {
                sb_puts(&sb, v);
                p = end + 1;
            } else {
                sb_append(&sb, p, 1);
                p++;
            }
        } else {
            sb_append(&sb, p, 1);
            p++;
        }
    }
    return sb_steal(&sb);
}

static void env_set(struct plan *pl, const char *name, const char *value)
{
    size_t n = strlen(name);
    for (int i = 0; i < pl->envc; i++)
        if (strncmp(pl->env[i], name, n) == 0 && pl->env[i][n] == '=') {
            free(pl->env[i]);
            pl->envc--;
            memmove(&pl->env[i], &pl->env[i + 1], (size_t)(pl->envc - i) * sizeof(char *));
            break;
        }
    if (pl->envc >= MAX_ENV + 6)
        return;
    struct strbuf sb = {0};
    sb_printf(&sb, "%s=%s", name, value ? value : "");
    pl->env[pl->envc++] = sb_steal(&sb);
}

static int64_t quantity_of(const cJSON *res, const char *part, const char *key, int64_t scale)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(res, part);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(m, key);
    char num[64];
    const char *s = cJSON_IsString(q) ? q->valuestring : NULL;
    if (cJSON_IsNumber(q)) {
        bfmt(num, sizeof(num), "%.17g", q->valuedouble);
        s = num;
    }
    int64_t v;
    return s && quantity_parse(s, scale, &v) == 0 ? v : 0;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

static char *b64dec(const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *out = malloc(n * 3 / 4 + 4);
    if (!out)
        return NULL;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    *len = o;
    return out;
}

/* Adds the files of ConfigMap cm to mount i. */
static int cm_files(struct plan *pl, int i, const cJSON *cm, const cJSON *src, char *err,
                    size_t errlen)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(src, "items");
    const cJSON *dm = cJSON_GetObjectItemCaseSensitive(src, "defaultMode");
    int mode = cJSON_IsNumber(dm) ? (int)dm->valuedouble : 0644;
    const cJSON *data = cm ? cJSON_GetObjectItemCaseSensitive(cm, "data") : NULL;
    const cJSON *bin = cm ? cJSON_GetObjectItemCaseSensitive(cm, "binaryData") : NULL;
    int cap = cJSON_GetArraySize(data) + cJSON_GetArraySize(bin) + cJSON_GetArraySize(items) + 1;
    pl->files[i] = calloc((size_t)cap, sizeof(struct sandbox_file));
    if (!pl->files[i])
        return -ENOMEM;
    int n = 0;
    const cJSON *parts[] = {data, bin};
    for (int b = 0; b < 2; b++) {
        const cJSON *e;
        cJSON_ArrayForEach(e, parts[b])
        {
            if (!cJSON_IsString(e))
                continue;
            const char *path = e->string;
            int fmode = mode;
            if (cJSON_GetArraySize(items) > 0) {
                path = NULL;
                const cJSON *it;
                cJSON_ArrayForEach(it, items)
                {
                    const char *k = jstr(it, "key");
                    if (k && strcmp(k, e->string) == 0) {
                        path = jstr(it, "path");
                        const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "mode");
                        if (cJSON_IsNumber(m))
                            fmode = (int)m->valuedouble;
                    }
                }
                if (!path)
                    continue;
            }
            struct sandbox_file *f = &pl->files[i][n++];
            f->path = strdup(path);
            if (b == 0) {
                f->data = strdup(e->valuestring);
                f->len = strlen(e->valuestring);
            } else {
                f->data = b64dec(e->valuestring, &f->len);
            }
            f->mode = fmode;
            if (!f->path || !f->data)
                return -ENOMEM;
        }
    }
    /* Every listed key must exist unless the source is optional. */
    const cJSON *it;
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(src, "optional");
    cJSON_ArrayForEach(it, items)
    {
        const char *k = jstr(it, "key");
        bool found = k && ((data && cJSON_GetObjectItemCaseSensitive(data, k)) ||
                           (bin && cJSON_GetObjectItemCaseSensitive(bin, k)));
        if (!found && !cJSON_IsTrue(opt)) {
            bfmt(err, errlen, "configmap references non-existent config key: %s", k ? k : "");
            return -ENOENT;
        }
    }
    pl->mounts[i].files = pl->files[i];
    pl->mounts[i].nfiles = n;
    return 0;
}

/* Builds the sandbox plan for p (under the lock).  On failure: reason, message. */
static int make_plan(struct node_store *st, struct obj *p, struct plan *pl, const char **reason,
                     char *err, size_t errlen)
{
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(p->json, "spec");
    cJSON *c = container0(p->json);
    const char *image = jstr(c, "image");
    const struct runtime *rt = NULL;
    const struct runtime_version *ver = runtime_by_image(image, &rt);
    if (!ver) {
        struct strbuf have = {0};
        for (const struct runtime *r = runtime_table; r->lang; r++)
            for (const struct runtime_version *v = r->versions; v->version; v++)
                if (sandbox_binary_ok(v->binary))
                    sb_printf(&have, "%s%s", have.len ? ", " : "", v->image);
        *reason = "ErrImagePull";
        bfmt(err, errlen,
             "Failed to pull image \"%s\": this node runs images from its runtimes table only; "
             "available here: %s",
             image ? image : "", have.s ? have.s : "none");
        sb_release(&have);
        return -ENOENT;
    }
    if (!sandbox_binary_ok(ver->binary)) {
        *reason = "ErrImagePull";
        bfmt(err, errlen,
             "Failed to pull image \"%s\": the node serves it with %s, which is not installed "
             "on this host",
             image, ver->binary);
        return -ENOENT;
    }
    /* Environment: image defaults, then the container's. */
    env_set(pl, "PATH", IMAGE_PATH_DIR ":/usr/local/bin:/usr/bin:/bin");
    env_set(pl, "HOME", "/tmp");
    env_set(pl, "HOSTNAME", p->name);
    for (int i = 0; i < RUNTIME_MAX_ENV && rt->env[i]; i++) {
        const char *eq = strchr(rt->env[i], '=');
        char k[64];
        bfmt(k, sizeof(k), "%.*s", (int)(eq - rt->env[i]), rt->env[i]);
        env_set(pl, k, eq + 1);
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(c, "env"))
    {
        const char *n = jstr(e, "name");
        const char *v = jstr(e, "value");
        if (!n)
            continue;
        char *x = expand(pl, v ? v : "");
        env_set(pl, n, x);
        free(x);
    }
    pl->env[pl->envc] = NULL;
    /* argv: command overrides the image entrypoint (none here), args its CMD. */
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(c, "command");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(c, "args");
    int ncmd = cJSON_GetArraySize(cmd), nargs = cJSON_GetArraySize(args);
    if (ncmd + nargs > MAX_ENV) {
        *reason = "CreateContainerConfigError";
        bfmt(err, errlen, "the command has more than %d arguments", MAX_ENV);
        return -E2BIG;
    }
    const cJSON *a;
    cJSON_ArrayForEach(a, cmd) pl->argv[pl->argc++] = expand(pl, a->valuestring);
    if (ncmd == 0 &&
        (nargs == 0 || (nargs > 0 && cJSON_GetArrayItem(args, 0)->valuestring[0] == '-')))
        pl->argv[pl->argc++] = strdup(ver->cmd);
    cJSON_ArrayForEach(a, args) pl->argv[pl->argc++] = expand(pl, a->valuestring);
    pl->argv[pl->argc] = NULL;
    /* The names the image puts on PATH. */
    int nl = 0;
    for (int i = 0; i < RUNTIME_MAX_NAMES && ver->names[i]; i++) {
        pl->links[nl++] = ver->binary;
        pl->links[nl++] = ver->names[i];
    }
    pl->links[nl] = NULL;
    int nb = 0;
    for (int i = 0; i < RUNTIME_MAX_BINDS && rt->binds[i]; i++)
        pl->binds[nb++] = rt->binds[i];
    pl->binds[nb] = NULL;
    /* Security context: container over pod; default nobody. */
    const cJSON *psc = cJSON_GetObjectItemCaseSensitive(spec, "securityContext");
    const cJSON *csc = cJSON_GetObjectItemCaseSensitive(c, "securityContext");
    const cJSON *ru = cJSON_GetObjectItemCaseSensitive(csc, "runAsUser");
    if (!cJSON_IsNumber(ru))
        ru = cJSON_GetObjectItemCaseSensitive(psc, "runAsUser");
    const cJSON *rg = cJSON_GetObjectItemCaseSensitive(csc, "runAsGroup");
    if (!cJSON_IsNumber(rg))
        rg = cJSON_GetObjectItemCaseSensitive(psc, "runAsGroup");
    const cJSON *nonroot = cJSON_GetObjectItemCaseSensitive(csc, "runAsNonRoot");
    if (!cJSON_IsBool(nonroot))
        nonroot = cJSON_GetObjectItemCaseSensitive(psc, "runAsNonRoot");
    pl->uid = cJSON_IsNumber(ru) ? (uid_t)ru->valuedouble : NODE_DEFAULT_UID;
    pl->gid = cJSON_IsNumber(rg) ? (gid_t)rg->valuedouble : pl->uid == 0 ? 0 : NODE_DEFAULT_UID;
    if (cJSON_IsTrue(nonroot) && pl->uid == 0) {
        *reason = "CreateContainerConfigError";
        bfmt(err, errlen, "container has runAsNonRoot and image will run as root");
        return -EPERM;
    }
    /* Resources. */
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(c, "resources");
    pl->memory = quantity_of(res, "limits", "memory", 1);
    if (!pl->memory)
        pl->memory = NODE_DEFAULT_MEMORY;
    pl->cpu = quantity_of(res, "limits", "cpu", 1000);
    pl->tmp_size = NODE_DEFAULT_TMP;
    /* Volumes. */
    const cJSON *vols = cJSON_GetObjectItemCaseSensitive(spec, "volumes");
    const cJSON *vm;
    cJSON_ArrayForEach(vm, cJSON_GetObjectItemCaseSensitive(c, "volumeMounts"))
    {
        if (pl->nmounts == MAX_MOUNTS) {
            *reason = "CreateContainerConfigError";
            bfmt(err, errlen, "more than %d volume mounts", MAX_MOUNTS);
            return -E2BIG;
        }
        const char *vname = jstr(vm, "name");
        const cJSON *vol = NULL, *v;
        cJSON_ArrayForEach(v, vols)
        {
            const char *n = jstr(v, "name");
            if (n && vname && strcmp(n, vname) == 0)
                vol = v;
        }
        if (!vol)
            continue;
        int i = pl->nmounts++;
        struct sandbox_mount *m = &pl->mounts[i];
        pl->mount_dst[i] = strdup(jstr(vm, "mountPath"));
        m->dst = pl->mount_dst[i];
        m->name = vname;
        const cJSON *cmsrc = cJSON_GetObjectItemCaseSensitive(vol, "configMap");
        if (cmsrc) {
            m->kind = SANDBOX_FILES;
            m->read_only = true;
            const char *cmname = jstr(cmsrc, "name");
            struct obj *cm = cmname ? find(st, KIND_CONFIGMAP, p->ns, cmname) : NULL;
            if (!cm && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cmsrc, "optional"))) {
                *reason = "CreateContainerConfigError";
                bfmt(err, errlen,
                     "MountVolume.SetUp failed for volume \"%s\": configmap \"%s\" not found",
                     vname, cmname ? cmname : "");
                return -ENOENT;
            }
            int rc = cm_files(pl, i, cm ? cm->json : NULL, cmsrc, err, errlen);
            if (rc) {
                *reason = "CreateContainerConfigError";
                return rc;
            }
        } else {
            const cJSON *ed = cJSON_GetObjectItemCaseSensitive(vol, "emptyDir");
            const char *sl = jstr(ed, "sizeLimit");
            int64_t size = 0;
            if (!sl || quantity_parse(sl, 1, &size) != 0 || size <= 0)
                size = NODE_DEFAULT_TMP;
            m->kind = SANDBOX_TMPFS;
            m->size = size;
        }
    }
    const char *wd = jstr(c, "workingDir");
    pl->workdir = strdup(wd && *wd ? wd : "/");
    const char *tp = jstr(c, "terminationMessagePath");
    pl->term_path = strdup(tp ? tp : "/dev/termination-log");
    const char *pol = jstr(c, "terminationMessagePolicy");
    pl->fallback_logs = pol && strcmp(pol, "FallbackToLogsOnError") == 0;
    char host[64];
    bfmt(host, sizeof(host), "%.63s", p->name);
    pl->hostname = strdup(host);
    const cJSON *ads = cJSON_GetObjectItemCaseSensitive(spec, "activeDeadlineSeconds");
    if (cJSON_IsNumber(ads))
        pl->deadline_mono = p->start_mono + (int64_t)ads->valuedouble * 1000;
    if (!pl->workdir || !pl->term_path || !pl->hostname || pl->argc == 0 || !pl->argv[0]) {
        *reason = "CreateContainerConfigError";
        bfmt(err, errlen, "out of memory or empty command");
        return -ENOMEM;
    }
    return 0;
}

/* ----------------------------------------------------------------- runner */

struct started_ctx {
    struct node_store *st;
    struct obj *p;
};

static void on_started(void *arg, int64_t wall_us)
{
    struct started_ctx *sc = arg;
    pthread_mutex_lock(&sc->st->mu);
    if (!sc->p->deleted && sc->p->phase == PH_PENDING) {
        status_running(sc->p, wall_us);
        touch(sc->st, sc->p, "MODIFIED");
    }
    pthread_mutex_unlock(&sc->st->mu);
}

/* The last 2048 bytes of the log (FallbackToLogsOnError). */
static void log_tail(const char *path, char *out, size_t len)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat sbuf;
    if (fstat(fd, &sbuf) == 0) {
        size_t want = len - 1 < 2048 ? len - 1 : 2048;
        off_t off = sbuf.st_size > (off_t)want ? sbuf.st_size - (off_t)want : 0;
        ssize_t n = pread(fd, out, want, off);
        out[n > 0 ? n : 0] = '\0';
    }
    close(fd);
}

static void run_pod(struct node_store *st, struct obj *p)
{
    struct plan *pl = calloc(1, sizeof(*pl));
    struct sandbox_result *res = calloc(1, sizeof(*res));
    char err[512] = "";
    const char *reason = "CreateContainerConfigError";
    char lpath[1100];
    log_path(st, p->uid, lpath, sizeof(lpath));
    p->start_mono = now_mono_ms();
    ts_k8s(now_wall_us(), p->start_time);
    int rc = pl && res ? make_plan(st, p, pl, &reason, err, sizeof(err)) : -ENOMEM;
    if (rc) {
        if (!pl || !res)
            bfmt(err, sizeof(err), "out of memory");
        fail_pod(st, p, 128, reason, err);
        goto out;
    }
    if (pipe(p->cancel) != 0) {
        fail_pod(st, p, 128, "StartError", "cannot create the cancel pipe");
        goto out;
    }
    (void)fcntl(p->cancel[0], F_SETFD, FD_CLOEXEC);
    (void)fcntl(p->cancel[1], F_SETFD, FD_CLOEXEC);
    p->running = true;
    struct started_ctx sc = {.st = st, .p = p};
    struct sandbox_spec spec = {
        .id = p->uid,
        .hostname = pl->hostname,
        .argv = pl->argv,
        .env = pl->env,
        .workdir = pl->workdir,
        .path_dir = IMAGE_PATH_DIR,
        .links = pl->links,
        .binds = pl->binds,
        .uid = pl->uid,
        .gid = pl->gid,
        .memory_limit = pl->memory,
        .cpu_millis = pl->cpu,
        .tmp_size = pl->tmp_size,
        .mounts = pl->mounts,
        .nmounts = pl->nmounts,
        .term_path = pl->term_path,
        .log_path = lpath,
        .log_limit = st->cfg->node_log_limit_bytes,
        .deadline_mono = pl->deadline_mono,
        .cancel_fd = p->cancel[0],
        .started = on_started,
        .arg = &sc,
    };
    log_debug(NODE_ROLE, "pod starting", "pod=%s/%s uid=%s argv0=%s memory=%lld", p->ns, p->name,
              p->uid, pl->argv[0], (long long)pl->memory);
    pthread_mutex_unlock(&st->mu);
    rc = sandbox_run(st->sb, &spec, res);
    pthread_mutex_lock(&st->mu);
    p->running = false;
    close(p->cancel[0]);
    close(p->cancel[1]);
    p->cancel[0] = p->cancel[1] = -1;
    if (p->deleted || (res->cancelled && atomic_load(&st->stop)))
        goto out; /* deleted, or the node is stopping: a restart reports it */
    struct outcome oc = {.exit_code = res->exit_code,
                         .started_us = res->started_us,
                         .finished_us = res->finished_us,
                         .message = res->message};
    char tail[2100];
    if (rc) {
        oc.phase = PH_FAILED;
        oc.reason = "StartError";
        oc.exit_code = 128;
        log_tail(lpath, tail, sizeof(tail));
        char msg[2400];
        bfmt(msg, sizeof(msg), "%s%s%s", res->error, tail[0] ? ": " : "", tail);
        oc.message = msg;
        oc.pod_reason = NULL;
        status_terminated(p, &oc);
        touch(st, p, "MODIFIED");
        goto out;
    }
    if (res->deadline) {
        oc.phase = PH_FAILED;
        oc.reason = "DeadlineExceeded";
        oc.pod_reason = "DeadlineExceeded";
        oc.pod_message = "Pod was active on the node longer than the specified deadline";
    } else if (res->oom && res->exit_code != 0) {
        oc.phase = PH_FAILED;
        oc.reason = "OOMKilled";
    } else if (res->exit_code == 0) {
        oc.phase = PH_SUCCEEDED;
        oc.reason = "Completed";
    } else {
        oc.phase = PH_FAILED;
        oc.reason = "Error";
    }
    if (oc.phase == PH_FAILED && pl->fallback_logs && !res->message[0]) {
        log_tail(lpath, tail, sizeof(tail));
        oc.message = tail;
    }
    status_terminated(p, &oc);
    touch(st, p, "MODIFIED");
    log_info(NODE_ROLE, "pod finished",
             "pod=%s/%s phase=%s reason=%s exit=%d ms=%lld peak_kb=%lld log_bytes=%lld "
             "log_truncated=%d",
             p->ns, p->name, phase_names[oc.phase], oc.reason, oc.exit_code,
             (long long)((res->finished_us - res->started_us) / 1000),
             (long long)(res->peak_memory / 1024), (long long)res->log_bytes, res->log_truncated);
out:
    if (pl)
        plan_free(pl);
    free(pl);
    free(res);
}

static void *runner_main(void *arg)
{
    struct node_store *st = arg;
    pthread_mutex_lock(&st->mu);
    int id = st->started++;
    char name[16];
    bfmt(name, sizeof(name), "node-run-%d", id);
    thread_name_set(name);
    for (;;) {
        while (!atomic_load(&st->stop) && !st->qhead) {
            st->idle++;
            pthread_cond_wait(&st->queue_cv, &st->mu);
            st->idle--;
        }
        if (atomic_load(&st->stop))
            break;
        struct obj *p = st->qhead;
        st->qhead = p->qnext;
        if (!st->qhead)
            st->qtail = NULL;
        p->qnext = NULL;
        p->queued = false;
        p->refs++;
        st->running++;
        run_pod(st, p);
        st->running--;
        obj_unref(st, p);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* ------------------------------------------------------------------ store */

static struct obj *obj_new(enum kind kind, const char *ns, cJSON *json)
{
    struct obj *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->kind = kind;
    o->refs = 1;
    o->cancel[0] = o->cancel[1] = -1;
    o->json = json;
    cJSON *md = jobj(json, "metadata");
    bfmt(o->ns, sizeof(o->ns), "%s", ns);
    const char *name = jstr(md, "name");
    bfmt(o->name, sizeof(o->name), "%s", name ? name : "");
    const char *uid = jstr(md, "uid");
    if (uid && strlen(uid) == UUID_LEN - 1)
        memcpy(o->uid, uid, UUID_LEN);
    else
        uuid_v4(o->uid);
    return o;
}

static void load_kind(struct node_store *st, enum kind kind)
{
    char dir[1100];
    bfmt(dir, sizeof(dir), "%s/%s", st->dir, kind_dirs[kind]);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0)
            continue;
        char path[1400];
        bfmt(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        struct strbuf sb = {0};
        char buf[8192];
        size_t r;
        while ((r = fread(buf, 1, sizeof(buf), f)) > 0)
            sb_append(&sb, buf, r);
        fclose(f);
        cJSON *json = sb.s ? cJSON_Parse(sb.s) : NULL;
        sb_release(&sb);
        cJSON *md = cJSON_GetObjectItemCaseSensitive(json, "metadata");
        const char *ns = jstr(md, "namespace");
        if (!json || !ns || !jstr(md, "name")) {
            log_warn(NODE_ROLE, "ignoring unreadable state file", "path=%s", path);
            cJSON_Delete(json);
            continue;
        }
        struct obj *o = obj_new(kind, ns, json);
        if (!o || add_obj(st, o) != 0) {
            cJSON_Delete(json);
            free(o);
            continue;
        }
        const char *rv = jstr(md, "resourceVersion");
        int64_t v = rv ? strtoll(rv, NULL, 10) : 0;
        if (v > st->rv)
            st->rv = v;
        if (kind == KIND_POD) {
            const char *ph = jstr(cJSON_GetObjectItemCaseSensitive(json, "status"), "phase");
            o->phase = PH_PENDING;
            for (int i = 0; i < 4; i++)
                if (ph && strcmp(ph, phase_names[i]) == 0)
                    o->phase = (enum phase)i;
            const char *stt = jstr(cJSON_GetObjectItemCaseSensitive(json, "status"), "startTime");
            if (stt)
                bfmt(o->start_time, sizeof(o->start_time), "%s", stt);
        }
    }
    closedir(d);
}

int node_store_new(const struct store_opts *opts, struct node_store **out)
{
    struct node_store *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->cfg = opts->cfg;
    st->sb = opts->sb;
    st->stopping = opts->stopping;
    st->slots = config_node_slots(opts->cfg);
    st->ring_cap = (size_t)opts->cfg->node_watch_history;
    st->ring = calloc(st->ring_cap, sizeof(*st->ring));
    st->runners = calloc((size_t)st->slots, sizeof(pthread_t));
    if (!st->ring || !st->runners) {
        node_store_free(st);
        return -ENOMEM;
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->watch_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&st->queue_cv, NULL);
    bfmt(st->dir, sizeof(st->dir), "%s", opts->cfg->node_state_dir);
    const char *subs[] = {"pods", "configmaps", "networkpolicies", "logs"};
    for (int i = 0; i < 4; i++) {
        char d[1100];
        bfmt(d, sizeof(d), "%s/%s", st->dir, subs[i]);
        int rc = mkdir_p(d, 0700);
        if (rc) {
            log_error(NODE_ROLE, "cannot create the node state directory", "path=%s err=\"%s\"", d,
                      strerror(-rc));
            node_store_free(st);
            return rc;
        }
    }
    char path[1100], buf[64];
    bfmt(path, sizeof(path), "%s/rv", st->dir);
    FILE *f = fopen(path, "re");
    if (f) {
        if (fgets(buf, sizeof(buf), f))
            st->rv = strtoll(buf, NULL, 10);
        fclose(f);
    }
    for (int k = 0; k < KIND_COUNT; k++)
        load_kind(st, (enum kind)k);
    /* Pods whose container was lost with the previous process. */
    int lost = 0;
    for (size_t i = 0; i < st->nobjs; i++) {
        struct obj *o = st->objs[i];
        if (o->kind != KIND_POD || (o->phase != PH_PENDING && o->phase != PH_RUNNING))
            continue;
        const char *was = phase_names[o->phase];
        char msg[256];
        bfmt(msg, sizeof(msg),
             "The node restarted while the pod was %s; its container was lost and is not "
             "restarted",
             was);
        int64_t now = now_wall_us();
        struct outcome oc = {.phase = PH_FAILED,
                             .exit_code = 137,
                             .reason = "ContainerStatusUnknown",
                             .pod_reason = "NodeRestarted",
                             .pod_message = msg,
                             .message = "The container could not be located when the pod was "
                                        "terminated",
                             .started_us = now,
                             .finished_us = now};
        status_terminated(o, &oc);
        touch(st, o, "MODIFIED");
        lost++;
    }
    /* History starts now: older resourceVersions are expired. */
    for (size_t i = 0; i < st->ring_len; i++) {
        struct wev *e = &st->ring[(st->ring_start + i) % st->ring_cap];
        free(e->line);
        cJSON_Delete(e->meta);
    }
    st->ring_len = st->ring_start = 0;
    st->floor = st->rv;
    log_info(NODE_ROLE, "node state loaded", "dir=%s objects=%zu lost_pods=%d rv=%lld", st->dir,
             st->nobjs, lost, (long long)st->rv);
    *out = st;
    return 0;
}

int node_store_start(struct node_store *st)
{
    for (int i = 0; i < st->slots; i++) {
        int rc = pthread_create(&st->runners[i], NULL, runner_main, st);
        if (rc) {
            log_error(NODE_ROLE, "cannot start a pod runner", "err=\"%s\"", strerror(rc));
            return -rc;
        }
        st->nrunners++;
    }
    return 0;
}

void node_store_stop(struct node_store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    atomic_store(&st->stop, true);
    for (size_t i = 0; i < st->nobjs; i++) {
        struct obj *o = st->objs[i];
        if (o->kind == KIND_POD && o->running && o->cancel[1] >= 0) {
            ssize_t n = write(o->cancel[1], "x", 1);
            (void)n;
        }
    }
    pthread_cond_broadcast(&st->queue_cv);
    pthread_cond_broadcast(&st->watch_cv);
    pthread_mutex_unlock(&st->mu);
}

void node_store_join(struct node_store *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->nrunners; i++)
        pthread_join(st->runners[i], NULL);
    st->nrunners = 0;
}

void node_store_free(struct node_store *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->nobjs; i++) {
        cJSON_Delete(st->objs[i]->json);
        free(st->objs[i]);
    }
    free(st->objs);
    for (size_t i = 0; st->ring && i < st->ring_len; i++) {
        struct wev *e = &st->ring[(st->ring_start + i) % st->ring_cap];
        free(e->line);
        cJSON_Delete(e->meta);
    }
    free(st->ring);
    free(st->runners);
    if (st->dir[0]) {
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->watch_cv);
        pthread_cond_destroy(&st->queue_cv);
    }
    free(st);
}

void node_store_counts(struct node_store *st, int *running, int *pending, int *total)
{
    pthread_mutex_lock(&st->mu);
    *running = st->running;
    *pending = queue_len(st);
    int n = 0;
    for (size_t i = 0; i < st->nobjs; i++)
        n += st->objs[i]->kind == KIND_POD;
    *total = n;
    pthread_mutex_unlock(&st->mu);
}

int64_t node_store_rv(struct node_store *st)
{
    pthread_mutex_lock(&st->mu);
    int64_t rv = st->rv;
    pthread_mutex_unlock(&st->mu);
    return rv;
}

static char *print(const struct obj *o)
{
    return cJSON_PrintUnformatted(o->json);
}

int node_store_create(struct node_store *st, enum kind kind, const char *ns, cJSON *obj,
                      char **json)
{
    cJSON *md = jobj(obj, "metadata");
    jset_str(md, "namespace", ns);
    const char *name = jstr(md, "name");
    pthread_mutex_lock(&st->mu);
    if (find(st, kind, ns, name ? name : "")) {
        pthread_mutex_unlock(&st->mu);
        return -EEXIST;
    }
    /* kind and apiVersion first, as the apiserver prints them. */
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "kind");
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "apiVersion");
    cJSON *rest = obj->child;
    obj->child = NULL;
    cJSON_AddStringToObject(obj, "kind", kind_names[kind]);
    cJSON_AddStringToObject(obj, "apiVersion", api_versions[kind]);
    while (rest) {
        cJSON *next = rest->next;
        rest->prev = rest->next = NULL;
        cJSON_AddItemToObject(obj, rest->string, rest);
        rest = next;
    }
    struct obj *o = obj_new(kind, ns, obj);
    if (!o || add_obj(st, o) != 0) {
        pthread_mutex_unlock(&st->mu);
        if (o)
            o->json = NULL;
        free(o);
        return -ENOMEM;
    }
    jset_str(md, "uid", o->uid);
    char now[TS_LEN];
    ts_k8s(now_wall_us(), now);
    jset_str(md, "creationTimestamp", now);
    cJSON_DeleteItemFromObjectCaseSensitive(md, "deletionTimestamp");
    if (kind == KIND_POD) {
        o->phase = PH_PENDING;
        bool schedulable = queue_len(st) < st->idle;
        status_pending(o, schedulable, st->slots);
        o->queued = true;
        if (st->qtail)
            st->qtail->qnext = o;
        else
            st->qhead = o;
        st->qtail = o;
        touch(st, o, "ADDED");
        pthread_cond_signal(&st->queue_cv);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "status");
        touch(st, o, "ADDED");
    }
    *json = print(o);
    pthread_mutex_unlock(&st->mu);
    return *json ? 0 : -ENOMEM;
}

int node_store_get(struct node_store *st, enum kind kind, const char *ns, const char *name,
                   char **json)
{
    pthread_mutex_lock(&st->mu);
    struct obj *o = find(st, kind, ns, name);
    *json = o ? print(o) : NULL;
    pthread_mutex_unlock(&st->mu);
    return o ? (*json ? 0 : -ENOMEM) : -ENOENT;
}

/* Deletes o (under the lock); kills its container when running. */
static void delete_locked(struct node_store *st, struct obj *o)
{
    remove_obj(st, o);
    o->deleted = true;
    if (o->kind == KIND_POD) {
        char now[TS_LEN];
        ts_k8s(now_wall_us(), now);
        cJSON *md = jobj(o->json, "metadata");
        bool live = o->phase == PH_PENDING || o->phase == PH_RUNNING;
        if (o->queued)
            dequeue(st, o);
        if (live) {
            jset_str(md, "deletionTimestamp", now);
            cJSON_DeleteItemFromObjectCaseSensitive(md, "deletionGracePeriodSeconds");
            cJSON_AddNumberToObject(md, "deletionGracePeriodSeconds", 0);
            touch(st, o, "MODIFIED");
        }
        if (o->running && o->cancel[1] >= 0) {
            ssize_t n = write(o->cancel[1], "x", 1);
            (void)n;
        }
    }
    touch(st, o, "DELETED");
    log_debug(NODE_ROLE, "object deleted", "kind=%s name=%s/%s", kind_names[o->kind], o->ns,
              o->name);
}

int node_store_delete(struct node_store *st, enum kind kind, const char *ns, const char *name,
                      char **json)
{
    pthread_mutex_lock(&st->mu);
    struct obj *o = find(st, kind, ns, name);
    if (!o) {
        pthread_mutex_unlock(&st->mu);
        return -ENOENT;
    }
    delete_locked(st, o);
    *json = print(o);
    obj_unref(st, o);
    pthread_mutex_unlock(&st->mu);
    return *json ? 0 : -ENOMEM;
}

static int cmp_obj(const void *a, const void *b)
{
    const struct obj *x = *(struct obj *const *)a;
    const struct obj *y = *(struct obj *const *)b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

int node_store_list(struct node_store *st, enum kind kind, const char *ns,
                    const struct selector *labels, const struct selector *fields, bool del,
                    char **json)
{
    pthread_mutex_lock(&st->mu);
    struct obj **hits = calloc(st->nobjs + 1, sizeof(*hits));
    if (!hits) {
        pthread_mutex_unlock(&st->mu);
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < st->nobjs; i++) {
        struct obj *o = st->objs[i];
        if (o->kind != kind || (ns && strcmp(o->ns, ns) != 0))
            continue;
        cJSON *md = cJSON_GetObjectItemCaseSensitive(o->json, "metadata");
        if (!selector_match(labels, cJSON_GetObjectItemCaseSensitive(md, "labels")) ||
            !field_selector_match(fields, o->json))
            continue;
        hits[n++] = o;
    }
    qsort(hits, n, sizeof(*hits), cmp_obj);
    if (del)
        for (size_t i = 0; i < n; i++)
            delete_locked(st, hits[i]);
    struct strbuf sb = {0};
    sb_printf(&sb,
              "{\"kind\":\"%s\",\"apiVersion\":\"%s\",\"metadata\":{\"resourceVersion\":\"%lld\"},"
              "\"items\":[",
              list_kinds[kind], api_versions[kind], (long long)st->rv);
    for (size_t i = 0; i < n; i++) {
        char *s = print(hits[i]);
        if (s) {
            sb_printf(&sb, "%s%s", i ? "," : "", s);
            cJSON_free(s);
        }
        if (del)
            obj_unref(st, hits[i]);
    }
    sb_puts(&sb, "]}");
    pthread_mutex_unlock(&st->mu);
    free(hits);
    *json = sb_steal(&sb);
    return *json ? 0 : -ENOMEM;
}

int node_store_log_path(struct node_store *st, const char *ns, const char *name,
                        const char *container, char *path, size_t len, char *err, size_t errlen)
{
    pthread_mutex_lock(&st->mu);
    struct obj *o = find(st, KIND_POD, ns, name);
    int rc = 0;
    if (!o) {
        rc = -ENOENT;
    } else {
        const char *cname = jstr(container0(o->json), "name");
        if (container && *container && (!cname || strcmp(container, cname) != 0)) {
            bfmt(err, errlen, "container %s is not valid for pod %s", container, name);
            rc = -EINVAL;
        } else if (o->phase == PH_PENDING) {
            bfmt(err, errlen,
                 "container \"%s\" in pod \"%s\" is waiting to start: "
                 "ContainerCreating",
                 cname ? cname : "", name);
            rc = -EAGAIN;
        } else {
            log_path(st, o->uid, path, len);
        }
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ------------------------------------------------------------------ watch */

static bool wev_match(const struct wev *e, const struct watch_opts *w)
{
    if (w->ns && strcmp(e->ns, w->ns) != 0)
        return false;
    cJSON *md = cJSON_GetObjectItemCaseSensitive(e->meta, "metadata");
    return selector_match(w->labels, cJSON_GetObjectItemCaseSensitive(md, "labels")) &&
           field_selector_match(w->fields, e->meta);
}

static int write_expired(const struct watch_opts *w, int64_t rv)
{
    char buf[512];
    int n = bfmt(buf, sizeof(buf),
                 "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
                 "\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: "
                 "%lld\",\"reason\":\"Expired\",\"code\":410}}\n",
                 (long long)rv);
    (void)w->write(w->arg, buf, (size_t)n);
    return -ESTALE;
}

static bool watch_done(struct node_store *st, const struct watch_opts *w)
{
    return atomic_load(&st->stop) || (st->stopping && atomic_load(st->stopping)) ||
           (w->srv && http_server_stopping(w->srv)) || now_mono_ms() >= w->end_mono;
}

int node_store_watch(struct node_store *st, const struct watch_opts *w)
{
    struct strbuf out = {0};
    int64_t cursor;
    pthread_mutex_lock(&st->mu);
    if (w->has_rv && w->rv > 0) {
        if (w->rv < st->floor) {
            pthread_mutex_unlock(&st->mu);
            return write_expired(w, w->rv);
        }
        cursor = w->rv;
    } else {
        /* No resourceVersion: the current state as ADDED, then changes. */
        struct obj **hits = calloc(st->nobjs + 1, sizeof(*hits));
        size_t n = 0;
        for (size_t i = 0; hits && i < st->nobjs; i++) {
            struct obj *o = st->objs[i];
            if (o->kind != KIND_POD || (w->ns && strcmp(o->ns, w->ns) != 0))
                continue;
            cJSON *md = cJSON_GetObjectItemCaseSensitive(o->json, "metadata");
            if (!selector_match(w->labels, cJSON_GetObjectItemCaseSensitive(md, "labels")) ||
                !field_selector_match(w->fields, o->json))
                continue;
            hits[n++] = o;
        }
        if (hits)
            qsort(hits, n, sizeof(*hits), cmp_obj);
        for (size_t i = 0; i < n; i++) {
            char *s = print(hits[i]);
            if (s)
                sb_printf(&out, "{\"type\":\"ADDED\",\"object\":%s}\n", s);
            cJSON_free(s);
        }
        free(hits);
        cursor = st->rv;
    }
    pthread_mutex_unlock(&st->mu);
    int rc = 0;
    int64_t last_write = now_mono_ms();
    if (out.len) {
        rc = w->write(w->arg, out.s, out.len);
        last_write = now_mono_ms();
    }
    sb_release(&out);
    while (rc == 0) {
        pthread_mutex_lock(&st->mu);
        bool bookmark = false;
        for (;;) {
            if (watch_done(st, w))
                break;
            if (cursor < st->floor) {
                pthread_mutex_unlock(&st->mu);
                sb_release(&out);
                return write_expired(w, cursor);
            }
            for (size_t i = 0; i < st->ring_len; i++) {
                const struct wev *e = &st->ring[(st->ring_start + i) % st->ring_cap];
                if (e->rv <= cursor || !wev_match(e, w))
                    continue;
                sb_append(&out, e->line, e->len);
            }
            if (st->rv > cursor)
                cursor = st->rv;
            if (out.len)
                break;
            int64_t now = now_mono_ms();
            if (w->bookmarks && now - last_write >= BOOKMARK_EVERY_MS) {
                bookmark = true;
                break;
            }
            int64_t wake = w->end_mono;
            if (w->bookmarks && last_write + BOOKMARK_EVERY_MS < wake)
                wake = last_write + BOOKMARK_EVERY_MS;
            if (now + 250 < wake)
                wake = now + 250; /* re-check the server's stop flag */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t ms = wake - now;
            ts.tv_sec += ms / 1000;
            ts.tv_nsec += (ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&st->watch_cv, &st->mu, &ts);
        }
        int64_t rv = cursor;
        pthread_mutex_unlock(&st->mu);
        if (out.len) {
            rc = w->write(w->arg, out.s, out.len);
            out.len = 0;
            last_write = now_mono_ms();
        } else if (bookmark) {
            char buf[160];
            int n = bfmt(buf, sizeof(buf),
                         "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":"
                         "\"v1\",\"metadata\":{\"resourceVersion\":\"%lld\"}}}\n",
                         (long long)rv);
            rc = w->write(w->arg, buf, (size_t)n);
            last_write = now_mono_ms();
        } else {
            break; /* deadline or stop */
        }
    }
    sb_release(&out);
    return rc;
}
