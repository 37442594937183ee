/* The tool dispatcher: every tool has an OpenAI-form schema whose required
 * arguments and types match what the dispatcher enforces; unknown tools,
 * unparsable arguments and missing, extra or wrong-typed arguments come back
 * as exceptions naming the problem (never an error status); null stands for
 * an absent optional argument; the trace records name, arguments and result
 * or exception. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/sandbox.h"

static void expect_exception(orc_sandbox *sb, const char *name, const char *args, const char *want) {
    orc_tool_result r;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_invoke(sb, name, args, &r, &err), ORC_OK);
    if (!r.exception) fail_msg("%s %s: no exception, result %s", name, args ? args : "(null)", r.result);
    if (!strstr(r.exception, want)) fail_msg("%s %s: exception '%s' lacks '%s'", name, args, r.exception, want);
    assert_null(r.result);
    json_t *t = json_loads(r.trace, 0, NULL);
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(t, "exception")), r.exception);
    assert_null(json_object_get(t, "result"));
    json_decref(t);
    orc_tool_result_free(&r);
}

static void test_schemas(void **state) {
    (void)state;
    int n = orc_sandbox_tool_count();
    assert_true(n >= 30);
    json_t *all = orc_sandbox_tool_schemas();
    assert_int_equal(json_array_size(all), n);
    for (int i = 0; i < n; i++) {
        json_t *s = json_array_get(all, i);
        assert_string_equal(json_string_value(json_object_get(s, "type")), "function");
        json_t *fn = json_object_get(s, "function");
        assert_string_equal(json_string_value(json_object_get(fn, "name")), orc_sandbox_tool_name(i));
        assert_true(strlen(json_string_value(json_object_get(fn, "description"))) > 10);
        json_t *p = json_object_get(fn, "parameters");
        assert_string_equal(json_string_value(json_object_get(p, "type")), "object");
        assert_true(json_is_object(json_object_get(p, "properties")));
        assert_true(json_is_false(json_object_get(p, "additionalProperties")));
        size_t k;
        json_t *req;
        json_array_foreach(json_object_get(p, "required"), k, req)
            assert_non_null(json_object_get(json_object_get(p, "properties"), json_string_value(req)));
        const char *key;
        json_t *prop;
        json_object_foreach(json_object_get(p, "properties"), key, prop) {
            const char *t = json_string_value(json_object_get(prop, "type"));
            assert_true(!strcmp(t, "string") || !strcmp(t, "number") || !strcmp(t, "integer") || !strcmp(t, "boolean"));
            assert_non_null(json_string_value(json_object_get(prop, "description")));
        }
        for (int j = 0; j < i; j++) assert_string_not_equal(orc_sandbox_tool_name(j), orc_sandbox_tool_name(i));
    }
    json_decref(all);
    assert_null(orc_sandbox_tool_name(n));
    assert_null(orc_sandbox_tool_schema(-1));
}

static void test_validation(void **state) {
    (void)state;
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(NULL, &err);
    assert_non_null(sb);
    expect_exception(sb, "launch_rocket", "{}", "no tool named 'launch_rocket'");
    expect_exception(sb, NULL, "{}", "no tool named");
    expect_exception(sb, "add_contact", "{\"name\": ", "not valid JSON");
    expect_exception(sb, "add_contact", "[1, 2]", "must be a JSON object, got array");
    expect_exception(sb, "add_contact", "\"x\"", "must be a JSON object, got string");
    expect_exception(sb, "add_contact", "{\"name\": \"A\"}", "missing required argument 'phone_number'");
    expect_exception(sb, "add_contact", "{\"name\": \"A\", \"phone_number\": \"+1555\", \"email\": \"a@b\"}",
                     "unexpected argument 'email'");
    expect_exception(sb, "add_contact", "{\"name\": 5, \"phone_number\": \"+1555\"}",
                     "argument 'name' must be of type string, got integer");
    expect_exception(sb, "add_contact", "{\"name\": null, \"phone_number\": \"+1555\"}",
                     "argument 'name' must be of type string, got null");
    expect_exception(sb, "set_wifi_status", "{\"on\": \"false\"}", "argument 'on' must be of type boolean, got string");
    expect_exception(sb, "set_wifi_status", "{\"on\": 0}", "must be of type boolean");
    expect_exception(sb, "shift_timestamp", "{\"timestamp\": \"1000\"}", "argument 'timestamp' must be of type number");
    expect_exception(sb, "search_weather", "{\"days\": 1.5}", "argument 'days' must be of type integer, got number");
    expect_exception(sb, "datetime_info_to_timestamp", "{\"year\": 2024, \"month\": 1}", "missing required argument 'day'");
    expect_exception(sb, "get_wifi_status", "{\"verbose\": true}", "unexpected argument 'verbose'");

    /* Numbers accept integers; null and blank mean absent; "" is {}. */
    orc_tool_result r;
    assert_int_equal(orc_sandbox_invoke(sb, "shift_timestamp", "{\"timestamp\": 10, \"days\": null}", &r, &err), ORC_OK);
    assert_null(r.exception);
    assert_string_equal(r.result, "{\"timestamp\":10.0}");
    json_t *t = json_loads(r.trace, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(t, "tool_name")), "shift_timestamp");
    assert_true(json_is_integer(json_object_get(json_object_get(t, "arguments"), "timestamp")));
    assert_true(json_is_object(json_object_get(t, "result")));
    json_decref(t);
    orc_tool_result_free(&r);
    assert_int_equal(orc_sandbox_invoke(sb, "get_wifi_status", "", &r, &err), ORC_OK);
    assert_string_equal(r.result, "{\"wifi\":true}");
    orc_tool_result_free(&r);
    assert_int_equal(orc_sandbox_invoke(sb, "get_wifi_status", NULL, &r, &err), ORC_OK);
    assert_null(r.exception);
    orc_tool_result_free(&r);
    /* Unparsable arguments are kept in the trace as the raw text. */
    assert_int_equal(orc_sandbox_invoke(sb, "get_wifi_status", "{oops", &r, &err), ORC_OK);
    t = json_loads(r.trace, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(t, "arguments")), "{oops");
    json_decref(t);
    orc_tool_result_free(&r);
    orc_sandbox_close(sb);
}

