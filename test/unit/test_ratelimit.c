/* test_ratelimit.c — rule matching, sliding logs, the key table, proxies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

static const char defaults[] = "^/api/v1/execute=10,^/api/v1/auth/.*=20,^/api/v1/admin/.*=100,"
                               "^/api/v1/events/.*=5,^/api/v1/.*=60";
static const char exempt[] =
    "/api/v1/health,/metrics,/api/v1/auth/login,/api/v1/auth/register,/api/v1/auth/logout";

static void test_patterns(void **state)
{
    (void)state;
    assert_true(rl_pattern_match("^/api/v1/execute", "/api/v1/execute"));
    assert_true(rl_pattern_match("^/api/v1/execute", "/api/v1/executex"));
    assert_false(rl_pattern_match("^/api/v1/execute", "/x/api/v1/execute"));
    assert_true(rl_pattern_match("^/api/v1/auth/.*", "/api/v1/auth/"));
    assert_false(rl_pattern_match("^/api/v1/auth/.*", "/api/v1/auth"));
    assert_true(rl_pattern_match("^/a$", "/a"));
    assert_false(rl_pattern_match("^/a$", "/ab"));
    assert_true(rl_pattern_match("v1", "/api/v1/x"));
    assert_true(rl_pattern_match("^/a\\.b", "/a.b"));
    assert_false(rl_pattern_match("^/a\\.b", "/axb"));
    assert_true(rl_pattern_match("^/ab*c", "/ac"));
    assert_true(rl_pattern_match("^/ab*c", "/abbbc"));
}

static void test_rules(void **state)
{
    (void)state;
    struct rl_rules r;
    char err[256];
    assert_int_equal(rl_rules_parse(defaults, exempt, &r, err, sizeof(err)), 0);
    assert_int_equal(r.n, 5);
    assert_int_equal(r.window_ms, 60000);
    bool ex;
    assert_int_equal(rl_rules_match(&r, "/api/v1/execute", &ex), 0);
    assert_false(ex);
    assert_int_equal(rl_rules_match(&r, "/api/v1/auth/me", &ex), 1);
    assert_false(ex);
    assert_int_equal(rl_rules_match(&r, "/api/v1/auth/login", &ex), 1);
    assert_true(ex);
    assert_int_equal(rl_rules_match(&r, "/api/v1/auth/loginx", &ex), 1);
    assert_false(ex);
    assert_int_equal(rl_rules_match(&r, "/api/v1/admin/users/", &ex), 2);
    assert_int_equal(rl_rules_match(&r, "/api/v1/events/executions/1", &ex), 3);
    assert_int_equal(rl_rules_match(&r, "/api/v1/scripts", &ex), 4);
    assert_int_equal(rl_rules_match(&r, "/api/v1/health/live", &ex), 4);
    assert_true(ex);
    assert_int_equal(rl_rules_match(&r, "/metrics", &ex), -1);
    assert_true(ex);
    assert_int_equal(rl_rules_parse("x", "", &r, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "PATTERN=LIMIT"));
    assert_int_equal(rl_rules_parse("^/a=0", "", &r, err, sizeof(err)), -EINVAL);
    assert_int_equal(rl_rules_parse("^/a=5", "nope", &r, err, sizeof(err)), -EINVAL);
}

static void test_sliding_log(void **state)
{
    (void)state;
    struct rl_log log = {0};
    struct rl_result res;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rl_log_hit(&log, 10, 60000, 1000 + i * 1000, true, &res), 0);
        assert_true(res.allowed);
        assert_int_equal(res.remaining, 9 - i);
        assert_int_equal(res.reset_ms, 61000);
    }
    /* 11th inside the minute: refused, and waits until the oldest expires */
    assert_int_equal(rl_log_hit(&log, 10, 60000, 30000, true, &res), 0);
    assert_false(res.allowed);
    assert_int_equal(res.remaining, 0);
    assert_int_equal(res.retry_after_s, 31);
    assert_int_equal(res.reset_ms, 61000);
    /* a peek does not consume */
    assert_int_equal(rl_log_hit(&log, 10, 60000, 61000, false, &res), 0);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 1);
    assert_int_equal(rl_log_hit(&log, 10, 60000, 61000, true, &res), 0);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 0);
    assert_int_equal(rl_log_hit(&log, 10, 60000, 61500, true, &res), 0);
    assert_false(res.allowed);
    assert_int_equal(res.retry_after_s, 1);
    /* a smaller limit keeps the newest timestamps */
    assert_int_equal(rl_log_hit(&log, 3, 60000, 61600, true, &res), 0);
    assert_false(res.allowed);
    rl_log_release(&log);
}

