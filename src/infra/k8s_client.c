/*
 * k8s_client.c — the Kubernetes REST port over libcurl (include/k8s.h).
 *
 * Endpoint and credentials are resolved once in k8s_new: a URL (with
 * EXECD_K8S_TOKEN as bearer token), "in-cluster" (service-account token
 * file re-read on every request, its ca.crt) or "kubeconfig" (a small
 * block-YAML reader below, enough for what kubectl writes: maps, sequences,
 * plain and quoted scalars; a JSON kubeconfig is read as JSON).
 *
 * Easy handles are kept in a small free list so connections are reused
 * across requests and threads; each request takes one, resets it, and gives
 * it back.  Watches parse the newline-delimited JSON stream incrementally in
 * the write callback and hand each object to the caller; the progress
 * callback aborts the transfer when the stop flag is set.
 */
#include "k8s.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define ROLE "k8s"
#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define MAX_HANDLES 32
#define MAX_BODY (64L << 20)
#define MAX_LINE (16L << 20)
#define MAX_FILE (1L << 20)

struct blob {
    char *data;
    size_t len;
};

struct k8s {
    char base[512];
    char *token;      /* static bearer token, or NULL */
    char *token_file; /* re-read on every request, or NULL */
    char *ca_file;
    struct blob ca, cert, key;
    char *cert_file, *key_file;
    bool insecure;
    long timeout_ms;
    pthread_mutex_t mu;
    CURL *free_handles[MAX_HANDLES];
    int nfree;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------- small helpers */

/* Reads a whole (small) file; NUL-terminated, caller frees.  NULL on error. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct strbuf sb = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (sb.len + n > MAX_FILE || sb_append(&sb, buf, n)) {
            sb_release(&sb);
            (void)fclose(f);
            return NULL;
        }
    }
    (void)fclose(f);
    if (!sb.s && sb_append(&sb, "", 0))
        return NULL;
    if (len)
        *len = sb.len;
    return sb_steal(&sb);
}

static void trim_right(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
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

/* Decodes base64 (whitespace ignored) into a new blob; -EINVAL when malformed. */
static int b64_decode(const char *in, struct blob *out)
{
    size_t n = strlen(in);
    char *o = malloc(n / 4 * 3 + 4);
    if (!o)
        return -ENOMEM;
    size_t len = 0;
    unsigned acc = 0;
    int bits = 0;
    for (const char *p = in; *p; p++) {
        if (*p == '=' || *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
            continue;
        int v = b64val((unsigned char)*p);
        if (v < 0) {
            free(o);
            return -EINVAL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    out->data = o;
    out->len = len;
    return 0;
}

/* ---------------------------------------------------------- kubeconfig YAML */

struct yline {
    int indent;
    char *text;
};

struct yaml {
    struct yline *lines;
    int n;
};

/* Strips a comment that starts outside quotes. */
static void strip_comment(char *s)
{
    char q = 0;
    for (char *p = s; *p; p++) {
        if (q) {
            if (*p == q)
                q = 0;
        } else if (*p == '"' || *p == '\'') {
            q = *p;
        } else if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return;
        }
    }
}

static cJSON *yscalar(const char *s)
{
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) {
        char *v = malloc(n);
        if (!v)
            return NULL;
        size_t j = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            if (s[0] == '"' && s[i] == '\\' && i + 2 < n) {
                i++;
                v[j++] = s[i] == 'n' ? '\n' : s[i] == 't' ? '\t' : s[i];
            } else if (s[0] == '\'' && s[i] == '\'' && s[i + 1] == '\'') {
                v[j++] = '\'';
                i++;
            } else {
                v[j++] = s[i];
            }
        }
        v[j] = '\0';
        cJSON *r = cJSON_CreateString(v);
        free(v);
        return r;
    }
    return cJSON_CreateString(s);
}

/* Position of the ':' that separates a key from its value, or NULL. */
static char *ykey_colon(char *s)
{
    char q = 0;
    for (char *p = s; *p; p++) {
        if (q) {
            if (*p == q)
                q = 0;
        } else if (*p == '"' || *p == '\'') {
            q = *p;
        } else if (*p == ':' && (p[1] == '\0' || p[1] == ' ')) {
            return p;
        }
    }
    return NULL;
}

static cJSON *yblock(struct yaml *y, int *i, int indent, int depth);

static cJSON *yseq(struct yaml *y, int *i, int indent, int depth)
{
    cJSON *arr = cJSON_CreateArray();
    while (arr && *i < y->n && y->lines[*i].indent == indent && y->lines[*i].text[0] == '-') {
        struct yline *l = &y->lines[*i];
        char *rest = l->text + 1;
        while (*rest == ' ')
            rest++;
        cJSON *item;
        if (!*rest) {
            (*i)++;
            item = *i < y->n && y->lines[*i].indent > indent
                       ? yblock(y, i, y->lines[*i].indent, depth + 1)
                       : cJSON_CreateNull();
        } else if (ykey_colon(rest) || rest[0] == '-') {
            /* "- key: v": a map whose first entry sits on this line. */
            l->indent = indent + (int)(rest - l->text);
            l->text = rest;
            item = yblock(y, i, l->indent, depth + 1);
        } else {
            item = yscalar(rest);
            (*i)++;
        }
        if (!item) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, item);
    }
    return arr;
}

