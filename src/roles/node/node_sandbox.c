/*
 * node_sandbox.c — one container run under bubblewrap.
 *
 * Shape of a run (all on the runner thread that calls sandbox_run):
 *
 *   prepare   a run dir <run>/<id>/ (0711, outside the state dir so that
 *             uid 65534 can traverse to it): passwd/group, the termination
 *             message file (owned by the sandbox uid), ConfigMap volumes as
 *             read-only file trees; per-pod cgroups (v1 memory/pids/cpu or
 *             one v2 group) with memory.limit, no swap, pids.max, cpu quota;
 *             the argv for bwrap; pipes for output, bwrap's JSON status and
 *             the seccomp program (exported once at start-up).
 *   fork      the child joins the cgroups (as root), closes every other fd,
 *             sets rlimits (core 0, nofile, fsize; nproc/as only where no
 *             cgroup enforces them), no_new_privs, drops to uid/gid 65534 and
 *             execs bwrap — so even uid 0 inside the user namespace is nobody
 *             on the host.  bwrap unshares every namespace (no network),
 *             disables nested user namespaces, drops all capabilities, mounts
 *             /usr read-only and a tmpfs root that it remounts read-only, and
 *             loads the seccomp filter just before exec'ing the command.
 *   monitor   poll on the output pipe, the status pipe, a pidfd and the
 *             cancel fd, with the deadline as timeout.  Output is appended to
 *             the log file up to log_limit; the rest is read and discarded so
 *             the program keeps running (the log cap never kills).
 *   kill      SIGKILL to bwrap: its init (pid 1 of the pod's pid namespace)
 *             has PDEATHSIG, and when pid 1 dies the kernel kills every
 *             process in the namespace — daemons included.  Whatever is still
 *             in the cgroup afterwards is killed too before the cgroup goes.
 *   collect   exit code (128+signal when killed), OOM kills from
 *             memory.oom_control (v1) / memory.events (v2), peak memory, the
 *             termination message (≤ 4096 bytes, like the kubelet).
 */
#include "node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#ifndef CLONE_NEWNS
#define CLONE_NEWNS 0x00020000
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWUTS
#define CLONE_NEWUTS 0x04000000
#endif
#ifndef CLONE_NEWIPC
#define CLONE_NEWIPC 0x08000000
#endif
#ifndef CLONE_NEWUSER
#define CLONE_NEWUSER 0x10000000
#endif
#ifndef CLONE_NEWPID
#define CLONE_NEWPID 0x20000000
#endif
#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif

#define SANDBOX_UID 65534
#define SANDBOX_GID 65534
#define CPU_PERIOD_US 100000
#define MAX_ARGS 512

enum run_flags { RUN_SECCOMP = 1, RUN_CGROUPS = 2 };

struct sandbox {
    struct sandbox_caps caps;
    char run_dir[512];
    /* v1: one base per controller; v2: cg_mem is the one base. */
    char cg_mem[512], cg_pids[512], cg_cpu[512];
    int64_t pids_max;
    int slots;
    unsigned char *bpf;
    size_t bpf_len;
    int maxfd;
};

/* ------------------------------------------------------------- file helpers */

static int write_file(const char *path, const char *data, size_t len, int mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = -errno;
            close(fd);
            return err;
        }
        off += (size_t)n;
    }
    if (fchmod(fd, (mode_t)mode) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return close(fd) == 0 ? 0 : -errno;
}

/* Writes s into an existing control file (no O_CREAT/O_TRUNC semantics issues). */
static int cg_write(const char *dir, const char *file, const char *s)
{
    char path[640];
    bfmt(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, s, strlen(s));
    int err = n < 0 ? -errno : 0;
    close(fd);
    return err;
}

/* Reads up to len-1 bytes of a small file; -errno. */
static int read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off + 1 < len) {
        ssize_t n = read(fd, buf + off, len - 1 - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = -errno;
            close(fd);
            return err;
        }
        if (n == 0)
            break;
        off += (size_t)n;
    }
    buf[off] = '\0';
    close(fd);
    return (int)off;
}

/* Value of "key N" in a flat-keyed cgroup file, or -1. */
static int64_t cg_keyed(const char *dir, const char *file, const char *key)
{
    char path[640], buf[4096];
    bfmt(path, sizeof(path), "%s/%s", dir, file);
    if (read_small(path, buf, sizeof(buf)) < 0)
        return -1;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            return strtoll(line + klen + 1, NULL, 10);
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

static int64_t cg_int(const char *dir, const char *file)
{
    char path[640], buf[64];
    bfmt(path, sizeof(path), "%s/%s", dir, file);
    if (read_small(path, buf, sizeof(buf)) <= 0)
        return -1;
    return strtoll(buf, NULL, 10);
}

/* Removes a directory tree (depth-first); ignores errors. */
static void rm_tree(const char *path, int depth)
{
    if (depth > 16)
        return;
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char child[1024];
            bfmt(child, sizeof(child), "%s/%s", path, de->d_name);
            struct stat st;
            if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
                rm_tree(child, depth + 1);
            else
                (void)unlink(child);
        }
        closedir(d);
    }
    (void)rmdir(path);
}

