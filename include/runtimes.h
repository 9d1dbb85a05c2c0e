/*
 * runtimes.h — the runtimes table: every language execd can run, in one place.
 *
 * One row per language with its versions.  Each version names the image a
 * Kubernetes pod uses (python:3.11-slim) and the host binary the embedded
 * node runs instead (/usr/bin/python3.11), plus the names that image puts on
 * PATH (python, python3) so a pod's `command` resolves the same way in both.
 * Pure data and lookups; whether a binary exists on this host is the node's
 * business (it stats the path).
 */
#ifndef EXECD_RUNTIMES_H
#define EXECD_RUNTIMES_H

#include <stddef.h>

#define RUNTIME_MAX_VERSIONS 6
#define RUNTIME_MAX_NAMES 4
#define RUNTIME_MAX_ENV 4
#define RUNTIME_MAX_BINDS 2

struct runtime;

struct runtime_version {
    const char *version; /* "3.11" */
    const char *image;   /* Kubernetes image: "python:3.11-slim" */
    const char *binary;  /* host path the node runs: "/usr/bin/python3.11" */
    /* Names the image puts on PATH, each resolving to binary. */
    const char *names[RUNTIME_MAX_NAMES];
    /* The image's default command (CMD) when a pod gives neither command nor args. */
    const char *cmd;
};

struct runtime {
    const char *lang;      /* "python" */
    const char *file_name; /* script file name inside the pod: "main.py" */
    const char *ext;       /* "py" */
    const char *example;   /* a hello-world script */
    /* Interpreter arguments placed before the script by callers that build commands. */
    const char *run_args[3];
    /* Environment the image sets ("GOCACHE=/tmp/go-cache"). */
    const char *env[RUNTIME_MAX_ENV];
    /* Extra host directories the node binds read-only (outside /usr). */
    const char *binds[RUNTIME_MAX_BINDS];
    struct runtime_version versions[RUNTIME_MAX_VERSIONS]; /* ends at version == NULL */
};

/* The table, ending with lang == NULL. */
extern const struct runtime runtime_table[];

/* The runtime for lang (case-sensitive), or NULL. */
const struct runtime *runtime_find(const char *lang);
/* The version row for lang + version, or NULL; *rt (may be NULL) gets its runtime. */
const struct runtime_version *runtime_find_version(const char *lang, const char *version,
                                                   const struct runtime **rt);
/* The version row whose image is image (an optional "docker.io/library/" prefix
 * is ignored), or NULL; *rt (may be NULL) gets its runtime. */
const struct runtime_version *runtime_by_image(const char *image, const struct runtime **rt);
/* Number of rows in the table. */
size_t runtime_count(void);

#endif
