/* The sandbox world state: the starting snapshot (settings, one self
 * contact), the message log (indices, default visibility, roles, the
 * conversation-active flag), copy-forward snapshots keyed by message index
 * read back at every index of a replayed conversation, several changes at
 * one index sharing one snapshot, a file-backed state surviving a reopen, and
 * bad input (unknown table or role, a file that is not a sandbox). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "orchard/sandbox.h"
#include "testdir.h"

static orc_sandbox *open_mem(void) {
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(NULL, &err);
    if (!sb) fail_msg("open: %s", err.msg);
    return sb;
}

static json_t *read_at(orc_sandbox *sb, const char *table, int64_t index) {
    json_t *rows = NULL;
    orc_error err = {0};
    if (orc_sandbox_read(sb, table, index, &rows, &err) != ORC_OK) fail_msg("read %s: %s", table, err.msg);
    return rows;
}

static int64_t key_at(orc_sandbox *sb, const char *table, int64_t index) {
    int64_t key;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_snapshot_key(sb, table, index, &key, &err), ORC_OK);
    return key;
}

static void append(orc_sandbox *sb, const char *from, const char *to, const char *content, int64_t want_index) {
    orc_log_message m = {.sender = from, .recipient = to, .content = content};
    int64_t idx = -1;
    orc_error err = {0};
    if (orc_sandbox_log_append(sb, &m, &idx, &err) != ORC_OK) fail_msg("append: %s", err.msg);
    assert_int_equal(idx, want_index);
}

/* Log the agent's tool call, then run it and log the reply; returns the reply's index. */
static int64_t tool_turn(orc_sandbox *sb, const char *call_id, const char *name, const char *args) {
    orc_log_message m = {.sender = "agent", .recipient = "execution_environment", .tool_call_id = call_id,
                         .tool_name = name, .content = args};
    orc_error err = {0};
    assert_int_equal(orc_sandbox_log_append(sb, &m, NULL, &err), ORC_OK);
    orc_tool_result r;
    int64_t idx = -1;
    if (orc_sandbox_call(sb, call_id, name, args, &r, &idx, &err) != ORC_OK) fail_msg("call: %s", err.msg);
    orc_tool_result_free(&r);
    return idx;
}

static void test_starting_state(void **state) {
    (void)state;
    orc_sandbox *sb = open_mem();
    assert_int_equal(orc_sandbox_head(sb), 0);
    assert_true(orc_sandbox_clock(sb) == ORC_SANDBOX_DEFAULT_CLOCK);
    json_t *s = read_at(sb, "settings", 0);
    assert_int_equal(json_array_size(s), 1);
    json_t *row = json_array_get(s, 0);
    assert_int_equal(json_integer_value(json_object_get(row, "cellular")), 1);
    assert_int_equal(json_integer_value(json_object_get(row, "wifi")), 1);
    assert_int_equal(json_integer_value(json_object_get(row, "location_service")), 1);
    assert_int_equal(json_integer_value(json_object_get(row, "low_battery_mode")), 0);
    assert_null(json_object_get(row, "snapshot"));
    json_decref(s);
    json_t *c = read_at(sb, "contacts", -1);
    assert_int_equal(json_array_size(c), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(c, 0), "is_self")), 1);
    json_decref(c);
    json_t *m = read_at(sb, "messages", 0), *r = read_at(sb, "reminders", 0), *l = read_at(sb, "log", -1);
    assert_int_equal(json_array_size(m) + json_array_size(r) + json_array_size(l), 0);
    json_decref(m);
    json_decref(r);
    json_decref(l);
    assert_int_equal(key_at(sb, "messages", 0), 0);
    orc_sandbox_close(sb);

    /* Options: clock and self contact. */
    orc_sandbox_opts o = {.clock = 1e9, .self_name = "Sam Lee", .self_phone = "+4420000000"};
    orc_error err = {0};
    sb = orc_sandbox_open(&o, &err);
    assert_non_null(sb);
    assert_true(orc_sandbox_clock(sb) == 1e9);
    c = read_at(sb, "contacts", 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(c, 0), "name")), "Sam Lee");
    json_decref(c);
    orc_sandbox_close(sb);
}