bool sandbox_binary_ok(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static void set_cloexec(int fd)
{
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int pipe_cloexec(int fds[2])
{
    if (pipe(fds) != 0)
        return -errno;
    set_cloexec(fds[0]);
    set_cloexec(fds[1]);
    return 0;
}

/* ------------------------------------------------------------------ cgroups */

/* The calling process's cgroup path for a v1 controller (or "" for v2). */
static int self_cgroup(const char *controller, char *out, size_t len)
{
    char buf[4096];
    if (read_small("/proc/self/cgroup", buf, sizeof(buf)) < 0)
        return -ENOENT;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c1 && c2) {
            *c2 = '\0';
            const char *ctrls = c1 + 1;
            const char *path = c2 + 1;
            bool hit = false;
            if (!controller) {
                hit = ctrls[0] == '\0';
            } else {
                char tmp[256];
                bfmt(tmp, sizeof(tmp), "%s", ctrls);
                char *save = NULL;
                for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save))
                    if (strcmp(t, controller) == 0)
                        hit = true;
            }
            if (hit) {
                bfmt(out, len, "%s", strcmp(path, "/") == 0 ? "" : path);
                return 0;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return -ENOENT;
}

/* Kills every process listed in dir/cgroup.procs; returns how many were left. */
static int cg_kill_all(const char *dir)
{
    char path[640], buf[8192];
    bfmt(path, sizeof(path), "%s/cgroup.procs", dir);
    if (read_small(path, buf, sizeof(buf)) <= 0)
        return 0;
    int n = 0;
    for (char *p = buf; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 1) {
            (void)kill((pid_t)pid, SIGKILL);
            n++;
        }
        p = end;
        while (*p == '\n')
            p++;
    }
    return n;
}

/* Empties (killing) and removes a pod cgroup; waits up to ~1 s. */
static void cg_destroy(const char *dir, int version)
{
    if (!dir[0])
        return;
    if (version == 2)
        (void)cg_write(dir, "cgroup.kill", "1");
    for (int i = 0; i < 150; i++) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return;
        cg_kill_all(dir);
        sleep_ms(i < 50 ? 1 : 10); /* exiting processes leave within a few ms */
    }
    log_warn(NODE_ROLE, "cannot remove pod cgroup", "path=%s err=\"%s\"", dir, strerror(errno));
}

/* Removes the bases left by a node that died (execd-node-<pid> with a dead pid). */
static void cg_reap_stale(const char *parent, int version)
{
    DIR *d = opendir(parent);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "execd-node-", 11) != 0)
            continue;
        long pid = strtol(de->d_name + 11, NULL, 10);
        if (pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        char base[640];
        bfmt(base, sizeof(base), "%s/%s", parent, de->d_name);
        DIR *sub = opendir(base);
        if (sub) {
            struct dirent *se;
            while ((se = readdir(sub))) {
                if (se->d_name[0] == '.' || se->d_type != DT_DIR)
                    continue;
                char child[1024];
                bfmt(child, sizeof(child), "%s/%s", base, se->d_name);
                cg_destroy(child, version);
            }
            closedir(sub);
        }
        (void)rmdir(base);
        log_info(NODE_ROLE, "removed stale pod cgroups", "path=%s", base);
    }
    closedir(d);
}

/* Creates base = <mount>/<self>/execd-node-<pid>; 0 or -errno. */
static int cg_base(const char *mount, const char *controller, char *out, size_t len)
{
    char self[384];
    if (self_cgroup(controller, self, sizeof(self)) != 0)
        return -ENOENT;
    char parent[512];
    bfmt(parent, sizeof(parent), "%s%s", mount, self);
    cg_reap_stale(parent, controller ? 1 : 2);
    bfmt(out, len, "%s/execd-node-%ld", parent, (long)getpid());
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        int err = -errno;
        out[0] = '\0';
        return err;
    }
    return 0;
}

static void cg_detect(struct sandbox *sb)
{
    struct sandbox_caps *c = &sb->caps;
    struct stat st;
    if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) {
        /* cgroup v2: enable the controllers for our children. */
        char base[512];
        if (cg_base("/sys/fs/cgroup", NULL, base, sizeof(base)) != 0) {
            bfmt(c->detail, sizeof(c->detail), "cgroup v2 is not writable here");
            return;
        }
        char parent[512];
        bfmt(parent, sizeof(parent), "%s", base);
        char *slash = strrchr(parent, '/');
        if (slash)
            *slash = '\0';
        const char *ctrls[] = {"+memory", "+pids", "+cpu"};
        for (int i = 0; i < 3; i++) {
            (void)cg_write(parent, "cgroup.subtree_control", ctrls[i]);
            (void)cg_write(base, "cgroup.subtree_control", ctrls[i]);
        }
        char have[256] = "";
        char path[640];
        bfmt(path, sizeof(path), "%s/cgroup.subtree_control", base);
        (void)read_small(path, have, sizeof(have));
        c->cg_memory = strstr(have, "memory") != NULL;
        c->cg_pids = strstr(have, "pids") != NULL;
        c->cg_cpu = strstr(have, "cpu") != NULL;
        if (c->cg_memory || c->cg_pids || c->cg_cpu) {
            c->cg_version = 2;
            bfmt(sb->cg_mem, sizeof(sb->cg_mem), "%s", base);
        } else {
            (void)rmdir(base);
            bfmt(c->detail, sizeof(c->detail),
                 "cgroup v2 controllers cannot be delegated below '%s' (the cgroup has "
                 "processes); falling back to rlimits",
                 parent);
        }
        return;
    }
    struct {
        const char *mount, *ctrl;
        char *out;
        bool *flag;
    } v1[] = {
        {"/sys/fs/cgroup/memory", "memory", sb->cg_mem, &c->cg_memory},
        {"/sys/fs/cgroup/pids", "pids", sb->cg_pids, &c->cg_pids},
        {"/sys/fs/cgroup/cpu", "cpu", sb->cg_cpu, &c->cg_cpu},
    };
    struct strbuf missing = {0};
    for (size_t i = 0; i < sizeof(v1) / sizeof(v1[0]); i++) {
        if (cg_base(v1[i].mount, v1[i].ctrl, v1[i].out, sizeof(sb->cg_mem)) == 0) {
            *v1[i].flag = true;
            c->cg_version = 1;
        } else {
            sb_printf(&missing, "%s%s", missing.len ? "," : "", v1[i].ctrl);
        }
    }
    if (missing.len)
        bfmt(c->detail, sizeof(c->detail), "cgroup v1 controllers not writable: %s", missing.s);
    sb_release(&missing);
}

