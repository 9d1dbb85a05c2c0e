/*
 * bench/sse.c — publish → SSE client delivery latency with many open streams.
 *
 *   build/bench/sse [STREAMS [EVENTS [INTERVAL_MS]]]
 *                      default 500 streams, 100 events, one every 50 ms
 *   EXECD_BIN=path     the execd binary (default build/execd)
 *
 * 1. execd: forks EXECD_BIN with EXECD_ROLES=sse,store on free ports, a fresh
 *    topic prefix and database (EXECD_HTTP_THREADS = STREAMS + 64).  The bench
 *    inserts a user and a running execution, signs a JWT with
 *    EXECD_SECRET_KEY, opens STREAMS streams on GET
 *    /api/v1/events/executions/{id}, then publishes EVENTS events
 *    (execution_started, bus_publish_event) one every INTERVAL_MS and records, for
 *    every stream, the time from just before bus_publish_event to the arrival
 *    of the frame carrying that event's id.
 * 2. baseline: a bare civetweb server in this process (same thread count);
 *    each handler writes the same chunked `id:`/`data:` frames as soon as the
 *    bench "publishes" them in memory (a condition variable), so it measures
 *    what civetweb and the sockets cost without Kafka or the role.
 * Prints p50/p99/max of both and the ratios.  One poll() thread reads every
 * stream; both runs share that client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>
#include <cjson/cJSON.h>

#include "auth.h"
#include "bus.h"
#include "config.h"
#include "events.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define ID_LEN 64

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* ---- the shared client: STREAMS sockets read by one poll() thread ---- */

struct run {
    int nstreams, nevents;
    char (*ids)[ID_LEN];  /* event ids, in publish order */
    int64_t *sent_us;     /* publish time per event (0 = not yet) */
    int64_t *lat_us;      /* nstreams * nevents, -1 = not received */
    atomic_int published; /* events with an id and a time */
    atomic_long received;
    atomic_bool done;
    struct pollfd *pfd;
    char **buf;
    size_t *blen;
    atomic_int ready; /* streams that answered 200 */
};

static void run_init(struct run *r, int nstreams, int nevents)
{
    memset(r, 0, sizeof(*r));
    r->nstreams = nstreams;
    r->nevents = nevents;
    r->ids = calloc((size_t)nevents, sizeof(*r->ids));
    r->sent_us = calloc((size_t)nevents, sizeof(int64_t));
    r->lat_us = malloc((size_t)nstreams * (size_t)nevents * sizeof(int64_t));
    for (long i = 0; i < (long)nstreams * nevents; i++)
        r->lat_us[i] = -1;
    r->pfd = calloc((size_t)nstreams, sizeof(*r->pfd));
    r->buf = calloc((size_t)nstreams, sizeof(char *));
    r->blen = calloc((size_t)nstreams, sizeof(size_t));
    for (int i = 0; i < nstreams; i++)
        r->buf[i] = malloc(65536);
}

static void run_free(struct run *r)
{
    for (int i = 0; i < r->nstreams; i++) {
        if (r->pfd[i].fd > 0)
            close(r->pfd[i].fd);
        free(r->buf[i]);
    }
    free(r->buf);
    free(r->blen);
    free(r->pfd);
    free(r->ids);
    free(r->sent_us);
    free(r->lat_us);
}

static int open_streams(struct run *r, int port, const char *path, const char *token)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                     "Authorization: Bearer %s\r\n\r\n",
                     path, token);
    for (int i = 0; i < r->nstreams; i++) {
        int fd = connect_port(port);
        if (fd < 0 || write(fd, req, (size_t)n) != n) {
            fprintf(stderr, "bench: cannot open stream %d\n", i);
            return -1;
        }
        r->pfd[i].fd = fd;
        r->pfd[i].events = POLLIN;
    }
    return 0;
}

