/*
 * k8s.h — the Kubernetes REST port (libcurl), used by worker and monitor.
 *
 * One code path for a real cluster and for the embedded node (DESIGN §1):
 * EXECD_K8S_API is a base URL (empty, the default: http://EXECD_NODE_LISTEN, the
 * embedded node; http://127.0.0.1:8081 unless the node listens elsewhere), or
 * "in-cluster" (https://$KUBERNETES_SERVICE_HOST:
 * $KUBERNETES_SERVICE_PORT with the service-account token, re-read on every
 * request because it rotates, and its ca.crt), or "kubeconfig" ($KUBECONFIG or
 * ~/.kube/config: current-context, bearer token or client certificate, the
 * base64 *-data fields handed to curl as blobs).  EXECD_K8S_TOKEN, when set,
 * is the bearer token for a URL (and overrides the other sources).
 *
 * Errors: 409 -EEXIST, 404 -ENOENT, 410 -ESTALE, 5xx/429 -EAGAIN, other HTTP
 * errors -EIO, transport failures -ECONNREFUSED or -ETIMEDOUT.  The Status
 * message of a failed request is logged once here (not for 404/409) and,
 * when err is not NULL, copied into err.  Every call is thread-safe.
 */
#ifndef EXECD_K8S_H
#define EXECD_K8S_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct cJSON;
struct k8s;

enum k8s_kind { K8S_POD, K8S_CONFIGMAP, K8S_NETWORKPOLICY };

/* Resolves the endpoint and credentials; -EINVAL with a message in err. */
int k8s_new(const struct config *cfg, struct k8s **out, char *err, size_t errlen);
void k8s_free(struct k8s *k8s);
/* The base URL in use (for logs). */
const char *k8s_base_url(const struct k8s *k8s);

/* POST the object; *out (may be NULL) receives the created object (caller
 * deletes). */
int k8s_create(struct k8s *k8s, enum k8s_kind kind, const char *ns, const struct cJSON *obj,
               struct cJSON **out, char *err, size_t errlen);
int k8s_get(struct k8s *k8s, enum k8s_kind kind, const char *ns, const char *name,
            struct cJSON **out, char *err, size_t errlen);
/* DELETE with gracePeriodSeconds 0, propagationPolicy Background. */
int k8s_delete(struct k8s *k8s, enum k8s_kind kind, const char *ns, const char *name, char *err,
               size_t errlen);
/* A PodList; *out owned by the caller. */
int k8s_list_pods(struct k8s *k8s, const char *ns, const char *label_selector, struct cJSON **out,
                  char *err, size_t errlen);
/* Pod log (text, at most limit_bytes); *out NUL-terminated, caller frees. */
int k8s_pod_log(struct k8s *k8s, const char *ns, const char *name, const char *container,
                int64_t limit_bytes, char **out, size_t *len, char *err, size_t errlen);
/* 0 when GET /version answers. */
int k8s_health(struct k8s *k8s);

/* Called for each watch event with type ADDED|MODIFIED|DELETED|BOOKMARK and
 * the object (ownership passes to the callback, which must cJSON_Delete it).
 * A non-zero return stops the watch. */
typedef int (*k8s_watch_fn)(void *ctx, const char *type, struct cJSON *obj);

struct k8s_watch {
    const char *ns;
    const char *label_selector;
    char resource_version[64]; /* in: where to start; out: the last seen */
    int timeout_seconds;
    int bookmarks;
    const atomic_bool *stop; /* checked at least once per second */
    k8s_watch_fn fn;
    void *ctx;
};
/* Streams pod events until the server ends the watch (0), the stop flag or
 * the callback stops it (0), the resourceVersion is too old (-ESTALE: relist)
 * or an error.  Objects are parsed incrementally from newline-delimited JSON. */
int k8s_watch_pods(struct k8s *k8s, struct k8s_watch *w);

#endif
