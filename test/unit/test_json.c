/*
 * test_json.c — bounded parsing: depth limit, trailing bytes, offsets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static void parses_objects_with_trailing_whitespace(void **state)
{
    (void)state;
    cJSON *j = NULL;
    size_t at;
    const char *s = "{\"a\":[1,{\"b\":\"}]\"}]}  \n";
    assert_int_equal(json_parse_bounded(s, strlen(s), 3, &j, &at), 0);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "a"), 1)->child->valuestring,
                        "}]");
    cJSON_Delete(j);
}

static void rejects_deep_nesting_before_parsing(void **state)
{
    (void)state;
    size_t n = 200000;
    char *s = malloc(n + 1);
    memset(s, '[', n);
    s[n] = '\0';
    cJSON *j = NULL;
    size_t at;
    assert_int_equal(json_parse_bounded(s, n, JSON_MAX_DEPTH, &j, &at), -E2BIG);
    assert_null(j);
    /* Exactly at the limit is fine; brackets inside strings do not count. */
    assert_int_equal(json_parse_bounded("[[[\"[[[[\"]]]", 12, 3, &j, &at), 0);
    cJSON_Delete(j);
    free(s);
}

static void rejects_garbage_with_offset(void **state)
{
    (void)state;
    cJSON *j = NULL;
    size_t at = 99;
    assert_int_equal(json_parse_bounded("{\"a\":1} x", 9, 8, &j, &at), -EINVAL);
    assert_int_equal(at, 8);
    assert_int_equal(json_parse_bounded("{\"a\":", 5, 8, &j, &at), -EINVAL);
    assert_int_equal(json_parse_bounded("", 0, 8, &j, &at), -EINVAL);
    assert_null(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_objects_with_trailing_whitespace),
        cmocka_unit_test(rejects_deep_nesting_before_parsing),
        cmocka_unit_test(rejects_garbage_with_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
