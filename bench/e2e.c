/*
 * bench/e2e.c — hello-world executions/s through the whole pipeline against
 * the bare sandbox.
 *
 *   build/bench/e2e [N [S [C]]]   N executions (default 200), S node slots =
 *                                 sandbox runs at once (default 2), C HTTP
 *                                 clients (default 4 = 2 per slot, keeps it full)
 *   BENCH_POLL_MS=n               result poll interval (default 10 ms)
 *   TEST_MONGO=host:port          the MongoDB/FerretDB to use (default 127.0.0.1:27017)
 *   EXECD_*=...                   passed to execd, over the bench's own settings
 *   EXECD_BIN=path                the execd binary (default build/execd)
 *
 * Starts `execd` with every role on free ports, its own topic prefix and
 * database (Kafka and FerretDB from scripts/services.sh), EXECD_NODE_SLOTS=S
 * and no rate or per-user limits; registers a user; runs 5 warm-up
 * executions; then C client threads each submit print("hello") (POST
 * /api/v1/execute, Bearer token) and poll GET /api/v1/executions/{id}/result
 * every BENCH_POLL_MS until it is terminal.  From each execution's stored events it
 * splits the time: queue (requested → scheduled), start (scheduled →
 * started), run (started → completed), collect (completed → result_stored).
 * Then it runs the same Python hello N times under bubblewrap directly (the
 * argv of src/roles/node/node_sandbox.c build_argv without seccomp and
 * cgroups), S at a time, and prints both rates, p50/p99 of everything and
 * the ratio pipeline/bare.  Platform overhead = p50(submit → result) −
 * p50(bare run).  Must run as root (like the node).
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define MAX_CLIENTS 256
#define BUF (1 << 16)

static int api_port;
static char token[2048];
static atomic_int next_job;
static int total_jobs;
static atomic_int failures;
static char **exec_ids;
static int64_t *lat_us;
static char script_dir[256];
static useconds_t poll_us = 10000;

static int64_t now_us(void)
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

/* One HTTP/1.1 request (Connection: close); returns the status, the body in *body. */
static int request(const char *method, const char *path, const char *ctype, const char *body,
                   char *out, size_t outlen, const char **resp_body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)api_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char head[4096];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                     "%s%s%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     method, path, ctype ? ctype : "application/json",
                     token[0] ? "Authorization: Bearer " : "", token, token[0] ? "\r\n" : "", blen);
    if (n < 0 || (size_t)n >= sizeof(head) || write(fd, head, (size_t)n) != n ||
        (blen && write(fd, body, blen) != (ssize_t)blen)) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < outlen && (r = read(fd, out + got, outlen - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
    int status = 0;
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    const char *b = strstr(out, "\r\n\r\n");
    if (resp_body)
        *resp_body = b ? b + 4 : out + got;
    return status;
}

static const char *TERMINAL[] = {"\"status\":\"completed\"", "\"status\":\"failed\"",
                                 "\"status\":\"timeout\"", "\"status\":\"cancelled\"", NULL};

/* Submits one hello and polls its result; 0 when completed with "hello\n". */
static int one_execution(char *out, char id[64], int64_t *lat)
{
    const char *body = NULL;
    int64_t t0 = now_us();
    int st = request("POST", "/api/v1/execute", NULL,
                     "{\"script\":\"print(\\\"hello\\\")\",\"lang\":\"python\","
                     "\"lang_version\":\"3.11\"}",
                     out, BUF, &body);
    if (st != 200)
        return -1;
    cJSON *j = cJSON_Parse(body);
    const cJSON *eid = cJSON_GetObjectItemCaseSensitive(j, "execution_id");
    if (!cJSON_IsString(eid)) {
        cJSON_Delete(j);
        return -1;
    }
    snprintf(id, 64, "%s", eid->valuestring);
    cJSON_Delete(j);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/executions/%s/result", id);
    for (int tries = 0; tries < 60000; tries++) {
        if (request("GET", path, NULL, NULL, out, BUF, &body) != 200)
            return -1;
        for (const char **t = TERMINAL; *t; t++)
            if (strstr(body, *t)) {
                *lat = now_us() - t0;
                return strstr(body, "\"status\":\"completed\"") &&
                               strstr(body, "\"stdout\":\"hello\\n\"")
                           ? 0
                           : -1;
            }
        usleep(poll_us);
    }
    return -1;
}

static void *pipeline_client(void *arg)
{
    (void)arg;
    char *out = malloc(BUF);
    for (;;) {
        int i = atomic_fetch_add(&next_job, 1);
        if (i >= total_jobs)
            break;
        char id[64] = "";
        int64_t lat = 0;
        if (one_execution(out, id, &lat) != 0)
            atomic_fetch_add(&failures, 1);
        exec_ids[i] = strdup(id);
        lat_us[i] = lat;
    }
    free(out);
    return NULL;
}

/* ---- the bare sandbox ---- */

static char *direct_argv[96];

/* The bubblewrap command of node_sandbox.c build_argv, minus seccomp and cgroups, with the
 * interpreter the runtimes table names and the pod's script mounted at /scripts. */
static void build_direct_argv(void)
{
    const char *const args[] = {"/usr/bin/bwrap",
                                "--unshare-all",
                                "--unshare-user",
                                "--disable-userns",
                                "--die-with-parent",
                                "--new-session",
                                "--cap-drop",
                                "ALL",
                                "--uid",
                                "65534",
                                "--gid",
                                "65534",
                                "--hostname",
                                "bench",
                                "--ro-bind",
                                "/usr",
                                "/usr",
                                "--symlink",
                                "usr/lib",
                                "/lib",
                                "--symlink",
                                "usr/lib64",
                                "/lib64",
                                "--symlink",
                                "usr/bin",
                                "/bin",
                                "--symlink",
                                "usr/sbin",
                                "/sbin",
                                "--proc",
                                "/proc",
                                "--dev",
                                "/dev",
                                "--perms",
                                "1777",
                                "--size",
                                "67108864",
                                "--tmpfs",
                                "/dev/shm",
                                "--dir",
                                "/etc",
                                "--ro-bind-try",
                                "/etc/ld.so.cache",
                                "/etc/ld.so.cache",
                                "--ro-bind-try",
                                "/etc/alternatives",
                                "/etc/alternatives",
                                "--ro-bind-try",
                                "/etc/localtime",
                                "/etc/localtime",
                                "--perms",
                                "1777",
                                "--size",
                                "67108864",
                                "--tmpfs",
                                "/tmp",
                                "--ro-bind",
                                script_dir,
                                "/scripts",
                                "--remount-ro",
                                "/dev",
                                "--remount-ro",
                                "/",
                                "--chdir",
                                "/scripts",
                                "--clearenv",
                                "--setenv",
                                "PATH",
                                "/usr/local/bin:/usr/bin:/bin",
                                "--setenv",
                                "HOME",
                                "/tmp",
                                "--",
                                "/usr/bin/python3",
                                "-u",
                                "main.py",
                                NULL};
    for (int i = 0; args[i]; i++)
        direct_argv[i] = strdup(args[i]);
}

static void *direct_client(void *arg)
{
    (void)arg;
    for (;;) {
        int i = atomic_fetch_add(&next_job, 1);
        if (i >= total_jobs)
            break;
        int64_t t0 = now_us();
        pid_t pid = fork();
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) {
                dup2(null, 1);
                dup2(null, 2);
            }
            gid_t g = 65534;
            if (setgroups(1, &g) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
                _exit(126);
            char *envp[] = {NULL};
            execve(direct_argv[0], direct_argv, envp);
            _exit(127);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            atomic_fetch_add(&failures, 1);
        lat_us[i] = now_us() - t0;
    }
    return NULL;
}

static double run_clients(int n, int p, void *(*fn)(void *))
{
    atomic_store(&next_job, 0);
    atomic_store(&failures, 0);
    total_jobs = n;
    pthread_t th[MAX_CLIENTS];
    int64_t t0 = now_us();
    for (int i = 0; i < p; i++)
        pthread_create(&th[i], NULL, fn, NULL);
    for (int i = 0; i < p; i++)
        pthread_join(th[i], NULL);
    return (double)(now_us() - t0) / 1e6;
}

/* ---- statistics ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(int64_t *v, int n, double p)
{
    if (n <= 0)
        return -1;
    qsort(v, (size_t)n, sizeof(v[0]), cmp_i64);
    int i = (int)(p * (n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

/* ---- the execd process ---- */

static pid_t execd_pid;

static void stop_execd(void)
{
    if (execd_pid > 0) {
        kill(execd_pid, SIGTERM);
        int st;
        waitpid(execd_pid, &st, 0);
        execd_pid = 0;
    }
}

static void start_execd(const char *bin, int slots, const char *prefix, const char *state)
{
    char listen[64], node[64], slots_s[40], cap[40], uri[256], pfx[96], st[512];
    snprintf(listen, sizeof(listen), "EXECD_HTTP_LISTEN=127.0.0.1:%d", api_port);
    snprintf(node, sizeof(node), "EXECD_NODE_LISTEN=127.0.0.1:%d", free_port());
    snprintf(slots_s, sizeof(slots_s), "EXECD_NODE_SLOTS=%d", slots);
    snprintf(cap, sizeof(cap), "EXECD_MAX_CONCURRENT=%d", slots);
    const char *mongo = getenv("TEST_MONGO") ? getenv("TEST_MONGO") : "127.0.0.1:27017";
    snprintf(uri, sizeof(uri), "EXECD_MONGO_URI=mongodb://%s/execd_%s", mongo, prefix);
    snprintf(pfx, sizeof(pfx), "EXECD_TOPIC_PREFIX=%s-", prefix);
    snprintf(st, sizeof(st), "EXECD_NODE_STATE_DIR=%s", state);
    const char *const env[] = {"EXECD_ROLES=all",
                               listen,
                               node,
                               slots_s,
                               cap,
                               uri,
                               pfx,
                               st,
                               "EXECD_RATE_LIMIT_ENABLED=false",
                               "EXECD_USER_MAX_CONCURRENT=100000",
                               "EXECD_USER_MAX_PER_MINUTE=1000000",
                               "EXECD_BCRYPT_COST=4",
                               "EXECD_LOG_LEVEL=warn",
                               "PATH=/usr/local/bin:/usr/bin:/bin",
                               NULL};
    /* EXECD_* settings of the bench's own environment win over these. */
    extern char **environ;
    size_t nenv = 0, n = 0;
    while (environ[nenv])
        nenv++;
    char **envp = calloc(nenv + sizeof(env) / sizeof(env[0]) + 1, sizeof(char *));
    for (size_t i = 0; i < nenv; i++)
        if (strncmp(environ[i], "EXECD_", 6) == 0 && strncmp(environ[i], "EXECD_BIN=", 10) != 0)
            envp[n++] = strdup(environ[i]);
    size_t inherited = n;
    for (size_t i = 0; env[i]; i++) {
        size_t klen = strcspn(env[i], "=") + 1;
        bool set = false;
        for (size_t j = 0; j < inherited && !set; j++)
            set = strncmp(envp[j], env[i], klen) == 0;
        if (!set)
            envp[n++] = strdup(env[i]);
    }
    execd_pid = fork();
    if (execd_pid == 0) {
        char *argv[] = {strdup(bin), NULL};
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1);
        execve(bin, argv, envp);
        perror("exec execd");
        _exit(127);
    }
    for (size_t i = 0; envp[i]; i++)
        free(envp[i]);
    char *out = malloc(BUF);
    for (int i = 0; i < 600; i++) {
        const char *b;
        if (request("GET", "/api/v1/health/ready", NULL, NULL, out, BUF, &b) == 200) {
            free(out);
            return;
        }
        int st2;
        if (waitpid(execd_pid, &st2, WNOHANG) == execd_pid) {
            fprintf(stderr, "execd exited during start-up\n");
            exit(1);
        }
        usleep(100000);
    }
    fprintf(stderr, "execd not ready after 60 s\n");
    stop_execd();
    exit(1);
}

