/*
 * bench/node.c — pods/s through the node's Kubernetes API against bubblewrap alone.
 *
 *   build/bench/node [K [P]]      K pods (default 100), parallelism P (default 2)
 *   EXECD_BIN=path                the execd binary (default build/execd)
 *
 * Starts `execd` with EXECD_ROLES=node on free ports (EXECD_NODE_SLOTS=P),
 * creates one ConfigMap with print("hello") and runs K pods through the HTTP
 * API with P client threads (create, then poll the pod until it is
 * terminal), then runs the same bubblewrap command directly K times with the
 * same parallelism, and prints both rates, the per-pod latencies and the
 * ratio.  Must run as root (like the node).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int node_port;
static atomic_int next_pod;
static int total_pods;
static atomic_long lat_sum_us;
static atomic_int failures;
static char script_dir[256];

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

/* One HTTP/1.1 request with Connection: close; returns the status, body in out. */
static int request(const char *method, const char *path, const char *body, char *out, size_t outlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)node_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     method, path, blen);
    if (write(fd, head, (size_t)n) != n || (blen && write(fd, body, blen) != (ssize_t)blen)) {
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
    return status;
}

static void *node_client(void *arg)
{
    (void)arg;
    char body[1024], path[256];
    char *out = malloc(1 << 16);
    for (;;) {
        int i = atomic_fetch_add(&next_pod, 1);
        if (i >= total_pods)
            break;
        snprintf(body, sizeof(body),
                 "{\"metadata\":{\"name\":\"bench-%d\"},\"spec\":{\"restartPolicy\":\"Never\","
                 "\"containers\":[{\"name\":\"main\",\"image\":\"python:3.11-slim\","
                 "\"command\":[\"python3\",\"-I\",\"-S\",\"/scripts/main.py\"],"
                 "\"volumeMounts\":[{\"name\":\"code\",\"mountPath\":\"/scripts\"}]}],"
                 "\"volumes\":[{\"name\":\"code\",\"configMap\":{\"name\":\"bench\"}}]}}",
                 i);
        int64_t t0 = now_us();
        if (request("POST", "/api/v1/namespaces/bench/pods", body, out, 1 << 16) != 201) {
            atomic_fetch_add(&failures, 1);
            continue;
        }
        snprintf(path, sizeof(path), "/api/v1/namespaces/bench/pods/bench-%d", i);
        for (;;) {
            if (request("GET", path, NULL, out, 1 << 16) != 200) {
                atomic_fetch_add(&failures, 1);
                break;
            }
            if (strstr(out, "\"phase\":\"Succeeded\""))
                break;
            if (strstr(out, "\"phase\":\"Failed\"")) {
                atomic_fetch_add(&failures, 1);
                break;
            }
            usleep(2000);
        }
        atomic_fetch_add(&lat_sum_us, (long)(now_us() - t0));
    }
    free(out);
    return NULL;
}

static char *direct_argv[64];

/* The bubblewrap command the node runs for a pod, minus seccomp and cgroups. */
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
                                "--proc",
                                "/proc",
                                "--dev",
                                "/dev",
                                "--size",
                                "67108864",
                                "--tmpfs",
                                "/tmp",
                                "--ro-bind",
                                script_dir,
                                "/scripts",
                                "--remount-ro",
                                "/",
                                "--chdir",
                                "/",
                                "--clearenv",
                                "--setenv",
                                "PATH",
                                "/usr/bin",
                                "--setenv",
                                "HOME",
                                "/tmp",
                                "--",
                                "/usr/bin/python3",
                                "-I",
                                "-S",
                                "/scripts/main.py",
                                NULL};
    for (int i = 0; args[i]; i++)
        direct_argv[i] = strdup(args[i]);
}

