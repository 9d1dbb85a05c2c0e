/*
 * test_retry.c — the retry-delay arithmetic (src/domain/retry.c).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "retry.h"

static const struct retry_policy doubling = {
    .base_ms = 100, .multiplier = 2.0, .max_ms = 5000, .jitter = 0.0};

static void test_doubles_then_caps(void **state)
{
    (void)state;
    assert_int_equal(retry_delay_ms(&doubling, 0, 0.3), 100);
    assert_int_equal(retry_delay_ms(&doubling, 1, 0.3), 200);
    assert_int_equal(retry_delay_ms(&doubling, 2, 0.3), 400);
    assert_int_equal(retry_delay_ms(&doubling, 5, 0.3), 3200);
    assert_int_equal(retry_delay_ms(&doubling, 6, 0.3), 5000);
    assert_int_equal(retry_delay_ms(&doubling, 7, 0.3), 5000);
}

static void test_huge_attempt_does_not_overflow(void **state)
{
    (void)state;
    struct retry_policy p = {
        .base_ms = 1, .multiplier = 10.0, .max_ms = INT64_C(86400000), .jitter = 0.0};
    assert_int_equal(retry_delay_ms(&p, 1000000, 0.0), 86400000);
    assert_int_equal(retry_delay_ms(&p, 2147483647, 0.0), 86400000);
}

static void test_jitter_bounds(void **state)
{
    (void)state;
    struct retry_policy p = {.base_ms = 1000, .multiplier = 2.0, .max_ms = 60000, .jitter = 0.2};
    /* r = 0 → -20 %, r = 0.5 → exact, r → 1 → +20 %. */
    assert_int_equal(retry_delay_ms(&p, 0, 0.0), 800);
    assert_int_equal(retry_delay_ms(&p, 0, 0.5), 1000);
    assert_int_equal(retry_delay_ms(&p, 0, 0.999999), 1200);
    assert_int_equal(retry_delay_ms(&p, 1, 0.25), 1800);
    for (int i = 0; i < 100; i++) {
        double r = i / 100.0;
        int64_t d = retry_delay_ms(&p, 3, r);
        assert_in_range(d, 6400, 9600);
    }
}

static void test_jitter_never_exceeds_cap(void **state)
{
    (void)state;
    struct retry_policy p = {.base_ms = 100, .multiplier = 2.0, .max_ms = 1000, .jitter = 0.5};
    assert_int_equal(retry_delay_ms(&p, 20, 0.99), 1000);
    assert_int_equal(retry_delay_ms(&p, 20, 0.0), 500);
}

static void test_multiplier_one_is_constant(void **state)
{
    (void)state;
    struct retry_policy p = {.base_ms = 250, .multiplier = 1.0, .max_ms = 1000, .jitter = 0.0};
    for (int a = 0; a < 10; a++)
        assert_int_equal(retry_delay_ms(&p, a, 0.7), 250);
}

static void test_out_of_range_inputs_are_clamped(void **state)
{
    (void)state;
    struct retry_policy p = {.base_ms = 100, .multiplier = 2.0, .max_ms = 1000, .jitter = 0.5};
    /* Negative attempt acts as 0; r outside [0,1) means no jitter. */
    assert_int_equal(retry_delay_ms(&p, -3, 0.5), 100);
    assert_int_equal(retry_delay_ms(&p, 0, 1.0), 100);
    assert_int_equal(retry_delay_ms(&p, 0, -0.1), 100);
    assert_int_equal(retry_delay_ms(NULL, 1, 0.5), 0);
    struct retry_policy wild = {.base_ms = 100, .multiplier = 0.5, .max_ms = 10, .jitter = 7.0};
    /* multiplier < 1 → 1, cap below base → base, jitter → 1 (full range). */
    assert_int_equal(retry_delay_ms(&wild, 4, 0.5), 100);
    assert_int_equal(retry_delay_ms(&wild, 4, 0.0), 0);
}

static void test_policy_check(void **state)
{
    (void)state;
    assert_int_equal(retry_policy_check(&doubling), 0);
    struct retry_policy p = doubling;
    p.base_ms = 0;
    assert_int_equal(retry_policy_check(&p), -EINVAL);
    p = doubling;
    p.multiplier = 0.9;
    assert_int_equal(retry_policy_check(&p), -EINVAL);
    p = doubling;
    p.max_ms = 50;
    assert_int_equal(retry_policy_check(&p), -EINVAL);
    p = doubling;
    p.jitter = 1.5;
    assert_int_equal(retry_policy_check(&p), -EINVAL);
    assert_int_equal(retry_policy_check(NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_then_caps),
        cmocka_unit_test(test_huge_attempt_does_not_overflow),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_jitter_never_exceeds_cap),
        cmocka_unit_test(test_multiplier_one_is_constant),
        cmocka_unit_test(test_out_of_range_inputs_are_clamped),
        cmocka_unit_test(test_policy_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
