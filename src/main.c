/*
 * main.c — argv, config, role selection, the ordered start and stop.
 *
 * Signals are blocked before any thread exists and main waits in sigwait.
 * The first SIGTERM/SIGINT starts the stop: the HTTP server refuses new
 * requests, roles stop in reverse order and are joined within
 * EXECD_SHUTDOWN_TIMEOUT_MS, then the producer is flushed.  A second SIGINT
 * exits at once.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "schema_registry.h"
#include "store.h"
#include "tools.h"
#include "util.h"

#define MAX_ROLES 32

struct instance {
    const struct role *role;
    struct host host;
    void *state;
    int inited, started;
};

struct app {
    struct config cfg;
    struct metrics *metrics;
    struct bus *bus;
    struct store *store;
    struct http_server *http;
    struct instance roles[MAX_ROLES];
    int nroles;
    atomic_bool stopping;
    int64_t started_ms;
    int64_t started_wall_ms;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: execd [--config FILE] [--set KEY=VALUE]... [command]\n"
                 "\n"
                 "Runs the roles named by EXECD_ROLES (default: all) until SIGTERM/SIGINT.\n"
                 "\n"
                 "options:\n"
                 "  --help                 this text and the configuration keys\n"
                 "  --version              print the version\n"
                 "  --print-config         print the effective configuration (secrets masked)\n"
                 "  --check-config         validate the configuration and exit\n"
                 "  --print-reference      print config/reference.md\n"
                 "  --print-example-config print an example config file\n"
                 "  --list-roles           print the roles this build provides\n"
                 "  --config FILE          read KEY=VALUE lines from FILE\n"
                 "  --set KEY=VALUE        override one key (highest precedence)\n"
                 "\n"
                 "commands:\n"
                 "  bus-publish ...        publish test events (see execd bus-publish --help)\n"
                 "\n");
    config_help(out);
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return 1;
    return 0;
}

/* Fills app->roles from EXECD_ROLES; -EINVAL naming an unknown role. */
static int select_roles(struct app *app, char *err, size_t errlen)
{
    const char *spec = app->cfg.roles;
    if (strcmp(spec, "all") == 0) {
        for (const struct role *const *r = role_registry; *r && app->nroles < MAX_ROLES; r++)
            app->roles[app->nroles++].role = *r;
        return 0;
    }
    char *copy = strdup(spec), *save = NULL;
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        const struct role *role = role_find(tok);
        if (!role) {
            struct strbuf known = {0};
            for (const struct role *const *r = role_registry; *r; r++)
                sb_printf(&known, "%s%s", known.len ? "," : "", (*r)->name);
            snprintf(err, errlen, "EXECD_ROLES: unknown role '%s' (this build provides: %s)", tok,
                     known.s ? known.s : "none");
            sb_release(&known);
            rc = -EINVAL;
            break;
        }
        int dup = 0;
        for (int i = 0; i < app->nroles; i++)
            dup |= app->roles[i].role == role;
        if (!dup && app->nroles < MAX_ROLES)
            app->roles[app->nroles++].role = role;
    }
    free(copy);
    if (!rc && app->nroles == 0) {
        snprintf(err, errlen, "EXECD_ROLES: no role selected");
        rc = -EINVAL;
    }
    /* Keep the registry's order whatever order the list used. */
    for (int i = 0; !rc && i < app->nroles; i++)
        for (int j = i + 1; j < app->nroles; j++) {
            int pi = 0, pj = 0;
            for (int k = 0; role_registry[k]; k++) {
                if (role_registry[k] == app->roles[i].role)
                    pi = k;
                if (role_registry[k] == app->roles[j].role)
                    pj = k;
            }
            if (pj < pi) {
                struct instance t = app->roles[i];
                app->roles[i] = app->roles[j];
                app->roles[j] = t;
            }
        }
    return rc;
}

static unsigned needs_of(const struct app *app)
{
    unsigned needs = 0;
    for (int i = 0; i < app->nroles; i++)
        needs |= app->roles[i].role->needs;
    return needs;
}

/* ---- core routes: health and metrics ---- */

