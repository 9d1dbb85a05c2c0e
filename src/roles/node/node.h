/*
 * node.h — private interfaces between the files of the node role.
 *
 *   node_role.c     the struct role: init/start/stop/join/destroy/health
 *   node_api.c      the Kubernetes REST subset (HTTP handlers, Status errors)
 *   node_spec.c     validation of submitted objects, label selectors, quantities
 *   node_pods.c     the object store, resourceVersions, watch history, the
 *                   slot runners and the pod state machine, persistence
 *   node_sandbox.c  one container run under bubblewrap: cgroups, seccomp,
 *                   rlimits, output cap, deadline, termination message
 *
 * Nothing here is visible outside src/roles/node/.
 */
#ifndef EXECD_NODE_H
#define EXECD_NODE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cJSON;
struct config;
struct http_server;
struct strbuf;

#define NODE_ROLE "node"
/* Memory limit for a pod whose spec sets none. */
#define NODE_DEFAULT_MEMORY (512LL << 20)
/* Size of the default /tmp when the pod mounts nothing there. */
#define NODE_DEFAULT_TMP (64LL << 20)
/* Kubernetes caps the termination message at 4096 bytes. */
#define NODE_TERM_MSG_MAX 4096
/* The uid a pod runs as when its spec names none (nobody). */
#define NODE_DEFAULT_UID 65534

/* snprintf for paths and messages whose truncation is acceptable (bounded
 * inputs); returns the vsnprintf result. */
