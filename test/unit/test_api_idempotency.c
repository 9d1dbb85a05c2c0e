/* test_api_idempotency.c — the Idempotency-Key state decision and ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <string.h>

#include "roles/api/api.h"
#include "store.h"

static cJSON *doc(const char *status, int64_t created, int64_t expires)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "status", status);
    cJSON_AddItemToObject(d, "created_at", store_date(created));
    cJSON_AddItemToObject(d, "expires_at", store_date(expires));
    return d;
}

static void test_classify(void **state)
{
    (void)state;
    int64_t now = 1800000000000;
    int status = 0;
    const char *body = NULL;
    cJSON *d = doc("in_flight", now - 1000, now + API_IDEM_TTL_MS);
    assert_int_equal(api_idem_classify(d, now, &status, &body), API_IDEM_IN_FLIGHT);
    cJSON_Delete(d);
    /* abandoned claim (older than the in-flight bound) may be taken over */
    d = doc("in_flight", now - 10 * 60 * 1000, now + API_IDEM_TTL_MS);
    assert_int_equal(api_idem_classify(d, now, &status, &body), API_IDEM_NEW);
    cJSON_Delete(d);
    d = doc("done", now - 1000, now + 1000);
    cJSON_AddNumberToObject(d, "response_status", 200);
    cJSON_AddStringToObject(d, "response_body", "{\"execution_id\":\"e1\"}");
    assert_int_equal(api_idem_classify(d, now, &status, &body), API_IDEM_DONE);
    assert_int_equal(status, 200);
    assert_string_equal(body, "{\"execution_id\":\"e1\"}");
    /* expired (24 h passed, reaper not yet run) is new again */
    assert_int_equal(api_idem_classify(d, now + 2000, &status, &body), API_IDEM_NEW);
    cJSON_Delete(d);
}

static void test_ids(void **state)
{
    (void)state;
    char id[512];
    assert_int_equal(api_idem_id("u1", "key-1", id, sizeof(id)), 0);
    assert_string_equal(id, "u1:key-1");
    assert_int_equal(api_idem_id("u1", "", id, sizeof(id)), -EINVAL);
    assert_int_equal(api_idem_id("u1", "has space", id, sizeof(id)), -EINVAL);
    assert_int_equal(api_idem_id("", "k", id, sizeof(id)), -EINVAL);
    char longkey[300];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(api_idem_id("u1", longkey, id, sizeof(id)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_classify), cmocka_unit_test(test_ids)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