/* An agent's mistake is logged as an exception reply, and the log keeps going. */
static void test_call_logs_exception(void **state) {
    (void)state;
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(NULL, &err);
    orc_tool_result r;
    int64_t idx = -1;
    assert_int_equal(orc_sandbox_call(sb, "call_1", "no_such_tool", "{}", &r, &idx, &err), ORC_OK);
    assert_int_equal(idx, 0);
    orc_tool_result_free(&r);
    assert_int_equal(orc_sandbox_call(sb, "call_2", "get_wifi_status", "{}", &r, &idx, &err), ORC_OK);
    assert_int_equal(idx, 1);
    orc_tool_result_free(&r);
    json_t *log = NULL;
    assert_int_equal(orc_sandbox_read(sb, "log", -1, &log, &err), ORC_OK);
    json_t *a = json_array_get(log, 0), *b = json_array_get(log, 1);
    assert_string_equal(json_string_value(json_object_get(a, "exception")), "no tool named 'no_such_tool'");
    assert_string_equal(json_string_value(json_object_get(a, "content")), "no tool named 'no_such_tool'");
    assert_string_equal(json_string_value(json_object_get(a, "tool_name")), "no_such_tool");
    assert_string_equal(json_string_value(json_object_get(a, "recipient")), "agent");
    assert_true(json_is_null(json_object_get(b, "exception")));
    assert_string_equal(json_string_value(json_object_get(b, "content")), "{\"wifi\":true}");
    json_t *trace = json_loads(json_string_value(json_object_get(b, "tool_trace")), 0, NULL);
    assert_true(json_is_true(json_object_get(json_object_get(json_array_get(trace, 0), "result"), "wifi")));
    json_decref(trace);
    json_decref(log);
    orc_sandbox_close(sb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schemas),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_call_logs_exception),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
