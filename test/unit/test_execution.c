/*
 * test_execution.c — status ranks, the event → status mapping, forward-only
 * transitions, error names and exec_json (src/domain/execution.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "execution.h"

static void test_ranks_and_names(void **state)
{
    (void)state;
    assert_int_equal(execution_status_rank(EXEC_QUEUED), 0);
    assert_int_equal(execution_status_rank(EXEC_SCHEDULED), 1);
    assert_int_equal(execution_status_rank(EXEC_RUNNING), 2);
    for (int s = EXEC_COMPLETED; s <= EXEC_CANCELLED; s++) {
        assert_int_equal(execution_status_rank((enum execution_status)s), EXEC_RANK_TERMINAL);
        assert_true(execution_status_terminal((enum execution_status)s));
    }
    assert_false(execution_status_terminal(EXEC_RUNNING));
    for (int s = 0; s < EXEC_STATUS_COUNT; s++)
        assert_int_equal(execution_status_lookup(execution_status_name((enum execution_status)s)),
                         s);
    assert_int_equal(execution_status_lookup("done"), -1);
    assert_int_equal(execution_status_lookup(NULL), -1);
    assert_string_equal(execution_status_time_field(EXEC_QUEUED), "queued_at");
    assert_string_equal(execution_status_time_field(EXEC_RUNNING), "started_at");
    assert_string_equal(execution_status_time_field(EXEC_TIMEOUT), "finished_at");
}

static void test_event_mapping(void **state)
{
    (void)state;
    assert_int_equal(execution_status_of_event(EV_execution_requested), EXEC_QUEUED);
    assert_int_equal(execution_status_of_event(EV_execution_accepted), EXEC_QUEUED);
    assert_int_equal(execution_status_of_event(EV_execution_queued), EXEC_QUEUED);
    assert_int_equal(execution_status_of_event(EV_execution_scheduled), EXEC_SCHEDULED);
    assert_int_equal(execution_status_of_event(EV_pod_created), EXEC_SCHEDULED);
    assert_int_equal(execution_status_of_event(EV_execution_started), EXEC_RUNNING);
    assert_int_equal(execution_status_of_event(EV_pod_running), EXEC_RUNNING);
    assert_int_equal(execution_status_of_event(EV_execution_completed), EXEC_COMPLETED);
    assert_int_equal(execution_status_of_event(EV_execution_failed), EXEC_FAILED);
    assert_int_equal(execution_status_of_event(EV_execution_timeout), EXEC_TIMEOUT);
    assert_int_equal(execution_status_of_event(EV_execution_cancelled), EXEC_CANCELLED);
    assert_int_equal(execution_status_of_event(EV_execution_rejected), -1);
    assert_int_equal(execution_status_of_event(EV_result_stored), -1);
    assert_int_equal(execution_status_of_event(EV_pod_deleted), -1);
    assert_int_equal(execution_status_of_event(EV_execution_cancel_requested), -1);
    assert_true(execution_event_terminal(EV_execution_timeout));
    assert_true(execution_event_terminal(EV_execution_cancelled));
    assert_false(execution_event_terminal(EV_execution_started));
    assert_false(execution_event_terminal(EV_result_stored));
}

static void test_forward_only(void **state)
{
    (void)state;
    /* Nothing yet: anything applies. */
    assert_true(execution_transition_allowed(-1, EXEC_RUNNING));
    /* Forward, and same-rank non-terminal (adds a queue position). */
    assert_true(execution_transition_allowed(0, EXEC_SCHEDULED));
    assert_true(execution_transition_allowed(0, EXEC_QUEUED));
    assert_true(execution_transition_allowed(2, EXEC_COMPLETED));
    /* Backwards never. */
    assert_false(execution_transition_allowed(2, EXEC_SCHEDULED));
    assert_false(execution_transition_allowed(3, EXEC_RUNNING));
    assert_false(execution_transition_allowed(3, EXEC_QUEUED));
    /* A terminal state never replaces another. */
    assert_false(execution_transition_allowed(3, EXEC_FAILED));
    assert_false(execution_transition_allowed(3, EXEC_COMPLETED));
    assert_int_equal(execution_rank_bound(EXEC_COMPLETED), 2);
    assert_int_equal(execution_rank_bound(EXEC_SCHEDULED), 1);
    assert_false(execution_transition_allowed(0, EXEC_STATUS_COUNT));
}

static void test_error_names(void **state)
{
    (void)state;
    const char *names[] = {"script_error", "timeout",           "resource_limit",
                           "system_error", "permission_denied", "rate_limited"};
    for (int i = 0; i < EXEC_ERR_COUNT; i++) {
        assert_string_equal(execution_error_name((enum execution_error)i), names[i]);
        assert_int_equal(execution_error_lookup(names[i]), i);
    }
    assert_int_equal(execution_error_lookup("oom"), -1);
}

static void test_exec_json_escapes(void **state)
{
    (void)state;
    cJSON *j = exec_json("{\"_id\":%S,\"n\":%L,\"f\":%F,\"b\":%B,\"nul\":%S,\"pct\":\"100%%\"}",
                         "a\"b\\c\n", 1796352174527014LL, 0.5, 1, (const char *)NULL);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "_id")->valuestring, "a\"b\\c\n");
    assert_true(cJSON_GetObjectItem(j, "n")->valuedouble == 1796352174527014.0);
    assert_true(cJSON_GetObjectItem(j, "f")->valuedouble == 0.5);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "b")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "nul")));
    assert_string_equal(cJSON_GetObjectItem(j, "pct")->valuestring, "100%");
    /* A hostile id cannot inject an operator. */
    cJSON *inner = exec_json("{\"holder\":%S}", "x\",\"$where\":\"1");
    assert_non_null(inner);
    assert_int_equal(cJSON_GetArraySize(inner), 1);
    cJSON *nested = exec_json("{\"a\":%J}", j);
    assert_non_null(nested);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(nested, "a"), "_id")->valuestring,
                        "a\"b\\c\n");
    assert_null(exec_json("{\"bad\":%Q}"));
    assert_null(exec_json("{\"unterminated\":"));
    cJSON_Delete(nested);
    cJSON_Delete(inner);
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranks_and_names),   cmocka_unit_test(test_event_mapping),
        cmocka_unit_test(test_forward_only),      cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_exec_json_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