/* Creates the pod cgroups and writes the limits.  paths get the dirs made. */
struct pod_cgroups {
    char mem[640], pids[640], cpu[640];
};

static int cg_create(struct sandbox *sb, const struct sandbox_spec *spec, struct pod_cgroups *cg)
{
    const struct sandbox_caps *c = &sb->caps;
    char v[64];
    memset(cg, 0, sizeof(*cg));
    if (c->cg_version == 2) {
        bfmt(cg->mem, sizeof(cg->mem), "%s/%s", sb->cg_mem, spec->id);
        if (mkdir(cg->mem, 0755) != 0 && errno != EEXIST)
            return -errno;
        if (c->cg_memory) {
            bfmt(v, sizeof(v), "%lld", (long long)spec->memory_limit);
            if (cg_write(cg->mem, "memory.max", v) != 0)
                return -EIO;
            (void)cg_write(cg->mem, "memory.swap.max", "0");
            (void)cg_write(cg->mem, "memory.oom.group", "0");
        }
        if (c->cg_pids) {
            bfmt(v, sizeof(v), "%lld", (long long)sb->pids_max);
            if (cg_write(cg->mem, "pids.max", v) != 0)
                return -EIO;
        }
        if (c->cg_cpu && spec->cpu_millis > 0) {
            bfmt(v, sizeof(v), "%lld %d", (long long)(spec->cpu_millis * CPU_PERIOD_US / 1000),
                 CPU_PERIOD_US);
            (void)cg_write(cg->mem, "cpu.max", v);
        }
        return 0;
    }
    if (c->cg_memory) {
        bfmt(cg->mem, sizeof(cg->mem), "%s/%s", sb->cg_mem, spec->id);
        if (mkdir(cg->mem, 0755) != 0 && errno != EEXIST)
            return -errno;
        bfmt(v, sizeof(v), "%lld", (long long)spec->memory_limit);
        if (cg_write(cg->mem, "memory.limit_in_bytes", v) != 0)
            return -EIO;
        /* memsw ≥ limit; equal means no swap.  Absent without swap accounting. */
        (void)cg_write(cg->mem, "memory.memsw.limit_in_bytes", v);
        (void)cg_write(cg->mem, "memory.swappiness", "0");
    }
    if (c->cg_pids) {
        bfmt(cg->pids, sizeof(cg->pids), "%s/%s", sb->cg_pids, spec->id);
        if (mkdir(cg->pids, 0755) != 0 && errno != EEXIST)
            return -errno;
        bfmt(v, sizeof(v), "%lld", (long long)sb->pids_max);
        if (cg_write(cg->pids, "pids.max", v) != 0)
            return -EIO;
    }
    if (c->cg_cpu && spec->cpu_millis > 0) {
        bfmt(cg->cpu, sizeof(cg->cpu), "%s/%s", sb->cg_cpu, spec->id);
        if (mkdir(cg->cpu, 0755) != 0 && errno != EEXIST)
            return -errno;
        bfmt(v, sizeof(v), "%d", CPU_PERIOD_US);
        (void)cg_write(cg->cpu, "cpu.cfs_period_us", v);
        bfmt(v, sizeof(v), "%lld", (long long)(spec->cpu_millis * CPU_PERIOD_US / 1000));
        (void)cg_write(cg->cpu, "cpu.cfs_quota_us", v);
    }
    return 0;
}

static void cg_remove(struct sandbox *sb, struct pod_cgroups *cg)
{
    int ver = sb->caps.cg_version;
    cg_destroy(cg->mem, ver);
    cg_destroy(cg->pids, ver);
    cg_destroy(cg->cpu, ver);
}

/* ------------------------------------------------------------------ seccomp */

static int seccomp_build(struct sandbox *sb)
{
    static const char *const denied[] = {
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "unshare",
        "setns",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "keyctl",
        "add_key",
        "request_key",
        "personality",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "syslog",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
        "lookup_dcookie",
        "open_by_handle_at",
        "name_to_handle_at",
        "vhangup",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "fanotify_init",
        "pidfd_getfd",
        "uselib",
        "nfsservctl",
    };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]) && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not on this architecture */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    /* clone3 passes flags in memory: make libc fall back to clone. */
    int nr3 = seccomp_syscall_resolve_name("clone3");
    if (rc == 0 && nr3 != __NR_SCMP_ERROR)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr3, 0);
    static const unsigned long ns_flags[] = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,
                                             CLONE_NEWIPC, CLONE_NEWUSER,   CLONE_NEWPID,
                                             CLONE_NEWNET};
    for (size_t i = 0; i < sizeof(ns_flags) / sizeof(ns_flags[0]) && rc == 0; i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
    if (rc != 0) {
        seccomp_release(ctx);
        return rc;
    }
    /* Export through a pipe into memory: the program is loaded per run. */
    int fds[2];
    if (pipe_cloexec(fds) != 0) {
        seccomp_release(ctx);
        return -EMFILE;
    }
    rc = seccomp_export_bpf(ctx, fds[1]);
    close(fds[1]);
    seccomp_release(ctx);
    if (rc != 0) {
        close(fds[0]);
        return rc;
    }
    struct strbuf sb_bpf = {0};
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof(buf))) > 0)
        if (sb_append(&sb_bpf, buf, (size_t)n) != 0)
            break;
    close(fds[0]);
    if (!sb_bpf.len || sb_bpf.len > 60000) {
        sb_release(&sb_bpf);
        return -EIO;
    }
    sb->bpf_len = sb_bpf.len;
    sb->bpf = (unsigned char *)sb_steal(&sb_bpf);
    return 0;
}

/* --------------------------------------------------------------- argv build */

struct argv_buf {
    char *v[MAX_ARGS + 1];
    int n;
    bool overflow;
};