static void on_live(struct http_req *req, void *ctx)
{
    struct app *app = ctx;
    char ts[TS_LEN];
    ts_format_us(now_wall_us(), ts);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "uptime_seconds",
                            (double)(now_mono_ms() - app->started_ms) / 1000.0);
    cJSON_AddStringToObject(o, "timestamp", ts);
    http_respond_json(req, 200, o);
    cJSON_Delete(o);
}

static void check(cJSON *checks, const char *name, int rc, const char *detail)
{
    cJSON *c = cJSON_AddObjectToObject(checks, name);
    cJSON_AddStringToObject(c, "status", rc == 0 ? "ok" : "fail");
    if (detail)
        cJSON_AddStringToObject(c, "detail", detail);
}

static void on_ready(struct http_req *req, void *ctx)
{
    struct app *app = ctx;
    cJSON *o = cJSON_CreateObject();
    cJSON *checks = cJSON_CreateObject();
    int failed = 0;
    if (app->bus) {
        int rc = bus_health(app->bus, 1500);
        check(checks, "kafka", rc, rc ? "broker metadata request failed" : NULL);
        failed |= rc != 0;
    }
    if (app->store) {
        int rc = store_ping(app->store);
        check(checks, "mongo", rc, rc ? "ping failed" : NULL);
        failed |= rc != 0;
    }
    for (int i = 0; i < app->nroles; i++) {
        struct instance *in = &app->roles[i];
        if (in->started && in->role->health && in->role->health(in->state, checks) != 0)
            failed = 1;
    }
    const char *failing = NULL;
    cJSON *c;
    cJSON_ArrayForEach(c, checks)
    {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "status");
        if (cJSON_IsString(st) && strcmp(st->valuestring, "ok") != 0 && !failing)
            failing = c->string;
    }
    cJSON_AddStringToObject(o, "status", failed ? "fail" : "ok");
    if (failing)
        cJSON_AddStringToObject(o, "failing", failing);
    cJSON *roles = cJSON_AddArrayToObject(o, "roles");
    for (int i = 0; i < app->nroles; i++)
        cJSON_AddItemToArray(roles, cJSON_CreateString(app->roles[i].role->name));
    cJSON_AddItemToObject(o, "checks", checks);
    http_respond_json(req, failed ? 503 : 200, o);
    cJSON_Delete(o);
}

static void on_metrics(struct http_req *req, void *ctx)
{
    struct app *app = ctx;
    struct strbuf sb = {0};
    metric_set(
        metrics_get(app->metrics, METRIC_GAUGE, "execd_uptime_seconds", "Seconds since start", ""),
        (now_mono_ms() - app->started_ms) / 1000);
    if (metrics_render(app->metrics, &sb) != 0) {
        sb_release(&sb);
        http_respond_error(req, 500, "Infrastructure", "cannot render metrics");
        return;
    }
    http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", sb.s ? sb.s : "", sb.len);
    sb_release(&sb);
}

/* ---- start-up ---- */

static int connect_bus(struct app *app)
{
    int rc = bus_new(&app->cfg, app->metrics, &app->bus);
    if (rc) {
        log_error("main", "cannot create kafka producer", "brokers=%s err=%d",
                  app->cfg.kafka_brokers, rc);
        return rc;
    }
    int64_t deadline = now_mono_ms() + 30000;
    int64_t delay = 250;
    while ((rc = bus_ensure_topics(app->bus)) != 0) {
        if (now_mono_ms() > deadline || atomic_load(&app->stopping)) {
            log_error("main", "cannot create topics", "brokers=%s err=%d", app->cfg.kafka_brokers,
                      rc);
            return rc;
        }
        log_warn("main", "cannot reach kafka, retrying", "brokers=%s retry_ms=%lld",
                 app->cfg.kafka_brokers, (long long)delay);
        sleep_ms(delay);
        delay = delay * 2 > 4000 ? 4000 : delay * 2;
    }
    return 0;
}