static void *direct_client(void *arg)
{
    (void)arg;
    for (;;) {
        int i = atomic_fetch_add(&next_pod, 1);
        if (i >= total_pods)
            break;
        int64_t t0 = now_us();
        pid_t pid = fork();
        if (pid == 0) {
            int null = open("/dev/null", 1);
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
        atomic_fetch_add(&lat_sum_us, (long)(now_us() - t0));
    }
    return NULL;
}

struct result {
    double wall_s, rate, mean_ms;
    int failures;
};

static struct result run_clients(int k, int p, void *(*fn)(void *))
{
    atomic_store(&next_pod, 0);
    atomic_store(&lat_sum_us, 0);
    atomic_store(&failures, 0);
    total_pods = k;
    pthread_t th[256];
    int64_t t0 = now_us();
    for (int i = 0; i < p; i++)
        pthread_create(&th[i], NULL, fn, NULL);
    for (int i = 0; i < p; i++)
        pthread_join(th[i], NULL);
    double wall = (double)(now_us() - t0) / 1e6;
    struct result r = {.wall_s = wall,
                       .rate = k / wall,
                       .mean_ms = (double)atomic_load(&lat_sum_us) / k / 1000.0,
                       .failures = atomic_load(&failures)};
    return r;
}

int main(int argc, char **argv)
{
    int k = argc > 1 ? atoi(argv[1]) : 100;
    int p = argc > 2 ? atoi(argv[2]) : 2;
    if (k < 1 || p < 1 || p > 256) {
        fprintf(stderr, "usage: %s [pods] [parallelism<=256]\n", argv[0]);
        return 2;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "bench/node must run as root (the node role does)\n");
        return 2;
    }
    const char *bin = getenv("EXECD_BIN") ? getenv("EXECD_BIN") : "build/execd";
    char state[] = "/tmp/execd-bench-node-XXXXXX";
    if (!mkdtemp(state)) {
        perror("mkdtemp");
        return 1;
    }
    chmod(state, 0711);
    snprintf(script_dir, sizeof(script_dir), "%s/scripts", state);
    mkdir(script_dir, 0755);
    char script[400];
    snprintf(script, sizeof(script), "%s/main.py", script_dir);
    FILE *f = fopen(script, "w");
    if (!f) {
        perror("script");
        return 1;
    }
    fputs("print(\"hello\")\n", f);
    fclose(f);
    chmod(script, 0644);

    build_direct_argv();
    node_port = free_port();
    int http_port = free_port();
    pid_t execd = fork();
    if (execd == 0) {
        char e1[64], e2[64], e3[300], e4[64];
        snprintf(e1, sizeof(e1), "EXECD_NODE_LISTEN=127.0.0.1:%d", node_port);
        snprintf(e2, sizeof(e2), "EXECD_HTTP_LISTEN=127.0.0.1:%d", http_port);
        snprintf(e3, sizeof(e3), "EXECD_NODE_STATE_DIR=%s/state", state);
        snprintf(e4, sizeof(e4), "EXECD_NODE_SLOTS=%d", p);
        char *envp[] = {
            strdup("EXECD_ROLES=node"),   e1,  e2, e3, e4, strdup("EXECD_LOG_LEVEL=warn"),
            strdup("PATH=/usr/bin:/bin"), NULL};
        char *args[] = {strdup(bin), NULL};
        execve(bin, args, envp);
        perror("exec execd");
        _exit(127);
    }
    char out[4096];
    int64_t until = now_us() + 20 * 1000000LL;
    while (request("GET", "/api/v1/health/ready", NULL, out, sizeof(out)) != 200) {
        if (now_us() > until || waitpid(execd, NULL, WNOHANG) == execd) {
            fprintf(stderr, "the node did not become ready (EXECD_BIN=%s)\n", bin);
            kill(execd, SIGKILL);
            return 1;
        }
        usleep(20000);
    }
    if (request("POST", "/api/v1/namespaces/bench/configmaps",
                "{\"metadata\":{\"name\":\"bench\"},\"data\":{\"main.py\":\"print(\\\"hello\\\")"
                "\\n\"}}",
                out, sizeof(out)) != 201) {
        fprintf(stderr, "cannot create the ConfigMap: %s\n", out);
        kill(execd, SIGTERM);
        return 1;
    }
    struct result node = run_clients(k, p, node_client);
    struct result direct = run_clients(k, p, direct_client);
    kill(execd, SIGTERM);
    waitpid(execd, NULL, 0);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", state);

    printf("node bench: %d hello-world pods, parallelism %d\n", k, p);
    printf("  node API   : %7.2f s  %7.1f pods/s  mean %7.1f ms/pod  failures %d\n", node.wall_s,
           node.rate, node.mean_ms, node.failures);
    printf("  bwrap only : %7.2f s  %7.1f pods/s  mean %7.1f ms/pod  failures %d\n", direct.wall_s,
           direct.rate, direct.mean_ms, direct.failures);
    printf("  ratio      : node runs at %.2fx the direct rate; per-pod overhead %.1f ms\n",
           node.rate / direct.rate, node.mean_ms - direct.mean_ms);
    return node.failures || direct.failures ? 1 : 0;
}
