/*
 * test_saga.c — the execution saga state machine (src/domain/saga.c):
 * steps, deadlines, compensations in reverse and at most once, cancel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "saga.h"

static const struct saga_timeouts T = {
    .provision_ms = 30000, .grace_ms = 15000, .finalize_ms = 30000};

static void expect_actions(const struct saga_effects *fx, const enum saga_action *want, size_t n)
{
    assert_int_equal(fx->n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(saga_action_name(fx->list[i].action), saga_action_name(want[i]));
}

static int on(struct saga *s, enum event_type type, int64_t now, struct saga_effects *fx)
{
    fx->n = 0;
    return saga_on_event(s, type, "why", now, &T, fx);
}

static void test_happy_path(void **state)
{
    (void)state;
    struct saga s;
    struct saga_effects fx = {.n = 0};
    saga_init(&s, 10, &fx);
    assert_int_equal(fx.n, 1);
    assert_int_equal(fx.list[0].action, SAGA_ACT_STARTED);
    assert_int_equal(s.state, SAGA_RUNNING);
    assert_int_equal(s.step, SAGA_ADMIT);
    assert_int_equal(s.deadline_ms, 0); /* admit waits for the queue */
    assert_int_equal(saga_on_deadline(&s, 1LL << 50, &T, &fx), 0);

    assert_int_equal(on(&s, EV_execution_scheduled, 1000, &fx), 1);
    assert_int_equal(s.step, SAGA_PROVISION);
    assert_int_equal(s.deadline_ms, 31000);
    assert_int_equal(s.deadlines[SAGA_PROVISION], 31000);
    assert_int_equal(fx.list[0].action, SAGA_ACT_STEP_COMPLETED);
    assert_int_equal(fx.list[0].step, SAGA_ADMIT);
    assert_int_equal(on(&s, EV_execution_scheduled, 1100, &fx), 0); /* redelivery */

    assert_int_equal(on(&s, EV_pod_created, 2000, &fx), 1);
    assert_int_equal(s.step, SAGA_RUN);
    assert_int_equal(s.deadline_ms, 2000 + 10000 + 15000);
    assert_int_equal(on(&s, EV_pod_created, 2100, &fx), 0);
    assert_int_equal(on(&s, EV_execution_started, 2200, &fx), 1);
    assert_true(s.started);
    assert_int_equal(fx.n, 0);
    assert_int_equal(on(&s, EV_execution_started, 2300, &fx), 0);

    assert_int_equal(on(&s, EV_execution_completed, 5000, &fx), 1);
    assert_int_equal(s.step, SAGA_FINALIZE);
    assert_int_equal(s.deadline_ms, 35000);
    assert_int_equal(on(&s, EV_execution_cancel_requested, 5100, &fx), 0); /* too late */
    assert_false(saga_cancellable(&s));

    assert_int_equal(on(&s, EV_result_stored, 6000, &fx), 1);
    static const enum saga_action fin[] = {SAGA_ACT_STEP_COMPLETED, SAGA_ACT_COMPLETED};
    expect_actions(&fx, fin, 2);
    assert_int_equal(s.state, SAGA_COMPLETED);
    assert_int_equal(s.completed, 0xfu);
    assert_int_equal(s.compensated, 0u);
    assert_int_equal(s.deadline_ms, 0);
    assert_int_equal(on(&s, EV_result_stored, 6100, &fx), 0);
    assert_int_equal(on(&s, EV_pod_created, 6100, &fx), 0); /* completed: nothing to undo */
}

