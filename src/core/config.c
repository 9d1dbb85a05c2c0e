/*
 * config.c — the parser, validator and printers generated from CONFIG_TABLE.
 *
 * Each row becomes a `struct key` with the field's offset, so every layer
 * (defaults, file, environment, --set) goes through one setter that checks
 * type and bounds and names the key in its error.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

extern char **environ;

enum key_type { T_STR, T_INT, T_BOOL };

struct key {
    const char *field;
    const char *env;
    enum key_type type;
    const char *def;
    int64_t min, max;
    unsigned flags;
    const char *doc;
    size_t offset;
};

#define KEY_ROW(f, env, type, def, min, max, flags, doc)                                           \
    {#f, env, T_##type, def, min, max, flags, doc, offsetof(struct config, f)},
static const struct key keys[] = {CONFIG_TABLE(KEY_ROW)};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *type_name(enum key_type t)
{
    return t == T_STR ? "string" : t == T_INT ? "integer" : "boolean";
}

static const struct key *key_find(const char *env, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strlen(keys[i].env) == len && strncmp(keys[i].env, env, len) == 0)
            return &keys[i];
    return NULL;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
        *out = true;
    else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") ||
             !strcasecmp(v, "off"))
        *out = false;
    else
        return -EINVAL;
    return 0;
}

static int key_set(struct config *cfg, const struct key *k, const char *v, const char *src,
                   char *err, size_t errlen)
{
    char *base = (char *)cfg;
    switch (k->type) {
    case T_STR: {
        size_t n = strlen(v);
        if ((int64_t)n < k->min || (int64_t)n > k->max) {
            snprintf(err, errlen, "%s (%s): length %zu out of range [%lld, %lld]", k->env, src, n,
                     (long long)k->min, (long long)k->max);
            return -EINVAL;
        }
        char *copy = strdup(v);
        if (!copy)
            return -ENOMEM;
        char **slot = (char **)(void *)(base + k->offset);
        free(*slot);
        *slot = copy;
        return 0;
    }
    case T_INT: {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end != '\0') {
            snprintf(err, errlen, "%s (%s): '%s' is not an integer", k->env, src, v);
            return -EINVAL;
        }
        if (n < k->min || n > k->max) {
            snprintf(err, errlen, "%s (%s): %lld out of range [%lld, %lld]", k->env, src, n,
                     (long long)k->min, (long long)k->max);
            return -EINVAL;
        }
        *(int64_t *)(void *)(base + k->offset) = n;
        return 0;
    }
    case T_BOOL: {
        bool b;
        if (parse_bool(v, &b)) {
            snprintf(err, errlen, "%s (%s): '%s' is not a boolean", k->env, src, v);
            return -EINVAL;
        }
        *(bool *)(void *)(base + k->offset) = b;
        return 0;
    }
    }
    return -EINVAL;
}

/* "KEY=VALUE" from src; unknown EXECD_ keys are errors, EXECD_KAFKA_PROP_* pass. */
static int set_pair(struct config *cfg, const char *pair, const char *src, int strict_prefix,
                    char *err, size_t errlen)
{
    const char *eq = strchr(pair, '=');
    if (!eq) {
        snprintf(err, errlen, "%s: expected KEY=VALUE, got '%s'", src, pair);
        return -EINVAL;
    }
    size_t klen = (size_t)(eq - pair);
    if (strict_prefix && strncmp(pair, "EXECD_", 6) != 0)
        return 0;
    if (strncmp(pair, "EXECD_KAFKA_PROP_", 17) == 0)
        return 0;
    const struct key *k = key_find(pair, klen);
    if (!k) {
        snprintf(err, errlen, "unknown configuration key '%.*s' (%s)", (int)klen, pair, src);
        return -EINVAL;
    }
    return key_set(cfg, k, eq + 1, src, err, errlen);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int load_file(struct config *cfg, const char *path, int required, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!required && errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open config file '%s': %s", path, strerror(errno));
        return -EINVAL;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char src[300];
        snprintf(src, sizeof(src), "%s:%d", path, lineno);
        /* Allow "KEY = VALUE" and quoted values. */
        char *eq = strchr(s, '=');
        if (eq) {
            *eq = '\0';
            char *k = trim(s), *v = trim(eq + 1);
            size_t vl = strlen(v);
            if (vl >= 2 &&
                ((v[0] == '"' && v[vl - 1] == '"') || (v[0] == '\'' && v[vl - 1] == '\''))) {
                v[vl - 1] = '\0';
                v++;
            }
            char pair[4200];
            snprintf(pair, sizeof(pair), "%s=%s", k, v);
            rc = set_pair(cfg, pair, src, 0, err, errlen);
        } else {
            rc = set_pair(cfg, s, src, 0, err, errlen);
        }
        if (rc)
            break;
    }
    fclose(f);
    return rc;
}

static int validate(const struct config *cfg, char *err, size_t errlen)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    int ok = 0;
    for (size_t i = 0; i < 4; i++)
        ok |= strcasecmp(cfg->log_level, levels[i]) == 0;
    if (!ok) {
        snprintf(err, errlen, "EXECD_LOG_LEVEL: '%s' is not one of debug, info, warn, error",
                 cfg->log_level);
        return -EINVAL;
    }
    if (strcasecmp(cfg->log_format, "logfmt") && strcasecmp(cfg->log_format, "json")) {
        snprintf(err, errlen, "EXECD_LOG_FORMAT: '%s' is not one of logfmt, json", cfg->log_format);
        return -EINVAL;
    }
    const char *listens[] = {cfg->http_listen, cfg->node_listen};
    const char *names[] = {"EXECD_HTTP_LISTEN", "EXECD_NODE_LISTEN"};
    for (int i = 0; i < 2; i++) {
        const char *colon = strrchr(listens[i], ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == listens[i] || !end || *end || port < 0 || port > 65535) {
            snprintf(err, errlen, "%s: '%s' is not host:port", names[i], listens[i]);
            return -EINVAL;
        }
    }
    for (const char *p = cfg->topic_prefix; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') {
            snprintf(err, errlen, "EXECD_TOPIC_PREFIX: '%s' may hold only [A-Za-z0-9._-]",
                     cfg->topic_prefix);
            return -EINVAL;
        }
    return 0;
}

