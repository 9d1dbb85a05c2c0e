/*
 * test_events.c — the event catalog codec: round trips, a golden encoding,
 * strict rejection of bad input, and the JSON Schema's required list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "events.h"

static char err[512];

static struct event *completed_event(void)
{
    struct event *ev = event_new(EV_execution_completed, "exec-1");
    assert_non_null(ev);
    assert_int_equal(event_set_str(ev, "execution_id", "exec-1"), 0);
    assert_int_equal(event_set_int(ev, "exit_code", 3), 0);
    assert_int_equal(event_set_str(ev, "stdout", "hello\n\"quoted\" \xc3\xa9"), 0);
    assert_int_equal(event_set_str(ev, "stderr", ""), 0);
    cJSON *usage = cJSON_CreateObject();
    cJSON_AddNumberToObject(usage, "execution_time_wall_seconds", 0.25);
    cJSON_AddNumberToObject(usage, "peak_memory_kb", 10240);
    assert_int_equal(event_set_json(ev, "resource_usage", usage), 0);
    assert_int_equal(event_set_bool(ev, "stdout_truncated", 0), 0);
    return ev;
}

static struct event *roundtrip(const struct event *ev)
{
    char *json = NULL;
    struct event *back = NULL;
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), 0);
    int rc = event_decode(json, strlen(json), &back, err, sizeof(err));
    if (rc != 0)
        fail_msg("decode failed: %s for %s", err, json);
    free(json);
    return back;
}

static void assert_same_envelope(const struct event *a, const struct event *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->version, b->version);
    assert_string_equal(a->event_id, b->event_id);
    assert_string_equal(a->timestamp, b->timestamp);
    assert_string_equal(a->aggregate_id, b->aggregate_id);
    assert_string_equal(a->correlation_id, b->correlation_id);
    if (a->causation_id || b->causation_id)
        assert_string_equal(a->causation_id, b->causation_id);
    assert_string_equal(a->meta.service, b->meta.service);
    assert_string_equal(a->meta.service_version, b->meta.service_version);
    assert_string_equal(a->meta.trace_id, b->meta.trace_id);
    assert_true(cJSON_Compare(a->data, b->data, 1));
}

static void test_catalog_tables(void **state)
{
    (void)state;
    assert_int_equal(event_type_lookup("execution_requested"), EV_execution_requested);
    assert_int_equal(event_type_lookup("schema_registered"), EV_schema_registered);
    assert_int_equal(event_type_lookup("no_such_event"), -1);
    assert_string_equal(event_type_name(EV_pod_deleted), "pod_deleted");
    assert_int_equal(event_topic(EV_execution_completed), TOPIC_EXECUTION_EVENTS);
    assert_int_equal(event_topic(EV_delete_pod_command), TOPIC_SAGA_COMMANDS);
    assert_int_equal(event_topic(EV_user_registered), TOPIC_USER_EVENTS);
    assert_int_equal(event_topic(EV_dlq_message_received), TOPIC_SYSTEM_EVENTS);
    assert_int_equal(event_type_version(EV_execution_completed), 1);
    size_t n;
    const struct field_spec *fs = event_fields(EV_execution_completed, &n);
    assert_int_equal(n, 7);
    assert_string_equal(fs[1].name, "exit_code");
    assert_int_equal(fs[1].type, FT_INT);
    assert_true(fs[1].required);
    assert_string_equal(fs[5].name, "stdout_truncated");
    assert_false(fs[5].required);
    fs = event_fields(EV_execution_requested, &n);
    assert_int_equal(n, 12);
    assert_int_equal(fs[5].type, FT_ARR);
    for (int t = 0; t < EVENT_TYPE_COUNT; t++) {
        assert_non_null(event_type_name((enum event_type)t));
        assert_int_equal(event_type_lookup(event_type_name((enum event_type)t)), t);
    }
}

static void test_roundtrip_completed(void **state)
{
    (void)state;
    struct event *ev = completed_event();
    struct event *back = roundtrip(ev);
    assert_same_envelope(ev, back);
    assert_int_equal(event_get_int(back, "exit_code", -1), 3);
    assert_string_equal(event_get_str(back, "stdout"), "hello\n\"quoted\" \xc3\xa9");
    assert_null(back->causation_id);
    assert_string_equal(back->correlation_id, ev->event_id);
    event_free(back);
    event_free(ev);
}

static void test_roundtrip_derived_and_meta(void **state)
{
    (void)state;
    struct event *cause = event_new(EV_execution_requested, "exec-2");
    assert_non_null(cause);
    cause->meta.user_id = strdup("user-7");
    cause->meta.ip = strdup("10.0.0.1");
    cause->meta.user_agent = strdup("curl/8");
    struct event *ev = event_derive(EV_pod_created, cause);
    assert_non_null(ev);
    assert_string_equal(ev->causation_id, cause->event_id);
    assert_string_equal(ev->correlation_id, cause->correlation_id);
    assert_string_equal(ev->meta.trace_id, cause->meta.trace_id);
    assert_string_equal(ev->meta.user_id, "user-7");
    assert_string_equal(ev->aggregate_id, "exec-2");
    assert_string_not_equal(ev->event_id, cause->event_id);
    event_set_str(ev, "execution_id", "exec-2");
    event_set_str(ev, "pod_name", "exec-exec-2");
    event_set_str(ev, "namespace", "execd");
    event_set_int(ev, "exit_code", 0);
    struct event *back = roundtrip(ev);
    assert_same_envelope(ev, back);
    assert_string_equal(back->meta.user_id, "user-7");
    assert_string_equal(back->meta.ip, "10.0.0.1");
    assert_string_equal(back->meta.user_agent, "curl/8");
    event_free(back);
    event_free(ev);
    event_free(cause);
}

static void test_roundtrip_requested_and_user(void **state)
{
    (void)state;
    struct event *ev = event_new(EV_execution_requested, "exec-3");
    const char *strs[] = {"execution_id", "script",         "lang",
                          "lang_version", "runtime_image",  "cpu_request",
                          "cpu_limit",    "memory_request", "memory_limit"};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        assert_int_equal(event_set_str(ev, strs[i], "x"), 0);
    const char *cmd[] = {"python3", "-I", "main.py"};
    event_set_json(ev, "runtime_command", cJSON_CreateStringArray(cmd, 3));
    event_set_int(ev, "timeout_seconds", 30);
    event_set_int(ev, "priority", 5);
    struct event *back = roundtrip(ev);
    assert_same_envelope(ev, back);
    event_free(back);
    event_free(ev);

    ev = event_new(EV_user_registered, "user-1");
    event_set_str(ev, "user_id", "user-1");
    back = roundtrip(ev);
    assert_same_envelope(ev, back);
    assert_null(event_get_str(back, "username"));
    event_free(back);
    event_free(ev);
}

/* A hand-written encoding: what a producer in another language would send. */
static const char golden[] =
    "{\"event_id\":\"0b9a3c2e-4f5d-4e6a-8b7c-1d2e3f4a5b6c\","
    "\"event_type\":\"execution_queued\",\"event_version\":1,"
    "\"timestamp\":\"2026-12-04T02:00:00.123456Z\",\"aggregate_id\":\"exec-9\","
    "\"correlation_id\":\"corr-1\",\"causation_id\":\"cause-1\","
    "\"metadata\":{\"service\":\"api\",\"service_version\":\"1.2.3\",\"user_id\":\"u-1\","
    "\"ip\":\"127.0.0.1\",\"trace_id\":\"0123456789abcdef0123456789abcdef\"},"
    "\"execution_id\":\"exec-9\",\"position\":4,\"estimated_wait_seconds\":1.5}";