static void av_add(struct argv_buf *a, const char *s)
{
    if (a->n >= MAX_ARGS) {
        a->overflow = true;
        return;
    }
    a->v[a->n++] = strdup(s ? s : "");
    if (!a->v[a->n - 1])
        a->overflow = true;
}

static void av_add2(struct argv_buf *a, const char *x, const char *y)
{
    av_add(a, x);
    av_add(a, y);
}

static void av_add3(struct argv_buf *a, const char *x, const char *y, const char *z)
{
    av_add(a, x);
    av_add(a, y);
    av_add(a, z);
}

static void av_free(struct argv_buf *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
}

/* Creates dir and its parents (relative to an existing root). */
static int mkdirs(const char *root, const char *rel, char *out, size_t len)
{
    bfmt(out, len, "%s", root);
    char tmp[512];
    bfmt(tmp, sizeof(tmp), "%s", rel);
    char *save = NULL;
    for (char *t = strtok_r(tmp, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        size_t l = strlen(out);
        bfmt(out + l, len - l, "/%s", t);
        if (mkdir(out, 0755) != 0 && errno != EEXIST)
            return -errno;
    }
    return 0;
}

/* Writes the files of a volume into dir. */
static int write_volume(const char *dir, const struct sandbox_mount *m)
{
    for (int i = 0; i < m->nfiles; i++) {
        const struct sandbox_file *f = &m->files[i];
        char rel[512];
        bfmt(rel, sizeof(rel), "%s", f->path);
        char *slash = strrchr(rel, '/');
        char parent[1024];
        if (slash) {
            *slash = '\0';
            if (mkdirs(dir, rel, parent, sizeof(parent)) != 0)
                return -EIO;
        }
        char path[1024];
        bfmt(path, sizeof(path), "%s/%s", dir, f->path);
        int rc = write_file(path, f->data, f->len, f->mode ? f->mode : 0644);
        if (rc)
            return rc;
    }
    return 0;
}

/* True when some mount covers exactly path. */
static bool mounted_at(const struct sandbox_spec *spec, const char *path)
{
    for (int i = 0; i < spec->nmounts; i++)
        if (strcmp(spec->mounts[i].dst, path) == 0)
            return true;
    return false;
}

static int build_argv(struct sandbox *sb, const struct sandbox_spec *spec, const char *rdir,
                      unsigned flags, struct argv_buf *a, int64_t *fsize)
{
    char num[32], path[1024];
    av_add(a, sb->caps.bwrap);
    av_add(a, "--unshare-all");
    av_add(a, "--unshare-user");
    av_add(a, "--disable-userns");
    av_add(a, "--die-with-parent");
    av_add(a, "--new-session");
    av_add2(a, "--cap-drop", "ALL");
    bfmt(num, sizeof(num), "%u", (unsigned)spec->uid);
    av_add2(a, "--uid", num);
    bfmt(num, sizeof(num), "%u", (unsigned)spec->gid);
    av_add2(a, "--gid", num);
    if (spec->hostname && spec->hostname[0]) {
        char host[64];
        bfmt(host, sizeof(host), "%s", spec->hostname);
        av_add2(a, "--hostname", host);
    }
    av_add3(a, "--ro-bind", "/usr", "/usr");
    av_add3(a, "--symlink", "usr/lib", "/lib");
    av_add3(a, "--symlink", "usr/lib64", "/lib64");
    av_add3(a, "--symlink", "usr/bin", "/bin");
    av_add3(a, "--symlink", "usr/sbin", "/sbin");
    av_add2(a, "--proc", "/proc");
    av_add2(a, "--dev", "/dev");
    bfmt(num, sizeof(num), "%lld", (long long)NODE_DEFAULT_TMP);
    av_add2(a, "--perms", "1777");
    av_add2(a, "--size", num);
    av_add2(a, "--tmpfs", "/dev/shm");
    av_add2(a, "--dir", "/etc");
    bfmt(path, sizeof(path), "%s/passwd", rdir);
    av_add3(a, "--ro-bind", path, "/etc/passwd");
    bfmt(path, sizeof(path), "%s/group", rdir);
    av_add3(a, "--ro-bind", path, "/etc/group");
    bfmt(path, sizeof(path), "%s/hosts", rdir);
    av_add3(a, "--ro-bind", path, "/etc/hosts");
    av_add3(a, "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache");
    av_add3(a, "--ro-bind-try", "/etc/alternatives", "/etc/alternatives");
    av_add3(a, "--ro-bind-try", "/etc/localtime", "/etc/localtime");
    for (const char *const *b = spec->binds; b && *b; b++)
        av_add3(a, "--ro-bind-try", *b, *b);
    if (spec->path_dir)
        for (const char *const *l = spec->links; l && l[0] && l[1]; l += 2) {
            bfmt(path, sizeof(path), "%s/%s", spec->path_dir, l[1]);
            av_add3(a, "--symlink", l[0], path);
        }
    int64_t largest = 0;
    if (!mounted_at(spec, "/tmp")) {
        bfmt(num, sizeof(num), "%lld", (long long)spec->tmp_size);
        av_add2(a, "--perms", "1777");
        av_add2(a, "--size", num);
        av_add2(a, "--tmpfs", "/tmp");
        largest = spec->tmp_size;
    }
    for (int i = 0; i < spec->nmounts; i++) {
        const struct sandbox_mount *m = &spec->mounts[i];
        if (m->kind == SANDBOX_TMPFS) {
            bfmt(num, sizeof(num), "%lld", (long long)m->size);
            av_add2(a, "--perms", "1777");
            av_add2(a, "--size", num);
            av_add2(a, "--tmpfs", m->dst);
            if (m->size > largest)
                largest = m->size;
        } else {
            bfmt(path, sizeof(path), "%s/vol-%d", rdir, i);
            av_add3(a, m->read_only ? "--ro-bind" : "--bind", path, m->dst);
        }
    }
    if (spec->term_path && spec->term_path[0]) {
        bfmt(path, sizeof(path), "%s/termination-log", rdir);
        av_add3(a, "--bind", path, spec->term_path);
    }
    const char *wd = spec->workdir && spec->workdir[0] ? spec->workdir : "/";
    if (strcmp(wd, "/") != 0)
        av_add2(a, "--dir", wd);
    av_add2(a, "--remount-ro", "/dev"); /* not recursive: /dev/shm and the message stay writable */
    av_add2(a, "--remount-ro", "/");
    av_add2(a, "--chdir", wd);
    av_add(a, "--clearenv");
    for (char *const *e = spec->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char key[256];
        bfmt(key, sizeof(key), "%.*s", (int)(eq - *e), *e);
        av_add3(a, "--setenv", key, eq + 1);
    }
    av_add2(a, "--json-status-fd", "4");
    if (flags & RUN_SECCOMP)
        av_add2(a, "--seccomp", "3");
    av_add(a, "--");
    for (char *const *p = spec->argv; p && *p; p++)
        av_add(a, *p);
    a->v[a->n] = NULL;
    *fsize = largest > 0 ? largest * 2 : NODE_DEFAULT_TMP * 2;
    return a->overflow ? -E2BIG : 0;
}

/* -------------------------------------------------------------------- child */

struct child_plan {
    char cg_procs[3][700];
    int ncg;
    int fd_out, fd_null, fd_seccomp, fd_status;
    int maxfd;
    int64_t fsize, nproc, as, cpu_secs;
    char *const *argv;
};

static void child_fail(const char *msg)
{
    ssize_t n = write(2, msg, strlen(msg));
    (void)n;
    _exit(125);
}

/* Runs in the forked child: async-signal-safe calls only. */
static void child_exec(const struct child_plan *p, pid_t parent)
{
    (void)setsid();
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(125);
    /* stdin /dev/null, stdout/stderr the output pipe, 3 seccomp, 4 status. */
    if (dup2(p->fd_null, 0) < 0 || dup2(p->fd_out, 1) < 0 || dup2(p->fd_out, 2) < 0)
        _exit(125);
    if (p->fd_seccomp >= 0 && dup2(p->fd_seccomp, 3) < 0)
        child_fail("execd-node: cannot pass the seccomp program\n");
    if (dup2(p->fd_status, 4) < 0)
        child_fail("execd-node: cannot pass the status pipe\n");
    if (p->fd_seccomp < 0)
        (void)close(3);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 5U, ~0U, 0U) != 0)
