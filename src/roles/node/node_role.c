/*
 * node_role.c — the embedded single-node pod runtime as a role.
 *
 * The node stands in for a Kubernetes cluster: its own HTTP server on
 * EXECD_NODE_LISTEN (EXECD_NODE_THREADS threads; each open watch holds one)
 * serves the API subset in node_api.c, the store in node_pods.c keeps the
 * objects and runs pods on EXECD_NODE_SLOTS runner threads, and each
 * container runs under bubblewrap (node_sandbox.c).  It needs neither Kafka
 * nor MongoDB.  init fails with a clear message when the host cannot sandbox
 * at all (no bwrap, no user namespaces), so main exits non-zero.
 *
 * Stop: the server is marked stopping (watches end within 250 ms), running
 * pods are killed, the runners and the server's threads are joined.  Pods
 * killed by the stop stay Pending/Running in the state dir and are reported
 * Failed/NodeRestarted by the next start (docs/node.md).
 */
#include "node.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "module.h"
#include "util.h"

struct node {
    struct host *host;
    struct sandbox *sb;
    struct node_store *st;
    struct http_server *srv;
    struct node_api api;
};

static void node_destroy(void *state);

static int node_init(struct host *host, void **state)
{
    const struct config *cfg = host->cfg;
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->host = host;
    char err[768] = "";
    const char *tmp = getenv("TMPDIR"); /* NOLINT(concurrency-mt-unsafe): init is single-threaded */
    struct sandbox_opts so = {.run_dir_parent = tmp && tmp[0] == '/' ? tmp : "/tmp",
                              .pids_max = cfg->node_pids_max,
                              .slots = config_node_slots(cfg)};
    int rc = sandbox_new(&so, &n->sb, err, sizeof(err));
    if (rc) {
        log_error(NODE_ROLE, "the node cannot sandbox pods on this host", "err=\"%s\"", err);
        goto fail;
    }
    struct store_opts sto = {.cfg = cfg, .sb = n->sb, .stopping = host->stopping};
    rc = node_store_new(&sto, &n->st);
    if (rc)
        goto fail;
    struct http_server_opts ho = {.name = NODE_ROLE,
                                  .listen = cfg->node_listen,
                                  .threads = (int)cfg->node_threads,
                                  .request_timeout_ms = (int)cfg->http_request_timeout_ms,
                                  .body_limit = 4u << 20,
                                  .metrics = host->metrics};
    rc = http_server_new(&ho, &n->srv);
    if (rc) {
        log_error(NODE_ROLE, "cannot create the node http server", "listen=%s", cfg->node_listen);
        goto fail;
    }
    n->api = (struct node_api){.cfg = cfg, .st = n->st, .sb = n->sb};
    rc = node_api_routes(&n->api, n->srv);
    if (rc)
        goto fail;
    *state = n;
    return 0;
fail:
    node_destroy(n);
    return rc;
}

static int node_start(void *state)
{
    struct node *n = state;
    int rc = node_store_start(n->st);
    if (rc)
        return rc;
    rc = http_server_start(n->srv);
    if (rc)
        return rc;
    log_info(NODE_ROLE, "node ready", "listen=%s port=%d slots=%d state_dir=%s",
             n->host->cfg->node_listen, http_server_port(n->srv), config_node_slots(n->host->cfg),
             n->host->cfg->node_state_dir);
    return 0;
}

static void node_stop(void *state)
{
    struct node *n = state;
    http_server_stop(n->srv);
    node_store_stop(n->st);
}

static int node_join(void *state, int64_t deadline_ms)
{
    (void)deadline_ms;
    struct node *n = state;
    int64_t t0 = now_mono_ms();
    node_store_join(n->st);
    int64_t t1 = now_mono_ms();
    http_server_free(n->srv); /* joins the connection threads; watches saw the stop */
    n->srv = NULL;
    log_info(NODE_ROLE, "node stopped", "runners_ms=%lld http_ms=%lld", (long long)(t1 - t0),
             (long long)(now_mono_ms() - t1));
    return 0;
}

static void node_destroy(void *state)
{
    struct node *n = state;
    if (!n)
        return;
    if (n->srv) {
        http_server_stop(n->srv);
        node_store_stop(n->st);
        node_store_join(n->st);
        http_server_free(n->srv);
    }
    node_store_free(n->st);
    sandbox_free(n->sb);
    free(n);
}

static int node_health(void *state, cJSON *out)
{
    struct node *n = state;
    node_api_health(&n->api, out);
    return 0;
}

const struct role role_node = {
    .name = "node",
    .needs = 0,
    .init = node_init,
    .start = node_start,
    .stop = node_stop,
    .join = node_join,
    .destroy = node_destroy,
    .health = node_health,
};