static cJSON *ymap(struct yaml *y, int *i, int indent, int depth)
{
    cJSON *obj = cJSON_CreateObject();
    while (obj && *i < y->n && y->lines[*i].indent == indent && y->lines[*i].text[0] != '-') {
        char *text = y->lines[*i].text;
        char *colon = ykey_colon(text);
        (*i)++;
        if (!colon)
            continue; /* not a mapping line: ignored */
        *colon = '\0';
        cJSON *k = yscalar(text);
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        cJSON *val;
        if (*v) {
            val = yscalar(v);
        } else if (*i < y->n && y->lines[*i].indent > indent) {
            val = yblock(y, i, y->lines[*i].indent, depth + 1);
        } else if (*i < y->n && y->lines[*i].indent == indent && y->lines[*i].text[0] == '-') {
            val = yseq(y, i, indent, depth + 1);
        } else {
            val = cJSON_CreateNull();
        }
        if (k && cJSON_IsString(k) && val)
            cJSON_AddItemToObject(obj, k->valuestring, val);
        else
            cJSON_Delete(val);
        cJSON_Delete(k);
    }
    return obj;
}

static cJSON *yblock(struct yaml *y, int *i, int indent, int depth)
{
    if (depth > 32)
        return NULL;
    if (y->lines[*i].text[0] == '-')
        return yseq(y, i, indent, depth);
    return ymap(y, i, indent, depth);
}

/* Parses the block YAML kubectl writes (or JSON); NULL when unreadable. */
static cJSON *yaml_parse(char *text)
{
    while (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')
        text++;
    if (*text == '{')
        return cJSON_Parse(text);
    struct yaml y = {0};
    int cap = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        strip_comment(l);
        trim_right(l);
        int ind = 0;
        while (l[ind] == ' ')
            ind++;
        if (!l[ind] || strcmp(l + ind, "---") == 0)
            continue;
        if (y.n == cap) {
            cap = cap ? cap * 2 : 64;
            struct yline *nl = realloc(y.lines, (size_t)cap * sizeof(*nl));
            if (!nl) {
                free(y.lines);
                return NULL;
            }
            y.lines = nl;
        }
        y.lines[y.n++] = (struct yline){ind, l + ind};
    }
    int i = 0;
    cJSON *root = y.n ? yblock(&y, &i, y.lines[0].indent, 0) : NULL;
    free(y.lines);
    return root;
}

static const char *jget(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The "name"d entry's inner object (`cluster`, `user`, `context`). */
static const cJSON *named(const cJSON *root, const char *list, const char *name, const char *inner)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, list))
    {
        const char *n = jget(e, "name");
        if (n && name && strcmp(n, name) == 0)
            return cJSON_GetObjectItemCaseSensitive(e, inner);
    }
    return NULL;
}