static void test_golden_decode(void **state)
{
    (void)state;
    struct event *ev = NULL;
    assert_int_equal(event_decode(golden, strlen(golden), &ev, err, sizeof(err)), 0);
    assert_int_equal(ev->type, EV_execution_queued);
    assert_int_equal(ev->version, 1);
    assert_string_equal(ev->event_id, "0b9a3c2e-4f5d-4e6a-8b7c-1d2e3f4a5b6c");
    assert_string_equal(ev->timestamp, "2026-12-04T02:00:00.123456Z");
    assert_string_equal(ev->aggregate_id, "exec-9");
    assert_string_equal(ev->correlation_id, "corr-1");
    assert_string_equal(ev->causation_id, "cause-1");
    assert_string_equal(ev->meta.service, "api");
    assert_string_equal(ev->meta.service_version, "1.2.3");
    assert_string_equal(ev->meta.user_id, "u-1");
    assert_string_equal(ev->meta.ip, "127.0.0.1");
    assert_null(ev->meta.user_agent);
    assert_string_equal(ev->meta.trace_id, "0123456789abcdef0123456789abcdef");
    assert_string_equal(event_get_str(ev, "execution_id"), "exec-9");
    assert_int_equal(event_get_int(ev, "position", -1), 4);
    assert_int_equal(cJSON_GetArraySize(ev->data), 3);
    event_free(ev);
}

static void test_golden_encode(void **state)
{
    (void)state;
    struct event *ev = NULL;
    char *json = NULL;
    assert_int_equal(event_decode(golden, strlen(golden), &ev, err, sizeof(err)), 0);
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), 0);
    cJSON *got = cJSON_Parse(json);
    cJSON *want = cJSON_Parse(golden);
    assert_non_null(got);
    /* Field by field, in the documented order. */
    const cJSON *g = got->child, *w = want->child;
    for (; w; w = w->next, g = g->next) {
        assert_non_null(g);
        assert_string_equal(g->string, w->string);
        if (!cJSON_Compare(g, w, 1))
            fail_msg("field '%s' differs: %s", w->string, json);
    }
    assert_null(g);
    cJSON_Delete(got);
    cJSON_Delete(want);
    free(json);
    event_free(ev);
}