int config_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = 0;
    for (size_t i = 0; i < NKEYS && !rc; i++)
        rc = key_set(cfg, &keys[i], keys[i].def, "default", err, errlen);
    const char *file = NULL;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
    if (!rc)
        rc = file ? load_file(cfg, file, 1, err, errlen)
                  : load_file(cfg, "config/execd.conf", 0, err, errlen);
    for (char **e = environ; !rc && e && *e; e++)
        if (strncmp(*e, "EXECD_", 6) == 0)
            rc = set_pair(cfg, *e, "environment", 1, err, errlen);
    for (int i = 1; !rc && i < argc; i++)
        if (strcmp(argv[i], "--set") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--set needs KEY=VALUE");
                rc = -EINVAL;
            } else {
                rc = set_pair(cfg, argv[++i], "--set", 0, err, errlen);
            }
        }
    if (!rc)
        rc = validate(cfg, err, errlen);
    if (rc)
        config_release(cfg);
    return rc;
}

void config_release(struct config *cfg)
{
    char *base = (char *)cfg;
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].type == T_STR) {
            char **slot = (char **)(void *)(base + keys[i].offset);
            free(*slot);
            *slot = NULL;
        }
}

static void value_str(const struct config *cfg, const struct key *k, char *out, size_t len)
{
    const char *base = (const char *)cfg;
    switch (k->type) {
    case T_STR:
        snprintf(out, len, "%s", *(char *const *)(const void *)(base + k->offset));
        break;
    case T_INT:
        snprintf(out, len, "%lld", (long long)*(const int64_t *)(const void *)(base + k->offset));
        break;
    case T_BOOL:
        snprintf(out, len, "%s",
                 *(const bool *)(const void *)(base + k->offset) ? "true" : "false");
        break;
    }
}

void config_print(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char v[1100];
        value_str(cfg, &keys[i], v, sizeof(v));
        if ((keys[i].flags & CFG_SECRET) && v[0]) {
            /* Mask secrets; for URIs keep the scheme and host visible. */
            const char *at = strchr(v, '@');
            if (strncmp(keys[i].env, "EXECD_MONGO_URI", 15) == 0 && !at)
                fprintf(out, "%s=%s\n", keys[i].env, v);
            else
                fprintf(out, "%s=****\n", keys[i].env);
        } else {
            fprintf(out, "%s=%s\n", keys[i].env, v);
        }
    }
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "EXECD_KAFKA_PROP_", 17) == 0)
            fprintf(out, "%s\n", *e);
}

static void bounds(const struct key *k, char *out, size_t len)
{
    if (k->type == T_INT)
        snprintf(out, len, "%lld..%lld", (long long)k->min, (long long)k->max);
    else if (k->type == T_STR)
        snprintf(out, len, "length %lld..%lld", (long long)k->min, (long long)k->max);
    else
        snprintf(out, len, "true/false");
}

void config_help(FILE *out)
{
    fprintf(out, "Configuration (env var, type, default, bounds):\n");
    for (size_t i = 0; i < NKEYS; i++) {
        char b[64];
        bounds(&keys[i], b, sizeof(b));
        fprintf(out, "  %-34s %-8s default '%s' (%s)%s\n      %s\n", keys[i].env,
                type_name(keys[i].type), keys[i].def, b,
                keys[i].flags & CFG_SECRET ? " secret" : "", keys[i].doc);
    }
    fprintf(out, "  EXECD_KAFKA_PROP_<a>_<b>=v         passes a.b=v to librdkafka\n");
}

void config_reference(FILE *out)
{
    fprintf(out, "# execd configuration reference\n\n"
                 "Generated from the config table (`make reference`); do not edit by hand.\n"
                 "Precedence: default < config file (`--config PATH`, else `config/execd.conf` "
                 "when present) < environment < `--set KEY=VALUE`. Unknown `EXECD_*` keys and "
                 "out-of-range values stop start-up with a message naming the key. "
                 "`EXECD_KAFKA_PROP_<a>_<b>=v` passes `a.b=v` to librdkafka.\n\n"
                 "| key | type | default | bounds | description |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < NKEYS; i++) {
        char b[64];
        bounds(&keys[i], b, sizeof(b));
        fprintf(out, "| `%s` | %s | `%s` | %s | %s%s |\n", keys[i].env, type_name(keys[i].type),
                keys[i].def, b, keys[i].doc, keys[i].flags & CFG_SECRET ? " (secret)" : "");
    }
}

void config_example(FILE *out)
{
    fprintf(out, "# execd configuration file: KEY=VALUE lines, '#' starts a comment line.\n"
                 "# Every key with its default; the environment overrides this file.\n");
    for (size_t i = 0; i < NKEYS; i++)
        fprintf(out, "\n# %s\n#%s=%s\n", keys[i].doc, keys[i].env, keys[i].def);
}

int config_node_slots(const struct config *cfg)
{
    if (cfg->node_slots > 0)
        return (int)cfg->node_slots;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
