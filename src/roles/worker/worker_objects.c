/*
 * worker_objects.c — the Kubernetes objects of one execution (DESIGN §7).
 *
 * ConfigMap exec-<id>: the script under the runtime's file name (main.py …)
 * and entrypoint.sh.  Pod exec-<id>: one container running
 * `/bin/sh /scripts/entrypoint.sh <runtime_command…>` in /scripts, labels
 * app.kubernetes.io/managed-by=execd, execd/execution-id, execd/user-id,
 * execd/lang; annotations carrying the causing event's ids so the monitor's
 * events stay in the same chain; restartPolicy Never, activeDeadlineSeconds,
 * no service-account token, no service links, non-root uid 65534, read-only
 * root fs, all capabilities dropped, no privilege escalation, seccomp
 * RuntimeDefault, requests and limits from the event, emptyDir /tmp with a
 * size limit, the ConfigMap read-only.  The deny-all NetworkPolicy selects
 * every pod execd manages and allows no ingress and no egress.
 */
#include "worker.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "events.h"
#include "runtimes.h"

#define TMP_SIZE "128Mi"
#define RUN_UID 65534

void worker_object_name(const char *execution_id, char *out, size_t len)
{
    snprintf(out, len, "exec-%s", execution_id);
}

/* A valid label value (≤ 63 of [A-Za-z0-9._-], alphanumeric at both ends). */
static void label_value(const char *in, char *out, size_t len)
{
    size_t j = 0;
    for (; in && *in && j + 1 < len && j < 63; in++) {
        char ch = *in;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '-' || ch == '_' || ch == '.';
        if (ok && (j > 0 || (ch != '-' && ch != '_' && ch != '.')))
            out[j++] = ch;
    }
    while (j > 0 && (out[j - 1] == '-' || out[j - 1] == '_' || out[j - 1] == '.'))
        j--;
    out[j] = '\0';
}

static const char *file_name(const struct event *ev)
{
    const struct runtime *rt = runtime_find(event_get_str(ev, "lang"));
    return rt && rt->file_name ? rt->file_name : "main";
}

static cJSON *metadata(const struct worker_params *wp, const struct event *ev, const char *name)
{
    const char *id = event_get_str(ev, "execution_id");
    char user[64], lang[64], eid[64];
    label_value(ev->meta.user_id, user, sizeof(user));
    label_value(event_get_str(ev, "lang"), lang, sizeof(lang));
    label_value(id, eid, sizeof(eid));
    cJSON *md = cJSON_CreateObject();
    cJSON_AddStringToObject(md, "name", name);
    cJSON_AddStringToObject(md, "namespace", wp->ns);
    cJSON *labels = cJSON_AddObjectToObject(md, "labels");
    cJSON_AddStringToObject(labels, "app.kubernetes.io/managed-by", "execd");
    cJSON_AddStringToObject(labels, "execd/execution-id", eid);
    cJSON_AddStringToObject(labels, "execd/user-id", user);
    cJSON_AddStringToObject(labels, "execd/lang", lang);
    cJSON *ann = cJSON_AddObjectToObject(md, "annotations");
    cJSON_AddStringToObject(ann, "execd/execution-id", id);
    cJSON_AddStringToObject(ann, "execd/correlation-id",
                            ev->correlation_id ? ev->correlation_id : ev->event_id);
    cJSON_AddStringToObject(ann, "execd/causation-id", ev->event_id);
    cJSON_AddStringToObject(ann, "execd/trace-id", ev->meta.trace_id);
    cJSON_AddStringToObject(ann, "execd/user-id", ev->meta.user_id ? ev->meta.user_id : "");
    char num[32];
    snprintf(num, sizeof(num), "%lld", event_get_int(ev, "timeout_seconds", 0));
    cJSON_AddStringToObject(ann, "execd/timeout-seconds", num);
    return md;
}

cJSON *worker_configmap(const struct worker_params *wp, const struct event *ev, char *err,
                        size_t errlen)
{
    const char *id = event_get_str(ev, "execution_id");
    const char *script = event_get_str(ev, "script");
    if (!id || !script) {
        snprintf(err, errlen, "the task has no execution_id or script");
        return NULL;
    }
    char name[128];
    worker_object_name(id, name, sizeof(name));
    cJSON *cm = cJSON_CreateObject();
    cJSON_AddStringToObject(cm, "apiVersion", "v1");
    cJSON_AddStringToObject(cm, "kind", "ConfigMap");
    cJSON_AddItemToObject(cm, "metadata", metadata(wp, ev, name));
    cJSON *data = cJSON_AddObjectToObject(cm, "data");
    cJSON_AddStringToObject(data, file_name(ev), script);
    cJSON_AddStringToObject(data, "entrypoint.sh", worker_entrypoint);
    return cm;
}