#endif
        for (int fd = 5; fd < p->maxfd; fd++)
            (void)close(fd);
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; i < p->ncg; i++) {
        int fd = open(p->cg_procs[i], O_WRONLY);
        if (fd < 0 || write(fd, "0\n", 2) != 2)
            child_fail("execd-node: cannot join the pod cgroup\n");
        (void)close(fd);
    }
    struct rlimit rl = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &rl);
    rl.rlim_cur = rl.rlim_max = 1024;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max = (rlim_t)p->fsize;
    (void)setrlimit(RLIMIT_FSIZE, &rl);
    if (p->nproc > 0) {
        rl.rlim_cur = rl.rlim_max = (rlim_t)p->nproc;
        (void)setrlimit(RLIMIT_NPROC, &rl);
    }
    if (p->as > 0) {
        rl.rlim_cur = rl.rlim_max = (rlim_t)p->as;
        (void)setrlimit(RLIMIT_AS, &rl);
    }
    if (p->cpu_secs > 0) {
        rl.rlim_cur = (rlim_t)p->cpu_secs;
        rl.rlim_max = (rlim_t)p->cpu_secs + 1;
        (void)setrlimit(RLIMIT_CPU, &rl);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail("execd-node: cannot set no_new_privs\n");
    gid_t gid = SANDBOX_GID;
    if (setgroups(1, &gid) != 0 || setgid(SANDBOX_GID) != 0 || setuid(SANDBOX_UID) != 0)
        child_fail("execd-node: cannot drop to the sandbox uid\n");
    if (setuid(0) == 0)
        child_fail("execd-node: privileges were not dropped\n");
    static char envp0[] = "PATH=/usr/bin:/bin";
    char *const envp[] = {envp0, NULL};
    execve(p->argv[0], p->argv, envp);
    child_fail("execd-node: cannot exec bwrap\n");
}

/* ---------------------------------------------------------------------- run */

static int pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0)
        set_cloexec(fd);
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

static int prepare_dir(const struct sandbox_spec *spec, const char *rdir)
{
    if (mkdir(rdir, 0711) != 0 && errno != EEXIST)
        return -errno;
    (void)chmod(rdir, 0711);
    char path[1024], buf[512];
    bfmt(buf, sizeof(buf),
         "root:x:0:0:root:/root:/usr/sbin/nologin\n"
         "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    if (spec->uid != 0 && spec->uid != 65534) {
        size_t l = strlen(buf);
        bfmt(buf + l, sizeof(buf) - l, "user:x:%u:%u:user:/tmp:/usr/sbin/nologin\n",
             (unsigned)spec->uid, (unsigned)spec->gid);
    }
    bfmt(path, sizeof(path), "%s/passwd", rdir);
    if (write_file(path, buf, strlen(buf), 0444))
        return -EIO;
    bfmt(buf, sizeof(buf), "root:x:0:\nnogroup:x:65534:\n");
    bfmt(path, sizeof(path), "%s/group", rdir);
    if (write_file(path, buf, strlen(buf), 0444))
        return -EIO;
    bfmt(buf, sizeof(buf), "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t%s\n",
         spec->hostname ? spec->hostname : "pod");
    bfmt(path, sizeof(path), "%s/hosts", rdir);
    if (write_file(path, buf, strlen(buf), 0444))
        return -EIO;
    bfmt(path, sizeof(path), "%s/termination-log", rdir);
    if (write_file(path, "", 0, 0600) || chown(path, SANDBOX_UID, SANDBOX_GID) != 0)
        return -EIO;
    for (int i = 0; i < spec->nmounts; i++) {
        const struct sandbox_mount *m = &spec->mounts[i];
        if (m->kind != SANDBOX_FILES)
            continue;
        bfmt(path, sizeof(path), "%s/vol-%d", rdir, i);
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return -errno;
        if (write_volume(path, m) != 0)
            return -EIO;
    }
    return 0;
}