static int load_kubeconfig(struct k8s *k, char *err, size_t errlen)
{
    char path[1024];
    const char *env = getenv("KUBECONFIG"); /* NOLINT(concurrency-mt-unsafe): start-up */
    const char *home = getenv("HOME");      /* NOLINT(concurrency-mt-unsafe) */
    if (env && *env) {
        snprintf(path, sizeof(path), "%.*s", (int)strcspn(env, ":"), env);
    } else if (home && *home) {
        snprintf(path, sizeof(path), "%s/.kube/config", home);
    } else {
        snprintf(err, errlen, "kubeconfig: neither KUBECONFIG nor HOME is set");
        return -EINVAL;
    }
    char *text = read_file(path, NULL);
    if (!text) {
        snprintf(err, errlen, "kubeconfig: cannot read '%s': %s", path, strerror(errno));
        return -EINVAL;
    }
    cJSON *root = yaml_parse(text);
    int rc = -EINVAL;
    const char *cc = jget(root, "current-context");
    const cJSON *ctx = named(root, "contexts", cc, "context");
    const cJSON *cl = named(root, "clusters", jget(ctx, "cluster"), "cluster");
    const cJSON *user = named(root, "users", jget(ctx, "user"), "user");
    const char *server = jget(cl, "server");
    if (!root || !ctx || !cl || !server) {
        snprintf(err, errlen,
                 "kubeconfig '%s': no usable current-context '%s' with a cluster server", path,
                 cc ? cc : "");
        goto out;
    }
    snprintf(k->base, sizeof(k->base), "%s", server);
    const char *v;
    if ((v = jget(cl, "certificate-authority-data")) && b64_decode(v, &k->ca))
        goto bad_b64;
    if ((v = jget(cl, "certificate-authority")))
        k->ca_file = strdup(v);
    if ((v = jget(cl, "insecure-skip-tls-verify")))
        k->insecure = strcmp(v, "true") == 0;
    if ((v = jget(user, "token")) && !k->token)
        k->token = strdup(v);
    if ((v = jget(user, "tokenFile")) && !k->token)
        k->token_file = strdup(v);
    if ((v = jget(user, "client-certificate-data")) && b64_decode(v, &k->cert))
        goto bad_b64;
    if ((v = jget(user, "client-key-data")) && b64_decode(v, &k->key))
        goto bad_b64;
    if ((v = jget(user, "client-certificate")))
        k->cert_file = strdup(v);
    if ((v = jget(user, "client-key")))
        k->key_file = strdup(v);
    rc = 0;
    goto out;
bad_b64:
    snprintf(err, errlen, "kubeconfig '%s': a *-data field is not valid base64", path);
out:
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ client */

int k8s_new(const struct config *cfg, struct k8s **out, char *err, size_t errlen)
{
    (void)pthread_once(&curl_once, curl_init_once);
    struct k8s *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    pthread_mutex_init(&k->mu, NULL);
    k->timeout_ms = (long)cfg->k8s_timeout_ms;
    if (cfg->k8s_token && cfg->k8s_token[0])
        k->token = strdup(cfg->k8s_token);
    const char *api = cfg->k8s_api;
    int rc = 0;
    if (strcmp(api, "in-cluster") == 0) {
        const char *host = getenv("KUBERNETES_SERVICE_HOST"); /* NOLINT(concurrency-mt-unsafe) */
        const char *port = getenv("KUBERNETES_SERVICE_PORT"); /* NOLINT(concurrency-mt-unsafe) */
        if (!host || !*host) {
            snprintf(err, errlen, "EXECD_K8S_API=in-cluster but KUBERNETES_SERVICE_HOST is unset");
            rc = -EINVAL;
            goto fail;
        }
        bool v6 = strchr(host, ':') != NULL;
        snprintf(k->base, sizeof(k->base), "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 port && *port ? port : "443");
        if (!k->token)
            k->token_file = strdup(SA_DIR "/token");
        k->ca_file = strdup(SA_DIR "/ca.crt");
    } else if (strcmp(api, "kubeconfig") == 0) {
        if ((rc = load_kubeconfig(k, err, errlen)))
            goto fail;
    } else if (!*api) {
        /* The embedded node: its listen address, a wildcard host as loopback. */
        const char *l = cfg->node_listen;
        const char *colon = strrchr(l, ':');
        bool wild =
            !colon || colon == l || strncmp(l, "0.0.0.0:", 8) == 0 || strncmp(l, "[::]:", 5) == 0;
        snprintf(k->base, sizeof(k->base), "http://%s%s", wild ? "127.0.0.1" : "",
                 wild ? (colon ? colon : ":8081") : l);
        if (!k->token && cfg->node_token && cfg->node_token[0])
            k->token = strdup(cfg->node_token);
    } else if (strncmp(api, "http://", 7) == 0 || strncmp(api, "https://", 8) == 0) {
        snprintf(k->base, sizeof(k->base), "%s", api);
    } else {
        snprintf(err, errlen,
                 "EXECD_K8S_API must be an http(s) URL, 'in-cluster' or 'kubeconfig', not '%s'",
                 api);
        rc = -EINVAL;
        goto fail;
    }
    size_t n = strlen(k->base);
    while (n && k->base[n - 1] == '/')
        k->base[--n] = '\0';
    *out = k;
    return 0;
fail:
    k8s_free(k);
    return rc;
}

void k8s_free(struct k8s *k)
{
    if (!k)
        return;
    for (int i = 0; i < k->nfree; i++)
        curl_easy_cleanup(k->free_handles[i]);
    pthread_mutex_destroy(&k->mu);
    free(k->token);
    free(k->token_file);
    free(k->ca_file);
    free(k->cert_file);
    free(k->key_file);
    free(k->ca.data);
    free(k->cert.data);
    free(k->key.data);
    free(k);
}

const char *k8s_base_url(const struct k8s *k)
{
    return k->base;
}

static CURL *handle_get(struct k8s *k)
{
    CURL *c = NULL;
    pthread_mutex_lock(&k->mu);
    if (k->nfree)
        c = k->free_handles[--k->nfree];
    pthread_mutex_unlock(&k->mu);
    if (c)
        curl_easy_reset(c);
    else
        c = curl_easy_init();
    return c;
}

static void handle_put(struct k8s *k, CURL *c)
{
    pthread_mutex_lock(&k->mu);
    if (k->nfree < MAX_HANDLES) {
        k->free_handles[k->nfree++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&k->mu);
    if (c)
        curl_easy_cleanup(c);
}

struct body {
    struct strbuf sb;
    long limit;
    bool overflow;
};

static size_t body_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb;
    if ((long)(b->sb.len + n) > b->limit) {
        b->overflow = true;
        return 0;
    }
    return sb_append(&b->sb, data, n) ? 0 : n;
}

/* Sets URL, method, headers and TLS on c; *hdrs is freed by the caller. */
static int setup(struct k8s *k, CURL *c, const char *method, const char *path, const char *accept,
                 bool has_body, struct curl_slist **hdrs)
{
    char url[2048];
    if (snprintf(url, sizeof(url), "%s%s", k->base, path) >= (int)sizeof(url))
        return -ENAMETOOLONG;
    struct curl_slist *h = NULL;
    char line[4200];
    snprintf(line, sizeof(line), "Accept: %s", accept);
    h = curl_slist_append(h, line);
    if (has_body)
        h = curl_slist_append(h, "Content-Type: application/json");
    const char *tok = k->token;
    char *ftok = NULL;
    if (!tok && k->token_file) {
        ftok = read_file(k->token_file, NULL);
        if (ftok)
            trim_right(ftok);
        tok = ftok;
    }
    if (tok && *tok) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", tok);
        h = curl_slist_append(h, line);
    }
    free(ftok);
    *hdrs = h;
    if (!h)
        return -ENOMEM;
    (void)curl_easy_setopt(c, CURLOPT_URL, url);
    (void)curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    (void)curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, k->timeout_ms);
    (void)curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    if (k->ca.data) {
        struct curl_blob b = {k->ca.data, k->ca.len, CURL_BLOB_COPY};
        (void)curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &b);
    } else if (k->ca_file) {
        (void)curl_easy_setopt(c, CURLOPT_CAINFO, k->ca_file);
    }
    if (k->cert.data) {
        struct curl_blob b = {k->cert.data, k->cert.len, CURL_BLOB_COPY};
        (void)curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &b);
        (void)curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    } else if (k->cert_file) {
        (void)curl_easy_setopt(c, CURLOPT_SSLCERT, k->cert_file);
    }
    if (k->key.data) {
        struct curl_blob b = {k->key.data, k->key.len, CURL_BLOB_COPY};
        (void)curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &b);
        (void)curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (k->key_file) {
        (void)curl_easy_setopt(c, CURLOPT_SSLKEY, k->key_file);
    }
    if (k->insecure) {
        (void)curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        (void)curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return 0;
}