static int connect_store(struct app *app)
{
    int rc = store_new(&app->cfg, &app->store);
    if (rc) {
        log_error("main", "cannot create mongodb client pool", "err=%d", rc);
        return rc;
    }
    int64_t deadline = now_mono_ms() + 30000;
    int64_t delay = 250;
    while ((rc = store_ping(app->store)) != 0) {
        if (now_mono_ms() > deadline) {
            log_error("main", "cannot reach mongodb", "err=%d", rc);
            return rc;
        }
        log_warn("main", "cannot reach mongodb, retrying", "retry_ms=%lld", (long long)delay);
        sleep_ms(delay);
        delay = delay * 2 > 4000 ? 4000 : delay * 2;
    }
    char err[512] = "";
    rc = schema_registry_sync(app->store, err, sizeof(err));
    if (rc) {
        log_error("main", "schema registry refused the event catalog", "err=\"%s\"", err);
        fprintf(stderr, "execd: %s\n", err);
        return rc;
    }
    return store_reaper_start(app->store);
}

static void stop_roles(struct app *app)
{
    int64_t deadline = now_mono_ms() + app->cfg.shutdown_timeout_ms;
    for (int i = app->nroles - 1; i >= 0; i--)
        if (app->roles[i].started)
            app->roles[i].role->stop(app->roles[i].state);
    for (int i = app->nroles - 1; i >= 0; i--) {
        struct instance *in = &app->roles[i];
        if (in->started && in->role->join(in->state, deadline) != 0)
            log_warn("main", "role did not stop within the deadline", "role=%s", in->role->name);
        in->started = 0;
    }
}

static void destroy_roles(struct app *app)
{
    for (int i = app->nroles - 1; i >= 0; i--)
        if (app->roles[i].inited) {
            app->roles[i].role->destroy(app->roles[i].state);
            app->roles[i].inited = 0;
        }
}

/* After the first signal a second SIGINT exits at once, and SIGALRM bounds
 * the whole stop by the deadline plus a margin.  Both only call _exit. */
static void on_second_interrupt(int sig)
{
    (void)sig;
    static const char msg[] = "execd: second interrupt, exiting now\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(130);
}

static void on_overrun(int sig)
{
    (void)sig;
    static const char msg[] = "execd: shutdown overran its deadline, exiting\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(1);
}

static void arm_second_signal(const struct config *cfg)
{
    signal(SIGINT, on_second_interrupt);
    signal(SIGALRM, on_overrun);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGALRM);
    /* Only this thread unblocks them; every other thread keeps them blocked. */
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    alarm((unsigned)((cfg->shutdown_timeout_ms + 5000) / 1000));
}

