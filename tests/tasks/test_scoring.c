/* Scoring of the task suite: answer extraction ("####" wins, else the last
 * non-empty line), normalisation (whitespace, trailing periods, thousands
 * separators, case kept), exact match, and orc_tasks_eval over files written
 * here: per-domain and per-difficulty counts, missing and unknown
 * predictions, duplicate ids rejected, and the JSON and Markdown reports. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orchard/tasks.h"
#include "testdir.h"

static void expect_norm(const char *in, const char *want) {
    char *got = orc_task_normalize(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void expect_extract(const char *in, const char *want) {
    char *got = orc_task_extract_answer(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_normalize(void **state) {
    (void)state;
    expect_norm("  42 ", "42");
    expect_norm("1,000", "1000");
    expect_norm("-12,345,678", "-12345678");
    expect_norm("1,000.25", "1000.25");
    expect_norm("12,34", "12,34");        /* not thousands groups: kept */
    expect_norm("1,2345", "1,2345");
    expect_norm("hello   world.", "hello world");
    expect_norm("\tAbraham\n Lincoln .", "Abraham Lincoln");
    expect_norm("Stone", "Stone");        /* case is part of the answer */
    expect_norm("3...", "3");
    expect_norm("", "");
    expect_norm("   ", "");
}

static void test_extract(void **state) {
    (void)state;
    expect_extract("12 + 5 = 17\n#### 17\n", " 17");
    expect_extract("#### 3\nmore thoughts\n#### 4", " 4");
    expect_extract("first\nsecond\n\n  \n", "second");
    expect_extract("only", "only");
    expect_extract("", "");
    expect_extract(NULL, "");
}

static void test_correct(void **state) {
    (void)state;
    assert_true(orc_task_correct("1000", "so the total is\n#### 1,000."));
    assert_true(orc_task_correct("1000", "1000"));
    assert_true(orc_task_correct("eldnac enots", "The reversed text is:\neldnac  enots\n"));
    assert_true(orc_task_correct("Abraham Lincoln", "#### Abraham Lincoln."));
    assert_false(orc_task_correct("Stone", "#### stone"));
    assert_false(orc_task_correct("17", "#### 18"));
    assert_false(orc_task_correct("17", "17 apples"));
    assert_false(orc_task_correct("17", ""));
    /* "####" beats a later line, and the last "####" beats earlier ones. */
    assert_true(orc_task_correct("5", "#### 4\n#### 5\nthanks"));
}

static char g_dir[64];

static int setup_dir(void **state) {
    (void)state;
    return orc_test_dir_make(g_dir, sizeof g_dir, "score");
}

static int teardown_dir(void **state) {
    (void)state;
    orc_test_dir_remove(g_dir);
    return 0;
}

static void write_pred(FILE *fp, const char *id, const char *output) {
    json_t *j = json_pack("{s:s, s:s}", "id", id, "output", output);
    json_dumpf(j, fp, JSON_COMPACT);
    fputc('\n', fp);
    json_decref(j);
}

/* 40 math and 40 code items; predictions: the worked solution for even
 * indices, a wrong answer for odd ones, none for index 0 of code, plus one
 * prediction for an id that is not a task. */
static void test_eval_files(void **state) {
    (void)state;
    char tasks[128], preds[128];
    snprintf(tasks, sizeof tasks, "%s/tasks.jsonl", g_dir);
    snprintf(preds, sizeof preds, "%s/preds.jsonl", g_dir);
    FILE *ft = fopen(tasks, "w"), *fp = fopen(preds, "w");
    assert_non_null(ft);
    assert_non_null(fp);
    orc_task_gen g = {.seed = 1};
    int64_t want_total[2][6] = {{0}}, want_correct[2][6] = {{0}};
    orc_error err = {0};
    for (int d = 0; d < 2; d++)
        for (uint64_t i = 0; i < 40; i++) {
            orc_task_item it;
            assert_int_equal(orc_task_make(&g, (orc_task_domain)d, i, &it, &err), ORC_OK);
            assert_int_equal(orc_task_write_jsonl(ft, &it, &err), ORC_OK);
            want_total[d][it.difficulty]++;
            if (d == 1 && i == 0) {
                /* missing */
            } else if (i % 2 == 0) {
                write_pred(fp, it.id, it.solution);
                want_correct[d][it.difficulty]++;
            } else {
                char wrong[64];
                snprintf(wrong, sizeof wrong, "I think...\n#### %lld", atoll(it.answer) + 1);
                write_pred(fp, it.id, wrong);
            }
            orc_task_item_free(&it);
        }
    write_pred(fp, "nope-1", "#### 1");
    fclose(ft);
    fclose(fp);

    orc_task_report rep;
    assert_int_equal(orc_tasks_eval(tasks, preds, &rep, &err), ORC_OK);
    for (int d = 0; d < 2; d++)
        for (int k = 1; k <= 5; k++) {
            assert_int_equal(rep.total[d][k], want_total[d][k]);
            assert_int_equal(rep.correct[d][k], want_correct[d][k]);
        }
    assert_int_equal(rep.missing, 1);
    assert_int_equal(rep.unknown, 1);

    char *js = orc_task_report_json(&rep), *md = orc_task_report_markdown(&rep);
    assert_non_null(js);
    assert_non_null(md);
    json_error_t je;
    json_t *j = json_loads(js, 0, &je);
    assert_non_null(j);
    json_t *overall = json_object_get(j, "overall");
    assert_int_equal(json_integer_value(json_object_get(overall, "total")), 80);
    assert_int_equal(json_integer_value(json_object_get(overall, "correct")), 39);
    json_t *math = json_object_get(json_object_get(j, "domains"), "math");
    assert_int_equal(json_integer_value(json_object_get(math, "correct")), 20);
    assert_non_null(json_object_get(math, "by_difficulty"));
    assert_null(json_object_get(json_object_get(j, "domains"), "facts"));
    json_decref(j);
    assert_non_null(strstr(md, "| math |"));
    assert_non_null(strstr(md, "| code |"));
    assert_non_null(strstr(md, "48.8% (80)"));
    free(js);
    free(md);

    /* The same id twice is an error that names it. */
    fp = fopen(preds, "a");
    write_pred(fp, "math-000003", "#### 1");
    fclose(fp);
    orc_error_clear(&err);
    assert_int_equal(orc_tasks_eval(tasks, preds, &rep, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, "math-000003"));

    /* A prediction line without "output". */
    fp = fopen(preds, "w");
    fprintf(fp, "{\"id\": \"math-000000\"}\n");
    fclose(fp);
    orc_error_clear(&err);
    assert_int_equal(orc_tasks_eval(tasks, preds, &rep, &err), ORC_EFORMAT);
    assert_non_null(strstr(err.msg, ":1:"));
    orc_error_clear(&err);
    assert_int_equal(orc_tasks_eval(tasks, "/nonexistent/p.jsonl", &rep, &err), ORC_EIO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_extract),
        cmocka_unit_test(test_correct),
        cmocka_unit_test_setup_teardown(test_eval_files, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