static int map_status(long code)
{
    if (code >= 200 && code < 300)
        return 0;
    switch (code) {
    case 404:
        return -ENOENT;
    case 409:
        return -EEXIST;
    case 410:
        return -ESTALE;
    case 429:
        return -EAGAIN;
    default:
        return code >= 500 ? -EAGAIN : -EIO;
    }
}

static int map_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -ECONNREFUSED;
    }
}

/* Logs a failed request once and copies its Status message into err. */
static void report(const char *method, const char *path, long code, const char *body,
                   const char *cerr, char *err, size_t errlen)
{
    char msg[512] = "";
    if (cerr) {
        snprintf(msg, sizeof(msg), "%s", cerr);
    } else {
        cJSON *st = body ? cJSON_Parse(body) : NULL;
        const char *m = jget(st, "message");
        snprintf(msg, sizeof(msg), "HTTP %ld%s%s", code, m ? ": " : "", m ? m : "");
        cJSON_Delete(st);
    }
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    if (code != 404 && code != 409)
        log_warn(ROLE, "kubernetes request failed", "method=%s path=%s code=%ld err=\"%s\"", method,
                 path, code, msg);
}

/* One request; *resp (may be NULL) gets the body on success (caller frees). */
static int request(struct k8s *k, const char *method, const char *path, const char *body,
                   const char *accept, long limit, char **resp, size_t *resp_len, char *err,
                   size_t errlen)
{
    CURL *c = handle_get(k);
    if (!c)
        return -ENOMEM;
    struct curl_slist *h = NULL;
    struct body b = {.limit = limit};
    char ebuf[CURL_ERROR_SIZE] = "";
    int rc = setup(k, c, method, path, accept, body != NULL, &h);
    if (rc)
        goto out;
    if (body)
        (void)curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, k->timeout_ms);
    (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
    (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    (void)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (cc != CURLE_OK) {
        if (b.overflow) {
            snprintf(ebuf, sizeof(ebuf), "response larger than %ld bytes", limit);
            rc = -EMSGSIZE;
        } else {
            rc = map_curl(cc);
        }
        char m[CURL_ERROR_SIZE + sizeof(k->base) + 32];
        snprintf(m, sizeof(m), "cannot reach '%s': %s", k->base,
                 ebuf[0] ? ebuf : curl_easy_strerror(cc));
        report(method, path, 0, NULL, m, err, errlen);
        goto out;
    }
    rc = map_status(code);
    if (rc) {
        report(method, path, code, b.sb.s, NULL, err, errlen);
        goto out;
    }
    if (resp) {
        if (!b.sb.s && sb_append(&b.sb, "", 0)) {
            rc = -ENOMEM;
            goto out;
        }
        if (resp_len)
            *resp_len = b.sb.len;
        *resp = sb_steal(&b.sb);
    }
out:
    sb_release(&b.sb);
    curl_slist_free_all(h);
    handle_put(k, c);
    return rc;
}

static int request_json(struct k8s *k, const char *method, const char *path, const char *body,
                        cJSON **out, char *err, size_t errlen)
{
    char *resp = NULL;
    int rc = request(k, method, path, body, "application/json", MAX_BODY, out ? &resp : NULL, NULL,
                     err, errlen);
    if (rc == 0 && out) {
        *out = cJSON_Parse(resp);
        if (!*out) {
            if (err && errlen)
                snprintf(err, errlen, "response to %s %s is not JSON", method, path);
            rc = -EIO;
        }
    }
    free(resp);
    return rc;
}

static int kind_path(enum k8s_kind kind, const char *ns, const char *name, char *out, size_t len)
{
    static const char *const prefix[] = {
        [K8S_POD] = "/api/v1/namespaces/",
        [K8S_CONFIGMAP] = "/api/v1/namespaces/",
        [K8S_NETWORKPOLICY] = "/apis/networking.k8s.io/v1/namespaces/",
    };
    static const char *const plural[] = {[K8S_POD] = "pods",
                                         [K8S_CONFIGMAP] = "configmaps",
                                         [K8S_NETWORKPOLICY] = "networkpolicies"};
    int n = snprintf(out, len, "%s%s/%s", prefix[kind], ns, plural[kind]);
    if (n >= 0 && name && (size_t)n < len)
        n += snprintf(out + n, len - (size_t)n, "/%s", name);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int k8s_create(struct k8s *k, enum k8s_kind kind, const char *ns, const cJSON *obj, cJSON **out,
               char *err, size_t errlen)
{
    char path[512];
    int rc = kind_path(kind, ns, NULL, path, sizeof(path));
    if (rc)
        return rc;
    char *body = cJSON_PrintUnformatted(obj);
    if (!body)
        return -ENOMEM;
    rc = request_json(k, "POST", path, body, out, err, errlen);
    free(body);
    return rc;
}

int k8s_get(struct k8s *k, enum k8s_kind kind, const char *ns, const char *name, cJSON **out,
            char *err, size_t errlen)
{
    char path[768];
    int rc = kind_path(kind, ns, name, path, sizeof(path));
    return rc ? rc : request_json(k, "GET", path, NULL, out, err, errlen);
}

int k8s_delete(struct k8s *k, enum k8s_kind kind, const char *ns, const char *name, char *err,
               size_t errlen)
{
    char path[768];
    int rc = kind_path(kind, ns, name, path, sizeof(path));
    if (rc)
        return rc;
    static const char opts[] = "{\"apiVersion\":\"v1\",\"kind\":\"DeleteOptions\","
                               "\"gracePeriodSeconds\":0,\"propagationPolicy\":\"Background\"}";
    return request_json(k, "DELETE", path, opts, NULL, err, errlen);
}

/* Appends a URL-encoded copy of s to out. */
static void urlenc(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (; *s && j + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[j++] = (char)ch;
        } else {
            out[j++] = '%';
            out[j++] = hex[ch >> 4];
            out[j++] = hex[ch & 15];
        }
    }
    out[j] = '\0';
}

int k8s_list_pods(struct k8s *k, const char *ns, const char *label_selector, cJSON **out, char *err,
                  size_t errlen)
{
    char sel[512] = "", path[1024];
    if (label_selector)
        urlenc(label_selector, sel, sizeof(sel));
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods%s%s", ns,
             sel[0] ? "?labelSelector=" : "", sel);
    return request_json(k, "GET", path, NULL, out, err, errlen);
}