static void test_log(void **state) {
    (void)state;
    orc_sandbox *sb = open_mem();
    append(sb, "system", "agent", "You are a helpful assistant.", 0);
    append(sb, "user", "agent", "Hi", 1);
    orc_log_message bad = {.sender = "assistant", .recipient = "user"};
    orc_error err = {0};
    assert_int_equal(orc_sandbox_log_append(sb, &bad, NULL, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "assistant"));
    orc_log_message vis = {.sender = "agent", .recipient = "user", .content = "Hello", .visible_to = "[\"user\"]"};
    assert_int_equal(orc_sandbox_log_append(sb, &vis, NULL, &err), ORC_OK);
    orc_log_message badvis = {.sender = "agent", .recipient = "user", .visible_to = "[\"nobody\"]"};
    orc_error_clear(&err);
    assert_int_equal(orc_sandbox_log_append(sb, &badvis, NULL, &err), ORC_EINVAL);
    orc_log_message end = {.sender = "user", .recipient = "agent", .content = "bye", .ends_conversation = 1};
    assert_int_equal(orc_sandbox_log_append(sb, &end, NULL, &err), ORC_OK);
    append(sb, "agent", "user", "late reply", 4);
    assert_int_equal(orc_sandbox_head(sb), 5);

    json_t *log = read_at(sb, "log", -1);
    assert_int_equal(json_array_size(log), 5);
    json_t *r0 = json_array_get(log, 0);
    assert_int_equal(json_integer_value(json_object_get(r0, "idx")), 0);
    assert_string_equal(json_string_value(json_object_get(r0, "visible_to")), "[\"system\", \"agent\"]");
    assert_true(json_is_null(json_object_get(r0, "tool_call_id")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(log, 2), "visible_to")), "[\"user\"]");
    int active[] = {1, 1, 1, 0, 0};
    for (int i = 0; i < 5; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(log, i), "conversation_active")),
                         active[i]);
    json_decref(log);
    log = read_at(sb, "log", 1);
    assert_int_equal(json_array_size(log), 2);
    json_decref(log);
    orc_sandbox_close(sb);
}

/* A conversation replayed message by message; the state read back at every
 * index shows each change from the reply that reported it on. */
static void test_replay_snapshots(void **state) {
    (void)state;
    orc_sandbox *sb = open_mem();
    append(sb, "system", "agent", "You are a helpful assistant.", 0);            /* 0 */
    append(sb, "user", "agent", "Add Mary and text her that I'm late.", 1);       /* 1 */
    int64_t i3 = tool_turn(sb, "c1", "add_contact",                              /* 2, 3 */
                           "{\"name\": \"Mary Jones\", \"phone_number\": \"+15550003333\"}");
    assert_int_equal(i3, 3);
    int64_t i5 = tool_turn(sb, "c2", "send_message_with_phone_number",            /* 4, 5 */
                           "{\"phone_number\": \"+15550003333\", \"content\": \"Running late\"}");
    append(sb, "agent", "user", "Done.", 6);                                       /* 6 */
    append(sb, "user", "agent", "Turn on low battery mode.", 7);                   /* 7 */
    int64_t i9 = tool_turn(sb, "c3", "set_low_battery_mode_status", "{\"on\": true}"); /* 8, 9 */
    int64_t i11 = tool_turn(sb, "c4", "send_message_with_phone_number",           /* 10, 11: raises */
                            "{\"phone_number\": \"+15550003333\", \"content\": \"again\"}");
    assert_int_equal(i5, 5);
    assert_int_equal(i9, 9);
    assert_int_equal(i11, 11);

    int64_t n = orc_sandbox_head(sb);
    assert_int_equal(n, 12);
    for (int64_t i = 0; i < n; i++) {
        json_t *c = read_at(sb, "contacts", i), *m = read_at(sb, "messages", i), *s = read_at(sb, "settings", i);
        json_t *log = read_at(sb, "log", i);
        assert_int_equal(json_array_size(log), i + 1);
        assert_int_equal(json_array_size(c), i >= 3 ? 2 : 1);
        assert_int_equal(json_array_size(m), i >= 5 ? 1 : 0);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(s, 0), "low_battery_mode")), i >= 9);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(s, 0), "cellular")), i < 9);
        json_decref(c);
        json_decref(m);
        json_decref(s);
        json_decref(log);
    }
    /* Snapshots exist only where a table changed. */
    assert_int_equal(key_at(sb, "contacts", 2), 0);
    assert_int_equal(key_at(sb, "contacts", 11), 3);
    assert_int_equal(key_at(sb, "messages", 11), 5);
    assert_int_equal(key_at(sb, "settings", 8), 0);
    assert_int_equal(key_at(sb, "settings", 100), 9);
    assert_int_equal(key_at(sb, "reminders", 11), 0);
    /* The recipient's person_id came from the contact added at index 3. */
    json_t *c = read_at(sb, "contacts", 3), *m = read_at(sb, "messages", 5);
    json_t *mary = json_array_get(c, 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "recipient_person_id")),
                        json_string_value(json_object_get(mary, "person_id")));
    json_decref(c);
    json_decref(m);
    /* The tool replies carry their call id, trace and (for index 11) the exception. */
    json_t *log = read_at(sb, "log", -1);
    json_t *r5 = json_array_get(log, 5), *r11 = json_array_get(log, 11);
    assert_string_equal(json_string_value(json_object_get(r5, "sender")), "execution_environment");
    assert_string_equal(json_string_value(json_object_get(r5, "tool_call_id")), "c2");
    assert_true(json_is_null(json_object_get(r5, "exception")));
    assert_non_null(strstr(json_string_value(json_object_get(r11, "exception")), "cellular service is off"));
    json_t *trace = json_loads(json_string_value(json_object_get(r11, "tool_trace")), 0, NULL);
    assert_int_equal(json_array_size(trace), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(trace, 0), "tool_name")),
                        "send_message_with_phone_number");
    json_decref(trace);
    json_decref(log);
    orc_sandbox_close(sb);
}