int bfmt(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------ sandbox */

/* What this host enforces, found once at start-up. */
struct sandbox_caps {
    bool userns;      /* bubblewrap could create user namespaces (required) */
    bool seccomp;     /* the libseccomp filter loads */
    bool cg_memory;   /* per-pod memory cgroup (limit + OOM detection) */
    bool cg_pids;     /* per-pod pids cgroup */
    bool cg_cpu;      /* per-pod CPU quota */
    int cg_version;   /* 1, 2, or 0 when no cgroup is writable */
    char bwrap[128];  /* path of bwrap */
    char detail[256]; /* why a limit is missing, for the ready report */
};

enum sandbox_mount_kind { SANDBOX_FILES, SANDBOX_TMPFS };

struct sandbox_file {
    const char *path; /* relative to the mount, no ".." */
    const char *data;
    size_t len;
    int mode;
};

struct sandbox_mount {
    enum sandbox_mount_kind kind;
    const char *name; /* volume name, used for the host directory */
    const char *dst;  /* absolute path inside the sandbox */
    bool read_only;
    int64_t size; /* tmpfs bytes */
    const struct sandbox_file *files;
    int nfiles;
};

struct sandbox_spec {
    const char *id;           /* unique (pod uid): names the cgroup and run dir */
    const char *hostname;     /* the pod name */
    char *const *argv;        /* command inside the sandbox, NULL-terminated */
    char *const *env;         /* "K=V", NULL-terminated (may be NULL) */
    const char *workdir;      /* "/" when empty */
    const char *path_dir;     /* where the image's names link, e.g. /opt/execd/bin */
    const char *const *links; /* pairs: target, link name (NULL-terminated) */
    const char *const *binds; /* extra host dirs bound read-only (NULL-terminated) */
    uid_t uid;
    gid_t gid;
    int64_t memory_limit; /* bytes, > 0 */
    int64_t cpu_millis;   /* 0 = no quota */
    int64_t tmp_size;     /* size of /tmp when no mount covers it */
    const struct sandbox_mount *mounts;
    int nmounts;
    const char *term_path; /* terminationMessagePath inside the sandbox */
    const char *log_path;  /* host file receiving stdout+stderr */
    int64_t log_limit;     /* bytes kept; the rest is read and discarded */
    int64_t deadline_mono; /* monotonic ms, 0 = none */
    int cancel_fd;         /* readable => kill now (delete, stop); -1 = none */
    /* Called once the container process runs, from the calling thread. */
    void (*started)(void *arg, int64_t wall_us);
    void *arg;
};

struct sandbox_result {
    bool started;        /* the command was exec'd inside the sandbox */
    bool oom;            /* the memory cgroup OOM-killed something */
    bool deadline;       /* killed at deadline_mono */
    bool cancelled;      /* killed because cancel_fd fired */
    bool log_truncated;  /* output beyond log_limit was discarded */
    int exit_code;       /* 128+signal when killed by a signal */
    int64_t log_bytes;   /* bytes kept in the log */
    int64_t peak_memory; /* bytes, 0 when unknown */
    int64_t started_us, finished_us;
    char message[NODE_TERM_MSG_MAX + 1]; /* termination message file */
    char error[256];                     /* why it could not start */
};

struct sandbox;

struct sandbox_opts {
    const char *run_dir_parent; /* where the per-node run dir is created (traversable) */
    int64_t pids_max;
    int slots;
};

/* Probes bubblewrap, user namespaces, seccomp and cgroups.  Returns -ENOTSUP
 * with a message in err when the host cannot sandbox at all. */
int sandbox_new(const struct sandbox_opts *opts, struct sandbox **out, char *err, size_t errlen);
void sandbox_free(struct sandbox *sb);
const struct sandbox_caps *sandbox_caps(const struct sandbox *sb);
/* Runs one container to completion on the calling thread; 0 when it ran (see
 * res->exit_code), negative errno when it could not (res->error says why). */
int sandbox_run(struct sandbox *sb, const struct sandbox_spec *spec, struct sandbox_result *res);
/* True when path is an executable regular file on the host. */
bool sandbox_binary_ok(const char *path);

/* ------------------------------------------------------------------- spec */

/* One label-selector requirement. */
enum sel_op { SEL_EQ, SEL_NE, SEL_IN, SEL_NOTIN, SEL_EXISTS, SEL_NOT_EXISTS };
#define SEL_MAX_REQS 16
#define SEL_MAX_VALUES 8
struct sel_req {
    enum sel_op op;
    char key[128];
    char values[SEL_MAX_VALUES][64];
    int nvalues;
};
struct selector {
    struct sel_req reqs[SEL_MAX_REQS];
    int n;
};

/* Parses a labelSelector; -EINVAL with a message in err. */
int selector_parse(const char *text, struct selector *sel, char *err, size_t errlen);
/* Parses a fieldSelector over metadata.name, metadata.namespace, status.phase. */
int field_selector_parse(const char *text, struct selector *sel, char *err, size_t errlen);
/* Matches labels (a cJSON object of strings, may be NULL). */
bool selector_match(const struct selector *sel, const struct cJSON *labels);
/* Matches a field selector against an object. */
bool field_selector_match(const struct selector *sel, const struct cJSON *obj);

/* Kubernetes quantity ("64Mi", "500m", "1.5Gi", "1e3") → base units times
 * scale (1 for bytes, 1000 for millicores). -EINVAL when malformed. */
int quantity_parse(const char *s, int64_t scale, int64_t *out);

bool dns1123_label(const char *s);
bool dns1123_subdomain(const char *s);

/* Validation causes: appended to a cJSON array of {reason, message, field}. */
void cause_add(struct cJSON *causes, const char *reason, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Validates metadata (name or generateName, labels) and fills in a
 * generated name; appends causes. */
void validate_metadata(struct cJSON *obj, bool namespaced, struct cJSON *causes);
/* Validates a Pod's spec, filling the defaults the node applies
 * (restartPolicy Never, terminationMessagePath, …). */
void validate_pod(struct cJSON *pod, struct cJSON *causes);
void validate_configmap(struct cJSON *cm, struct cJSON *causes);
void validate_networkpolicy(struct cJSON *np, struct cJSON *causes);

/* ------------------------------------------------------------------ store */

enum kind { KIND_POD, KIND_CONFIGMAP, KIND_NETWORKPOLICY, KIND_COUNT };

struct store_opts {
    const struct config *cfg;
    struct sandbox *sb;
    const atomic_bool *stopping;
};

struct node_store;

int node_store_new(const struct store_opts *opts, struct node_store **out);
/* Starts the slot runners. */
int node_store_start(struct node_store *st);
/* Kills running pods and wakes runners and watchers; non-blocking. */
void node_store_stop(struct node_store *st);
/* Joins the runners. */
void node_store_join(struct node_store *st);
void node_store_free(struct node_store *st);

/* Counts for the ready report. */
void node_store_counts(struct node_store *st, int *running, int *pending, int *total);

/* Creates obj (validated, owned by the store on success).  Returns 0 and a
 * printed copy of the stored object in *json (caller frees), -EEXIST. */
int node_store_create(struct node_store *st, enum kind kind, const char *ns, struct cJSON *obj,
                      char **json);
/* Printed copy of one object, or -ENOENT. */
int node_store_get(struct node_store *st, enum kind kind, const char *ns, const char *name,
                   char **json);
/* Deletes one object; *json = the object as deleted.  -ENOENT. */
int node_store_delete(struct node_store *st, enum kind kind, const char *ns, const char *name,
                      char **json);
/* A List of the objects in ns (NULL = all) matching the selectors (may be NULL);
 * *json owned by the caller. With del, the matched objects are deleted. */
int node_store_list(struct node_store *st, enum kind kind, const char *ns,
                    const struct selector *labels, const struct selector *fields, bool del,
                    char **json);
/* Log path and current size for a pod's container; -ENOENT, -EINVAL (bad container). */
int node_store_log_path(struct node_store *st, const char *ns, const char *name,
                        const char *container, char *path, size_t len, char *err, size_t errlen);

/* Watch: a cursor over the pod event history. */
struct watch_opts {
    const char *ns; /* NULL = all */
    const struct selector *labels, *fields;
    bool has_rv;
    int64_t rv;
    bool bookmarks;
    int64_t end_mono; /* monotonic ms */
    const struct http_server *srv;
    /* Writes one line; returns 0 or -EPIPE. */
    int (*write)(void *arg, const char *data, size_t len);
    void *arg;
};
/* Streams events until the deadline, the client leaves, or stop.  Returns
 * -ESTALE (after writing the ERROR event) when the rv is too old. */
int node_store_watch(struct node_store *st, const struct watch_opts *opts);
/* The latest resourceVersion. */
int64_t node_store_rv(struct node_store *st);

/* ------------------------------------------------------------------- api */

struct node_api {
    const struct config *cfg;
    struct node_store *st;
    struct sandbox *sb;
    struct http_server *srv;
};

/* Adds the node's routes to srv. */
int node_api_routes(struct node_api *api, struct http_server *srv);
/* Fills the ready report: {"status", "limits": {...}, "slots", ...}. */
void node_api_health(struct node_api *api, struct cJSON *out);

#endif