int k8s_pod_log(struct k8s *k, const char *ns, const char *name, const char *container,
                int64_t limit_bytes, char **out, size_t *len, char *err, size_t errlen)
{
    char path[1024], cont[128] = "";
    if (container)
        urlenc(container, cont, sizeof(cont));
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s/log?limitBytes=%lld%s%s", ns, name,
             (long long)limit_bytes, cont[0] ? "&container=" : "", cont);
    return request(k, "GET", path, NULL, "*/*", (long)limit_bytes + 65536, out, len, err, errlen);
}

int k8s_health(struct k8s *k)
{
    char err[256];
    return request_json(k, "GET", "/version", NULL, NULL, err, sizeof(err));
}

/* ------------------------------------------------------------------- watch */

struct wstate {
    struct k8s_watch *w;
    CURL *c;
    struct strbuf line;
    struct strbuf errbody;
    bool stale, stopped, bad;
    long code;
};

static void watch_rv(struct k8s_watch *w, const cJSON *obj)
{
    const char *rv = jget(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "resourceVersion");
    if (rv && strlen(rv) < sizeof(w->resource_version))
        snprintf(w->resource_version, sizeof(w->resource_version), "%s", rv);
}

/* Handles one complete line; false stops the transfer. */
static bool watch_line(struct wstate *s, const char *text, size_t len)
{
    if (len == 0)
        return true;
    cJSON *ev = cJSON_ParseWithLength(text, len);
    const char *type = jget(ev, "type");
    cJSON *obj = cJSON_DetachItemFromObjectCaseSensitive(ev, "object");
    bool go = true;
    if (!type || !cJSON_IsObject(obj)) {
        log_warn(ROLE, "malformed watch event", "len=%zu", len);
        s->bad = true;
        go = false;
    } else if (strcmp(type, "ERROR") == 0) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
        if (cJSON_IsNumber(code) && code->valueint == 410) {
            s->stale = true;
        } else {
            const char *m = jget(obj, "message");
            log_warn(ROLE, "watch error event", "err=\"%s\"", m ? m : "");
            s->bad = true;
        }
        go = false;
    } else {
        watch_rv(s->w, obj);
        if (s->w->fn(s->w->ctx, type, obj) != 0) {
            s->stopped = true;
            go = false;
        }
        obj = NULL; /* owned by the callback */
    }
    cJSON_Delete(obj);
    cJSON_Delete(ev);
    return go;
}