static void read_message(const char *rdir, struct sandbox_result *res)
{
    char path[1024];
    bfmt(path, sizeof(path), "%s/termination-log", rdir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        ssize_t n = read(fd, res->message, NODE_TERM_MSG_MAX);
        res->message[n > 0 ? n : 0] = '\0';
    }
    close(fd);
}

struct monitor {
    int fd_out, fd_status, pidfd;
    int log_fd;
    int64_t log_limit;
    bool status_eof, out_eof;
    char status_buf[2048];
    size_t status_len;
};

/* Appends output to the log up to the cap; returns false at EOF/error. */
static bool pump_output(struct monitor *m, struct sandbox_result *res)
{
    char buf[65536];
    ssize_t n = read(m->fd_out, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    int64_t room = m->log_limit - res->log_bytes;
    size_t keep = room <= 0 ? 0 : (size_t)n < (size_t)room ? (size_t)n : (size_t)room;
    if (keep < (size_t)n)
        res->log_truncated = true;
    size_t off = 0;
    while (off < keep) {
        ssize_t w = write(m->log_fd, buf + off, keep - off);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            res->log_truncated = true;
            break;
        }
        off += (size_t)w;
    }
    res->log_bytes += (int64_t)off;
    return true;
}

/* Reads bwrap's JSON status lines; detects "child-pid" (the command started). */
static void pump_status(struct monitor *m, const struct sandbox_spec *spec,
                        struct sandbox_result *res)
{
    if (m->status_len + 1 >= sizeof(m->status_buf))
        m->status_len = 0;
    ssize_t n = read(m->fd_status, m->status_buf + m->status_len,
                     sizeof(m->status_buf) - 1 - m->status_len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        m->status_eof = true;
        return;
    }
    m->status_len += (size_t)n;
    m->status_buf[m->status_len] = '\0';
    if (!res->started && strstr(m->status_buf, "\"child-pid\"")) {
        res->started = true;
        res->started_us = now_wall_us();
        if (spec->started)
            spec->started(spec->arg, res->started_us);
    }
}