/* Two changes while the head stays put share one snapshot; the older
 * snapshot keeps its rows. */
static void test_copy_forward(void **state) {
    (void)state;
    orc_sandbox *sb = open_mem();
    append(sb, "user", "agent", "x", 0);
    orc_tool_result r;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_invoke(sb, "add_contact", "{\"name\": \"A B\", \"phone_number\": \"+1555\"}", &r, &err),
                     ORC_OK);
    orc_tool_result_free(&r);
    assert_int_equal(orc_sandbox_invoke(sb, "add_contact", "{\"name\": \"C D\", \"phone_number\": \"+1556\"}", &r, &err),
                     ORC_OK);
    orc_tool_result_free(&r);
    int64_t count = -1;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(orc_sandbox_db(sb), "SELECT COUNT(*) FROM snapshots WHERE tbl = 'contacts'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    count = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    assert_int_equal(count, 2);
    json_t *old = read_at(sb, "contacts", 0), *now = read_at(sb, "contacts", 1);
    assert_int_equal(json_array_size(old), 1);
    assert_int_equal(json_array_size(now), 3);
    /* Rows keep their order and the self contact its id across the copy. */
    assert_true(json_equal(json_array_get(old, 0), json_array_get(now, 0)));
    json_decref(old);
    json_decref(now);
    orc_sandbox_close(sb);
}

static void test_file_state(void **state) {
    (void)state;
    char dir[64], path[128];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "sandbox"), 0);
    orc_test_path(path, sizeof path, dir, "state.db"); /* not there yet: SQLite creates it */
    orc_sandbox_opts o = {.db_path = path};
    orc_error err = {0};
    orc_sandbox *sb = orc_sandbox_open(&o, &err);
    assert_non_null(sb);
    assert_int_equal(orc_sandbox_set_clock(sb, 1.5e9, &err), ORC_OK);
    orc_tool_result r;
    assert_int_equal(orc_sandbox_call(sb, "c1", "add_contact", "{\"name\": \"A B\", \"phone_number\": \"+1555\"}", &r,
                                      NULL, &err),
                     ORC_OK);
    json_t *first = json_loads(r.result, 0, NULL);
    orc_tool_result_free(&r);
    orc_sandbox_close(sb);

    sb = orc_sandbox_open(&o, &err);
    assert_non_null(sb);
    assert_int_equal(orc_sandbox_head(sb), 1);
    assert_true(orc_sandbox_clock(sb) == 1.5e9);
    json_t *c = read_at(sb, "contacts", -1);
    assert_int_equal(json_array_size(c), 2);
    json_decref(c);
    /* The id counter continues: a new contact gets a new id. */
    assert_int_equal(orc_sandbox_call(sb, "c2", "add_contact", "{\"name\": \"C D\", \"phone_number\": \"+1556\"}", &r,
                                      NULL, &err),
                     ORC_OK);
    json_t *second = json_loads(r.result, 0, NULL);
    orc_tool_result_free(&r);
    assert_string_not_equal(json_string_value(json_object_get(first, "person_id")),
                            json_string_value(json_object_get(second, "person_id")));
    json_decref(first);
    json_decref(second);
    orc_sandbox_close(sb);
    orc_test_dir_remove(dir);
}

static void test_bad_input(void **state) {
    (void)state;
    orc_sandbox *sb = open_mem();
    json_t *rows = NULL;
    orc_error err = {0};
    assert_int_equal(orc_sandbox_read(sb, "bogus", 0, &rows, &err), ORC_EINVAL);
    assert_non_null(strstr(err.msg, "bogus"));
    assert_null(rows);
    int64_t key;
    orc_error_clear(&err);
    assert_int_equal(orc_sandbox_snapshot_key(sb, "log", 0, &key, &err), ORC_EINVAL);
    orc_sandbox_close(sb);

    char dir[64], path[128];
    assert_int_equal(orc_test_dir_make(dir, sizeof dir, "sandbox_bad"), 0);
    int fd = open(orc_test_path(path, sizeof path, dir, "bad.db"), O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "this is not a database, just text padding it out......................", 70), 70);
    close(fd);
    orc_sandbox_opts o = {.db_path = path};
    orc_error_clear(&err);
    assert_null(orc_sandbox_open(&o, &err));
    assert_non_null(strstr(err.msg, path));
    orc_sandbox_opts d = {.data_path = path};
    orc_error_clear(&err);
    assert_null(orc_sandbox_open(&d, &err));
    assert_int_equal(err.code, ORC_EFORMAT);
    orc_test_dir_remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starting_state), cmocka_unit_test(test_log),       cmocka_unit_test(test_replay_snapshots),
        cmocka_unit_test(test_copy_forward),   cmocka_unit_test(test_file_state), cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