/* The program's argv: the event's runtime_command, else the runtimes table's. */
static int add_command(cJSON *args, const struct event *ev, char *err, size_t errlen)
{
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(ev->data, "runtime_command");
    const cJSON *a;
    int n = 0;
    cJSON_ArrayForEach(a, rc)
    {
        if (!cJSON_IsString(a)) {
            snprintf(err, errlen, "runtime_command holds a non-string");
            return -1;
        }
        cJSON_AddItemToArray(args, cJSON_CreateString(a->valuestring));
        n++;
    }
    if (n)
        return 0;
    const struct runtime_version *ver = NULL;
    const struct runtime *rt = NULL;
    ver = runtime_find_version(event_get_str(ev, "lang"), event_get_str(ev, "lang_version"), &rt);
    if (!ver || !rt) {
        snprintf(err, errlen, "no runtime_command and no runtime for lang '%s' version '%s'",
                 event_get_str(ev, "lang") ? event_get_str(ev, "lang") : "",
                 event_get_str(ev, "lang_version") ? event_get_str(ev, "lang_version") : "");
        return -1;
    }
    cJSON_AddItemToArray(args, cJSON_CreateString(ver->names[0] ? ver->names[0] : ver->cmd));
    for (int i = 0; i < 3 && rt->run_args[i]; i++)
        cJSON_AddItemToArray(args, cJSON_CreateString(rt->run_args[i]));
    cJSON_AddItemToArray(args, cJSON_CreateString(rt->file_name));
    return 0;
}

static void add_env(cJSON *env, const char *name, const char *value)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "value", value);
    cJSON_AddItemToArray(env, e);
}

static void add_quantity(cJSON *obj, const char *key, const char *value)
{
    if (value && *value)
        cJSON_AddStringToObject(obj, key, value);
}

