/*
 * test_admission.c — validation, per-user limits, the sliding window, queue
 * order and wait estimates (src/domain/admission.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admission.h"

static const struct admission_policy pol = {
    .max_script_bytes = 1000,
    .max_timeout_seconds = 300,
    .user_max_concurrent = 2,
    .user_max_per_minute = 3,
    .queue_max = 10,
};

static const struct admission_request ok_req = {
    .lang = "python", .lang_version = "3.11", .script_bytes = 10, .timeout_seconds = 10};

static void test_validation(void **state)
{
    (void)state;
    struct admission_decision d;
    admission_validate(&pol, &ok_req, &d);
    assert_int_equal(d.verdict, ADMIT_OK);
    struct admission_request r = ok_req;
    r.lang = "cobol";
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_RUNTIME);
    assert_non_null(strstr(d.reason, "cobol"));
    r = ok_req;
    r.lang_version = "2.7";
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_RUNTIME);
    r = ok_req;
    r.lang = NULL;
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_RUNTIME);
    r = ok_req;
    r.script_bytes = 1001;
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_LIMITS);
    r.script_bytes = 1000;
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_OK);
    r.timeout_seconds = 301;
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_LIMITS);
    r.timeout_seconds = 0;
    admission_validate(&pol, &r, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_LIMITS);
}

static void test_window(void **state)
{
    (void)state;
    const int64_t now = 1000000;
    /* Three in the window, limit 3: the oldest leaves at 940000 + 60000. */
    int64_t ts[] = {900000, 940000, 950000, 990000};
    assert_int_equal(admission_window_wait_ms(ts + 1, 3, now, 3), 0 + 940000 + 60000 - now);
    /* 900000 is exactly 100 s old: outside, so only 3 count; limit 4 fits. */
    assert_int_equal(admission_window_wait_ms(ts, 4, now, 4), 0);
    /* Limit 2 with 3 inside: two must leave, the second-oldest decides. */
    assert_int_equal(admission_window_wait_ms(ts + 1, 3, now, 2), 950000 + 60000 - now);
    /* The boundary: an admission exactly 60 s old has left the window. */
    int64_t edge[] = {now - 60000};
    assert_int_equal(admission_window_wait_ms(edge, 1, now, 1), 0);
    int64_t edge2[] = {now - 59999};
    assert_int_equal(admission_window_wait_ms(edge2, 1, now, 1), 1);
    assert_int_equal(admission_window_wait_ms(NULL, 0, now, 1), 0);
}

static void test_decide_limits_and_override(void **state)
{
    (void)state;
    const int64_t now = 5000000;
    int64_t recent[] = {now - 30000, now - 20000, now - 10000};
    struct admission_state st = {.now_ms = now,
                                 .active = 0,
                                 .recent_ms = recent,
                                 .nrecent = 2,
                                 .queue_depth = 0,
                                 .avg_run_ms = 2500};
    struct admission_decision d;
    admission_decide(&pol, &ok_req, &st, NULL, &d);
    assert_int_equal(d.verdict, ADMIT_OK);

    st.active = 2;
    admission_decide(&pol, &ok_req, &st, NULL, &d);
    assert_int_equal(d.verdict, ADMIT_USER_CONCURRENCY);
    assert_int_equal(d.retry_after_s, 3); /* avg run 2.5 s, rounded up */
    assert_non_null(strstr(d.reason, "concurrent"));

    st.active = 1;
    st.nrecent = 3;
    admission_decide(&pol, &ok_req, &st, NULL, &d);
    assert_int_equal(d.verdict, ADMIT_USER_RATE);
    assert_int_equal(d.retry_after_s, 30); /* the oldest leaves in 30 s */

    /* multiplier 2: 4 concurrent, 6 per minute. */
    struct admission_override twice = {.bypass = false, .multiplier = 2.0};
    st.active = 3;
    admission_decide(&pol, &ok_req, &st, &twice, &d);
    assert_int_equal(d.verdict, ADMIT_OK);
    st.active = 4;
    admission_decide(&pol, &ok_req, &st, &twice, &d);
    assert_int_equal(d.verdict, ADMIT_USER_CONCURRENCY);

    struct admission_override bypass = {.bypass = true};
    st.active = 100;
    admission_decide(&pol, &ok_req, &st, &bypass, &d);
    assert_int_equal(d.verdict, ADMIT_OK);
    /* Bypass does not bypass validation or the queue bound. */
    struct admission_request bad = ok_req;
    bad.lang = "cobol";
    admission_decide(&pol, &bad, &st, &bypass, &d);
    assert_int_equal(d.verdict, ADMIT_INVALID_RUNTIME);
    st.queue_depth = 10;
    admission_decide(&pol, &ok_req, &st, &bypass, &d);
    assert_int_equal(d.verdict, ADMIT_QUEUE_FULL);
    assert_true(d.retry_after_s >= 1);

    assert_int_equal(admission_scaled_limit(5, NULL), 5);
    struct admission_override tiny = {.multiplier = 0.01};
    assert_int_equal(admission_scaled_limit(5, &tiny), 1);
    struct admission_override none = {.multiplier = 0};
    assert_int_equal(admission_scaled_limit(5, &none), 5);
    assert_int_equal(admission_scaled_limit(5, &bypass), INT64_MAX);
}

static int cmp(const void *a, const void *b)
{
    return admission_compare(a, b);
}

static void test_queue_order(void **state)
{
    (void)state;
    struct admission_key keys[] = {
        {.priority = 1, .arrival_us = 10, .execution_id = "a"},
        {.priority = 9, .arrival_us = 30, .execution_id = "b"},
        {.priority = 5, .arrival_us = 20, .execution_id = "c"},
        {.priority = 9, .arrival_us = 20, .execution_id = "d"},
        {.priority = 9, .arrival_us = 20, .execution_id = "c2"},
    };
    qsort(keys, 5, sizeof(keys[0]), cmp);
    const char *want[] = {"c2", "d", "b", "c", "a"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(keys[i].execution_id, want[i]);
    assert_int_equal(admission_compare(&keys[0], &keys[0]), 0);
}

static void test_estimates_and_slots(void **state)
{
    (void)state;
    assert_int_equal(admission_estimated_wait_ms(0, 2, 1000), 0);
    assert_int_equal(admission_estimated_wait_ms(1, 2, 1000), 1000);
    assert_int_equal(admission_estimated_wait_ms(2, 2, 1000), 1000);
    assert_int_equal(admission_estimated_wait_ms(3, 2, 1000), 2000);
    assert_int_equal(admission_estimated_wait_ms(3, 0, 0), 3000);
    assert_int_equal(admission_avg_update(0, 800), 800);
    assert_int_equal(admission_avg_update(1000, 1800), 1100);
    assert_int_equal(admission_avg_update(1000, -5), 875);
    char id[32];
    admission_slot_id(7, id, sizeof(id));
    assert_string_equal(id, "slot-7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_decide_limits_and_override),
        cmocka_unit_test(test_queue_order),
        cmocka_unit_test(test_estimates_and_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