static void login(void)
{
    char *out = malloc(BUF);
    const char *b;
    char body[256];
    snprintf(body, sizeof(body),
             "{\"username\":\"bench%d\",\"email\":\"bench%d@example.com\","
             "\"password\":\"password-123\"}",
             getpid(), getpid());
    if (request("POST", "/api/v1/auth/register", NULL, body, out, BUF, &b) != 200) {
        fprintf(stderr, "register failed: %s\n", out);
        exit(1);
    }
    snprintf(body, sizeof(body), "{\"username\":\"bench%d\",\"password\":\"password-123\"}",
             getpid());
    if (request("POST", "/api/v1/auth/login", NULL, body, out, BUF, &b) != 200) {
        fprintf(stderr, "login failed: %s\n", out);
        exit(1);
    }
    cJSON *j = cJSON_Parse(b);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    if (!cJSON_IsString(t)) {
        fprintf(stderr, "no access_token: %s\n", b);
        exit(1);
    }
    snprintf(token, sizeof(token), "%s", t->valuestring);
    cJSON_Delete(j);
    free(out);
}

/* The four phases of one execution from its stored events (µs); 0 when all are there. */
static int phases(const char *id, char *out, int64_t ph[4])
{
    char path[256];
    const char *b;
    snprintf(path, sizeof(path), "/api/v1/executions/%s/events?limit=1000", id);
    static const char *const types[] = {"execution_requested", "execution_scheduled",
                                        "execution_started", "execution_completed",
                                        "result_stored"};
    int64_t ts[5];
    for (int tries = 0; tries < 200; tries++) {
        if (request("GET", path, NULL, NULL, out, BUF, &b) != 200)
            return -1;
        cJSON *j = cJSON_Parse(b);
        int found = 0;
        for (int k = 0; k < 5; k++) {
            ts[k] = -1;
            const cJSON *e;
            cJSON_ArrayForEach(e, j)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "event_type");
                const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "timestamp");
                int64_t us;
                if (cJSON_IsString(t) && strcmp(t->valuestring, types[k]) == 0 &&
                    cJSON_IsString(s) && ts_parse_us(s->valuestring, &us) == 0 &&
                    (ts[k] < 0 || us < ts[k]))
                    ts[k] = us;
            }
            found += ts[k] >= 0;
        }
        cJSON_Delete(j);
        if (found == 5) {
            for (int k = 0; k < 4; k++)
                ph[k] = ts[k + 1] - ts[k];
            return 0;
        }
        usleep(20000);
    }
    return -1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200;
    int slots = argc > 2 ? atoi(argv[2]) : 2;
    int clients = argc > 3 ? atoi(argv[3]) : 4;
    if (getenv("BENCH_POLL_MS"))
        poll_us = (useconds_t)(atoi(getenv("BENCH_POLL_MS")) * 1000);
    if (n < 1 || slots < 1 || slots > MAX_CLIENTS || clients < 1 || clients > MAX_CLIENTS) {
        fprintf(stderr, "usage: %s [executions] [slots<=256] [clients<=256]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *bin = getenv("EXECD_BIN") ? getenv("EXECD_BIN") : "build/execd";
    char prefix[64], state[256] = "/tmp/execd-bench-e2e-XXXXXX";
    if (!mkdtemp(state)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(prefix, sizeof(prefix), "bench%d%ld", getpid(), (long)time(NULL) % 100000);
    snprintf(script_dir, sizeof(script_dir), "%s/scripts", state);
    mkdir(script_dir, 0755);
    chmod(state, 0755);
    char script[512];
    snprintf(script, sizeof(script), "%s/main.py", script_dir);
    FILE *f = fopen(script, "w");
    if (!f) {
        perror(script);
        return 1;
    }
    fputs("print(\"hello\")\n", f);
    fclose(f);
    chmod(script, 0644);

    api_port = free_port();
    char node_state[300];
    snprintf(node_state, sizeof(node_state), "%s/node", state);
    start_execd(bin, slots, prefix, node_state);
    atexit(stop_execd);
    login();

    int warm = 5;
    exec_ids = calloc((size_t)(n + warm), sizeof(char *));
    lat_us = calloc((size_t)(n + warm), sizeof(int64_t));
    run_clients(warm, 1, pipeline_client);
    for (int i = 0; i < warm; i++)
        free(exec_ids[i]);
    double wall = run_clients(n, clients, pipeline_client);
    int pipe_fail = atomic_load(&failures);
    int64_t *e2e = calloc((size_t)n, sizeof(int64_t));
    memcpy(e2e, lat_us, (size_t)n * sizeof(int64_t));

    int64_t *ph[4];
    int nph = 0;
    for (int k = 0; k < 4; k++)
        ph[k] = calloc((size_t)n, sizeof(int64_t));
    char *out = malloc(BUF);
    for (int i = 0; i < n; i++) {
        int64_t p[4];
        if (exec_ids[i] && exec_ids[i][0] && phases(exec_ids[i], out, p) == 0) {
            for (int k = 0; k < 4; k++)
                ph[k][nph] = p[k];
            nph++;
        }
    }
    free(out);
    stop_execd();

    build_direct_argv();
    run_clients(warm, 1, direct_client);
    double bare_wall = run_clients(n, slots, direct_client);
    int bare_fail = atomic_load(&failures);
    int64_t *bare = calloc((size_t)n, sizeof(int64_t));
    memcpy(bare, lat_us, (size_t)n * sizeof(int64_t));

    double rate = n / wall, bare_rate = n / bare_wall;
    double e50 = pct_ms(e2e, n, 0.5), e99 = pct_ms(e2e, n, 0.99);
    double b50 = pct_ms(bare, n, 0.5), b99 = pct_ms(bare, n, 0.99);
    printf("e2e: %d hello executions, %d node slots (= EXECD_MAX_CONCURRENT), %d HTTP clients\n", n,
           slots, clients);
    printf("pipeline  %8.1f executions/s  (%.2f s, %d failed)  submit->result p50 %.1f ms  "
           "p99 %.1f ms\n",
           rate, wall, pipe_fail, e50, e99);
    static const char *const names[] = {"queue  ", "start  ", "run    ", "collect"};
    for (int k = 0; k < 4; k++)
        printf("  %s  p50 %7.1f ms  p99 %7.1f ms   (%d executions)\n", names[k],
               pct_ms(ph[k], nph, 0.5), pct_ms(ph[k], nph, 0.99), nph);
    printf("bare bwrap %7.1f runs/s        (%.2f s, %d failed)  run p50 %.1f ms  p99 %.1f ms\n",
           bare_rate, bare_wall, bare_fail, b50, b99);
    printf("ratio pipeline/bare %.2f (target >= 0.75); p50 platform overhead %.1f ms "
           "(target <= 15 ms)\n",
           rate / bare_rate, e50 - b50);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", state);
    return pipe_fail || bare_fail ? 1 : 0;
}