cJSON *worker_pod(const struct worker_params *wp, const struct event *ev, char *err, size_t errlen)
{
    const char *id = event_get_str(ev, "execution_id");
    const char *image = event_get_str(ev, "runtime_image");
    if (!id || !image || !*image) {
        snprintf(err, errlen, "the task has no execution_id or runtime_image");
        return NULL;
    }
    long long timeout = event_get_int(ev, "timeout_seconds", 0);
    if (timeout <= 0) {
        snprintf(err, errlen, "the task has no positive timeout_seconds");
        return NULL;
    }
    char name[128], num[32];
    worker_object_name(id, name, sizeof(name));
    cJSON *pod = cJSON_CreateObject();
    cJSON_AddStringToObject(pod, "apiVersion", "v1");
    cJSON_AddStringToObject(pod, "kind", "Pod");
    cJSON_AddItemToObject(pod, "metadata", metadata(wp, ev, name));
    cJSON *spec = cJSON_AddObjectToObject(pod, "spec");
    cJSON_AddStringToObject(spec, "restartPolicy", "Never");
    cJSON_AddNumberToObject(spec, "activeDeadlineSeconds",
                            (double)(timeout + WORKER_DEADLINE_GRACE_S));
    cJSON_AddNumberToObject(spec, "terminationGracePeriodSeconds", 0);
    cJSON_AddBoolToObject(spec, "automountServiceAccountToken", 0);
    cJSON_AddBoolToObject(spec, "enableServiceLinks", 0);
    cJSON *psc = cJSON_AddObjectToObject(spec, "securityContext");
    cJSON_AddBoolToObject(psc, "runAsNonRoot", 1);
    cJSON_AddNumberToObject(psc, "runAsUser", RUN_UID);
    cJSON_AddNumberToObject(psc, "runAsGroup", RUN_UID);
    cJSON_AddNumberToObject(psc, "fsGroup", RUN_UID);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(psc, "seccompProfile"), "type",
                            "RuntimeDefault");

    cJSON *containers = cJSON_AddArrayToObject(spec, "containers");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(containers, c);
    cJSON_AddStringToObject(c, "name", WORKER_CONTAINER);
    cJSON_AddStringToObject(c, "image", image);
    cJSON_AddStringToObject(c, "imagePullPolicy", "IfNotPresent");
    cJSON *cmd = cJSON_AddArrayToObject(c, "command");
    cJSON_AddItemToArray(cmd, cJSON_CreateString("/bin/sh"));
    cJSON_AddItemToArray(cmd, cJSON_CreateString(WORKER_SCRIPTS_DIR "/entrypoint.sh"));
    if (add_command(cJSON_AddArrayToObject(c, "args"), ev, err, errlen)) {
        cJSON_Delete(pod);
        return NULL;
    }
    cJSON_AddStringToObject(c, "workingDir", WORKER_SCRIPTS_DIR);
    cJSON *env = cJSON_AddArrayToObject(c, "env");
    snprintf(num, sizeof(num), "%lld", timeout);
    add_env(env, "EXECD_TIMEOUT_SECONDS", num);
    snprintf(num, sizeof(num), "%lld", wp->output_limit);
    add_env(env, "EXECD_OUTPUT_LIMIT_BYTES", num);
    add_env(env, "TMPDIR", "/tmp");
    cJSON *res = cJSON_AddObjectToObject(c, "resources");
    cJSON *req = cJSON_AddObjectToObject(res, "requests");
    add_quantity(req, "cpu", event_get_str(ev, "cpu_request"));
    add_quantity(req, "memory", event_get_str(ev, "memory_request"));
    cJSON *lim = cJSON_AddObjectToObject(res, "limits");
    add_quantity(lim, "cpu", event_get_str(ev, "cpu_limit"));
    add_quantity(lim, "memory", event_get_str(ev, "memory_limit"));
    cJSON *csc = cJSON_AddObjectToObject(c, "securityContext");
    cJSON_AddBoolToObject(csc, "allowPrivilegeEscalation", 0);
    cJSON_AddBoolToObject(csc, "readOnlyRootFilesystem", 1);
    cJSON_AddBoolToObject(csc, "runAsNonRoot", 1);
    cJSON_AddBoolToObject(csc, "privileged", 0);
    cJSON *drop = cJSON_AddArrayToObject(cJSON_AddObjectToObject(csc, "capabilities"), "drop");
    cJSON_AddItemToArray(drop, cJSON_CreateString("ALL"));
    cJSON *mounts = cJSON_AddArrayToObject(c, "volumeMounts");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "name", "scripts");
    cJSON_AddStringToObject(m, "mountPath", WORKER_SCRIPTS_DIR);
    cJSON_AddBoolToObject(m, "readOnly", 1);
    cJSON_AddItemToArray(mounts, m);
    m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "name", "tmp");
    cJSON_AddStringToObject(m, "mountPath", "/tmp");
    cJSON_AddItemToArray(mounts, m);
    cJSON_AddStringToObject(c, "terminationMessagePath", "/dev/termination-log");
    cJSON_AddStringToObject(c, "terminationMessagePolicy", "File");

    cJSON *vols = cJSON_AddArrayToObject(spec, "volumes");
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "name", "scripts");
    cJSON *src = cJSON_AddObjectToObject(v, "configMap");
    cJSON_AddStringToObject(src, "name", name);
    cJSON_AddNumberToObject(src, "defaultMode", 0444);
    cJSON_AddItemToArray(vols, v);
    v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "name", "tmp");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(v, "emptyDir"), "sizeLimit", TMP_SIZE);
    cJSON_AddItemToArray(vols, v);
    return pod;
}

cJSON *worker_netpol(const struct worker_params *wp)
{
    cJSON *np = cJSON_CreateObject();
    cJSON_AddStringToObject(np, "apiVersion", "networking.k8s.io/v1");
    cJSON_AddStringToObject(np, "kind", "NetworkPolicy");
    cJSON *md = cJSON_AddObjectToObject(np, "metadata");
    cJSON_AddStringToObject(md, "name", WORKER_NETPOL_NAME);
    cJSON_AddStringToObject(md, "namespace", wp->ns);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(md, "labels"), "app.kubernetes.io/managed-by",
                            "execd");
    cJSON *spec = cJSON_AddObjectToObject(np, "spec");
    cJSON *sel =
        cJSON_AddObjectToObject(cJSON_AddObjectToObject(spec, "podSelector"), "matchLabels");
    cJSON_AddStringToObject(sel, "app.kubernetes.io/managed-by", "execd");
    cJSON *types = cJSON_AddArrayToObject(spec, "policyTypes");
    cJSON_AddItemToArray(types, cJSON_CreateString("Ingress"));
    cJSON_AddItemToArray(types, cJSON_CreateString("Egress"));
    cJSON_AddArrayToObject(spec, "ingress");
    cJSON_AddArrayToObject(spec, "egress");
    return np;
}