static void test_unknown_fields_kept(void **state)
{
    (void)state;
    const char *extra = "{\"event_id\":\"0b9a3c2e-4f5d-4e6a-8b7c-1d2e3f4a5b6c\","
                        "\"event_type\":\"execution_accepted\",\"event_version\":1,"
                        "\"timestamp\":\"2026-12-04T02:00:00+00:00\",\"aggregate_id\":\"e\","
                        "\"correlation_id\":\"c\",\"metadata\":{\"service\":\"s\","
                        "\"service_version\":\"1\",\"trace_id\":"
                        "\"0123456789abcdef0123456789abcdef\"},\"execution_id\":\"e\","
                        "\"added_later\":{\"a\":1}}";
    struct event *ev = NULL;
    char *json = NULL;
    assert_int_equal(event_decode(extra, strlen(extra), &ev, err, sizeof(err)), 0);
    assert_string_equal(ev->timestamp, "2026-12-04T02:00:00.000000Z");
    assert_null(ev->causation_id);
    assert_null(ev->meta.user_id);
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), 0);
    assert_non_null(strstr(json, "\"added_later\":{\"a\":1}"));
    free(json);
    event_free(ev);
}

/* Replaces the first occurrence of from in golden by to and expects rejection. */
static void expect_reject(const char *from, const char *to, const char *needle)
{
    char buf[2048];
    const char *at = strstr(golden, from);
    if (at == NULL)
        fail_msg("'%s' not in golden", from);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - golden), golden, to, at + strlen(from));
    struct event *ev = NULL;
    err[0] = '\0';
    int rc = event_decode(buf, strlen(buf), &ev, err, sizeof(err));
    if (rc != -EBADMSG)
        fail_msg("accepted (rc=%d) %s", rc, buf);
    assert_null(ev);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not name '%s'", err, needle);
}

static void test_reject_bad_input(void **state)
{
    (void)state;
    struct event *ev = NULL;
    /* malformed and truncated */
    assert_int_equal(event_decode("{", 1, &ev, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "malformed"));
    assert_int_equal(event_decode(golden, strlen(golden) - 10, &ev, err, sizeof(err)), -EBADMSG);
    assert_int_equal(event_decode("[1,2]", 5, &ev, err, sizeof(err)), -EBADMSG);
    assert_int_equal(event_decode("", 0, &ev, err, sizeof(err)), -EBADMSG);
    char trailing[2048];
    snprintf(trailing, sizeof(trailing), "%s{}", golden);
    assert_int_equal(event_decode(trailing, strlen(trailing), &ev, err, sizeof(err)), -EBADMSG);
    assert_null(ev);

    /* unknown type, bad envelope */
    expect_reject("\"execution_queued\"", "\"execution_exploded\"", "execution_exploded");
    expect_reject("\"event_version\":1", "\"event_version\":2", "event_version");
    expect_reject("\"event_version\":1", "\"event_version\":\"1\"", "event_version");
    expect_reject("\"event_version\":1,", "", "event_version");
    expect_reject("0b9a3c2e-4f5d-4e6a-8b7c-1d2e3f4a5b6c", "not-a-uuid", "event_id");
    expect_reject("\"event_id\":\"0b9a3c2e-4f5d-4e6a-8b7c-1d2e3f4a5b6c\",", "", "event_id");
    expect_reject("2026-12-04T02:00:00.123456Z", "yesterday", "timestamp");
    expect_reject("2026-12-04T02:00:00.123456Z", "2026-13-04T02:00:00Z", "timestamp");
    expect_reject("\"aggregate_id\":\"exec-9\"", "\"aggregate_id\":7", "aggregate_id");
    expect_reject("\"correlation_id\":\"corr-1\",", "", "correlation_id");
    expect_reject("\"causation_id\":\"cause-1\"", "\"causation_id\":[]", "causation_id");
    expect_reject("\"service\":\"api\",", "", "metadata.service");
    expect_reject("0123456789abcdef0123456789abcdef", "xyz", "metadata.trace_id");
    expect_reject("\"metadata\":{", "\"metadata\":1,\"x\":{", "metadata");

    /* wrong types, missing required, bad names */
    expect_reject("\"position\":4", "\"position\":\"4\"", "position");
    expect_reject("\"position\":4", "\"position\":4.5", "position");
    expect_reject(",\"position\":4", "", "position");
    expect_reject("\"execution_id\":\"exec-9\",", "", "execution_id");
    expect_reject("\"estimated_wait_seconds\":1.5", "\"estimated_wait_seconds\":true",
                  "estimated_wait_seconds");
    expect_reject("\"estimated_wait_seconds\":1.5", "\"a.b\":1", "a.b");
    expect_reject("\"estimated_wait_seconds\":1.5", "\"$set\":1", "$set");
}