static int run(struct sandbox *sb, const struct sandbox_spec *spec, unsigned flags,
               struct sandbox_result *res)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    char rdir[768];
    bfmt(rdir, sizeof(rdir), "%s/%s", sb->run_dir, spec->id);
    struct pod_cgroups cg = {0};
    struct argv_buf av = {0};
    int fd_out[2] = {-1, -1}, fd_status[2] = {-1, -1}, fd_sec[2] = {-1, -1};
    int fd_null = -1, log_fd = -1, pidfd = -1;
    pid_t pid = -1;
    int rc = prepare_dir(spec, rdir);
    if (rc) {
        bfmt(res->error, sizeof(res->error), "cannot prepare the pod directory: %s", strerror(-rc));
        goto out_dir;
    }
    if ((flags & RUN_CGROUPS) && sb->caps.cg_version) {
        rc = cg_create(sb, spec, &cg);
        if (rc) {
            bfmt(res->error, sizeof(res->error), "cannot create the pod cgroup: %s",
                 strerror(rc < 0 ? -rc : EIO));
            goto out_cg;
        }
    }
    int64_t fsize = 0;
    rc = build_argv(sb, spec, rdir, flags, &av, &fsize);
    if (rc) {
        bfmt(res->error, sizeof(res->error), "the pod spec needs too many sandbox arguments");
        goto out_cg;
    }
    log_fd = open(spec->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    fd_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || fd_null < 0 || pipe_cloexec(fd_out) || pipe_cloexec(fd_status) ||
        ((flags & RUN_SECCOMP) && pipe_cloexec(fd_sec))) {
        rc = -EMFILE;
        bfmt(res->error, sizeof(res->error), "cannot open pod files: %s", strerror(errno));
        goto out_fds;
    }
    if (flags & RUN_SECCOMP) {
        /* The program is a few KiB: it fits the pipe buffer without blocking. */
        if (write(fd_sec[1], sb->bpf, sb->bpf_len) != (ssize_t)sb->bpf_len) {
            rc = -EIO;
            bfmt(res->error, sizeof(res->error), "cannot pass the seccomp program");
            goto out_fds;
        }
        close(fd_sec[1]);
        fd_sec[1] = -1;
    }
    struct child_plan plan = {
        .fd_out = fd_out[1],
        .fd_null = fd_null,
        .fd_seccomp = fd_sec[0],
        .fd_status = fd_status[1],
        .maxfd = sb->maxfd,
        .fsize = fsize,
        .argv = av.v,
    };
    if (cg.mem[0])
        bfmt(plan.cg_procs[plan.ncg++], sizeof(plan.cg_procs[0]), "%s/cgroup.procs", cg.mem);
    if (cg.pids[0])
        bfmt(plan.cg_procs[plan.ncg++], sizeof(plan.cg_procs[0]), "%s/cgroup.procs", cg.pids);
    if (cg.cpu[0])
        bfmt(plan.cg_procs[plan.ncg++], sizeof(plan.cg_procs[0]), "%s/cgroup.procs", cg.cpu);
    bool have_pids = cg.pids[0] || (cg.mem[0] && sb->caps.cg_version == 2 && sb->caps.cg_pids);
    bool have_mem = cg.mem[0] && sb->caps.cg_memory;
    if (!have_pids)
        plan.nproc = sb->pids_max * (sb->slots > 0 ? sb->slots : 1) + 16;
    if (!have_mem) {
        /* Address space is a crude stand-in: generous, as runtimes reserve a lot. */
        int64_t as = spec->memory_limit * 4;
        plan.as = as < (1LL << 30) ? (1LL << 30) : as;
    }
    if (spec->deadline_mono > 0) {
        int64_t left = spec->deadline_mono - now_mono_ms();
        plan.cpu_secs = left > 0 ? left / 1000 + 2 : 2;
    }
    pid_t parent = getpid();
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        bfmt(res->error, sizeof(res->error), "cannot fork: %s", strerror(errno));
        goto out_fds;
    }
    if (pid == 0)
        child_exec(&plan, parent);
    close(fd_out[1]);
    fd_out[1] = -1;
    close(fd_status[1]);
    fd_status[1] = -1;
    if (fd_sec[0] >= 0) {
        close(fd_sec[0]);
        fd_sec[0] = -1;
    }
    pidfd = pidfd_open_compat(pid);

    struct monitor m = {.fd_out = fd_out[0],
                        .fd_status = fd_status[0],
                        .pidfd = pidfd,
                        .log_fd = log_fd,
                        .log_limit = spec->log_limit};
    int status = 0;
    bool reaped = false, killed = false;
    int64_t drain_until = 0;
    for (;;) {
        if (!reaped) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                reaped = true;
                drain_until = now_mono_ms() + 500;
            }
        }
        if (reaped && (m.out_eof || now_mono_ms() >= drain_until))
            break;
        int64_t now = now_mono_ms();
        if (!killed && spec->deadline_mono > 0 && now >= spec->deadline_mono) {
            res->deadline = true;
            killed = true;
            (void)kill(pid, SIGKILL);
        }
        struct pollfd pfd[4];
        int np = 0, i_out = -1, i_st = -1, i_cancel = -1;
        if (!m.out_eof) {
            i_out = np;
            pfd[np++] = (struct pollfd){.fd = m.fd_out, .events = POLLIN};
        }
        if (!m.status_eof) {
            i_st = np;
            pfd[np++] = (struct pollfd){.fd = m.fd_status, .events = POLLIN};
        }
        if (!reaped && pidfd >= 0) {
            pfd[np++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        }
        if (!killed && spec->cancel_fd >= 0) {
            i_cancel = np;
            pfd[np++] = (struct pollfd){.fd = spec->cancel_fd, .events = POLLIN};
        }
        int timeout = 1000;
        if (pidfd < 0 && !reaped)
            timeout = 20;
        if (!killed && spec->deadline_mono > 0) {
            int64_t left = spec->deadline_mono - now;
            if (left < timeout)
                timeout = left < 0 ? 0 : (int)left;
        }
        if (reaped) {
            int64_t left = drain_until - now;
            if (left < timeout)
                timeout = left < 0 ? 0 : (int)left;
        }
        int n = poll(pfd, (nfds_t)np, timeout);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (i_out >= 0 && (pfd[i_out].revents & (POLLIN | POLLHUP | POLLERR)))
            if (!pump_output(&m, res))
                m.out_eof = true;
        if (i_st >= 0 && (pfd[i_st].revents & (POLLIN | POLLHUP | POLLERR)))
            pump_status(&m, spec, res);
        if (i_cancel >= 0 && (pfd[i_cancel].revents & (POLLIN | POLLHUP | POLLERR))) {
            res->cancelled = true;
            killed = true;
            (void)kill(pid, SIGKILL);
        }
    }
    if (!reaped) {
        (void)kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    res->finished_us = now_wall_us();
    if (!res->started_us)
        res->started_us = res->finished_us;
    if (WIFEXITED(status))
        res->exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        res->exit_code = 128 + WTERMSIG(status);
    if (killed && res->exit_code == 0)
        res->exit_code = 137;
    /* The output pipe may stay open in a process that escaped; kill the cgroup. */
    if (cg.mem[0])
        cg_kill_all(cg.mem);
    if (cg.pids[0])
        cg_kill_all(cg.pids);
    if (have_mem) {
        if (sb->caps.cg_version == 2) {
            res->oom = cg_keyed(cg.mem, "memory.events", "oom_kill") > 0;
            int64_t peak = cg_int(cg.mem, "memory.peak");
            res->peak_memory = peak > 0 ? peak : 0;
        } else {
            res->oom = cg_keyed(cg.mem, "memory.oom_control", "oom_kill") > 0;
            int64_t peak = cg_int(cg.mem, "memory.max_usage_in_bytes");
            res->peak_memory = peak > 0 ? peak : 0;
        }
    }
    read_message(rdir, res);
    if (!res->started && !killed) {
        rc = -ENOEXEC;
        bfmt(res->error, sizeof(res->error), "the sandbox did not start (exit %d)", res->exit_code);
    } else {
        rc = 0;
    }
out_fds:
    if (pidfd >= 0)
        close(pidfd);
    for (int i = 0; i < 2; i++) {
        if (fd_out[i] >= 0)
            close(fd_out[i]);
        if (fd_status[i] >= 0)
            close(fd_status[i]);
        if (fd_sec[i] >= 0)
            close(fd_sec[i]);
    }
    if (fd_null >= 0)
        close(fd_null);
    if (log_fd >= 0)
        close(log_fd);
out_cg:
    av_free(&av);
    cg_remove(sb, &cg);
out_dir:
    rm_tree(rdir, 0);
    return rc;
}

int sandbox_run(struct sandbox *sb, const struct sandbox_spec *spec, struct sandbox_result *res)
{
    unsigned flags = RUN_CGROUPS | (sb->caps.seccomp ? RUN_SECCOMP : 0);
    return run(sb, spec, flags, res);
}

