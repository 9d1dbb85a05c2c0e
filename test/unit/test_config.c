/*
 * test_config.c — the config table: defaults, precedence, validation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#include "config.h"

extern char **environ;

static void clear_env(void)
{
    /* Remove every EXECD_ variable the test runner may carry. */
    for (;;) {
        char **e = environ;
        for (; e && *e; e++)
            if (strncmp(*e, "EXECD_", 6) == 0)
                break;
        if (!e || !*e)
            return;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Builds a writable argv (string literals are const under -Wwrite-strings). */
static char **argv_of(const char *first, ...)
{
    static char *slots[8][16];
    static int next;
    char **argv = slots[next++ % 8];
    va_list ap;
    va_start(ap, first);
    int n = 0;
    for (const char *a = first; a && n < 15; a = va_arg(ap, const char *))
        argv[n++] = strdup(a);
    argv[n] = NULL;
    va_end(ap);
    return argv;
}

static int load(struct config *cfg, int argc, char **argv, char *err)
{
    return config_load(cfg, argc, argv, err, 512);
}

static void defaults(void **state)
{
    (void)state;
    struct config cfg;
    char err[512];
    char **argv = argv_of("execd", "--config", "/nonexistent/ok-if-missing", NULL);
    /* An explicit --config that does not exist is an error ... */
    assert_int_equal(load(&cfg, 3, argv, err), -EINVAL);
    assert_non_null(strstr(err, "/nonexistent/ok-if-missing"));
    /* ... while no --config uses defaults. */
    char **argv2 = argv_of("execd", NULL);
    assert_int_equal(load(&cfg, 1, argv2, err), 0);
    assert_string_equal(cfg.roles, "all");
    assert_string_equal(cfg.http_listen, "127.0.0.1:8080");
    assert_string_equal(cfg.kafka_brokers, "127.0.0.1:9092");
    assert_string_equal(cfg.mongo_uri, "mongodb://127.0.0.1:27017/execd");
    assert_string_equal(cfg.node_listen, "127.0.0.1:8081");
    assert_string_equal(cfg.topic_prefix, "");
    assert_int_equal(cfg.shutdown_timeout_ms, 10000);
    assert_int_equal(cfg.http_body_limit_bytes, 10485760);
    config_release(&cfg);
}

static void precedence(void **state)
{
    (void)state;
    char path[] = "/tmp/execd-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# comment\n\nEXECD_LOG_LEVEL = debug\nEXECD_TOPIC_PREFIX=\"file-\"\n"
               "EXECD_SHUTDOWN_TIMEOUT_MS=2000\n");
    fclose(f);
    struct config cfg;
    char err[512];
    char **argv = argv_of("execd", "--config", path, NULL);
    assert_int_equal(load(&cfg, 3, argv, err), 0);
    assert_string_equal(cfg.log_level, "debug");
    assert_string_equal(cfg.topic_prefix, "file-");
    config_release(&cfg);

    setenv("EXECD_TOPIC_PREFIX", "env-", 1);
    assert_int_equal(load(&cfg, 3, argv, err), 0);
    assert_string_equal(cfg.topic_prefix, "env-");
    assert_int_equal(cfg.shutdown_timeout_ms, 2000);
    config_release(&cfg);

    char **argv2 = argv_of("execd", "--config", path, "--set", "EXECD_TOPIC_PREFIX=set-", NULL);
    assert_int_equal(load(&cfg, 5, argv2, err), 0);
    assert_string_equal(cfg.topic_prefix, "set-");
    config_release(&cfg);
    unsetenv("EXECD_TOPIC_PREFIX");
    unlink(path);
}

static void rejects_bad_values(void **state)
{
    (void)state;
    struct config cfg;
    char err[512];
    char **argv = argv_of("execd", NULL);

    setenv("EXECD_SHUTDOWN_TIMEOUT_MS", "5", 1);
    assert_int_equal(load(&cfg, 1, argv, err), -EINVAL);
    assert_non_null(strstr(err, "EXECD_SHUTDOWN_TIMEOUT_MS"));
    assert_non_null(strstr(err, "out of range"));
    setenv("EXECD_SHUTDOWN_TIMEOUT_MS", "12abc", 1);
    assert_int_equal(load(&cfg, 1, argv, err), -EINVAL);
    assert_non_null(strstr(err, "not an integer"));
    unsetenv("EXECD_SHUTDOWN_TIMEOUT_MS");

    setenv("EXECD_NO_SUCH_KEY", "1", 1);
    assert_int_equal(load(&cfg, 1, argv, err), -EINVAL);
    assert_non_null(strstr(err, "unknown configuration key 'EXECD_NO_SUCH_KEY'"));
    unsetenv("EXECD_NO_SUCH_KEY");

    setenv("EXECD_LOG_FORMAT", "xml", 1);
    assert_int_equal(load(&cfg, 1, argv, err), -EINVAL);
    assert_non_null(strstr(err, "EXECD_LOG_FORMAT"));
    unsetenv("EXECD_LOG_FORMAT");

    setenv("EXECD_HTTP_LISTEN", "nowhere", 1);
    assert_int_equal(load(&cfg, 1, argv, err), -EINVAL);
    assert_non_null(strstr(err, "EXECD_HTTP_LISTEN"));
    unsetenv("EXECD_HTTP_LISTEN");

    setenv("EXECD_TOPIC_PREFIX", "bad prefix/", 1);
    assert_int_equal(load(&cfg, 1, argv, err), -EINVAL);
    assert_non_null(strstr(err, "EXECD_TOPIC_PREFIX"));
    unsetenv("EXECD_TOPIC_PREFIX");

    char **argv2 = argv_of("execd", "--set", "EXECD_ROLES", NULL);
    assert_int_equal(load(&cfg, 3, argv2, err), -EINVAL);
    assert_non_null(strstr(err, "KEY=VALUE"));

    /* Kafka pass-through properties are accepted, not unknown keys. */
    setenv("EXECD_KAFKA_PROP_socket_timeout_ms", "1000", 1);
    assert_int_equal(load(&cfg, 1, argv, err), 0);
    config_release(&cfg);
    unsetenv("EXECD_KAFKA_PROP_socket_timeout_ms");
}

static void printers_mask_secrets(void **state)
{
    (void)state;
    struct config cfg;
    char err[512];
    char **argv = argv_of("execd", NULL);
    setenv("EXECD_NODE_TOKEN", "s3cret-token-value", 1);
    setenv("EXECD_MONGO_URI", "mongodb://user:pw@127.0.0.1:27017/execd", 1);
    assert_int_equal(load(&cfg, 1, argv, err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print(&cfg, f);
    fclose(f);
    assert_null(strstr(buf, "s3cret-token-value"));
    assert_null(strstr(buf, "user:pw"));
    assert_non_null(strstr(buf, "EXECD_NODE_TOKEN=****"));
    assert_non_null(strstr(buf, "EXECD_ROLES=all"));
    free(buf);

    f = open_memstream(&buf, &len);
    config_reference(f);
    fclose(f);
    assert_non_null(strstr(buf, "| `EXECD_SHUTDOWN_TIMEOUT_MS` | integer | `10000` |"));
    free(buf);
    config_release(&cfg);
    unsetenv("EXECD_NODE_TOKEN");
    unsetenv("EXECD_MONGO_URI");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults, setup),
        cmocka_unit_test_setup(precedence, setup),
        cmocka_unit_test_setup(rejects_bad_values, setup),
        cmocka_unit_test_setup(printers_mask_secrets, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