static void test_table(void **state)
{
    (void)state;
    struct rl_table *t = rl_table_new(4);
    assert_non_null(t);
    struct rl_result res;
    char key[32];
    for (int k = 0; k < 4; k++) {
        snprintf(key, sizeof(key), "k%d", k);
        assert_int_equal(rl_table_hit(t, key, 2, 1000, 100 + k, true, &res), 0);
    }
    assert_int_equal(rl_table_size(t), 4);
    assert_int_equal(rl_table_hit(t, "k0", 2, 1000, 200, true, &res), 0);
    assert_int_equal(res.remaining, 0);
    assert_int_equal(rl_table_hit(t, "k0", 2, 1000, 300, true, &res), 0);
    assert_false(res.allowed);
    /* full: a new key evicts the least recently seen (k1), never exceeds the bound */
    assert_int_equal(rl_table_hit(t, "new", 2, 1000, 400, true, &res), 0);
    assert_int_equal(rl_table_size(t), 4);
    assert_int_equal(rl_table_hit(t, "k0", 2, 1000, 500, true, &res), 0);
    assert_false(res.allowed); /* k0 kept its history */
    /* idle keys are swept once their window passed */
    assert_int_equal(rl_table_hit(t, "late", 2, 1000, 5000, true, &res), 0);
    assert_int_equal(rl_table_size(t), 1);
    /* peeking an unknown key creates nothing */
    assert_int_equal(rl_table_hit(t, "ghost", 2, 1000, 5000, false, &res), 0);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 2);
    assert_int_equal(rl_table_size(t), 1);
    rl_table_free(t);
}

static void test_trusted_proxies(void **state)
{
    (void)state;
    struct rl_trust t;
    char err[256], ip[64];
    assert_int_equal(rl_trust_parse("loopback,private", &t, err, sizeof(err)), 0);
    assert_true(rl_trust_has(&t, "127.0.0.1"));
    assert_true(rl_trust_has(&t, "10.1.2.3"));
    assert_true(rl_trust_has(&t, "172.16.0.1"));
    assert_true(rl_trust_has(&t, "172.31.255.1"));
    assert_false(rl_trust_has(&t, "172.32.0.1"));
    assert_true(rl_trust_has(&t, "192.168.1.1"));
    assert_true(rl_trust_has(&t, "::1"));
    assert_true(rl_trust_has(&t, "fd00::1"));
    assert_false(rl_trust_has(&t, "8.8.8.8"));
    assert_false(rl_trust_has(&t, "garbage"));

    rl_client_ip(&t, "127.0.0.1", "1.2.3.4", NULL, ip, sizeof(ip));
    assert_string_equal(ip, "1.2.3.4");
    /* right-most untrusted hop wins: a client cannot spoof past the proxy */
    rl_client_ip(&t, "127.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.5", NULL, ip, sizeof(ip));
    assert_string_equal(ip, "1.2.3.4");
    rl_client_ip(&t, "127.0.0.1", "10.0.0.9, 10.0.0.5", NULL, ip, sizeof(ip));
    assert_string_equal(ip, "10.0.0.9");
    rl_client_ip(&t, "127.0.0.1", "garbage", "5.6.7.8", ip, sizeof(ip));
    assert_string_equal(ip, "5.6.7.8");
    rl_client_ip(&t, "127.0.0.1", NULL, "not-an-ip", ip, sizeof(ip));
    assert_string_equal(ip, "127.0.0.1");
    /* an untrusted peer's headers are ignored */
    rl_client_ip(&t, "8.8.8.8", "1.2.3.4", "5.6.7.8", ip, sizeof(ip));
    assert_string_equal(ip, "8.8.8.8");

    assert_int_equal(rl_trust_parse("none", &t, err, sizeof(err)), 0);
    rl_client_ip(&t, "127.0.0.1", "1.2.3.4", NULL, ip, sizeof(ip));
    assert_string_equal(ip, "127.0.0.1");
    assert_int_equal(rl_trust_parse("203.0.113.0/24", &t, err, sizeof(err)), 0);
    assert_true(rl_trust_has(&t, "203.0.113.77"));
    assert_false(rl_trust_has(&t, "203.0.114.1"));
    assert_false(rl_trust_has(&t, "127.0.0.1"));
    assert_int_equal(rl_trust_parse("1.2.3.4/33", &t, err, sizeof(err)), -EINVAL);
    assert_int_equal(rl_trust_parse("none,loopback", &t, err, sizeof(err)), -EINVAL);
    assert_int_equal(rl_trust_parse("bogus", &t, err, sizeof(err)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patterns),        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_sliding_log),     cmocka_unit_test(test_table),
        cmocka_unit_test(test_trusted_proxies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