static void test_provision_deadline_compensates_in_reverse_once(void **state)
{
    (void)state;
    struct saga s;
    struct saga_effects fx = {.n = 0};
    saga_init(&s, 10, &fx);
    on(&s, EV_execution_scheduled, 1000, &fx);
    fx.n = 0;
    assert_int_equal(saga_on_deadline(&s, 30999, &T, &fx), 0);
    assert_int_equal(saga_on_deadline(&s, 31000, &T, &fx), 1);
    static const enum saga_action want[] = {SAGA_ACT_COMPENSATING, SAGA_ACT_EXEC_FAILED,
                                            SAGA_ACT_DELETE_POD, SAGA_ACT_RELEASE_CAPACITY,
                                            SAGA_ACT_FAILED};
    expect_actions(&fx, want, 5);
    assert_int_equal(s.state, SAGA_COMPENSATING);
    assert_int_equal(s.final, SAGA_FAILED);
    assert_non_null(strstr(s.error, "did not provision the pod within 30 s"));
    assert_int_equal(s.compensated, 3u);
    assert_int_equal(s.deadline_ms, 0);
    /* While compensating nothing else applies; then it ends failed. */
    assert_int_equal(on(&s, EV_pod_created, 31100, &fx), 0);
    fx.n = 0;
    assert_int_equal(saga_on_deadline(&s, 99999, &T, &fx), 0);
    assert_int_equal(saga_finish(&s), 1);
    assert_int_equal(s.state, SAGA_FAILED);
    assert_int_equal(saga_finish(&s), 0);
    /* Its own execution_failed coming back, or a late pod: no second
     * compensation. */
    assert_int_equal(on(&s, EV_execution_failed, 32000, &fx), 0);
    assert_int_equal(on(&s, EV_pod_created, 32000, &fx), 0);
    assert_int_equal(fx.n, 0);
}

static void test_run_deadline_timeout_or_failed(void **state)
{
    (void)state;
    struct saga s;
    struct saga_effects fx = {.n = 0};
    saga_init(&s, 5, &fx);
    on(&s, EV_pod_created, 1000, &fx); /* scheduled missed: admit + provision done */
    assert_int_equal(s.step, SAGA_RUN);
    assert_int_equal(s.completed, 3u);
    assert_int_equal(fx.n, 2);
    fx.n = 0;
    assert_int_equal(saga_on_deadline(&s, 1000 + 5000 + 15000 - 1, &T, &fx), 0);
    assert_int_equal(saga_on_deadline(&s, 1000 + 5000 + 15000, &T, &fx), 1);
    assert_int_equal(fx.list[1].action, SAGA_ACT_EXEC_FAILED);

    saga_init(&s, 5, &fx);
    on(&s, EV_execution_scheduled, 0, &fx);
    on(&s, EV_execution_started, 100, &fx);
    fx.n = 0;
    assert_int_equal(saga_on_deadline(&s, 100 + 20000, &T, &fx), 1);
    static const enum saga_action want[] = {SAGA_ACT_COMPENSATING, SAGA_ACT_EXEC_TIMEOUT,
                                            SAGA_ACT_DELETE_POD, SAGA_ACT_RELEASE_CAPACITY,
                                            SAGA_ACT_FAILED};
    expect_actions(&fx, want, 5);
}

static void test_cancel_each_step(void **state)
{
    (void)state;
    struct saga s;
    struct saga_effects fx = {.n = 0};
    /* Queued (admit): only the capacity; a pod that shows up later is
     * deleted then, once. */
    saga_init(&s, 10, &fx);
    assert_true(saga_cancellable(&s));
    assert_int_equal(on(&s, EV_execution_cancel_requested, 10, &fx), 1);
    static const enum saga_action queued[] = {SAGA_ACT_COMPENSATING, SAGA_ACT_EXEC_CANCELLED,
                                              SAGA_ACT_RELEASE_CAPACITY, SAGA_ACT_CANCELLED};
    expect_actions(&fx, queued, 4);
    assert_non_null(strstr(s.error, "why"));
    assert_int_equal(on(&s, EV_execution_cancel_requested, 11, &fx), 0);
    saga_finish(&s);
    assert_int_equal(s.state, SAGA_CANCELLED);
    assert_int_equal(on(&s, EV_execution_scheduled, 20, &fx), 1);
    assert_int_equal(fx.n, 1);
    assert_int_equal(fx.list[0].action, SAGA_ACT_DELETE_POD);
    assert_int_equal(on(&s, EV_pod_created, 30, &fx), 0);
    assert_int_equal(on(&s, EV_execution_cancel_requested, 40, &fx), 0);

    /* Running: pod first, then capacity. */
    saga_init(&s, 10, &fx);
    on(&s, EV_execution_scheduled, 0, &fx);
    on(&s, EV_pod_created, 1, &fx);
    assert_int_equal(on(&s, EV_execution_cancel_requested, 2, &fx), 1);
    static const enum saga_action running[] = {SAGA_ACT_COMPENSATING, SAGA_ACT_EXEC_CANCELLED,
                                               SAGA_ACT_DELETE_POD, SAGA_ACT_RELEASE_CAPACITY,
                                               SAGA_ACT_CANCELLED};
    expect_actions(&fx, running, 5);
    assert_int_equal(s.final, SAGA_CANCELLED);
    saga_finish(&s);
    /* The cancelled result arriving later changes nothing. */
    assert_int_equal(on(&s, EV_execution_cancelled, 3, &fx), 0);
    assert_int_equal(on(&s, EV_result_stored, 4, &fx), 0);
    assert_int_equal(s.state, SAGA_CANCELLED);
}