/* Handles complete lines of stream i: "HTTP/1.1 200" and "id: <event id>". */
static void scan_lines(struct run *r, int i, int64_t now)
{
    char *b = r->buf[i];
    size_t start = 0;
    for (size_t k = 0; k < r->blen[i]; k++) {
        if (b[k] != '\n')
            continue;
        b[k] = '\0';
        char *line = b + start;
        size_t ll = k - start;
        if (ll && line[ll - 1] == '\r')
            line[ll - 1] = '\0';
        if (strncmp(line, "HTTP/1.1 200", 12) == 0) {
            atomic_fetch_add(&r->ready, 1);
        } else if (strncmp(line, "id: ", 4) == 0) {
            int np = atomic_load(&r->published);
            for (int e = np - 1; e >= 0; e--)
                if (strcmp(r->ids[e], line + 4) == 0) {
                    long slot = (long)i * r->nevents + e;
                    if (r->lat_us[slot] < 0) {
                        r->lat_us[slot] = now - r->sent_us[e];
                        atomic_fetch_add(&r->received, 1);
                    }
                    break;
                }
        }
        start = k + 1;
    }
    memmove(b, b + start, r->blen[i] - start);
    r->blen[i] -= start;
}

static void *reader(void *arg)
{
    struct run *r = arg;
    while (!atomic_load(&r->done)) {
        int n = poll(r->pfd, (nfds_t)r->nstreams, 100);
        if (n <= 0)
            continue;
        for (int i = 0; i < r->nstreams; i++) {
            if (!(r->pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t got = read(r->pfd[i].fd, r->buf[i] + r->blen[i], 65535 - r->blen[i]);
            int64_t now = mono_us(); /* after the read: the frame is here */
            if (got <= 0) {
                r->pfd[i].fd = -r->pfd[i].fd; /* ignored by poll from now on */
                continue;
            }
            r->blen[i] += (size_t)got;
            scan_lines(r, i, now);
            if (r->blen[i] >= 65000)
                r->blen[i] = 0;
        }
    }
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct stats {
    double p50, p99, max;
    long got, want;
};

static struct stats run_stats(const struct run *r)
{
    long n = (long)r->nstreams * r->nevents, k = 0;
    int64_t *v = malloc((size_t)n * sizeof(int64_t));
    for (long i = 0; i < n; i++)
        if (r->lat_us[i] >= 0)
            v[k++] = r->lat_us[i];
    struct stats s = {.got = k, .want = n};
    if (k) {
        qsort(v, (size_t)k, sizeof(int64_t), cmp64);
        s.p50 = (double)v[k / 2] / 1000.0;
        s.p99 = (double)v[(k * 99) / 100] / 1000.0;
        s.max = (double)v[k - 1] / 1000.0;
    }
    free(v);
    return s;
}

static int wait_ready(struct run *r, int64_t timeout_ms)
{
    int64_t end = now_mono_ms() + timeout_ms;
    while (atomic_load(&r->ready) < r->nstreams) {
        if (now_mono_ms() > end) {
            fprintf(stderr, "bench: only %d of %d streams opened\n", atomic_load(&r->ready),
                    r->nstreams);
            return -1;
        }
        sleep_ms(20);
    }
    return 0;
}

static void wait_received(struct run *r, int64_t timeout_ms)
{
    long want = (long)r->nstreams * r->nevents;
    int64_t end = now_mono_ms() + timeout_ms;
    while (atomic_load(&r->received) < want && now_mono_ms() < end)
        sleep_ms(20);
}

/* ---- the baseline: a bare civetweb handler ---- */

static pthread_mutex_t base_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t base_cv = PTHREAD_COND_INITIALIZER;
static int base_seq;
static atomic_bool base_stop;
static struct run *base_run;
static int interval_ms = 50;

static int base_handler(struct mg_connection *conn, void *data)
{
    (void)data;
    mg_printf(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: "
                    "no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n");
    int seen = 0;
    while (!atomic_load(&base_stop)) {
        pthread_mutex_lock(&base_mu);
        while (base_seq == seen && !atomic_load(&base_stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&base_cv, &base_mu, &ts);
        }
        int upto = base_seq;
        pthread_mutex_unlock(&base_mu);
        for (; seen < upto; seen++) {
            char frame[512];
            int n = snprintf(frame, sizeof(frame),
                             "id: %s\ndata: {\"event_type\":\"execution_started\","
                             "\"execution_id\":\"bench\",\"timestamp\":\"2024-01-01T00:00:00Z\","
                             "\"event_id\":\"%s\",\"status\":\"running\",\"result\":null}\n\n",
                             base_run->ids[seen], base_run->ids[seen]);
            if (mg_send_chunk(conn, frame, (unsigned)n) <= 0)
                return 200;
        }
    }
    mg_send_chunk(conn, "", 0);
    return 200;
}

static struct stats baseline(int nstreams, int nevents)
{
    int port = free_port();
    char listen[32], threads[16];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(threads, sizeof(threads), "%d", nstreams + 64);
    const char *opts[] = {"listening_ports", listen, "num_threads", threads, "tcp_nodelay", "1",
                          "listen_backlog",  "512",  NULL};
    struct mg_callbacks cb = {0};
    struct mg_context *ctx = mg_start(&cb, NULL, opts);
    struct stats st = {0};
    if (!ctx) {
        fprintf(stderr, "bench: cannot start the baseline server\n");
        return st;
    }
    mg_set_request_handler(ctx, "/", base_handler, NULL);
    struct run r;
    run_init(&r, nstreams, nevents);
    base_run = &r;
    pthread_t th;
    pthread_create(&th, NULL, reader, &r);
    if (open_streams(&r, port, "/sse", "none") == 0 && wait_ready(&r, 30000) == 0) {
        for (int e = 0; e < nevents; e++) {
            uuid_v4(r.ids[e]);
            pthread_mutex_lock(&base_mu);
            r.sent_us[e] = mono_us();
            atomic_store(&r.published, e + 1);
            base_seq = e + 1;
            pthread_cond_broadcast(&base_cv);
            pthread_mutex_unlock(&base_mu);
            sleep_ms(interval_ms);
        }
        wait_received(&r, 10000);
        st = run_stats(&r);
    }
    atomic_store(&base_stop, true);
    pthread_mutex_lock(&base_mu);
    pthread_cond_broadcast(&base_cv);
    pthread_mutex_unlock(&base_mu);
    atomic_store(&r.done, true);
    pthread_join(th, NULL);
    for (int i = 0; i < r.nstreams; i++)
        if (r.pfd[i].fd > 0) {
            close(r.pfd[i].fd);
            r.pfd[i].fd = 0;
        }
    mg_stop(ctx);
    run_free(&r);
    return st;
}

/* ---- execd ---- */

static pid_t spawn_execd(const char *bin, int http_port, int nstreams, const char *log)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    char listen[32], threads[16], cap[16];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", http_port);
    snprintf(threads, sizeof(threads), "%d", nstreams + 64);
    snprintf(cap, sizeof(cap), "%d", nstreams + 16);
    setenv("EXECD_ROLES", "sse,store", 1);
    setenv("EXECD_HTTP_LISTEN", listen, 1);
    setenv("EXECD_HTTP_THREADS", threads, 1);
    setenv("EXECD_SSE_MAX_STREAMS", cap, 1);
    setenv("EXECD_SSE_QUEUE_MAX", "1024", 1);
    setenv("EXECD_LOG_LEVEL", "warn", 1);
    FILE *f = freopen(log, "w", stdout);
    (void)f;
    dup2(1, 2);
    execl(bin, bin, (char *)NULL);
    perror("exec execd");
    _exit(127);
}

static int wait_live(int port, int64_t timeout_ms)
{
    int64_t end = now_mono_ms() + timeout_ms;
    while (now_mono_ms() < end) {
        int fd = connect_port(port);
        if (fd >= 0) {
            static const char req[] =
                "GET /api/v1/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            char buf[64] = "";
            if (write(fd, req, sizeof(req) - 1) > 0 && read(fd, buf, sizeof(buf) - 1) > 12 &&
                strncmp(buf, "HTTP/1.1 200", 12) == 0) {
                close(fd);
                return 0;
            }
            close(fd);
        }
        sleep_ms(100);
    }
    return -1;
}

static struct event *started_event(const char *eid)
{
    struct event *ev = event_new(EV_execution_started, eid);
    if (ev && (event_set_str(ev, "execution_id", eid) || event_set_str(ev, "pod_name", "bench"))) {
        event_free(ev);
        return NULL;
    }
    return ev;
}

int main(int argc, char **argv)
{
    int nstreams = argc > 1 ? atoi(argv[1]) : 500;
    int nevents = argc > 2 ? atoi(argv[2]) : 100;
    interval_ms = argc > 3 ? atoi(argv[3]) : 50;
    if (nstreams < 1 || nevents < 1 || interval_ms < 0) {
        fprintf(stderr, "usage: %s [STREAMS [EVENTS [INTERVAL_MS]]]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *bin = getenv("EXECD_BIN") ? getenv("EXECD_BIN") : "build/execd";
    char prefix[32], uri[256], rnd[9];
    auth_random_hex(rnd, 4);
    snprintf(prefix, sizeof(prefix), "bsse%s-", rnd);
    const char *mongo = getenv("EXECD_MONGO_URI");
    snprintf(uri, sizeof(uri), "mongodb://127.0.0.1:27017/bench_sse_%s", rnd);
    if (mongo && strncmp(mongo, "mongodb://", 10) == 0) {
        /* keep the host, use a fresh database */
        const char *host = mongo + 10;
        const char *slash = strchr(host, '/');
        int hl = slash ? (int)(slash - host) : (int)strlen(host);
        snprintf(uri, sizeof(uri), "mongodb://%.*s/bench_sse_%s", hl, host, rnd);
    }
    setenv("EXECD_TOPIC_PREFIX", prefix, 1);
    setenv("EXECD_MONGO_URI", uri, 1);
    log_setup(getenv("BENCH_LOG_LEVEL") ? getenv("BENCH_LOG_LEVEL") : "warn", "logfmt");
    event_set_service("execd-bench", EXECD_VERSION);
    struct config cfg;
    char err[256];
    if (config_load(&cfg, 1, argv, err, sizeof(err))) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    struct store *store = NULL;
    struct bus *bus = NULL;
    if (store_new(&cfg, &store) || store_ping(store) || bus_new(&cfg, NULL, &bus) ||
        bus_ensure_topics(bus)) {
        fprintf(stderr, "bench: Kafka or MongoDB unreachable (scripts/services.sh up)\n");
        return 1;
    }
    char uid[UUID_LEN], eid[UUID_LEN];
    uuid_v4(uid);
    uuid_v4(eid);
    cJSON *user = cJSON_CreateObject();
    cJSON_AddStringToObject(user, "user_id", uid);
    cJSON_AddStringToObject(user, "username", "bench");
    cJSON_AddStringToObject(user, "role", "user");
    cJSON_AddBoolToObject(user, "is_active", 1);
    cJSON *ex = cJSON_CreateObject();
    cJSON_AddStringToObject(ex, "execution_id", eid);
    cJSON_AddStringToObject(ex, "user_id", uid);
    cJSON_AddStringToObject(ex, "status", "running");
    cJSON_AddNumberToObject(ex, "status_rank", 2);
    int rc = store_insert_one(store, "users", user) || store_insert_one(store, "executions", ex);
    cJSON_Delete(user);
    cJSON_Delete(ex);
    struct jwt_claims claims = {.iat = now_wall_ms() / 1000, .exp = now_wall_ms() / 1000 + 3600};
    snprintf(claims.sub, sizeof(claims.sub), "bench");
    snprintf(claims.role, sizeof(claims.role), "user");
    snprintf(claims.jti, sizeof(claims.jti), "bench");
    char *token = NULL;
    if (rc || jwt_encode(cfg.secret_key, &claims, &token)) {
        fprintf(stderr, "bench: cannot prepare the user and execution\n");
        return 1;
    }

    int port = free_port();
    char log[64];
    snprintf(log, sizeof(log), "/tmp/bench-sse-%s.log", rnd);
    pid_t pid = spawn_execd(bin, port, nstreams, log);
    int status = 1;
    struct run r;
    run_init(&r, nstreams, nevents);
    pthread_t th;
    pthread_create(&th, NULL, reader, &r);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/events/executions/%s", eid);
    if (wait_live(port, 30000) != 0) {
        fprintf(stderr, "bench: execd did not come up (log: %s)\n", log);
        goto out;
    }
    /* Until the per-process group has its partitions nothing live arrives:
     * warm up with one probe stream until a published event reaches it. */
    {
        struct run probe;
        run_init(&probe, 1, 1);
        pthread_t pth;
        pthread_create(&pth, NULL, reader, &probe);
        open_streams(&probe, port, path, token);
        int64_t end = now_mono_ms() + 30000;
        while (atomic_load(&probe.received) == 0 && now_mono_ms() < end) {
            struct event *ev = started_event(eid);
            snprintf(probe.ids[0], ID_LEN, "%s", ev->event_id);
            probe.sent_us[0] = mono_us();
            atomic_store(&probe.published, 1);
            bus_publish_event(bus, ev);
            event_free(ev);
            sleep_ms(200);
        }
        atomic_store(&probe.done, true);
        pthread_join(pth, NULL);
        long ok = atomic_load(&probe.received);
        run_free(&probe);
        if (!ok) {
            fprintf(stderr, "bench: no live event reached the probe stream\n");
            goto out;
        }
    }
    if (open_streams(&r, port, path, token) != 0 || wait_ready(&r, 30000) != 0)
        goto out;
    sleep_ms(500); /* let the ring/history frames of the warm-up pass */
    for (int e = 0; e < nevents; e++) {
        struct event *ev = started_event(eid);
        snprintf(r.ids[e], ID_LEN, "%s", ev->event_id);
        r.sent_us[e] = mono_us();
        atomic_store(&r.published, e + 1);
        if (bus_publish_event(bus, ev) != 0)
            fprintf(stderr, "bench: publish failed\n");
        event_free(ev);
        sleep_ms(interval_ms);
    }
    wait_received(&r, 15000);
    struct stats ss = run_stats(&r);
    atomic_store(&r.done, true);
    pthread_join(th, NULL);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    pid = 0;

    struct stats bs = baseline(nstreams, nevents);
    printf("sse: %d streams, %d events (one every %d ms), publish -> client frame\n", nstreams,
           nevents, interval_ms);
    printf("  execd sse,store (Kafka hop + role): p50 %.2f ms  p99 %.2f ms  max %.2f ms  "
           "delivered %ld/%ld\n",
           ss.p50, ss.p99, ss.max, ss.got, ss.want);
    printf("  bare civetweb handler (baseline):   p50 %.2f ms  p99 %.2f ms  max %.2f ms  "
           "delivered %ld/%ld\n",
           bs.p50, bs.p99, bs.max, bs.got, bs.want);
    if (bs.p50 > 0 && bs.p99 > 0)
        printf("  ratio execd/baseline: p50 %.1fx  p99 %.1fx\n", ss.p50 / bs.p50, ss.p99 / bs.p99);
    status = ss.got == ss.want && bs.got == bs.want ? 0 : 1;
out:
    if (!atomic_load(&r.done)) {
        atomic_store(&r.done, true);
        pthread_join(th, NULL);
    }
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    run_free(&r);
    free(token);
    store_drop(store, "users");
    store_drop(store, "executions");
    store_drop(store, "events");
    bus_free(bus);
    store_free(store);
    config_release(&cfg);
    unlink(log);
    return status;
}
