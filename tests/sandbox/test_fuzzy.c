/* Fuzzy name matching: the token-set ratio's values on known pairs
 * (normalisation, subsets, typos, reordering), and the threshold deciding
 * what a search returns: a near miss above ORC_SANDBOX_FUZZY_MIN is found, a
 * different name below it is not, and results come best match first. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/sandbox.h"

static void near(double got, double want) {
    if (fabs(got - want) > 1e-9) fail_msg("similarity %.12f, wanted %.12f", got, want);
}

static void test_similarity_values(void **state) {
    (void)state;
    near(orc_sandbox_similarity("John Smith", "john smith"), 1.0);
    near(orc_sandbox_similarity("Smith, John", "John Smith"), 1.0);       /* order and punctuation */
    near(orc_sandbox_similarity("John", "John Smith"), 1.0);              /* subset */
    near(orc_sandbox_similarity("Jon", "John"), 6.0 / 7.0);               /* 2*LCS(3)/(3+4) */
    near(orc_sandbox_similarity("Tom", "Tim"), 4.0 / 6.0);
    near(orc_sandbox_similarity("Jhon Smith", "John Smith"), 18.0 / 20.0); /* t1 vs t2 */
    near(orc_sandbox_similarity("abc", "xyz"), 0.0);
    near(orc_sandbox_similarity("", ""), 1.0);
    near(orc_sandbox_similarity("", "x"), 0.0);
    near(orc_sandbox_similarity(NULL, "x"), 0.0);
    assert_true(orc_sandbox_similarity("Jon", "John") >= ORC_SANDBOX_FUZZY_MIN);
    assert_true(orc_sandbox_similarity("Tom", "Tim") < ORC_SANDBOX_FUZZY_MIN);
    /* Symmetric. */
    near(orc_sandbox_similarity("Blue Fern Cafe", "blue fern"), orc_sandbox_similarity("blue fern", "Blue Fern Cafe"));
    /* Long inputs are cut, not refused. */
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    near(orc_sandbox_similarity(big, big), 1.0);
}

static json_t *search(orc_sandbox *sb, const char *args) {
    orc_tool_result r;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_invoke(sb, "search_contacts", args, &r, &err), ORC_OK);
    assert_null(r.exception);
    json_t *out = json_loads(r.result, 0, NULL);
    orc_tool_result_free(&r);
    return out;
}

static void add(orc_sandbox *sb, const char *name, const char *phone) {
    char args[256];
    snprintf(args, sizeof args, "{\"name\": \"%s\", \"phone_number\": \"%s\"}", name, phone);
    orc_tool_result r;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_invoke(sb, "add_contact", args, &r, &err), ORC_OK);
    assert_null(r.exception);
    orc_tool_result_free(&r);
}

static const char *name_at(json_t *rows, size_t i) {
    return json_string_value(json_object_get(json_array_get(rows, i), "name"));
}

static void test_search_threshold(void **state) {
    (void)state;
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(NULL, &err);
    assert_non_null(sb);
    add(sb, "John Appleseed", "+15550000001");
    add(sb, "Johnny Appleseed", "+15550000002");
    add(sb, "Tom Hanks", "+15550000003");
    /* A typo above the threshold finds it; the exact name ranks first. */
    json_t *r = search(sb, "{\"name\": \"Jon Appleseed\"}");
    assert_true(json_array_size(r) >= 1);
    assert_string_equal(name_at(r, 0), "John Appleseed");
    json_decref(r);
    r = search(sb, "{\"name\": \"johnny appleseed\"}");
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(name_at(r, 0), "Johnny Appleseed"); /* 1.0 before John's 0.93 */
    json_decref(r);
    /* A first name alone is a subset: both Appleseeds, in table order. */
    r = search(sb, "{\"name\": \"appleseed\"}");
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(name_at(r, 0), "John Appleseed");
    json_decref(r);
    /* Below the threshold: Tim is not Tom. */
    r = search(sb, "{\"name\": \"Tim\"}");
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);
    r = search(sb, "{\"name\": \"tom\"}");
    assert_int_equal(json_array_size(r), 1);
    json_decref(r);
    /* Other fields are exact: a phone number one digit off finds nothing. */
    r = search(sb, "{\"phone_number\": \"+1555000000\"}");
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);
    orc_sandbox_close(sb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_similarity_values),
        cmocka_unit_test(test_search_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