static void test_encode_validates(void **state)
{
    (void)state;
    struct event *ev = completed_event();
    char *json = NULL;
    cJSON_DeleteItemFromObject(ev->data, "exit_code");
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "exit_code"));
    event_set_str(ev, "exit_code", "0");
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "exit_code"));
    event_set_int(ev, "exit_code", 0);
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), 0);
    free(json);
    json = NULL;
    event_set_str(ev, "event_id", "shadow");
    assert_int_equal(event_encode(ev, &json, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "event_id"));
    assert_null(json);
    event_free(ev);
}

static int in_array(const cJSON *arr, const char *s)
{
    for (const cJSON *it = arr->child; it; it = it->next)
        if (cJSON_IsString(it) && strcmp(it->valuestring, s) == 0)
            return 1;
    return 0;
}

static void test_schema(void **state)
{
    (void)state;
    const char *envelope[] = {"event_id",     "event_type",     "event_version", "timestamp",
                              "aggregate_id", "correlation_id", "metadata"};
    size_t nenv = sizeof(envelope) / sizeof(envelope[0]);
    for (int t = 0; t < EVENT_TYPE_COUNT; t++) {
        cJSON *s = event_schema((enum event_type)t);
        assert_non_null(s);
        assert_string_equal(cJSON_GetObjectItem(s, "$schema")->valuestring,
                            "https://json-schema.org/draft/2020-12/schema");
        assert_string_equal(cJSON_GetObjectItem(s, "title")->valuestring,
                            event_type_name((enum event_type)t));
        const cJSON *req = cJSON_GetObjectItem(s, "required");
        const cJSON *props = cJSON_GetObjectItem(s, "properties");
        assert_true(cJSON_IsArray(req));
        size_t n, nreq = 0;
        const struct field_spec *fs = event_fields((enum event_type)t, &n);
        for (size_t i = 0; i < nenv; i++)
            assert_true(in_array(req, envelope[i]));
        for (size_t i = 0; i < n; i++) {
            const cJSON *p = cJSON_GetObjectItem(props, fs[i].name);
            assert_non_null(p);
            assert_int_equal(in_array(req, fs[i].name), fs[i].required);
            nreq += (size_t)fs[i].required;
        }
        assert_int_equal((size_t)cJSON_GetArraySize(req), nenv + nreq);
        const cJSON *meta = cJSON_GetObjectItem(props, "metadata");
        assert_true(in_array(cJSON_GetObjectItem(meta, "required"), "trace_id"));
        cJSON_Delete(s);
    }
    cJSON *s = event_schema(EV_execution_completed);
    const cJSON *props = cJSON_GetObjectItem(s, "properties");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(props, "exit_code"), "type")->valuestring,
        "integer");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(props, "resource_usage"), "type")->valuestring,
        "object");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(props, "event_type"), "const")->valuestring,
        "execution_completed");
    cJSON_Delete(s);
}

static void test_schema_ids_and_service(void **state)
{
    (void)state;
    assert_int_equal(event_schema_id(EV_pod_running), 0);
    event_set_schema_id(EV_pod_running, 42);
    assert_int_equal(event_schema_id(EV_pod_running), 42);
    event_set_schema_id(EV_pod_running, 0);
    event_set_service("coordinator", "9.9.9");
    struct event *ev = event_new(EV_execution_accepted, "a");
    assert_string_equal(ev->meta.service, "coordinator");
    assert_string_equal(ev->meta.service_version, "9.9.9");
    assert_int_equal(strlen(ev->event_id), 36);
    assert_int_equal(ev->event_id[14], '4');
    assert_int_equal(strlen(ev->meta.trace_id), 32);
    assert_int_equal(event_get_int(ev, "missing", -5), -5);
    event_set_str(ev, "execution_id", "a");
    assert_int_equal(event_get_int(ev, "execution_id", -5), -5);
    event_free(ev);
    event_set_service("execd", "0.0.0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalog_tables),
        cmocka_unit_test(test_roundtrip_completed),
        cmocka_unit_test(test_roundtrip_derived_and_meta),
        cmocka_unit_test(test_roundtrip_requested_and_user),
        cmocka_unit_test(test_golden_decode),
        cmocka_unit_test(test_golden_encode),
        cmocka_unit_test(test_unknown_fields_kept),
        cmocka_unit_test(test_reject_bad_input),
        cmocka_unit_test(test_encode_validates),
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_schema_ids_and_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