static size_t watch_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct wstate *s = arg;
    size_t n = size * nmemb;
    if (!s->code)
        (void)curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &s->code);
    if (s->code != 200) {
        if (s->errbody.len < 65536)
            (void)sb_append(&s->errbody, data, n);
        return n;
    }
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n')
            continue;
        bool ok;
        if (s->line.len) {
            if (sb_append(&s->line, data + start, i - start))
                return 0;
            ok = watch_line(s, s->line.s, s->line.len);
            s->line.len = 0;
        } else {
            ok = watch_line(s, data + start, i - start);
        }
        if (!ok)
            return 0;
        start = i + 1;
    }
    if (start < n) {
        if ((long)(s->line.len + n - start) > MAX_LINE ||
            sb_append(&s->line, data + start, n - start))
            return 0;
    }
    return n;
}

static int watch_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    struct wstate *s = arg;
    if (s->w->stop && atomic_load(s->w->stop)) {
        s->stopped = true;
        return 1;
    }
    return 0;
}

int k8s_watch_pods(struct k8s *k, struct k8s_watch *w)
{
    char sel[512] = "", path[1400];
    if (w->label_selector)
        urlenc(w->label_selector, sel, sizeof(sel));
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?watch=true&resourceVersion=%s&allowWatchBookmarks=%s"
             "&timeoutSeconds=%d%s%s",
             w->ns, w->resource_version, w->bookmarks ? "true" : "false", w->timeout_seconds,
             sel[0] ? "&labelSelector=" : "", sel);
    CURL *c = handle_get(k);
    if (!c)
        return -ENOMEM;
    struct curl_slist *h = NULL;
    struct wstate s = {.w = w, .c = c};
    char ebuf[CURL_ERROR_SIZE] = "";
    int rc = setup(k, c, "GET", path, "application/json", false, &h);
    if (rc)
        goto out;
    /* The server ends the watch after timeoutSeconds; allow for a slow close. */
    (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)w->timeout_seconds * 1000L + k->timeout_ms);
    (void)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_write);
    (void)curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    (void)curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    (void)curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, watch_progress);
    (void)curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
    (void)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(c);
    if (!s.code)
        (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s.code);
    if (s.stale) {
        rc = -ESTALE;
    } else if (s.stopped) {
        rc = 0;
    } else if (s.bad) {
        rc = -EIO;
    } else if (s.code && s.code != 200) {
        rc = map_status(s.code);
        report("GET", path, s.code, s.errbody.s, NULL, NULL, 0);
    } else if (cc != CURLE_OK && cc != CURLE_PARTIAL_FILE) {
        rc = map_curl(cc);
        char m[CURL_ERROR_SIZE + sizeof(k->base) + 32];
        snprintf(m, sizeof(m), "watch of '%s' broke: %s", k->base,
                 ebuf[0] ? ebuf : curl_easy_strerror(cc));
        report("GET", path, 0, NULL, m, NULL, 0);
    } else if (s.line.len) {
        (void)watch_line(&s, s.line.s, s.line.len); /* a last line without newline */
    }
out:
    sb_release(&s.line);
    sb_release(&s.errbody);
    curl_slist_free_all(h);
    handle_put(k, c);
    return rc;
}