static void test_failures_and_rejection(void **state)
{
    (void)state;
    struct saga s;
    struct saga_effects fx = {.n = 0};
    saga_init(&s, 10, &fx);
    assert_int_equal(on(&s, EV_execution_rejected, 1, &fx), 1);
    static const enum saga_action rej[] = {SAGA_ACT_FAILED};
    expect_actions(&fx, rej, 1);
    assert_int_equal(s.state, SAGA_FAILED);
    assert_int_equal(s.compensated, 0u);
    assert_int_equal(on(&s, EV_execution_failed, 2, &fx), 0);

    saga_init(&s, 10, &fx);
    on(&s, EV_execution_scheduled, 0, &fx);
    assert_int_equal(on(&s, EV_execution_failed, 5, &fx), 1);
    static const enum saga_action failed[] = {SAGA_ACT_COMPENSATING, SAGA_ACT_DELETE_POD,
                                              SAGA_ACT_RELEASE_CAPACITY, SAGA_ACT_FAILED};
    expect_actions(&fx, failed, 4);
    assert_non_null(strstr(s.error, "provision step failed: why"));

    saga_init(&s, 10, &fx);
    on(&s, EV_execution_scheduled, 0, &fx);
    on(&s, EV_pod_created, 0, &fx);
    on(&s, EV_execution_timeout, 0, &fx);
    assert_int_equal(s.step, SAGA_FINALIZE);
    assert_int_equal(on(&s, EV_result_failed, 1, &fx), 1);
    assert_int_equal(s.state, SAGA_FAILED);

    saga_init(&s, 10, &fx);
    on(&s, EV_execution_completed, 0, &fx);
    fx.n = 0;
    assert_int_equal(saga_on_deadline(&s, 30000, &T, &fx), 1);
    assert_int_equal(s.state, SAGA_FAILED);
    assert_non_null(strstr(s.error, "result not stored"));
    assert_int_equal(fx.list[0].action, SAGA_ACT_FAILED);
}

static void test_names(void **state)
{
    (void)state;
    for (int i = 0; i < SAGA_STATE_COUNT; i++)
        assert_int_equal(saga_state_lookup(saga_state_name((enum saga_state)i)), i);
    for (int i = 0; i < SAGA_STEP_COUNT; i++)
        assert_int_equal(saga_step_lookup(saga_step_name((enum saga_step)i)), i);
    for (int i = 0; i < SAGA_COMP_COUNT; i++)
        assert_int_equal(saga_comp_lookup(saga_comp_name((enum saga_comp)i)), i);
    assert_int_equal(saga_state_lookup("nope"), -1);
    assert_int_equal(saga_state_lookup(NULL), -1);
    assert_int_equal(saga_action_event(SAGA_ACT_DELETE_POD), EV_delete_pod_command);
    assert_int_equal(saga_action_event(SAGA_ACT_RELEASE_CAPACITY), EV_release_capacity_command);
    assert_int_equal(saga_action_event(SAGA_ACT_EXEC_CANCELLED), EV_execution_cancelled);
    assert_int_equal(saga_action_event(SAGA_ACT_CANCELLED), EV_saga_cancelled);
    assert_true(saga_state_terminal(SAGA_CANCELLED));
    assert_false(saga_state_terminal(SAGA_COMPENSATING));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy_path),
        cmocka_unit_test(test_provision_deadline_compensates_in_reverse_once),
        cmocka_unit_test(test_run_deadline_timeout_or_failed),
        cmocka_unit_test(test_cancel_each_step),
        cmocka_unit_test(test_failures_and_rejection),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