/* --------------------------------------------------------------- lifecycle */

/* Runs /usr/bin/true in the sandbox; 0 when it exits 0.  err gets the output. */
static int probe(struct sandbox *sb, unsigned flags, char *err, size_t errlen)
{
    static char true0[] = "/usr/bin/true";
    char *const argv[] = {true0, NULL};
    char log_path[640], id[64];
    bfmt(id, sizeof(id), "probe-%u", flags);
    bfmt(log_path, sizeof(log_path), "%s/%s.log", sb->run_dir, id);
    (void)unlink(log_path);
    struct sandbox_spec spec = {
        .id = id,
        .hostname = "probe",
        .argv = argv,
        .workdir = "/",
        .uid = NODE_DEFAULT_UID,
        .gid = NODE_DEFAULT_UID,
        .memory_limit = 64LL << 20,
        .tmp_size = 1 << 20,
        .term_path = "/dev/termination-log",
        .log_path = log_path,
        .log_limit = 4096,
        .deadline_mono = now_mono_ms() + 10000,
        .cancel_fd = -1,
    };
    struct sandbox_result *res = calloc(1, sizeof(*res));
    if (!res)
        return -ENOMEM;
    int rc = run(sb, &spec, flags, res);
    char out[512] = "";
    (void)read_small(log_path, out, sizeof(out));
    (void)unlink(log_path);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '"')
            *p = ' ';
    if (rc == 0 && res->exit_code != 0)
        rc = -EPERM;
    if (rc)
        bfmt(err, errlen, "%s%s%s", res->error[0] ? res->error : "", res->error[0] ? ": " : "",
             out[0] ? out : "no output");
    free(res);
    return rc;
}

static const char *find_bwrap(void)
{
    static const char *const paths[] = {"/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (sandbox_binary_ok(paths[i]))
            return paths[i];
    return NULL;
}

int sandbox_new(const struct sandbox_opts *opts, struct sandbox **out, char *err, size_t errlen)
{
    struct sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return -ENOMEM;
    sb->pids_max = opts->pids_max;
    sb->slots = opts->slots;
    struct rlimit rl;
    sb->maxfd =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
    int rc;
    const char *bwrap = find_bwrap();
    if (!bwrap) {
        bfmt(err, errlen,
             "bubblewrap (bwrap) is not installed: the node cannot sandbox pods "
             "(install the Debian package 'bubblewrap')");
        rc = -ENOTSUP;
        goto fail;
    }
    bfmt(sb->caps.bwrap, sizeof(sb->caps.bwrap), "%s", bwrap);
    if (geteuid() != 0) {
        bfmt(err, errlen,
             "the node role must run as root: it drops each pod to uid 65534 and "
             "creates per-pod cgroups");
        rc = -ENOTSUP;
        goto fail;
    }
    const char *parent =
        opts->run_dir_parent && opts->run_dir_parent[0] ? opts->run_dir_parent : "/tmp";
    bfmt(sb->run_dir, sizeof(sb->run_dir), "%s/execd-node-XXXXXX", parent);
    if (!mkdtemp(sb->run_dir)) {
        bfmt(err, errlen, "cannot create the sandbox run directory under '%s': %s", parent,
             strerror(errno));
        sb->run_dir[0] = '\0';
        rc = -EIO;
        goto fail;
    }
    (void)chmod(sb->run_dir, 0711);
    cg_detect(sb);
    char perr[512];
    rc = probe(sb, 0, perr, sizeof(perr));
    if (rc) {
        bfmt(err, errlen,
             "bubblewrap cannot create a sandbox on this host (user namespaces "
             "disabled?): %s",
             perr);
        rc = -ENOTSUP;
        goto fail;
    }
    sb->caps.userns = true;
    if (seccomp_build(sb) == 0) {
        if (probe(sb, RUN_SECCOMP, perr, sizeof(perr)) == 0)
            sb->caps.seccomp = true;
        else
            log_warn(NODE_ROLE, "seccomp filter does not load; pods run without it", "err=\"%s\"",
                     perr);
    } else {
        log_warn(NODE_ROLE, "cannot build the seccomp filter; pods run without it", "%s", "");
    }
    if (sb->caps.cg_version &&
        probe(sb, RUN_CGROUPS | (sb->caps.seccomp ? RUN_SECCOMP : 0), perr, sizeof(perr)) != 0) {
        log_warn(NODE_ROLE, "pod cgroups do not work; falling back to rlimits", "err=\"%s\"", perr);
        bfmt(sb->caps.detail, sizeof(sb->caps.detail), "cgroups unusable: %.200s", perr);
        sb->caps.cg_memory = sb->caps.cg_pids = sb->caps.cg_cpu = false;
        sb->caps.cg_version = 0;
    }
    log_info(NODE_ROLE, "sandbox ready",
             "bwrap=%s userns=%d seccomp=%d cgroup=v%d memory=%d pids=%d cpu=%d run_dir=%s",
             sb->caps.bwrap, sb->caps.userns, sb->caps.seccomp, sb->caps.cg_version,
             sb->caps.cg_memory, sb->caps.cg_pids, sb->caps.cg_cpu, sb->run_dir);
    *out = sb;
    return 0;
fail:
    sandbox_free(sb);
    return rc;
}

void sandbox_free(struct sandbox *sb)
{
    if (!sb)
        return;
    if (sb->run_dir[0])
        rm_tree(sb->run_dir, 0);
    (void)rmdir(sb->cg_mem);
    (void)rmdir(sb->cg_pids);
    (void)rmdir(sb->cg_cpu);
    free(sb->bpf);
    free(sb);
}

const struct sandbox_caps *sandbox_caps(const struct sandbox *sb)
{
    return &sb->caps;
}

int bfmt(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n;
}