int main(int argc, char **argv)
{
    static struct app app;
    char err[1024] = "";

    int is_tool = argc > 1 && strcmp(argv[1], "bus-publish") == 0;
    if (!is_tool && (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h"))) {
        usage(stdout);
        return 0;
    }
    if (has_flag(argc, argv, "--version")) {
        printf("execd %s\n", EXECD_VERSION);
        return 0;
    }
    if (has_flag(argc, argv, "--list-roles")) {
        for (const struct role *const *r = role_registry; *r; r++)
            printf("%s\n", (*r)->name);
        return 0;
    }
    if (config_load(&app.cfg, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "execd: configuration error: %s\n", err);
        return 2;
    }
    if (has_flag(argc, argv, "--print-reference")) {
        config_reference(stdout);
        goto out_ok;
    }
    if (has_flag(argc, argv, "--print-example-config")) {
        config_example(stdout);
        goto out_ok;
    }
    if (log_setup(app.cfg.log_level, app.cfg.log_format) != 0) {
        fprintf(stderr, "execd: configuration error: bad EXECD_LOG_LEVEL/EXECD_LOG_FORMAT\n");
        goto out_cfg;
    }
    if (select_roles(&app, err, sizeof(err)) != 0) {
        fprintf(stderr, "execd: configuration error: %s\n", err);
        config_release(&app.cfg);
        return 2;
    }
    if (has_flag(argc, argv, "--print-config")) {
        config_print(&app.cfg, stdout);
        goto out_ok;
    }
    if (has_flag(argc, argv, "--check-config")) {
        printf("configuration ok\n");
        goto out_ok;
    }
    event_set_service(app.cfg.service_name, EXECD_VERSION);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "bus-publish") == 0) {
            /* The registry assigns the schema ids the published headers carry. */
            int rc = connect_store(&app) == 0 ? tool_bus_main(&app.cfg, argc - i, argv + i) : 1;
            store_free(app.store);
            config_release(&app.cfg);
            return rc;
        }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sigdelset(&set, SIGALRM);
    signal(SIGPIPE, SIG_IGN);
    thread_name_set("main");

    app.started_ms = now_mono_ms();
    app.started_wall_ms = now_wall_ms();
    app.metrics = metrics_new();
    if (!app.metrics)
        goto out_fail;
    log_info("main", "starting", "version=%s roles=%s", EXECD_VERSION, app.cfg.roles);

    unsigned needs = needs_of(&app);
    if ((needs & (ROLE_NEEDS_BUS | ROLE_NEEDS_STORE)) && connect_store(&app) != 0)
        goto out_fail;
    if ((needs & ROLE_NEEDS_BUS) && connect_bus(&app) != 0)
        goto out_fail;

    struct http_server_opts hopts = {
        .name = "http",
        .listen = app.cfg.http_listen,
        .threads = (int)app.cfg.http_threads,
        .request_timeout_ms = (int)app.cfg.http_request_timeout_ms,
        .body_limit = (size_t)app.cfg.http_body_limit_bytes,
        .metrics = app.metrics,
    };
    if (http_server_new(&hopts, &app.http) != 0)
        goto out_fail;
    http_route(app.http, "GET", "/api/v1/health/live", on_live, &app);
    http_route(app.http, "GET", "/api/v1/health/ready", on_ready, &app);
    http_route(app.http, "GET", "/metrics", on_metrics, &app);

    for (int i = 0; i < app.nroles; i++) {
        struct instance *in = &app.roles[i];
        in->host = (struct host){
            .role = in->role->name,
            .cfg = &app.cfg,
            .bus = app.bus,
            .store = app.store,
            .http = app.http,
            .metrics = app.metrics,
            .stopping = &app.stopping,
        };
        int rc = in->role->init(&in->host, &in->state);
        if (rc) {
            log_error("main", "role failed to initialise", "role=%s err=%d", in->role->name, rc);
            goto out_fail;
        }
        in->inited = 1;
    }
    for (int i = 0; i < app.nroles; i++) {
        struct instance *in = &app.roles[i];
        int rc = in->role->start(in->state);
        if (rc) {
            log_error("main", "role failed to start", "role=%s err=%d", in->role->name, rc);
            goto out_fail;
        }
        in->started = 1;
    }
    if (http_server_start(app.http) != 0)
        goto out_fail;
    log_info("main", "started", "roles=%s http=%s startup_ms=%lld", app.cfg.roles,
             app.cfg.http_listen, (long long)(now_mono_ms() - app.started_ms));

    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    atomic_store(&app.stopping, true);
    log_info("main", "stopping", "signal=%d deadline_ms=%lld", sig,
             (long long)app.cfg.shutdown_timeout_ms);
    arm_second_signal(&app.cfg);

    int64_t t0 = now_mono_ms();
    http_server_stop(app.http);
    stop_roles(&app);
    http_server_free(app.http);
    app.http = NULL;
    destroy_roles(&app);
    bus_free(app.bus);
    store_free(app.store);
    log_info("main", "stopped", "ms=%lld", (long long)(now_mono_ms() - t0));
    metrics_free(app.metrics);
    config_release(&app.cfg);
    return 0;

out_fail:
    atomic_store(&app.stopping, true);
    stop_roles(&app);
    http_server_free(app.http);
    destroy_roles(&app);
    bus_free(app.bus);
    store_free(app.store);
    metrics_free(app.metrics);
    config_release(&app.cfg);
    return 1;
out_ok:
    config_release(&app.cfg);
    return 0;
out_cfg:
    config_release(&app.cfg);
    return 2;
}
